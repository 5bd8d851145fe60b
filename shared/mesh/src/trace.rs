//! Spans of every gRPC call, on both sides, and the W3C trace context
//! between processes (`traceparent`, `tracestate` in the request headers).
//!
//! The spans are `tracing` spans with OpenTelemetry's semantic-convention
//! fields; `runtime::telemetry` exports them over OTLP when an endpoint is
//! configured. Without one nothing is exported and the context injected is
//! empty (an invalid context injects no header), so a process with tracing
//! off sends what it sent before.
//!
//! - Server side ([`ServerTraceLayer`]): the span's parent is the context
//!   extracted from the request's headers; its status code is recorded when
//!   the call's status is known (in the trailers, after the body).
//! - Client side ([`client_span`], used by the top of the client stack):
//!   the span is a child of whatever span the caller is in (a server span,
//!   a saga step), and its context goes out in the request's headers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use opentelemetry::propagation::{Extractor, Injector};
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Reads trace context from HTTP headers.
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes trace context into HTTP headers.
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The trace context a request carries (empty when it carries none).
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Puts `span`'s context into `headers` (nothing when tracing is off).
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(headers))
    });
}

/// The current span's context as a `traceparent` value (empty when
/// tracing is off), to keep with what the request started.
pub fn current_traceparent() -> String {
    let mut carrier = std::collections::HashMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.remove("traceparent").unwrap_or_default()
}

/// The context a stored `traceparent` value names (empty for none).
pub fn context_of(traceparent: &str) -> opentelemetry::Context {
    let mut carrier = std::collections::HashMap::new();
    if !traceparent.is_empty() {
        carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    }
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
}

/// Records `span`'s trace and span ids in its `trace_id` and `span_id`
/// fields (declared empty) when it is exported, so every log line inside it
/// names them; nothing when tracing is off.
pub fn record_ids(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt;
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", ids.trace_id().to_string());
        span.record("span_id", ids.span_id().to_string());
    }
}

/// Makes `parent` the parent of `span` (before it is first entered).
pub fn set_parent(span: &tracing::Span, parent: opentelemetry::Context) {
    let _ = span.set_parent(parent);
}

/// Links `span` (before it is first entered) to the span a stored
/// `traceparent` value names, if it names one.
pub fn add_link(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::TraceContextExt;
    let context = context_of(traceparent);
    let linked = context.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// The trace id of a `traceparent` value (`00-<trace id>-<span id>-<flags>`),
/// empty when it is not one.
pub fn trace_id_of(traceparent: &str) -> &str {
    let mut parts = traceparent.split('-');
    match (parts.next(), parts.next()) {
        (Some(_), Some(id)) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => id,
        _ => "",
    }
}

/// The span of a call this process makes to `downstream`.
pub fn client_span(downstream: &str, path: &str) -> tracing::Span {
    let (service, method) = split(path);
    tracing::info_span!(
        "rpc.client",
        otel.name = %format!("{service}/{method}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        server.address = %downstream,
        rpc.grpc.status_code = tracing::field::Empty,
        ordermesh.not_sent = tracing::field::Empty,
    )
}

/// Records a call's status on its span (client or server).
pub fn record_code(span: &tracing::Span, code: tonic::Code) {
    span.record("rpc.grpc.status_code", code as i64);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
}

/// `("pkg.Service", "Method")` of a known method path, else `unknown`
/// twice (the span names stay bounded as the metric labels do).
fn split(path: &str) -> (String, String) {
    crate::metrics::method_labels(path)
}

/// Opens a server span per call, as the child of the caller's context.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTraceLayer;

impl<S> Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for ServerTrace<S>
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
        let (service, method) = split(request.uri().path());
        let span = tracing::info_span!(
            "rpc.server",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let _ = span.set_parent(extract(request.headers()));
        record_ids(&span);
        let future = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let response = future.await?;
            Ok(crate::metrics::on_code(response, move |code| {
                record_code(&span, code)
            }))
        })
    }
}
