//! The one classifier of call outcomes, shared by the circuit breaker, the
//! retry layer and outlier ejection: what a gRPC status means for the health
//! of the server that produced it.
//!
//! A gRPC status travels in the `grpc-status` header of a trailers-only
//! response (how servers answer errors) or in the trailers after the body.
//! [`ObservedBody`] reads the trailers as the body finishes, so a layer that
//! wraps a response body learns the real outcome, not just "headers came".

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;

/// What a finished call says about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// OK.
    Success,
    /// The caller's fault (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
    /// ...): the server is healthy; breakers never count these.
    CallerError(Code),
    /// The server's (or the network's) fault.
    ServerFault(Code),
}

impl Outcome {
    pub fn is_server_fault(self) -> bool {
        matches!(self, Outcome::ServerFault(_))
    }

    pub fn code(self) -> Code {
        match self {
            Outcome::Success => Code::Ok,
            Outcome::CallerError(code) | Outcome::ServerFault(code) => code,
        }
    }
}

/// Which status codes count as server faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classifier {
    server_fault_codes: Vec<Code>,
}

impl Default for Classifier {
    /// Transport errors, UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN,
    /// RESOURCE_EXHAUSTED and DATA_LOSS.
    fn default() -> Self {
        Self {
            server_fault_codes: vec![
                Code::Unavailable,
                Code::DeadlineExceeded,
                Code::Internal,
                Code::Unknown,
                Code::ResourceExhausted,
                Code::DataLoss,
            ],
        }
    }
}

impl Classifier {
    pub fn new(server_fault_codes: Vec<Code>) -> Self {
        Self { server_fault_codes }
    }

    /// The codes counted as server faults.
    pub fn codes(&self) -> &[Code] {
        &self.server_fault_codes
    }

    pub fn classify(&self, code: Code) -> Outcome {
        if code == Code::Ok {
            Outcome::Success
        } else if self.server_fault_codes.contains(&code) {
            Outcome::ServerFault(code)
        } else {
            Outcome::CallerError(code)
        }
    }

    /// A transport error (no response): a server fault, unless this client
    /// refused the response itself ([`refused_here`]), which says nothing
    /// about the server's health.
    pub fn transport_error(&self, error: &(dyn std::error::Error + 'static)) -> Outcome {
        if refused_here(error) {
            Outcome::CallerError(Code::ResourceExhausted)
        } else {
            Outcome::ServerFault(Code::Unavailable)
        }
    }
}

/// Whether this client's HTTP/2 stack refused one response (a stream reset
/// that h2 itself sent: the response's header block over this client's
/// limit, or a frame it would not take), on a connection that stays healthy,
/// as opposed to a connection or stream the server broke. Such a failure
/// belongs to that request (it asked for an answer too large to relay), not
/// to the server. A connection-level error (GOAWAY) still counts against the
/// server.
pub fn refused_here(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_library() && h2.is_reset();
        }
        source = error.source();
    }
    false
}

/// The `grpc-status` in a header map (response headers or trailers).
pub fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

/// Parses a gRPC code name as written in policy files (`UNAVAILABLE`,
/// `DEADLINE_EXCEEDED`, ...).
pub fn parse_code(name: &str) -> Option<Code> {
    (0..=16).map(Code::from_i32).find(|code| code_name(*code) == name)
}

/// The policy-file name of a code (inverse of [`parse_code`]).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Told the outcome of a call exactly once, when it is known.
pub trait OnOutcome: Send + 'static {
    fn outcome(self: Box<Self>, outcome: Outcome);
}

impl<F: FnOnce(Outcome) + Send + 'static> OnOutcome for F {
    fn outcome(self: Box<Self>, outcome: Outcome) {
        self(outcome)
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports the call's outcome when its trailers
    /// arrive (or when it ends without any, which gRPC treats as INTERNAL).
    /// A body dropped before it finished reports nothing: the caller gave up,
    /// which says nothing about the server.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        classifier: Arc<Classifier>,
        report: Option<Box<dyn OnOutcome>>,
    }
}

impl<B> ObservedBody<B> {
    pub fn new(inner: B, classifier: Arc<Classifier>, report: Box<dyn OnOutcome>) -> Self {
        Self {
            inner,
            classifier,
            report: Some(report),
        }
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + 'static,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let outcome = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|trailers| {
                this.classifier
                    .classify(grpc_status(trailers).unwrap_or(Code::Unknown))
            }),
            Poll::Ready(Some(Err(error))) => Some(this.classifier.transport_error(error)),
            Poll::Ready(None) => Some(this.classifier.classify(Code::Internal)),
            Poll::Pending => None,
        };
        if let Some(outcome) = outcome
            && let Some(report) = this.report.take()
        {
            report.outcome(outcome);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reports a response's outcome: at once when the status is in the headers
/// (a trailers-only response), else when the body's trailers arrive.
pub fn observe(
    response: http::Response<tonic::body::Body>,
    classifier: Arc<Classifier>,
    report: impl FnOnce(Outcome) + Send + 'static,
) -> http::Response<tonic::body::Body> {
    if let Some(code) = grpc_status(response.headers()) {
        report(classifier.classify(code));
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = ObservedBody::new(body, classifier, Box::new(report));
    http::Response::from_parts(parts, tonic::body::Body::new(body))
}

/// A trailers-only gRPC response carrying `status`: what a layer returns
/// instead of calling the server (open breaker, injected abort, exhausted
/// deadline).
pub fn status_response(status: tonic::Status) -> http::Response<tonic::body::Body> {
    status.into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_errors_are_never_server_faults() {
        let c = Classifier::default();
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::AlreadyExists,
            Code::PermissionDenied,
        ] {
            assert_eq!(c.classify(code), Outcome::CallerError(code));
        }
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::DataLoss,
        ] {
            assert!(c.classify(code).is_server_fault(), "{code:?}");
        }
        assert_eq!(c.classify(Code::Ok), Outcome::Success);
    }

    #[test]
    fn code_names_round_trip() {
        for i in 0..17 {
            let code = Code::from_i32(i);
            assert_eq!(parse_code(code_name(code)), Some(code));
        }
        assert_eq!(parse_code("unavailable"), None);
    }

    #[test]
    fn status_is_read_from_headers() {
        let response = status_response(tonic::Status::unavailable("down"));
        assert_eq!(grpc_status(response.headers()), Some(Code::Unavailable));
    }
}
