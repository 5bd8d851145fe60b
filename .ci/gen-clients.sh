#!/usr/bin/env bash
# Generates clients in other languages from proto/ into target/clients/, with
# the tools .ci/tools.sh installs: Python with grpcio-tools (the command the
# README shows), TypeScript with buf and the local protoc-gen-es plugin
# (proto/buf.gen.yaml). Go needs a Go toolchain (proto/buf.gen.go.yaml).
# Checks that the generated Python imports and the TypeScript declares the
# services.
set -euo pipefail
cd "$(dirname "$0")/.."
T="$PWD/target/tools/bin"
OUT=target/clients

rm -rf "$OUT/python"
mkdir -p "$OUT/python"
"$T/python" -m grpc_tools.protoc -Iproto --python_out="$OUT/python" --pyi_out="$OUT/python" \
  --grpc_python_out="$OUT/python" $(find proto/ordermesh -name '*.proto' | sort)
PYTHONPATH="$OUT/python" "$T/python" -c '
from ordermesh.order.v1 import order_pb2_grpc
from ordermesh.inventory.v1 import inventory_pb2_grpc
from ordermesh.payment.v1 import payment_pb2_grpc
from ordermesh.mesh.v1 import admin_pb2_grpc
assert order_pb2_grpc.OrderServiceStub and inventory_pb2_grpc.InventoryServiceStub
'
echo "python: $OUT/python (PYTHONPATH=$OUT/python python clients/python/order_client.py --target 127.0.0.1:50051)"

PATH="$T:$PATH" "$T/buf" generate proto --template proto/buf.gen.yaml
for service in order/v1/order_pb.ts:OrderService inventory/v1/inventory_pb.ts:InventoryService \
  payment/v1/payment_pb.ts:PaymentService; do
  file="$OUT/typescript/ordermesh/${service%%:*}"
  grep -q "export const ${service##*:}: GenService" "$file" || {
    echo "gen-clients.sh: $file does not declare ${service##*:}" >&2
    exit 1
  }
done
echo "typescript: $OUT/typescript"
