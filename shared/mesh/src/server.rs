//! Server-side protection: a concurrency limit that sheds load instead of
//! queueing it. A call beyond the limit is answered at once with
//! `RESOURCE_EXHAUSTED`, so a saturated server stays responsive and callers'
//! breakers and budgets see the pressure (tower's `LoadShed` would answer
//! with an error the transport turns into a reset, not a gRPC status).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::sync::Semaphore;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::classify::status_response;

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
