#!/usr/bin/env bash
# CI's chaos step: `ordermesh chaos` (docs/reliability.md) for two minutes on
# each of three fixed seeds, with the debug binary the test step built. Each
# run starts its own PostgreSQL, nats-server and `ordermesh serve` processes,
# applies its seed's faults, checks the history, and prints its report; a run
# that finds a violation (or cannot run) fails the step. About 2.5 minutes a
# seed; each is cut off at 3 minutes, so the step stays near 8.
#
# CHAOS_SEEDS overrides the seeds; ORDERMESH_BIN the binary. Reports and
# histories stay in target/chaos/seed-N/ (report.json, history.jsonl, logs/).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${ORDERMESH_BIN:-${CARGO_TARGET_DIR:-target}/debug/ordermesh}"
SEEDS="${CHAOS_SEEDS:-1 2 3}"
# The run's own log lines (its NATS client's connects) only when they warn.
export RUST_LOG="${RUST_LOG:-info,async_nats=warn}"
if [ ! -x "$BIN" ]; then
  echo "chaos.sh: no $BIN (run cargo build -p ordermesh, or set ORDERMESH_BIN)" >&2
  exit 1
fi
failed=()
for seed in $SEEDS; do
  dir="target/chaos/seed-$seed"
  rm -rf "$dir"
  mkdir -p target/chaos
  echo "== ordermesh chaos --seed $seed --duration 2m"
  timeout --signal=INT --kill-after=10 180 "$BIN" chaos --seed "$seed" --duration 2m --settle 20s \
    --dir "$dir" --nats-server target/tools/bin/nats-server
  status=$?
  if [ "$status" -ne 0 ]; then
    if [ "$status" -ge 124 ]; then
      echo "chaos.sh: seed $seed did not finish within 3 minutes; its history is $dir/history.jsonl" >&2
    fi
    failed+=("$seed")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "chaos.sh: seeds with violations or errors: ${failed[*]} (reports in target/chaos/seed-N/report.json)" >&2
  exit 1
fi
echo "chaos.sh: seeds $SEEDS passed"
