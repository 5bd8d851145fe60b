#!/usr/bin/env bash
# Generates clients in other languages from proto/ into target/clients/, with
# the tools .ci/tools.sh installs: Python with grpcio-tools (the command the
# README shows), TypeScript with buf and the local protoc-gen-es plugin
# (proto/buf.gen.yaml), and JavaScript for the grpc-web example client
# (proto/buf.gen.js.yaml, into clients/typescript/gen). Go needs a Go
# toolchain, which CI does not have: its template (proto/buf.gen.go.yaml)
# runs with stand-in plugins that record the go_package buf's managed mode
# hands them. Checks that the generated Python
# imports, the TypeScript declares the services, and every Go package is set.
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

# The JavaScript (+ .d.ts) the example grpc-web client in clients/typescript
# runs on (git-ignored output); node checks the client script parses.
PATH="$T:$PATH" "$T/buf" generate proto --template proto/buf.gen.js.yaml
grep -q "export const OrderService" clients/typescript/gen/ordermesh/order/v1/order_pb.js || {
  echo "gen-clients.sh: clients/typescript/gen/ordermesh/order/v1/order_pb.js does not declare OrderService" >&2
  exit 1
}
node --check clients/typescript/order_client.mjs
echo "javascript: clients/typescript/gen (node clients/typescript/order_client.mjs --token \"\$(ordermesh token)\")"

stub="$(mktemp -d)"
trap 'rm -rf "$stub"' EXIT
for plugin in protoc-gen-go protoc-gen-go-grpc; do
  cat > "$stub/$plugin" <<PY
#!$T/python
# Stand-in for $plugin: writes "file go_package" for each file to generate.
import sys
from google.protobuf.compiler import plugin_pb2
request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
response = plugin_pb2.CodeGeneratorResponse()
out = response.file.add()
# buf runs a plugin once per directory: one record per directory.
out.name = request.file_to_generate[0].rsplit("/", 1)[0] + "/$plugin.txt"
out.content = "".join(
    f"{f.name} {f.options.go_package}\\n" for f in request.proto_file if f.name in request.file_to_generate
)
sys.stdout.buffer.write(response.SerializeToString())
PY
  chmod +x "$stub/$plugin"
done
PATH="$stub:$PATH" "$T/buf" generate proto --template proto/buf.gen.go.yaml --exclude-path proto/google
packages="$stub/go_packages.txt"
find "$OUT/go" -name 'protoc-gen-go*.txt' -exec cat {} + > "$packages"
# Every ordermesh file, once per plugin; googleapis comes from its own Go module.
[ "$(wc -l < "$packages")" -eq $((2 * $(find proto/ordermesh -name '*.proto' | wc -l))) ] \
  && grep -q '^ordermesh/order/v1/order.proto example.com/ordermesh/gen/go/ordermesh/order/v1;orderv1$' "$packages" \
  && ! grep -q '^google/' "$packages" \
  && ! grep -qE ' $' "$packages" || {
  echo "gen-clients.sh: unexpected go_package options from proto/buf.gen.go.yaml:" >&2
  cat "$packages" >&2
  exit 1
}
echo "go: proto/buf.gen.go.yaml sets every go_package (generation itself needs protoc-gen-go)"

# Plain protoc (no buf managed mode) sees the same Go and Java packages,
# set in the files themselves: protoc-gen-go refuses a file without a Go
# import path, and Java code lands in com.example.ordermesh.*, one class per
# message. A stand-in plugin records the options protoc hands it.
cat > "$stub/protoc-gen-options" <<PY
#!$T/python
import sys
from google.protobuf.compiler import plugin_pb2
request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
response = plugin_pb2.CodeGeneratorResponse()
response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
out = response.file.add()
out.name = "options.txt"
out.content = "".join(
    f"{f.name}|{f.options.go_package}|{f.options.java_package}|{f.options.java_multiple_files}\n"
    for f in request.proto_file if f.name in request.file_to_generate
)
sys.stdout.buffer.write(response.SerializeToString())
PY
chmod +x "$stub/protoc-gen-options"
mkdir -p "$stub/options"
"$T/python" -m grpc_tools.protoc -Iproto --plugin=protoc-gen-options="$stub/protoc-gen-options" \
  --options_out="$stub/options" $(find proto/ordermesh -name '*.proto' | sort)
while IFS='|' read -r file go java multiple; do
  dir="${file%/*}"                 # ordermesh/order/v1
  name="${dir#ordermesh/}"; name="${name%/v1}"
  [ "$go" = "example.com/ordermesh/gen/go/$dir;${name}v1" ] \
    && [ "$java" = "com.example.ordermesh.$name.v1" ] && [ "$multiple" = True ] || {
    echo "gen-clients.sh: $file has go_package '$go', java_package '$java', java_multiple_files $multiple" >&2
    exit 1
  }
done < "$stub/options/options.txt"
[ "$(wc -l < "$stub/options/options.txt")" -eq "$(find proto/ordermesh -name '*.proto' | wc -l)" ]
echo "protoc: every file sets go_package, java_package and java_multiple_files"
