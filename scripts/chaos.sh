#!/usr/bin/env bash
# The chaos walkthrough of docs/mesh.md as a script, against a running mesh
# (`ordermesh up --saga-patience-secs 5`, or a port-forward to an order pod
# with that patience): break payment with an injected fault.
#  1. A short outage (healed within the patience) is waited out: the order
#     placed during it confirms, late but not rejected.
#  2. A long outage: orders wait out the patience, then are rejected with
#     SERVICE_UNAVAILABLE (stock released; payment never called, since the
#     mesh refused every attempt), and the payment breaker is open.
#  3. Healed: the breaker lets probes through, closes, orders confirm.
# Exits non-zero, saying why, when the mesh does not behave so.
#
# Usage: scripts/chaos.sh [ORDER_ADDRESS]     (default 127.0.0.1:50051)
# grpcurl from GRPCURL, else target/tools/bin/grpcurl, else PATH.
# Needs the demo data (customer alice, SKU CB-004), a saga patience of
# PATIENCE seconds (default 5) and the default breaker policy (opens at half
# of 10+ calls failing, probes after 5 s).
set -euo pipefail
ORDER="${1:-127.0.0.1:50051}"
here="$(cd "$(dirname "$0")/.." && pwd)"
GRPCURL="${GRPCURL:-}"
if [ -z "$GRPCURL" ]; then
  if [ -x "$here/target/tools/bin/grpcurl" ]; then GRPCURL="$here/target/tools/bin/grpcurl"; else GRPCURL=grpcurl; fi
fi
PATIENCE="${PATIENCE:-5}"
run="chaos-$(date +%s%N)"   # fresh request ids, so a rerun places new orders

call() { "$GRPCURL" -plaintext -d "$2" "$ORDER" "$1"; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "chaos: FAILED: $*" >&2; exit 1; }

# Places one order and waits for it to end; prints "STATUS REASON".
order() {
  local id watched
  id="$(call ordermesh.order.v1.OrderService/CreateOrder \
    "{\"request_id\": \"$run-$1\", \"customer_id\": \"alice\", \"lines\": [{\"sku\": \"CB-004\", \"quantity\": 1}]}" \
    | sed -n 's/.*"orderId": "\(.*\)".*/\1/p')"
  [ -n "$id" ] || fail "CreateOrder returned no order id"
  watched="$(call ordermesh.order.v1.OrderService/WatchOrder "{\"order_id\": \"$id\"}")"
  echo "$(sed -n 's/.*"status": "\(.*\)".*/\1/p' <<<"$watched" | tail -n1) $(sed -n 's/.*"rejectReason": "\(.*\)".*/\1/p' <<<"$watched" | tail -n1)"
}

breaker() {
  call ordermesh.mesh.v1.MeshAdminService/GetMeshState '{}' \
    | grep -A1 '"name": "payment"' | sed -n 's/.*"breakerState": "\(.*\)".*/\1/p'
}

# Fault injection is off unless an operator turns it on.
call ordermesh.mesh.v1.MeshAdminService/SetFlag \
  '{"flag": {"name": "fault_injection", "enabled": true, "rollout_percent": 100}}' >/dev/null

state="$(breaker)"
[ "$state" = CLOSED ] || fail "the payment breaker is ${state:-unknown} before the experiment (expected CLOSED)"
echo "payment breaker: $state"

break_payment() {
  call ordermesh.mesh.v1.MeshAdminService/SetFaults \
    '{"downstream": "payment", "rules": [{"abort_percent": 100, "abort_code": "UNAVAILABLE"}]}' >/dev/null
}
heal_payment() {
  call ordermesh.mesh.v1.MeshAdminService/SetFaults '{"downstream": "payment"}' >/dev/null
}

echo "== a short outage: payment broken for 2 s (under the ${PATIENCE} s patience)"
break_payment
order short > "$tmp/short" &
sleep 2
heal_payment
wait
result="$(cat "$tmp/short")"
echo "order short: $result"
[ "$result" = "ORDER_STATUS_CONFIRMED " ] || fail "the order placed during a short outage ended '$result', expected CONFIRMED"

echo "== a long outage: payment stays broken; orders wait ${PATIENCE} s, then are rejected"
break_payment
for i in 1 2 3 4 5 6; do order "broken-$i" > "$tmp/broken-$i" & done
wait
for i in 1 2 3 4 5 6; do
  result="$(cat "$tmp/broken-$i")"
  echo "order broken-$i: $result"
  [ "$result" = "ORDER_STATUS_REJECTED REJECT_REASON_SERVICE_UNAVAILABLE" ] \
    || fail "order broken-$i ended '$result', expected REJECTED with SERVICE_UNAVAILABLE"
done
state="$(breaker)"
echo "payment breaker: $state"
[ "$state" = OPEN ] || [ "$state" = HALF_OPEN ] || fail "the payment breaker is $state after the failures (expected OPEN)"

echo "== heal payment: the breaker probes after its wait, then closes"
heal_payment
deadline=$((SECONDS + 60))
i=0
while :; do
  i=$((i + 1))
  result="$(order "healed-$i")"
  state="$(breaker)"
  echo "order healed-$i: $result (payment breaker: $state)"
  if [ "$result" = "ORDER_STATUS_CONFIRMED " ] && [ "$state" = CLOSED ]; then break; fi
  [ "$SECONDS" -lt "$deadline" ] || fail "orders did not confirm with the breaker CLOSED within 60 s"
done
echo "chaos: a short outage was waited out; a long one rejected orders after the patience and opened the breaker; healed, it closed and orders confirm"
