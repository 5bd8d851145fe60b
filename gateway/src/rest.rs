//! REST/JSON → gRPC: find the binding, admit the caller, assemble the request
//! message, call the service through the mesh, write the answer as JSON
//! (unary), newline-delimited JSON or Server-Sent Events (server streaming,
//! chosen by `Accept`), or the error as `google.rpc.Status` JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use prost_reflect::DynamicMessage;

use crate::Shared;
use crate::edge::{Admitted, forward_identity};
use crate::error::{self, EdgeError};
use crate::json;
use crate::rules::Binding;

/// The header a REST caller sets its deadline with: `250ms`, `5s`, `1.5s` or
/// a bare number of seconds.
pub const TIMEOUT_HEADER: &str = "x-request-timeout";

/// Answers a REST request; the response names the route that answered
/// ([`crate::metrics::Route`]).
pub async fn handle(State(shared): State<Arc<Shared>>, request: Request<Body>) -> Response<Body> {
    use axum::response::IntoResponse;
    let peer = peer(request.extensions());
    let path = request.uri().path().to_owned();
    // HEAD is GET without the body (RFC 9110, 9.3.2): routed as GET, and
    // the server sends the headers only.
    let method = if request.method() == http::Method::HEAD {
        http::Method::GET
    } else {
        request.method().clone()
    };
    let Some((binding, variables)) = shared.route(&method, &path) else {
        return no_route(&shared, request.method(), &path).into_response();
    };
    let route = format!("{} {}", binding.verb, binding.template);
    let mut response = call(&shared, peer, binding, variables, request)
        .await
        .into_response();
    response.extensions_mut().insert(crate::metrics::Route(route));
    response
}

async fn call(
    shared: &Shared,
    peer: Option<std::net::IpAddr>,
    binding: &Binding,
    variables: crate::template::Captures,
    request: Request<Body>,
) -> Result<Response<Body>, EdgeError> {
    let rpc = binding.rpc_path();
    let admitted = match shared.guard.admit(&rpc, request.headers(), peer).await {
        Ok(admitted) => admitted,
        Err(status) => {
            drain(request.into_body(), shared.max_body_bytes).await;
            return Err(status.into());
        }
    };
    let timeout = deadline(request.headers(), shared.default_timeout, shared.max_timeout)?;
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout(
        shared.body_read_timeout,
        axum::body::to_bytes(body, shared.max_body_bytes),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return Err(EdgeError::too_large(shared.max_body_bytes)),
        Err(_) => return Err(EdgeError::body_timeout(shared.body_read_timeout)),
    };
    let message = json::request(binding, variables, parts.uri.query(), &body, shared.json)?;
    let grpc_request = outgoing(message, &parts.headers, &admitted, timeout);
    if binding.method.is_server_streaming() {
        let stream = shared
            .upstreams
            .server_streaming(&binding.method, grpc_request)
            .await?
            .into_inner();
        Ok(streaming(
            binding,
            &parts.headers,
            stream,
            tokio::time::Instant::now() + timeout,
        ))
    } else {
        let response = shared.upstreams.unary(&binding.method, grpc_request).await?;
        let json = json::response(response.get_ref(), binding.response_body.as_deref())?;
        Ok(json_response(StatusCode::OK, &json))
    }
}

/// 405 (with `Allow`) when another verb binds this path, else 404; both
/// with a `google.rpc.Status` body.
fn no_route(shared: &Shared, method: &Method, path: &str) -> EdgeError {
    let allowed: std::collections::BTreeSet<&str> = shared
        .routes
        .iter()
        .filter(|b| b.template.matches(path).is_some())
        .map(|b| b.verb.as_str())
        .collect();
    if allowed.is_empty() {
        return tonic::Status::not_found(format!("no route for {method} {path}")).into();
    }
    let allow = allowed.into_iter().collect::<Vec<_>>().join(", ");
    EdgeError::method_not_allowed(method, path, &allow)
}

/// Any verb but GET on a route the gateway serves itself (the composed
/// read, the OpenAPI document): the same 405 as a transcoded route's, not
/// the router's empty one.
pub async fn get_only(request: Request<Body>) -> EdgeError {
    EdgeError::method_not_allowed(request.method(), request.uri().path(), "GET")
}

/// Reads and drops a refused request's body (up to `max` bytes, for at most
/// a second) before the refusal is sent. An HTTP/1.1 client that writes its
/// headers and body separately (Node's grpc-web transport) would otherwise
/// find the connection closed under its body write (EPIPE) and never see the
/// refusal.
pub async fn drain<B>(body: B, max: usize)
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, max);
    let _ = tokio::time::timeout(Duration::from_secs(1), limited.collect()).await;
}

/// The caller's address, when the server recorded it.
pub fn peer(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// The downstream deadline from `X-Request-Timeout`, else the default,
/// never above the maximum.
pub fn deadline(headers: &HeaderMap, default: Duration, max: Duration) -> Result<Duration, tonic::Status> {
    let Some(value) = headers.get(TIMEOUT_HEADER) else {
        return Ok(default.min(max));
    };
    let text = value.to_str().unwrap_or("").trim();
    let parsed = if let Some(ms) = text.strip_suffix("ms") {
        ms.parse::<f64>().ok().map(|ms| ms / 1000.0)
    } else {
        text.strip_suffix('s').unwrap_or(text).parse::<f64>().ok()
    };
    match parsed {
        Some(secs) if secs > 0.0 => Ok(Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))),
        _ => Err(error::bad_field(
            TIMEOUT_HEADER,
            format!("{text:?} is not a duration (e.g. 250ms, 5s)"),
        )),
    }
}

/// The gRPC request: the message, the verified identity (and the caller the
/// mesh counts failures by), the request id and the deadline (tonic writes it as `grpc-timeout`, which the mesh's deadline
/// layer and the service honour).
pub fn outgoing(
    message: DynamicMessage,
    incoming: &HeaderMap,
    admitted: &Admitted,
    timeout: Duration,
) -> tonic::Request<DynamicMessage> {
    let mut headers = HeaderMap::new();
    if let Some(id) = incoming.get(crate::REQUEST_ID) {
        headers.insert(crate::REQUEST_ID, id.clone());
    }
    forward_identity(&mut headers, admitted.principal.as_ref());
    let mut extensions = tonic::Extensions::default();
    extensions.insert(admitted.caller);
    let mut request = tonic::Request::from_parts(
        tonic::metadata::MetadataMap::from_headers(headers),
        extensions,
        message,
    );
    request.set_timeout(timeout);
    request
}

pub fn json_response(status: StatusCode, json: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::from(serde_json::to_vec(json).unwrap_or_default()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Server streaming over HTTP/1.1 or 2: one JSON document per message, as
/// NDJSON (`{"result": ...}` lines, grpc-gateway's shape) or as SSE
/// (`data:` events) when the client accepts `text/event-stream`. A failure
/// after the first message can no longer change the HTTP status, so it is
/// sent in-band (`{"error": Status}` or an `event: error`) and ends the stream.
/// So does the request's deadline: the stream ends there with
/// DEADLINE_EXCEEDED (the service ends its side too, since the deadline
/// travelled with the call; this holds whatever the service does).
fn streaming(
    binding: &Binding,
    headers: &HeaderMap,
    stream: tonic::Streaming<DynamicMessage>,
    deadline: tokio::time::Instant,
) -> Response<Body> {
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    let response_body = binding.response_body.clone();
    let expired = futures::stream::once(tokio::time::sleep_until(deadline)).map(|()| {
        Err(tonic::Status::deadline_exceeded(
            "the stream reached the request's deadline",
        ))
    });
    let frames = futures::stream::select(
        stream.map(Some).chain(futures::stream::once(async { None })),
        expired.map(Some),
    )
    // The upstream's end (None) ends the response at once.
    .take_while(|item| futures::future::ready(item.is_some()))
    .filter_map(futures::future::ready)
    .map(move |item| {
        let (kind, json) = match item.and_then(|m| json::response(&m, response_body.as_deref())) {
            Ok(json) => ("result", json),
            Err(status) => ("error", error::status_json(&status)),
        };
        let text = if sse {
            let event = if kind == "error" { "event: error\n" } else { "" };
            format!("{event}data: {json}\n\n")
        } else {
            format!("{}\n", serde_json::json!({ kind: json }))
        };
        // An error frame is the last: a `None` after it ends the response
        // at once, whether or not the upstream ever sends another item (a
        // tail of an idle stream would not).
        let end = (kind == "error").then_some(None);
        futures::stream::iter(std::iter::once(Some(Bytes::from(text))).chain(end))
    })
    .flatten()
    .take_while(|frame| futures::future::ready(frame.is_some()))
    .filter_map(|frame| futures::future::ready(frame.map(Ok::<_, std::convert::Infallible>)));
    let mut response = Response::new(Body::from_stream(frames));
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_parse_and_are_capped() {
        let default = Duration::from_secs(10);
        let max = Duration::from_secs(30);
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(TIMEOUT_HEADER, HeaderValue::from_str(value).expect("header"));
            deadline(&headers, default, max)
        };
        assert_eq!(
            deadline(&HeaderMap::new(), default, max).expect("default"),
            default
        );
        assert_eq!(with("250ms").expect("ms"), Duration::from_millis(250));
        assert_eq!(with("1.5s").expect("s"), Duration::from_millis(1500));
        assert_eq!(with("2").expect("bare"), Duration::from_secs(2));
        assert_eq!(with("3600s").expect("capped"), max);
        assert_eq!(with("1e300").expect("huge, capped, no overflow"), max);
        for bad in ["soon", "-1s", "0", ""] {
            let status = with(bad).expect_err(bad);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(TIMEOUT_HEADER));
        }
    }
}
