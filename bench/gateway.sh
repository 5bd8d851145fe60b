#!/usr/bin/env bash
# The gateway's benchmarks: one backend (`ordermesh up`,
# SQLite), four ways to read an order from it, in the same run:
#
#   direct        gRPC GetOrder straight to the order service's port
#   gateway-grpc  gRPC GetOrder through a separate `ordermesh serve gateway`
#   gateway-rest  GET /v1/orders/{id} (HTTP/1.1 keep-alive) through that gateway
#   nginx-grpc    gRPC GetOrder through Debian's nginx (`grpc_pass`, upstream keepalive)
#
# Each is `ordermesh bench --scenario get-order|rest-get-order` (closed loop)
# with the CPU of the `up`, gateway and nginx processes read from /proc over
# the measured window; the cases alternate in order across rounds and the
# medians of the rounds go into target/bench/gateway/<time>/ (every run's
# JSON, summary.json) and the "## Gateway" section of BENCHMARKS.md.
#
#   bench/gateway.sh                          # c=16, 20s windows, 3s warm-up, 3 rounds (`just bench-gateway`)
#   bench/gateway.sh --duration 5s --rounds 1 # a quick look
#   bench/gateway.sh --nginx-workers 1        # nginx's worker_processes (default auto: one per core)
#   bench/gateway.sh --no-markdown            # leave BENCHMARKS.md alone
#
# Needs nginx (installed with apt-get when missing and running as root).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=20s
WARMUP=3s
CONCURRENCY=16
ROUNDS=3
NGINX_WORKERS=auto
MARKDOWN=BENCHMARKS.md
OUT="target/bench/gateway/$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    -c|--concurrency) CONCURRENCY="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --nginx-workers) NGINX_WORKERS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --no-markdown) MARKDOWN=""; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "gateway.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"

if ! command -v nginx >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y nginx >/dev/null || { apt-get update >/dev/null && apt-get install -y nginx >/dev/null; }
  else
    echo "gateway.sh: nginx is missing (sudo apt-get install nginx)" >&2; exit 1
  fi
fi

nice -n 10 cargo build --release -p ordermesh
BIN="$PWD/target/release/ordermesh"

TMP="$(mktemp -d -t ordermesh-gateway-bench.XXXXXX)"
STARTED=()
cleanup() {
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

NAME=gateway.sh
# shellcheck source=bench/ports.sh
source bench/ports.sh

ORDER=$(free_port); INVENTORY=$(free_port); PAYMENT=$(free_port); UP_GATEWAY=$(free_port)
GATEWAY=$(free_port); NGINX=$(free_port)

# The backend. (`up` also runs a gateway of its own, on a port nobody uses.)
"$BIN" up --data-dir "$TMP/up" --order-port "$ORDER" --inventory-port "$INVENTORY" \
  --payment-port "$PAYMENT" --gateway-port "$UP_GATEWAY" >"$TMP/up.log" 2>&1 &
UP_PID=$!; STARTED+=("$UP_PID")
wait_port "$ORDER" "$UP_PID" up "$TMP/up.log"
wait_port "$PAYMENT" "$UP_PID" up "$TMP/up.log"

# The gateway, a process of its own, development mode (its key in its data dir).
ORDERMESH_AUTH_MODE=development "$BIN" serve gateway --listen "127.0.0.1:$GATEWAY" \
  --data-dir "$TMP/gateway" --order-url "http://127.0.0.1:$ORDER" \
  --inventory-url "http://127.0.0.1:$INVENTORY" --payment-url "http://127.0.0.1:$PAYMENT" \
  >"$TMP/gateway.log" 2>&1 &
GATEWAY_PID=$!; STARTED+=("$GATEWAY_PID")
wait_port "$GATEWAY" "$GATEWAY_PID" gateway "$TMP/gateway.log"
TOKEN="$("$BIN" token --data-dir "$TMP/gateway" --ttl-secs 7200)"

# nginx as the peer: an unprivileged-path foreground instance, HTTP/2 cleartext
# in, grpc_pass to the order service over kept-alive upstream connections.
mkdir -p "$TMP/nginx/tmp"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
worker_processes $NGINX_WORKERS;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/tmp/body;
  proxy_temp_path $TMP/nginx/tmp/proxy;
  fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
  uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
  scgi_temp_path $TMP/nginx/tmp/scgi;
  # Client connections live as long as the run (the default closes an HTTP/2
  # connection after 1000 requests).
  keepalive_requests 100000000;
  keepalive_timeout 1h;
  upstream order {
    server 127.0.0.1:$ORDER;
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_time 1h;
    keepalive_timeout 1h;
  }
  server {
    listen 127.0.0.1:$NGINX http2;
    location / { grpc_pass grpc://order; }
  }
}
EOF
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" &
NGINX_PID=$!; STARTED+=("$NGINX_PID")
wait_port "$NGINX" "$NGINX_PID" nginx "$TMP/nginx/error.log"
sleep 0.5
NGINX_WORKER_PIDS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')

MEASURE=(--measure-pid "up=$UP_PID" --measure-pid "gateway=$GATEWAY_PID" --measure-pid "nginx=$NGINX_PID")
for pid in $NGINX_WORKER_PIDS; do MEASURE+=(--measure-pid "nginx=$pid"); done

run_case() { # CASE ROUND
  local scenario=get-order target
  case "$1" in
    direct) target=$ORDER ;;
    gateway-grpc) target=$GATEWAY ;;
    gateway-rest) target=$GATEWAY; scenario=rest-get-order ;;
    nginx-grpc) target=$NGINX ;;
  esac
  # The orders read are alice's, the token's subject (the services let a
  # customer's token read only that customer's orders), of the cheapest SKU
  # so her balance pays for every case's and round's 20.
  "$BIN" bench --target "http://127.0.0.1:$target" \
    --inventory-url "http://127.0.0.1:$INVENTORY" --payment-url "http://127.0.0.1:$PAYMENT" \
    --scenario "$scenario" --token "$TOKEN" --customer alice --sku CB-004 "${MEASURE[@]}" \
    --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" \
    --label "$1 round $2" --json "$OUT/$1-r$2.json"
}

CASES=(direct gateway-grpc gateway-rest nginx-grpc)
for round in $(seq 1 "$ROUNDS"); do
  # Alternate the order (forward, backward) so no case always runs first.
  if [ $((round % 2)) = 1 ]; then order=("${CASES[@]}"); else order=(nginx-grpc gateway-rest gateway-grpc direct); fi
  for case in "${order[@]}"; do run_case "$case" "$round"; done
done

{
  echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), worker_processes $NGINX_WORKERS ($(echo $NGINX_WORKER_PIDS | wc -w) workers)"
} >"$OUT/nginx-version.txt"
python3 bench/gateway_report.py "$OUT" --concurrency "$CONCURRENCY" --duration "$DURATION" \
  --warmup "$WARMUP" --rounds "$ROUNDS" --nginx "$(cat "$OUT/nginx-version.txt")" \
  ${MARKDOWN:+--markdown "$MARKDOWN"}
echo "gateway.sh: runs in $OUT"
