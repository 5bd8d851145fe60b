//! What the mesh measures, under the names docs/metrics.md lists.
//!
//! Two kinds of figures, recorded two ways:
//! - **Per call** (RED): each call's status and time, recorded as it ends
//!   by the server layer [`RpcMetricsLayer`] and by the client stack's top
//!   ([`crate::stack::MeshChannel`], through [`ClientCall`]).
//! - **Per downstream state** (breaker state, endpoints, retries, faults):
//!   kept by the handles themselves, as they already are for the admin API,
//!   and copied into the recorder when metrics are scraped
//!   ([`crate::stack::Mesh::export_metrics`]). Nothing on the call path
//!   touches the recorder for them.
//!
//! Through the `metrics` facade: with no recorder installed (a process
//! started without `--metrics-listen`, the in-process tests) every call is
//! a no-op.
//!
//! Label values are bounded: a server labels a call with its gRPC service
//! and method only when the path names a method of the system's contracts
//! (or health, reflection), else `unknown`, so a caller sending made-up
//! paths cannot grow the exposition.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::classify::{Classifier, code_name};
use crate::refused::NotSent;

pub const RPC_SERVER_REQUESTS: &str = "ordermesh_rpc_server_requests_total";
pub const RPC_SERVER_DURATION: &str = "ordermesh_rpc_server_duration_seconds";
pub const RPC_CLIENT_REQUESTS: &str = "ordermesh_rpc_client_requests_total";
pub const RPC_CLIENT_DURATION: &str = "ordermesh_rpc_client_duration_seconds";
pub const RETRIES: &str = "ordermesh_mesh_retries_total";
pub const RETRY_BUDGET_EXHAUSTED: &str = "ordermesh_mesh_retry_budget_exhausted_total";
pub const REFUSED: &str = "ordermesh_mesh_refused_total";
pub const FAULTS_INJECTED: &str = "ordermesh_mesh_faults_injected_total";
pub const BREAKER_STATE: &str = "ordermesh_mesh_breaker_state";
pub const BREAKER_TRANSITIONS: &str = "ordermesh_mesh_breaker_transitions_total";
pub const ENDPOINTS: &str = "ordermesh_mesh_endpoints";
pub const LOAD_SHED: &str = "ordermesh_mesh_load_shed_total";

/// The label value for a path that names no method of the system.
pub const UNKNOWN: &str = "unknown";

/// Every method path the system's servers answer: the contracts' methods,
/// health and both reflection versions.
static KNOWN_METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    use prost::Message;
    let mut known: HashSet<String> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let set =
        prost_types::FileDescriptorSet::decode(ordermesh_proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let name = service.name.unwrap_or_default();
            for method in service.method {
                known.insert(format!("/{package}.{name}/{}", method.name.unwrap_or_default()));
            }
        }
    }
    known
});

/// The (service, method) labels of a request path: the path's parts when
/// it names a known method, else `unknown` twice.
pub fn method_labels(path: &str) -> (String, String) {
    if KNOWN_METHODS.contains(path)
        && let Some((service, method)) = path.trim_start_matches('/').split_once('/')
    {
        return (service.to_owned(), method.to_owned());
    }
    (UNKNOWN.to_owned(), UNKNOWN.to_owned())
}

/// The method name of a path a client of this process sends (its own
/// generated clients: bounded by construction).
fn client_method(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(UNKNOWN).to_owned()
}

/// Only the code of a status matters here; a classifier is what
/// [`crate::classify::observe`] reads trailers with.
static ANY_CLASSIFIER: LazyLock<Arc<Classifier>> = LazyLock::new(|| Arc::new(Classifier::default()));

/// Calls `record` with the response's gRPC code when it is known: at once
/// for a trailers-only answer, else when the body's trailers arrive.
pub(crate) fn on_code(
    response: Response<Body>,
    record: impl FnOnce(Code) + Send + 'static,
) -> Response<Body> {
    crate::classify::observe(response, ANY_CLASSIFIER.clone(), move |outcome| {
        record(outcome.code())
    })
}

// === server side ===

/// Counts every call a server answers and times it to its status.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RpcMetrics<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let start = Instant::now();
        let (service, method) = method_labels(request.uri().path());
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(on_code(response, move |code| {
                metrics::counter!(
                    RPC_SERVER_REQUESTS,
                    "rpc_service" => service.clone(),
                    "rpc_method" => method.clone(),
                    "grpc_code" => code_name(code),
                )
                .increment(1);
                metrics::histogram!(RPC_SERVER_DURATION, "rpc_service" => service, "rpc_method" => method)
                    .record(start.elapsed().as_secs_f64());
            }))
        })
    }
}

/// A call the server's concurrency limit refused.
pub fn load_shed(path: &str) {
    let (service, _) = method_labels(path);
    metrics::counter!(LOAD_SHED, "rpc_service" => service).increment(1);
}

// === client side ===

/// One call through a downstream's stack, measured from its start.
pub struct ClientCall {
    caller: String,
    downstream: String,
    method: String,
    start: Instant,
}

impl ClientCall {
    pub fn start(caller: &str, downstream: &str, path: &str) -> Self {
        Self {
            caller: caller.to_owned(),
            downstream: downstream.to_owned(),
            method: client_method(path),
            start: Instant::now(),
        }
    }

    /// The call ended with `code` (the mesh's own answer, or a transport
    /// error made a status).
    pub fn ended(self, code: Code, not_sent: Option<NotSent>) {
        if let Some(reason) = not_sent {
            let reason = match reason {
                NotSent::Breaker { .. } => "breaker",
                NotSent::Fault => "fault",
                NotSent::Deadline => "deadline",
            };
            metrics::counter!(
                REFUSED,
                "caller" => self.caller.clone(),
                "downstream" => self.downstream.clone(),
                "reason" => reason,
            )
            .increment(1);
        }
        metrics::counter!(
            RPC_CLIENT_REQUESTS,
            "caller" => self.caller.clone(),
            "downstream" => self.downstream.clone(),
            "rpc_method" => self.method.clone(),
            "grpc_code" => code_name(code),
        )
        .increment(1);
        metrics::histogram!(
            RPC_CLIENT_DURATION,
            "caller" => self.caller,
            "downstream" => self.downstream,
            "rpc_method" => self.method,
        )
        .record(self.start.elapsed().as_secs_f64());
    }

    /// A response from the server: recorded when its status arrives.
    pub fn answered(self, response: Response<Body>) -> Response<Body> {
        on_code(response, move |code| self.ended(code, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_systems_methods_are_labelled_by_name() {
        assert_eq!(
            method_labels("/ordermesh.order.v1.OrderService/CreateOrder"),
            ("ordermesh.order.v1.OrderService".into(), "CreateOrder".into())
        );
        assert_eq!(
            method_labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health".into(), "Check".into())
        );
        for made_up in [
            "/ordermesh.order.v1.OrderService/Nope",
            "/x.Y/Z",
            "/",
            "",
            "/ordermesh.order.v1.OrderService/CreateOrder/extra",
        ] {
            assert_eq!(
                method_labels(made_up),
                (UNKNOWN.into(), UNKNOWN.into()),
                "{made_up}"
            );
        }
    }
}
