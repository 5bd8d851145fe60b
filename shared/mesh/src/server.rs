//! Server-side protection:
//! - a concurrency limit that sheds load instead of queueing it. A call
//!   beyond the limit is answered at once with `RESOURCE_EXHAUSTED`, so a
//!   saturated server stays responsive and callers' breakers and budgets see
//!   the pressure (tower's `LoadShed` would answer with an error the
//!   transport turns into a reset, not a gRPC status);
//! - a bound on what an error may carry ([`BoundErrorsLayer`]): an error's
//!   message and details travel in HTTP/2 headers, which the caller's client
//!   refuses beyond its header-list limit. An error a request provokes must
//!   never be too large to relay, or one caller could turn a refusal of its
//!   own request into a transport failure that looks like an outage to
//!   everyone behind the same breaker;
//! - an accept that survives running out of file descriptors ([`accept`]),
//!   for the listeners that accept their own connections (TLS, the
//!   gateway's).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::sync::Semaphore;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::classify::status_response;

/// The next connection on `listener`, with TCP_NODELAY set (gRPC writes a
/// response's headers, data and trailers as separate small writes, and with
/// Nagle's algorithm the last waits for the peer's delayed ACK). A failed
/// accept (EMFILE and the like) is logged and retried after 100 ms rather
/// than spun on or returned: the listener stays up.
pub async fn accept(listener: &tokio::net::TcpListener) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, remote)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, remote);
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The largest header block a mesh client accepts in a response (HTTP/2
/// `SETTINGS_MAX_HEADER_LIST_SIZE`).
pub const MAX_RESPONSE_HEADER_LIST_BYTES: u32 = 32 * 1024;
/// The most an error's message may take (`grpc-message`, percent-encoded).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 2 * 1024;
/// The most an error's details may take (`grpc-status-details-bin`, base64):
/// with the message and the other headers, well within what clients take.
pub const MAX_ERROR_DETAILS_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    pub fn new(concurrency_limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency_limit)),
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            permits: self.permits.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B> Service<Request<B>> for Shed<S>
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
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let path = request.uri().path().to_owned();
            crate::metrics::load_shed(&path);
            return Box::pin(async move {
                tracing::warn!(%path, "shedding load: concurrency limit reached");
                Ok(status_response(tonic::Status::resource_exhausted(
                    "server overloaded, retry later",
                )))
            });
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(permit);
            response
        })
    }
}

// === impl BoundErrorsLayer ===

/// Keeps every error a server sends (a trailers-only response) within
/// [`MAX_ERROR_MESSAGE_BYTES`] and [`MAX_ERROR_DETAILS_BYTES`]: a longer
/// message is cut, details beyond the bound are dropped (the message says
/// so). The services bound what they report at the source; this is the net
/// under every handler, and it logs, since reaching it is a service's bug.
#[derive(Debug, Clone, Copy, Default)]
pub struct BoundErrorsLayer;

impl<S> Layer<S> for BoundErrorsLayer {
    type Service = BoundErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BoundErrors { inner }
    }
}

#[derive(Debug, Clone)]
pub struct BoundErrors<S> {
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for BoundErrors<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            bound_error_headers(response.headers_mut(), &path);
            Ok(response)
        })
    }
}

/// Cuts `grpc-message` and drops oversized `grpc-status-details-bin` in
/// place; true when it changed anything.
pub fn bound_error_headers(headers: &mut http::HeaderMap, path: &str) -> bool {
    let mut changed = false;
    let details = headers.get("grpc-status-details-bin").map(|v| v.len());
    if let Some(len) = details
        && len > MAX_ERROR_DETAILS_BYTES
    {
        headers.remove("grpc-status-details-bin");
        tracing::warn!(%path, bytes = len, "error details over the bound dropped");
        changed = true;
    }
    if let Some(message) = headers.get("grpc-message")
        && (message.len() > MAX_ERROR_MESSAGE_BYTES
            || details.is_some_and(|len| len > MAX_ERROR_DETAILS_BYTES))
    {
        let mut text = message.as_bytes().to_vec();
        if text.len() > MAX_ERROR_MESSAGE_BYTES {
            tracing::warn!(%path, bytes = text.len(), "error message over the bound cut");
            text.truncate(MAX_ERROR_MESSAGE_BYTES);
            // Never end inside a percent-escape.
            if let Some(cut) = text.iter().rposition(|b| *b == b'%')
                && cut + 3 > text.len()
            {
                text.truncate(cut);
            }
            text.extend_from_slice(b"%E2%80%A6"); // "…"
        }
        if details.is_some_and(|len| len > MAX_ERROR_DETAILS_BYTES) {
            text.extend_from_slice(b" (details omitted: over the size bound)");
        }
        if let Ok(value) = http::HeaderValue::from_bytes(&text) {
            headers.insert("grpc-message", value);
        }
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(message: &str, details: usize) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_str(message).expect("ascii"),
        );
        if details > 0 {
            let value = "A".repeat(details);
            headers.insert(
                "grpc-status-details-bin",
                http::HeaderValue::from_str(&value).expect("ascii"),
            );
        }
        headers
    }

    #[test]
    fn errors_within_the_bound_pass_unchanged() {
        let mut h = headers("lines%5B0%5D: bad", MAX_ERROR_DETAILS_BYTES);
        let before = h.clone();
        assert!(!bound_error_headers(&mut h, "/x"));
        assert_eq!(h, before);
    }

    #[test]
    fn oversized_details_are_dropped_and_said_so() {
        let mut h = headers("bad", MAX_ERROR_DETAILS_BYTES + 1);
        assert!(bound_error_headers(&mut h, "/x"));
        assert!(h.get("grpc-status-details-bin").is_none());
        assert!(
            h["grpc-message"]
                .to_str()
                .expect("ascii")
                .starts_with("bad (details omitted")
        );
        assert_eq!(h["grpc-status"], "3");
    }

    #[test]
    fn long_messages_are_cut_outside_an_escape() {
        let long = "%41".repeat(MAX_ERROR_MESSAGE_BYTES);
        let mut h = headers(&long, 0);
        assert!(bound_error_headers(&mut h, "/x"));
        let cut = h["grpc-message"].as_bytes();
        assert!(cut.len() <= MAX_ERROR_MESSAGE_BYTES + 9, "{}", cut.len());
        let body = &cut[..cut.len() - 9];
        assert_eq!(body.len() % 3, 0, "whole escapes only");
        assert!(cut.ends_with(b"%E2%80%A6"));
    }

    #[test]
    fn the_bounds_fit_in_what_a_mesh_client_accepts() {
        let bounds = MAX_ERROR_MESSAGE_BYTES + MAX_ERROR_DETAILS_BYTES;
        assert!(
            bounds * 2 <= MAX_RESPONSE_HEADER_LIST_BYTES as usize,
            "room for every other header too"
        );
    }
}
