#!/usr/bin/env bash
# The comparison set in one go: builds the release binary, runs
# `ordermesh bench` for every figure (create-order on `up`/SQLite and on three
# `serve` processes on PostgreSQL at c=1, 8, 32, 64, and at c=32 with every
# order on one SKU and one account, and with two order service processes;
# open loop at 100 orders/s;
# the echo floor with the mesh client stack against a bare channel; 1,000
# WatchOrder watchers; idle RSS and start-to-healthy of every start; RSS over a
# longer run), then writes BENCHMARKS.md and bench/benchmarks.png.
#
#   bench/run.sh                         # the default set (about 9 minutes on 2 cores)
#   bench/run.sh --baseline OLD_BIN      # every run also against OLD_BIN, alternating A and B
#   bench/run.sh --long 10m              # the 10-minute memory run (default 60s)
#   bench/run.sh --duration 20s          # longer windows (default 8s)
#   bench/run.sh --criterion             # also the mesh's criterion bench (stack vs channel, open breaker)
#
# A baseline binary older than OpenAccount orders as the demo customer alice,
# whose $5,000 pays for about 500 orders of the cheapest SKU: its runs use
# --baseline-duration (default 4s) and a 1s warm-up, and a run whose budget
# runs out says so in its JSON (requests.budget_exhausted) and in the table.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=8s
WARMUP=2s
LONG=60s
BASELINE=""
BASELINE_DURATION=4s
OUT="target/bench/$(date +%Y%m%d-%H%M%S)"
CRITERION=0
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) BASELINE="$(realpath "$2")"; shift 2 ;;
    --baseline-duration) BASELINE_DURATION="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --long) LONG="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --criterion) CRITERION=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"

# The chart's one dependency, in the project's tool venv.
TOOLS=target/tools
[ -x "$TOOLS/bin/python" ] || python3 -m venv "$TOOLS"
"$TOOLS/bin/pip" show matplotlib >/dev/null 2>&1 || "$TOOLS/bin/pip" install -q matplotlib

nice -n 10 cargo build --release -p ordermesh
BIN="$PWD/target/release/ordermesh"

# A run of the new binary (A) and, with --baseline, of the old one (B),
# one right after the other so both see the same machine state.
# usage: pair NAME ARGS...   (ARGS may use @COUNTS@ for --db-counts-from's file)
pair() {
  local name="$1"; shift
  local args=("$@")
  run_one "$name-A" "$BIN" "$DURATION" "$WARMUP" "${args[@]}"
  if [ -n "$BASELINE" ]; then
    run_one "$name-B" "$BASELINE" "$BASELINE_DURATION" 1s "${args[@]}"
  fi
}
run_one() {
  local name="$1" server="$2" duration="$3" warmup="$4"; shift 4
  local args=() a
  for a in "$@"; do
    args+=("${a//@SUFFIX@/${name##*-}}")
  done
  echo "== $name: ordermesh bench ${args[*]}" >&2
  "$BIN" bench --server-bin "$server" --duration "$duration" --warmup "$warmup" \
    --label "$name" --json "$OUT/$name.json" "${args[@]}" | tee -a "$OUT/summary.txt"
}

started=$(date +%s)
# PostgreSQL first: the SQLite runs borrow its statement and commit counts
# (the same SQL; SQLite's cannot be counted from outside) for their limit.
for c in 1 8 32 64; do
  pair "serve-c$c" --start serve --scenario create-order --concurrency "$c"
done
# The hot-row worst case: every order on one stock row and one balance.
HOT=(--sku CB-004 --accounts 1)
pair "serve-hot-c32" --start serve --scenario create-order --concurrency 32 "${HOT[@]}"
# Scale-out: a second order service process on the same database.
pair "serve-2x-c32" --start serve --order-replicas 2 --scenario create-order --concurrency 32
for c in 1 8 32 64; do
  pair "up-c$c" --start up --scenario create-order --concurrency "$c" --db-counts-from "$OUT/serve-c$c-@SUFFIX@.json"
done
pair "up-hot-c32" --start up --scenario create-order --concurrency 32 "${HOT[@]}" \
  --db-counts-from "$OUT/serve-hot-c32-@SUFFIX@.json"
pair "serve-open100" --start serve --scenario create-order --rate 100 --no-limit
pair "up-open100" --start up --scenario create-order --rate 100 --no-limit
pair "echo" --start up --scenario echo --client both --concurrency 1
pair "get-order" --start up --scenario get-order --concurrency 8
# The watchers' flow must fit alice's balance in a baseline run: 25 orders/s.
# Watchers jump to the newest order together, so their subscriptions come in
# bursts larger than the server's concurrent-call limit (256 by default; the
# rest are shed with RESOURCE_EXHAUSTED and try the next order): the policy
# raises the limit to measure watchers without refusals; the run without it
# counts the default's refusals.
printf '[server]\nconcurrency_limit = 2000\n' > "$OUT/watch-policy.toml"
pair "watch" --start serve --scenario watch-order --watchers 1000 --rate 25 --watch-hold 3s \
  --server-policy "$(realpath "$OUT/watch-policy.toml")"
pair "watch-default-policy" --start serve --scenario watch-order --watchers 1000 --rate 25 --watch-hold 3s
# Memory over a longer run (the new binary only).
# The window starts after a 60 s warm-up: what is bounded but not yet full
# fills in the first minute at this rate (the in-process broker's 10,000
# messages and message ids per stream, SQLite's page caches, allocator
# arenas); growth after that is what would not stop. The JSON keeps the whole
# curve from the load's start (rss_series_kib), and the report gives the
# growth from the load's start too.
run_one "long-A" "$BIN" "$LONG" 60s --start up --scenario create-order --concurrency 8 --no-limit

if [ "$CRITERION" = 1 ]; then
  nice -n 10 cargo bench -p ordermesh-mesh 2>&1 | tee "$OUT/criterion.txt"
fi
echo "run.sh: measured in $(( $(date +%s) - started ))s; results in $OUT" >&2

"$TOOLS/bin/python" bench/report.py "$OUT" --long "$LONG" ${BASELINE:+--baseline "$BASELINE"} \
  --markdown BENCHMARKS.md --chart bench/benchmarks.png
echo "run.sh: wrote BENCHMARKS.md and bench/benchmarks.png" >&2
