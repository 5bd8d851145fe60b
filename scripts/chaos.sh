#!/usr/bin/env bash
# The README's chaos walkthrough as a script, against a running mesh
# (`ordermesh up`, or a port-forward to an order pod): break payment with an
# injected fault, see orders rejected fast with SERVICE_UNAVAILABLE and the
# payment breaker open; remove the fault, see the breaker let probes through,
# close, and orders confirm again. Exits non-zero, saying why, when the mesh
# does not behave so.
#
# Usage: scripts/chaos.sh [ORDER_ADDRESS]     (default 127.0.0.1:50051)
# grpcurl from GRPCURL, else target/tools/bin/grpcurl, else PATH.
# Needs the demo data (customer alice, SKU CB-004) and the default breaker
# policy (opens at half of 10+ calls failing, probes after 5 s).
set -euo pipefail
ORDER="${1:-127.0.0.1:50051}"
here="$(cd "$(dirname "$0")/.." && pwd)"
GRPCURL="${GRPCURL:-}"
if [ -z "$GRPCURL" ]; then
  if [ -x "$here/target/tools/bin/grpcurl" ]; then GRPCURL="$here/target/tools/bin/grpcurl"; else GRPCURL=grpcurl; fi
fi
run="chaos-$(date +%s%N)"   # fresh request ids, so a rerun places new orders

call() { "$GRPCURL" -plaintext -d "$2" "$ORDER" "$1"; }
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

state="$(breaker)"
[ "$state" = CLOSED ] || fail "the payment breaker is ${state:-unknown} before the experiment (expected CLOSED)"
echo "payment breaker: $state"

echo "== break payment: every call from order to payment fails with UNAVAILABLE"
call ordermesh.mesh.v1.MeshAdminService/SetFaults \
  '{"downstream": "payment", "rules": [{"abort_percent": 100, "abort_code": "UNAVAILABLE"}]}' >/dev/null
for i in 1 2 3 4 5 6; do
  result="$(order "broken-$i")"
  echo "order broken-$i: $result"
  [ "$result" = "ORDER_STATUS_REJECTED REJECT_REASON_SERVICE_UNAVAILABLE" ] \
    || fail "order broken-$i ended '$result', expected REJECTED with SERVICE_UNAVAILABLE"
done
state="$(breaker)"
echo "payment breaker: $state"
[ "$state" = OPEN ] || fail "the payment breaker is $state after the failures (expected OPEN)"

echo "== heal payment: the breaker probes after its wait, then closes"
call ordermesh.mesh.v1.MeshAdminService/SetFaults '{"downstream": "payment"}' >/dev/null
deadline=$((SECONDS + 60))
i=0
while :; do
  i=$((i + 1))
  result="$(order "healed-$i")"
  state="$(breaker)"
  echo "order healed-$i: $result (payment breaker: $state)"
  if [ "$result" = "ORDER_STATUS_CONFIRMED " ] && [ "$state" = CLOSED ]; then break; fi
  [ "$SECONDS" -lt "$deadline" ] || fail "orders did not confirm with the breaker CLOSED within 60 s"
  # Only while the breaker is still open: its wait (5 s by default) must pass.
  [ "$state" = OPEN ] && sleep 1
done
echo "chaos: payment broke, orders were rejected fast and the breaker opened; healed, it closed and orders confirm"
