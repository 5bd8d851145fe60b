//! Native gRPC and grpc-web on the gateway's port.
//!
//! A gRPC call is not decoded: after admission (the same scopes and rate
//! limits as REST, keyed by the RPC path) its HTTP/2 request is forwarded as
//! is, with the verified identity and a bounded deadline added, to the
//! service's mesh channel, and the response (trailers included) streams
//! back. grpc-web (binary and text) is translated to gRPC in front of this by
//! `tonic-web`, so browsers reach exactly the same path. Each request
//! message is held to the REST body limit as it streams through
//! ([`frames`]). The gateway answers
//! `grpc.health.v1` and reflection itself (open, as probes and grpcurl need
//! them) for every public service.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tonic::body::Body;
use tower::{Service, ServiceExt};

use ordermesh_mesh::grpc_timeout;

use crate::Shared;
use crate::edge::forward_identity;

pub mod frames;

/// Whether a request is gRPC or grpc-web (by content type).
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Services the gateway answers without admission.
fn is_open(service: &str) -> bool {
    matches!(
        service,
        "grpc.health.v1.Health"
            | "grpc.reflection.v1.ServerReflection"
            | "grpc.reflection.v1alpha.ServerReflection"
    )
}

/// The forwarding service, behind `tonic_web::GrpcWebLayer`.
#[derive(Clone)]
pub struct Proxy {
    pub shared: Arc<Shared>,
}

impl Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        let arrival = request.extensions().get::<crate::metrics::Arrival>().copied();
        let route = crate::metrics::grpc_route(request.uri().path());
        Box::pin(async move {
            let response = forward(&shared, request)
                .await
                .unwrap_or_else(|status| status.into_http());
            Ok(crate::metrics::observe_grpc(response, arrival, route))
        })
    }
}

async fn forward(shared: &Shared, mut request: Request<Body>) -> Result<Response<Body>, tonic::Status> {
    let path = request.uri().path().to_owned();
    let service = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map(|(service, _)| service.to_owned())
        .ok_or_else(|| tonic::Status::unimplemented(format!("{path} is not a gRPC method path")))?;
    let upstream = shared
        .upstreams
        .for_service(&service)
        .ok_or_else(|| tonic::Status::unimplemented(format!("{service} is not served by the gateway")))?;
    if !is_open(&service) {
        let peer = crate::rest::peer(request.extensions());
        let admitted = match shared.guard.admit(&path, request.headers(), peer).await {
            Ok(admitted) => admitted,
            Err(status) => {
                crate::rest::drain(request.into_body(), shared.max_body_bytes).await;
                return Err(status);
            }
        };
        forward_identity(request.headers_mut(), admitted.principal.as_ref());
        request.extensions_mut().insert(admitted.caller);
        bound_deadline(request.headers_mut(), shared.default_timeout, shared.max_timeout);
        // The body limit, per message, as for REST bodies.
        let (parts, body) = request.into_parts();
        let failure = frames::BodyFailure::default();
        request = Request::from_parts(
            parts,
            frames::limit(body, shared.max_body_bytes, failure.clone()).await?,
        );
        let answer = upstream.oneshot(request).await;
        // A body that broke on the way is the caller's error, whatever the
        // upstream connection made of it.
        return match failure.take() {
            Some(status) => Err(status),
            None => answer,
        };
    }
    upstream.oneshot(request).await
}

/// Sets `grpc-timeout` to the default when the caller sent none, and caps it.
fn bound_deadline(headers: &mut http::HeaderMap, default: Duration, max: Duration) {
    let asked = headers
        .get(grpc_timeout::GRPC_TIMEOUT)
        .and_then(grpc_timeout::parse);
    let timeout = asked.unwrap_or(default).min(max);
    headers.insert(grpc_timeout::GRPC_TIMEOUT, grpc_timeout::encode(timeout));
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn grpc_deadlines_get_a_default_and_a_cap() {
        let default = Duration::from_secs(10);
        let max = Duration::from_secs(30);
        let mut headers = http::HeaderMap::new();
        let bounded = |headers: &mut http::HeaderMap| {
            bound_deadline(headers, default, max);
            grpc_timeout::parse(&headers["grpc-timeout"]).expect("a valid grpc-timeout")
        };
        assert_eq!(bounded(&mut headers), default);
        headers.insert("grpc-timeout", HeaderValue::from_static("2S"));
        assert_eq!(bounded(&mut headers), Duration::from_secs(2));
        headers.insert("grpc-timeout", HeaderValue::from_static("5H"));
        assert_eq!(bounded(&mut headers), max);
        headers.insert("grpc-timeout", HeaderValue::from_static("garbage"));
        assert_eq!(
            bounded(&mut headers),
            default,
            "an unreadable deadline gets the default"
        );
        headers.insert("grpc-timeout", HeaderValue::from_static("123456789S"));
        assert_eq!(bounded(&mut headers), default, "more than 8 digits is unreadable");
    }
}
