# Mutation testing of the decisions that must be pinned by tests: every
# mutant cargo-mutants makes of these files must make a test fail (zero
# survivors), or CI fails and lists the survivors. `just mutants` runs the
# same; `just mutants FILE` one target in full (e.g. `just mutants
# 'gateway/src/auth/*.rs'`, which `just mutants-auth` runs).
#
# In place (`--in-place`): the mutants are built in this checkout's target
# directory, which CI's test step has already built, so each costs one
# incremental build of its crate; the tree is restored after each mutant.
#
# Scope: `all` tests every mutant of the target. `diff` is for a target whose
# full run does not fit CI's time: without arguments (as CI runs it) only the
# mutants on lines changed since the previous commit (the first parent; in a
# fresh or shallow clone without one, main's merge base) are tested, via
# `--in-diff`; named as an argument it runs in full.
set -euo pipefail
cd "$(dirname "$0")/.."
MUTANTS=target/tools/bin/cargo-mutants
# package : file(s) : test arguments (unit tests of the crate suffice and keep it fast) : scope
targets=(
  "ordermesh-order:services/order/src/saga/plan.rs:--lib:all"
  # The breaker: about 130 mutants, 8 minutes in full (`just mutants-full`).
  "ordermesh-mesh:shared/mesh/src/breaker.rs:--lib:diff"
  # JWT verification: about 145 mutants, 25 minutes in full on two cores.
  "ordermesh-gateway:gateway/src/auth/*.rs:--lib:diff"
)
if [ $# -gt 0 ]; then
  filtered=()
  for t in "${targets[@]}"; do
    for want in "$@"; do [[ "$t" == *":$want:"* ]] && filtered+=("${t%:*}:all"); done
  done
  targets=("${filtered[@]}")
fi
# The revision a `diff` target is compared with.
base=""
if git rev-parse -q --verify HEAD~1 >/dev/null; then
  base=HEAD~1
elif git rev-parse -q --verify main >/dev/null; then
  base="$(git merge-base HEAD main || true)"
fi
status=0
for t in "${targets[@]}"; do
  IFS=: read -r package file args scope <<< "$t"
  out="target/mutants/$(basename "${file%/\*.rs}" .rs)"
  mkdir -p "$out"
  filter=()
  if [ "$scope" = diff ]; then
    if [ -z "$base" ]; then
      echo "== cargo mutants: $file skipped: no previous commit to compare with"
      continue
    fi
    git diff "$base" -- "$(dirname "$file")" > "$out/diff.patch"
    filter=(--in-diff "$out/diff.patch")
    echo "== cargo mutants: $file, lines changed since $(git rev-parse --short "$base")"
  else
    echo "== cargo mutants: $file"
  fi
  # The unmutated tests take under a second: a mutant still running after
  # 8 s hangs them (cargo-mutants' floor is 20 s, a third of the breaker's
  # run spent waiting on its hanging mutants).
  "$MUTANTS" mutants --in-place --no-shuffle --minimum-test-timeout 8 -p "$package" -f "$file" "${filter[@]}" \
    -o "$out" -- $args > "$out/log.txt" 2>&1 || true
  if [ "$scope" = diff ] && grep -qE "No mutants|Diff file is empty" "$out/log.txt"; then
    echo "no mutants on the changed lines"
    continue
  fi
  if ! grep -q "mutants tested" "$out/log.txt"; then
    echo "cargo mutants did not run:"; tail -20 "$out/log.txt"; status=1
  fi
  tail -1 "$out/log.txt"
  # A mutant that makes the tests hang (timeout.txt) is caught: CI would fail.
  if [ -s "$out/mutants.out/missed.txt" ]; then
    echo "survivors (a decision no test pins):"
    sed 's/^/  /' "$out/mutants.out/missed.txt"
    status=1
  fi
done
exit $status
