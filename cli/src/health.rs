//! `ordermesh health ADDRESS`: one `grpc.health.v1.Health/Check`, exit 0 when
//! the answer is SERVING and 1 otherwise.
//!
//! Why it exists: the container image is distroless (no shell, no curl, no
//! grpcurl), so `helm test` and container health checks run the binary itself
//! rather than pulling a second image. Kubelet probes do not need it: they
//! speak gRPC health natively.

use std::time::Duration;

use anyhow::Context;
use ordermesh_runtime::health::{Answer, check};

use crate::args::HealthArgs;

pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let address = if args.address.contains("://") {
        args.address.clone()
    } else {
        format!("http://{}", args.address)
    };
    let timeout = Duration::from_secs(args.timeout_secs);
    let status = tokio::time::timeout(timeout, check(&address, &args.service))
        .await
        .with_context(|| format!("{address}: no health answer within {}s", args.timeout_secs))??;
    let service = &args.service;
    match status {
        Answer::Serving => {
            println!("{address} service {service:?}: SERVING");
            Ok(())
        }
        other => anyhow::bail!("{address} service {service:?}: {}", other.as_str_name()),
    }
}
