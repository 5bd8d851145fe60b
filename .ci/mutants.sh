#!/usr/bin/env bash
# Mutation testing of the decisions that must be pinned by tests: every
# mutant cargo-mutants makes of these files must make a test fail (zero
# survivors), or CI fails and lists the survivors. `just mutants` runs the
# same; `just mutants FILE` one file.
#
# In place (`--in-place`): the mutants are built in this checkout's target
# directory, which CI's test step has already built, so each costs one
# incremental build of its crate; the tree is restored after each mutant.
set -euo pipefail
cd "$(dirname "$0")/.."
MUTANTS=target/tools/bin/cargo-mutants
# package : file : test arguments (unit tests of the crate suffice and keep it fast)
targets=(
  "ordermesh-order:services/order/src/saga/plan.rs:--lib"
  "ordermesh-mesh:shared/mesh/src/breaker.rs:--lib"
)
if [ $# -gt 0 ]; then
  filtered=()
  for t in "${targets[@]}"; do
    for want in "$@"; do [[ "$t" == *":$want:"* ]] && filtered+=("$t"); done
  done
  targets=("${filtered[@]}")
fi
status=0
for t in "${targets[@]}"; do
  IFS=: read -r package file args <<< "$t"
  out="target/mutants/$(basename "$file" .rs)"
  mkdir -p "$out"
  echo "== cargo mutants: $file"
  "$MUTANTS" mutants --in-place --no-shuffle -p "$package" -f "$file" -o "$out" -- $args > "$out/log.txt" 2>&1 || true
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
