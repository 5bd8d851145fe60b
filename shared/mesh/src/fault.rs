//! Fault injection for chaos engineering, as Envoy's fault filter: per
//! downstream and per method, delay P% of calls and/or abort Q% of them with
//! a chosen status. Off until rules are set (from the policy file, or at
//! runtime through the admin RPC), and only while the `fault_injection`
//! feature flag is on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tonic::Code;
use tonic::body::Body;
use tower::{BoxError, Layer, Service};

use crate::flags::Flags;
use crate::refused::NotSent;

/// The feature flag that arms every fault rule.
pub const FAULT_FLAG: &str = "fault_injection";

/// One rule; the first rule whose method matches applies.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// A method name (`AuthorizePayment`) or full path; `None` for all.
    pub method: Option<String>,
    /// Share (0..=100) of calls delayed, and by how much.
    pub delay_percent: f64,
    pub delay: Duration,
    /// Share (0..=100) of calls answered with `abort_code` without calling.
    pub abort_percent: f64,
    pub abort_code: Code,
}

impl FaultRule {
    fn matches(&self, path: &str) -> bool {
        match &self.method {
            None => true,
            Some(method) => path == method || path.rsplit('/').next() == Some(method.as_str()),
        }
    }
}

/// The live fault rules of one downstream, shared with the admin endpoint.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<RwLock<Vec<FaultRule>>>,
    applied: Arc<Applied>,
}

/// How many calls the rules delayed and aborted, for the metrics.
#[derive(Debug, Default)]
struct Applied {
    delays: AtomicU64,
    aborts: AtomicU64,
}

impl Faults {
    /// Calls delayed and calls aborted so far.
    pub fn applied(&self) -> (u64, u64) {
        (
            self.applied.delays.load(Ordering::Relaxed),
            self.applied.aborts.load(Ordering::Relaxed),
        )
    }

    pub fn set(&self, rules: Vec<FaultRule>) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn rule_for(&self, path: &str) -> Option<FaultRule> {
        self.rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|r| r.matches(path))
            .cloned()
    }
}

#[derive(Debug, Clone)]
pub struct FaultLayer {
    faults: Faults,
    flags: Flags,
}

impl FaultLayer {
    pub fn new(faults: Faults, flags: Flags) -> Self {
        Self { faults, flags }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultInjection<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultInjection {
            inner,
            faults: self.faults.clone(),
            flags: self.flags.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FaultInjection<S> {
    inner: S,
    faults: Faults,
    flags: Flags,
}

fn rolled(percent: f64) -> bool {
    percent > 0.0 && fastrand::f64() * 100.0 < percent
}

impl<S> Service<Request<Body>> for FaultInjection<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let rule = if self.flags.is_enabled(FAULT_FLAG, None) {
            self.faults.rule_for(request.uri().path())
        } else {
            None
        };
        let Some(rule) = rule else {
            let future = self.inner.call(request);
            return Box::pin(async move { future.await.map_err(Into::into) });
        };
        let delay = rolled(rule.delay_percent).then_some(rule.delay);
        let abort = rolled(rule.abort_percent);
        if delay.is_some() {
            self.faults.applied.delays.fetch_add(1, Ordering::Relaxed);
        }
        if abort {
            self.faults.applied.aborts.fetch_add(1, Ordering::Relaxed);
        }
        let path = request.uri().path().to_owned();
        // The inner service was made ready for this call; a delayed call
        // still uses it, so it is taken now and the slot left for the next.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if abort {
                return Ok(NotSent::Fault.respond(tonic::Status::new(
                    rule.abort_code,
                    format!("fault injected by the ordermesh mesh on {path}"),
                )));
            }
            ready.call(request).await.map_err(Into::into)
        })
    }
}
