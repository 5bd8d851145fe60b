//! [`Balanced`]: one p2c balancer shared by every caller of a downstream
//! service without a `Buffer` task in between (see the type's docs for why),
//! including the wake-up of callers that wait together for an endpoint.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::body::Body;
use tower::balance::p2c::Balance;
use tower::load::completion::{CompleteOnResponse, TrackCompletionFuture};
use tower::{BoxError, Service};

use super::endpoints::{Discovered, EndpointFuture};

type BalanceFuture = futures::future::MapErr<
    TrackCompletionFuture<EndpointFuture, CompleteOnResponse, tower::load::peak_ewma::Handle>,
    fn(BoxError) -> BoxError,
>;

type Balancer = Balance<UnboundedReceiverStream<Discovered>, Request<Body>>;

/// The balanced transport: use it as a tonic client's channel.
///
/// The p2c balancer is not `Clone`; tower's answer is a `Buffer`, which puts
/// a channel send and a wake of its worker task on every call. The
/// balancer's own work per call is a few microseconds, so it is shared here
/// under a mutex instead and driven by the calling task: a call takes the
/// lock, polls the balancer ready, dispatches and releases it, then awaits
/// the response without it. A call that finds no ready endpoint waits for the
/// balancer's own wake-up, or for another call that found one (the balancer
/// keeps only the last waker it was polled with, so callers that wait
/// together are woken through `ready`).
#[derive(Clone)]
pub struct Balanced {
    shared: Arc<SharedBalance>,
}

struct SharedBalance {
    balance: Mutex<Balancer>,
    /// Woken when a call found the balancer ready.
    ready: Arc<tokio::sync::Notify>,
}

impl Balanced {
    /// A balancer over the endpoints announced on `changes`.
    pub(super) fn new(changes: mpsc::UnboundedReceiver<Discovered>) -> Self {
        let balance = Balance::new(UnboundedReceiverStream::new(changes));
        Self {
            shared: Arc::new(SharedBalance {
                balance: Mutex::new(balance),
                ready: Arc::new(tokio::sync::Notify::new()),
            }),
        }
    }
}

impl fmt::Debug for Balanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balanced").finish_non_exhaustive()
    }
}

impl Service<Request<Body>> for Balanced {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    /// Always ready: readiness is awaited inside the call, per call.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let dispatch = Dispatch {
            notified: self.shared.ready.clone().notified_owned(),
            shared: Arc::clone(&self.shared),
            request: Some(request),
        };
        Box::pin(async move { dispatch.await?.await })
    }
}

pin_project_lite::pin_project! {
    /// Waits until the balancer is ready, then hands it the request.
    struct Dispatch {
        #[pin]
        notified: tokio::sync::futures::OwnedNotified,
        shared: Arc<SharedBalance>,
        request: Option<Request<Body>>,
    }
}

impl Future for Dispatch {
    type Output = Result<BalanceFuture, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // Registered before the balancer is polled, so a readiness
            // another call finds meanwhile is not missed.
            if this.notified.as_mut().poll(cx).is_ready() {
                this.notified.set(this.shared.ready.clone().notified_owned());
                continue;
            }
            let mut balance = this.shared.balance.lock().unwrap_or_else(PoisonError::into_inner);
            return match balance.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let Some(request) = this.request.take() else {
                        return Poll::Ready(Err("balanced call polled after dispatch".into()));
                    };
                    let future = balance.call(request);
                    drop(balance);
                    this.shared.ready.notify_waiters();
                    Poll::Ready(Ok(future))
                }
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}
