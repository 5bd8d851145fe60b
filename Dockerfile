# syntax=docker/dockerfile:1
# The one ordermesh image: `ordermesh up` by default, `ordermesh serve <target>`
# in Kubernetes (the Helm chart sets the arguments).
#
#   docker build -t ordermesh:0.1.0 .
#   docker run --rm -p 8080:8080 -p 50051:50051 ordermesh:0.1.0
#
# Stages: cargo-chef turns the manifests into a recipe, the dependencies are
# built from the recipe alone (a layer that changes only with Cargo.toml /
# Cargo.lock), then the workspace's own code; the runtime image is distroless
# (glibc and CA certificates, no shell), running as an unprivileged user.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --package ordermesh --bin ordermesh
COPY . .
# Stripped (`install -s`): the symbols are a quarter of the binary, and a
# panic's message names its location without them.
RUN cargo build --release --locked --package ordermesh --bin ordermesh \
    && install -s -D -m 0755 target/release/ordermesh /out/ordermesh

# bookworm's glibc, matching the builder.
FROM gcr.io/distroless/cc-debian12:nonroot
# The workspace's version, which the chart's appVersion also carries
# (.ci/image_checks.py holds the three together).
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ordermesh" \
      org.opencontainers.image.description="Order, inventory and payment services behind one gateway (REST/JSON, grpc-web, gRPC), with a proxyless mesh and events on NATS JetStream" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ordermesh /usr/local/bin/ordermesh
# The nonroot user's home is writable: `up` keeps its SQLite files in ./data.
WORKDIR /home/nonroot
USER 65532:65532
EXPOSE 8080 50051 50052 50053
ENTRYPOINT ["ordermesh"]
CMD ["up", "--host", "0.0.0.0"]
