#!/usr/bin/env bash
# Fuzzing (docs/security.md): builds the cargo fuzz targets of fuzz/ once
# with the nightly toolchain, then runs each on its committed seed corpus
# for a bounded time. A crash, a panic, a failed property or an input that
# runs for over 10 s fails the step; libFuzzer's reproducer is kept in
# target/fuzz/artifacts/<target>/ (add it to fuzz/corpus/<target>/ and
# turn it into a test once fixed).
#
#   FUZZ_SECONDS   seconds per target (20 by default; `just fuzz 600` for longer)
#   FUZZ_PROFILE   dev (default: unoptimised, a build minutes shorter than
#                  release's for a 20 s run) or release (faster executions
#                  for long runs)
#   FUZZ_SANITIZER none (default: the targets are safe Rust, whose faults are
#                  panics, and CI's build stays short) or address
#   arguments      the targets to run (every target by default)
#
# New inputs the runs find go to target/fuzz/corpus/<target>/, never into
# the committed seeds, so a run leaves the checkout as it was.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-20}"
SANITIZER="${FUZZ_SANITIZER:-none}"
PROFILE="${FUZZ_PROFILE:-dev}"
export PATH="$PWD/target/tools/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz.sh: no cargo-fuzz in target/tools/bin (run .ci/tools.sh)" >&2
  exit 1
fi
FUZZ=(cargo +nightly fuzz)
COMMON=(--fuzz-dir fuzz --target-dir target/fuzz --sanitizer "$SANITIZER")
case "$PROFILE" in
  dev) COMMON+=(--dev) ;;
  release) ;;
  *) echo "fuzz.sh: FUZZ_PROFILE is dev or release, not $PROFILE" >&2; exit 2 ;;
esac
mapfile -t ALL < <("${FUZZ[@]}" list --fuzz-dir fuzz)
TARGETS=("${@:-${ALL[@]}}")
echo "fuzz.sh: building ${#ALL[@]} targets (profile: $PROFILE, sanitizer: $SANITIZER)"
"${FUZZ[@]}" build "${COMMON[@]}"
failed=()
for target in "${TARGETS[@]}"; do
  work="target/fuzz/corpus/$target"
  artifacts="target/fuzz/artifacts/$target"
  mkdir -p "$work" "$artifacts"
  echo "== cargo fuzz run $target (${SECONDS_EACH}s)"
  if ! "${FUZZ[@]}" run "${COMMON[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 2>"target/fuzz/$target.log"; then
    tail -n 40 "target/fuzz/$target.log" >&2
    failed+=("$target")
  else
    grep -E "^stat::number_of_executed_units|^Done [0-9]+ runs" "target/fuzz/$target.log" || true
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: findings in: ${failed[*]} (inputs in target/fuzz/artifacts/<target>/)" >&2
  exit 1
fi
echo "fuzz.sh: ${#TARGETS[@]} targets, ${SECONDS_EACH}s each, no findings"
