# Common tasks. `just` is a convenience: every recipe is a plain command.

# Run every service in one process on embedded SQLite.
up:
    cargo run --release -- up

# The test suite (SQLite always; PostgreSQL when one answers, see README).
test:
    cargo test --workspace

# Everything CI runs, including a throwaway PostgreSQL.
ci:
    bash .ci/run

lint: fmt-check clippy buf-lint

fmt:
    cargo fmt --all

fmt-check:
    cargo fmt --all -- --check

clippy:
    cargo clippy --workspace --all-targets -- -D warnings

# Installs buf and grpcurl into target/tools.
tools:
    bash .ci/tools.sh

buf-lint: tools
    cd proto && ../target/tools/bin/buf lint

# Checks the contracts for wire-breaking changes against main.
buf-breaking: tools
    cd proto && ../target/tools/bin/buf breaking --against '../.git#branch=main,subdir=proto'
