# Common tasks. `just` is a convenience: every recipe is a plain command.

# Run every service in one process on embedded SQLite.
up:
    cargo run --release -- up

# The test suite (SQLite always; PostgreSQL when one answers, see CONTRIBUTING.md).
test:
    cargo test --workspace

# Everything CI runs, including a throwaway PostgreSQL.
ci:
    bash .ci/run

# Formatting, clippy, buf lint and buf breaking.
lint: fmt-check clippy buf-lint buf-breaking

# Formats every crate.
fmt:
    cargo fmt --all

# Fails on unformatted code.
fmt-check:
    cargo fmt --all -- --check

# Clippy on every target, warnings as errors.
clippy:
    cargo clippy --workspace --all-targets -- -D warnings

# Installs buf, grpcurl, helm, kubectl and the other tools into target/tools.
tools:
    bash .ci/tools.sh

# buf's lint rules over proto/.
buf-lint: tools
    cd proto && ../target/tools/bin/buf lint

# Wire-breaking changes to proto/ against the previous commit (and main's merge base).
buf-breaking: tools
    bash .ci/buf-breaking.sh

# The comparison set (`ordermesh bench` runs) into BENCHMARKS.md and its chart, about 7 min; e.g. `just bench --long 10m`.
bench *args:
    bash bench/run.sh {{args}}

# gRPC direct, through the gateway, REST, and nginx grpc_pass on one backend, into BENCHMARKS.md (6 min; needs nginx).
bench-gateway *args:
    bash bench/gateway.sh {{args}}

# What metrics and traces cost per order (off / metrics / traces on `up`), into BENCHMARKS.md.
bench-telemetry *args:
    bash bench/telemetry.sh {{args}}

# The mesh's client-stack criterion benches (stack vs bare channel, open breaker).
bench-mesh:
    cargo bench -p ordermesh-mesh

# The chaos walkthrough of docs/mesh.md, checked step by step, against a running `just up`.
chaos-walkthrough address="127.0.0.1:50051": tools
    bash scripts/chaos.sh {{address}}

# A seeded chaos run (own PostgreSQL, NATS, processes) checked as docs/reliability.md says; e.g. `just chaos --seed 7 --duration 5m`.
chaos *args: tools
    RUST_LOG=info,async_nats=warn cargo run -- chaos {{args}}

# The 30-minute soak: one seed, every fault many times over (release build; about 35 minutes).
chaos-soak seed="1": tools
    RUST_LOG=info,async_nats=warn cargo run --release -- chaos --seed {{seed}} --duration 30m --settle 120s

# Mutation testing of the saga's plan, the breaker and the JWT checks, as CI runs it; `just mutants FILE`: one in full.
mutants *files: tools
    bash .ci/mutants.sh {{files}}

# Every mutant of every target CI mutates (the saga's plan, the breaker, the JWT checks), about 40 minutes.
mutants-full: tools
    bash .ci/mutants.sh services/order/src/saga/plan.rs shared/mesh/src/breaker.rs 'gateway/src/auth/*.rs'

# Every mutant of the JWT verification (gateway/src/auth/), about 17 minutes.
mutants-auth: tools
    bash .ci/mutants.sh 'gateway/src/auth/*.rs'

# Python and TypeScript clients from proto/ into target/clients/.
gen-clients: tools
    bash .ci/gen-clients.sh

# The gateway's /openapi.json against a running `up` with Schemathesis, 100 examples per operation.
schemathesis examples="100": tools
    cargo build
    SCHEMATHESIS_EXAMPLES={{examples}} bash .ci/schemathesis.sh

# The container image (needs Docker or another OCI image builder).
docker tag="ordermesh:0.1.0":
    docker build -t {{tag}} .

# The Dockerfile and chart checks: hadolint, helm lint, Kubernetes schemas, promtool, refused values.
helm-lint: tools
    bash .ci/helm.sh

# The cargo fuzz targets of fuzz/ (docs/security.md), FUZZ_SECONDS each (20 by default); e.g. `FUZZ_PROFILE=release FUZZ_SECONDS=600 just fuzz jwt`.
fuzz *targets: tools
    bash .ci/fuzz.sh {{targets}}
