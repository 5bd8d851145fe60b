#!/usr/bin/env bash
# buf breaking: proto/ must stay wire-compatible with the previous commit's
# proto/ (the first parent: on main after a merge, main's previous tip), and
# on a branch also with its merge base on main, so no commit of the branch
# slips a break through. The base is exported with `git archive` (works in
# worktrees and without a remote). A fresh clone with one commit, or a
# shallow one, has no previous commit: then it falls back to main's merge
# base, and skips with a message only when there is none either.
# First a self-test: a deliberate break (a field's type changed) must fail.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF="$PWD/target/tools/bin/buf"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The check has teeth: int64 -> int32 on a field is a wire break.
cp -r proto "$work/mutated"
sed -i 's/^  int64 quantity = 2;$/  int32 quantity = 2;/' "$work/mutated/ordermesh/order/v1/order.proto"
if cmp -s proto/ordermesh/order/v1/order.proto "$work/mutated/ordermesh/order/v1/order.proto"; then
  echo "buf-breaking.sh: self-test could not change a field's type (order.proto changed?)" >&2
  exit 1
fi
if (cd "$work/mutated" && "$BUF" breaking --against "$OLDPWD/proto" >/dev/null 2>&1); then
  echo "buf-breaking.sh: buf breaking accepted a changed field type" >&2
  exit 1
fi
echo "self-test: a changed field type is reported as breaking"

against() {
  local rev="$1" what="$2" dir="$work/$(git rev-parse --short "$1")"
  mkdir -p "$dir"
  if ! git cat-file -e "$rev:proto/buf.yaml" 2>/dev/null; then
    echo "no proto/ module at $what ($rev): nothing to compare"
    return
  fi
  git archive "$rev" proto | tar -x -C "$dir"
  (cd proto && "$BUF" breaking --against "$dir/proto")
  echo "proto/ is wire-compatible with $what ($(git rev-parse --short "$rev"))"
}

main_ref=""
for ref in origin/main main; do
  if git rev-parse -q --verify "$ref^{commit}" >/dev/null; then main_ref="$ref"; break; fi
done
merge_base=""
if [ -n "$main_ref" ]; then
  merge_base="$(git merge-base HEAD "$main_ref" 2>/dev/null || true)"
fi
head="$(git rev-parse HEAD)"
checked=0
if git rev-parse -q --verify "HEAD~1^{commit}" >/dev/null; then
  against HEAD~1 "the previous commit"
  checked=1
fi
if [ -n "$merge_base" ] && [ "$merge_base" != "$head" ] && [ "$merge_base" != "$(git rev-parse -q --verify 'HEAD~1^{commit}' || true)" ]; then
  against "$merge_base" "the merge base with $main_ref"
  checked=1
fi
if [ "$checked" = 0 ]; then
  echo "buf breaking: skipped: no previous commit and no merge base with main to compare with (a fresh one-commit or shallow clone)"
fi
