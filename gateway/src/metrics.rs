//! What the gateway measures (docs/metrics.md): every request by protocol,
//! route and status, with its latency; refusals by authentication, by
//! authorization and by rate limit.
//!
//! A request's protocol is known at the edge (by its content type); its
//! route only once it is matched: a REST handler leaves its route on the
//! response ([`Route`]), a gRPC call is labelled with its method path when
//! that names a method of the system. Anything else is `unmatched`, so the
//! label values are bounded whatever paths callers make up.
//!
//! REST is recorded when the response's headers leave (its status is
//! known then); gRPC and grpc-web when the call's status arrives, which
//! for a successful call is in the trailers after the body: it is recorded
//! inside the grpc-web translation, where the trailers are still trailers.

use std::time::Instant;

use http::Request;

pub const REQUESTS: &str = "ordermesh_gateway_requests_total";
pub const DURATION: &str = "ordermesh_gateway_request_duration_seconds";
pub const AUTH_REFUSALS: &str = "ordermesh_gateway_auth_refusals_total";
pub const RATE_LIMITED: &str = "ordermesh_gateway_rate_limited_total";

/// The route label of anything not matched to a route.
pub const UNMATCHED: &str = "unmatched";

/// How a request reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Grpc,
    GrpcWeb,
}

impl Protocol {
    pub fn of<B>(request: &Request<B>) -> Self {
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.starts_with("application/grpc-web") {
            Protocol::GrpcWeb
        } else if content_type.starts_with("application/grpc") {
            Protocol::Grpc
        } else {
            Protocol::Rest
        }
    }

    fn label(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc_web",
        }
    }
}

/// When the gateway first saw the request, and how it came: a request
/// extension set at the edge.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub protocol: Protocol,
    pub at: Instant,
}

/// The REST route that answered (`GET /v1/orders/{order_id}`): a response
/// extension.
#[derive(Debug, Clone)]
pub struct Route(pub String);

/// Records one finished request.
pub fn record(arrival: Arrival, route: &str, status: &str) {
    let (protocol, route) = (arrival.protocol.label(), route.to_owned());
    metrics::counter!(
        REQUESTS,
        "protocol" => protocol,
        "route" => route.clone(),
        "status" => status.to_owned(),
    )
    .increment(1);
    metrics::histogram!(DURATION, "protocol" => protocol, "route" => route)
        .record(arrival.at.elapsed().as_secs_f64());
}

/// The route label of a gRPC method path: itself when the system serves
/// it, else [`UNMATCHED`].
pub fn grpc_route(path: &str) -> String {
    match ordermesh_mesh::metrics::method_labels(path).0.as_str() {
        ordermesh_mesh::metrics::UNKNOWN => UNMATCHED.to_owned(),
        _ => path.to_owned(),
    }
}

/// A gRPC or grpc-web response, recorded when its status is known.
pub fn observe_grpc(
    response: http::Response<tonic::body::Body>,
    arrival: Option<Arrival>,
    route: String,
) -> http::Response<tonic::body::Body> {
    let arrival = arrival.unwrap_or(Arrival {
        protocol: Protocol::Grpc,
        at: Instant::now(),
    });
    ordermesh_mesh::classify::observe(response, Default::default(), move |outcome| {
        record(
            arrival,
            &route,
            ordermesh_mesh::classify::code_name(outcome.code()),
        )
    })
}

/// Why admission refused a request: `missing_token`, `invalid_token`,
/// `expired_token`, `forbidden`.
pub fn auth_refused(reason: &'static str) {
    metrics::counter!(AUTH_REFUSALS, "reason" => reason).increment(1);
}

/// A request a rate limit refused on `rpc` (a configured RPC path).
pub fn rate_limited(rpc: &str) {
    metrics::counter!(RATE_LIMITED, "route" => rpc.to_owned()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_is_the_content_types() {
        let with = |ct: &str| {
            Protocol::of(
                &Request::builder()
                    .header("content-type", ct)
                    .body(())
                    .expect("request"),
            )
        };
        assert_eq!(with("application/grpc"), Protocol::Grpc);
        assert_eq!(with("application/grpc+proto"), Protocol::Grpc);
        assert_eq!(with("application/grpc-web+proto"), Protocol::GrpcWeb);
        assert_eq!(with("application/grpc-web-text"), Protocol::GrpcWeb);
        assert_eq!(with("application/json"), Protocol::Rest);
    }

    #[test]
    fn made_up_grpc_paths_are_unmatched() {
        assert_eq!(
            grpc_route("/ordermesh.order.v1.OrderService/GetOrder"),
            "/ordermesh.order.v1.OrderService/GetOrder"
        );
        assert_eq!(grpc_route("/ordermesh.order.v1.OrderService/Steal"), UNMATCHED);
        assert_eq!(grpc_route("/a/b"), UNMATCHED);
    }
}
