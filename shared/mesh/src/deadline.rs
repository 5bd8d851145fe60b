//! Deadlines that flow through the mesh.
//!
//! Server side, [`InheritDeadlineLayer`] turns an incoming call's
//! `grpc-timeout` into a deadline that every outgoing call made while
//! handling it can see (a task-local). Client side, [`DeadlineLayer`] gives
//! each outgoing call the smallest of: its own `grpc-timeout`, the inherited
//! deadline minus a safety margin, or the default timeout; a budget already
//! spent fails with `DEADLINE_EXCEEDED` without calling out.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tonic::body::Body;
use tower::{BoxError, Layer, Service};

use crate::classify::{grpc_status, status_response};
use crate::grpc_timeout::{self, GRPC_TIMEOUT};
use crate::refused::NotSent;

tokio::task_local! {
    static INCOMING_DEADLINE: Instant;
}

/// The deadline of the call being handled, if it had one.
pub fn incoming_deadline() -> Option<Instant> {
    INCOMING_DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Runs `future` as if handling a call that must finish by `deadline`.
pub async fn with_deadline<F: Future>(deadline: Instant, future: F) -> F::Output {
    INCOMING_DEADLINE.scope(deadline, future).await
}

// === impl InheritDeadlineLayer ===

/// Server layer: scopes the handler in the caller's deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct InheritDeadlineLayer;

impl<S> Layer<S> for InheritDeadlineLayer {
    type Service = InheritDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InheritDeadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct InheritDeadline<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for InheritDeadline<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let deadline = request
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(grpc_timeout::parse)
            .map(|budget| Instant::now() + budget);
        let future = self.inner.call(request);
        match deadline {
            Some(deadline) => Box::pin(with_deadline(deadline, future)),
            None => Box::pin(future),
        }
    }
}

// === impl DeadlineLayer ===

/// Client deadline settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineConfig {
    /// Timeout of a call that has no deadline of its own or inherited.
    pub default_timeout: Duration,
    /// Kept back from an inherited deadline, so the caller still has time to
    /// answer after its callee gives up.
    pub margin: Duration,
}

impl Default for DeadlineConfig {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(5),
            margin: Duration::from_millis(20),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    config: DeadlineConfig,
}

impl DeadlineLayer {
    pub fn new(config: DeadlineConfig) -> Self {
        Self { config }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            config: self.config,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    config: DeadlineConfig,
}

fn deadline_exceeded(message: String, sent: bool) -> Response<Body> {
    let status = tonic::Status::deadline_exceeded(message);
    if sent {
        status_response(status)
    } else {
        NotSent::Deadline.respond(status)
    }
}

impl<S> Deadline<S> {
    /// The budget of an outgoing call made now.
    fn budget(&self, request: &Request<Body>) -> Duration {
        let own = request.headers().get(GRPC_TIMEOUT).and_then(grpc_timeout::parse);
        let inherited = incoming_deadline().map(|deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(self.config.margin)
        });
        match (own, inherited) {
            (Some(own), Some(inherited)) => own.min(inherited),
            (Some(own), None) => own,
            (None, Some(inherited)) => inherited,
            (None, None) => self.config.default_timeout,
        }
    }
}

/// Whether an error (or any error in its source chain) is tonic's timeout.
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        current = e.source();
    }
    false
}

impl<S> Service<Request<Body>> for Deadline<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let budget = self.budget(&request);
        let path = request.uri().path().to_owned();
        if budget.is_zero() {
            return Box::pin(async move {
                Ok(deadline_exceeded(
                    format!("deadline exhausted before calling {path}"),
                    false,
                ))
            });
        }
        request
            .headers_mut()
            .insert(GRPC_TIMEOUT, grpc_timeout::encode(budget));
        let future = self.inner.call(request);
        let started = Instant::now();
        Box::pin(async move {
            let exceeded = || {
                deadline_exceeded(
                    format!("{path} exceeded its {} ms deadline", budget.as_millis()),
                    true,
                )
            };
            match tokio::time::timeout(budget, future).await {
                // A tonic server enforcing our grpc-timeout answers
                // CANCELLED when it gives up; at the deadline that is ours.
                Ok(Ok(response))
                    if grpc_status(response.headers()) == Some(tonic::Code::Cancelled)
                        && started.elapsed() + Duration::from_millis(5) >= budget =>
                {
                    Ok(exceeded())
                }
                Ok(Ok(response)) => Ok(response),
                // The transport enforces the same grpc-timeout and may fire
                // first; its error must still read as DEADLINE_EXCEEDED, not
                // as a transport failure (which callers would retry).
                Ok(Err(error)) => {
                    let error: BoxError = error.into();
                    if is_timeout(&*error) || started.elapsed() >= budget {
                        Ok(exceeded())
                    } else {
                        Err(error)
                    }
                }
                Err(_) => Ok(exceeded()),
            }
        })
    }
}
