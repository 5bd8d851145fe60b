//! Retries as gRPC's retry design (gRFC A6) describes them: a per-method
//! policy (attempts, exponential back-off with full jitter, retryable
//! status codes), a retry budget that stops retries when the downstream is
//! struggling (token bucket: each failure takes a token, each success adds
//! `token_ratio`, retries only while more than half the tokens are left),
//! `grpc-previous-rpc-attempts` on every retry, and one deadline across all
//! attempts.
//!
//! A call is retried only before it is committed: on a transport error or
//! a trailers-only response (how a server answers an error at once). Once
//! response headers arrive without a status, the response is the caller's.
//! Only idempotent calls may go through this layer: every mutating ordermesh
//! RPC carries a `request_id`, which makes a repeat safe.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tonic::Code;
use tonic::body::Body;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::classify::grpc_status;
use crate::grpc_timeout::{self, GRPC_TIMEOUT};
use crate::refused::NotSent;

/// How one method is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retries).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub backoff_multiplier: f64,
    pub retryable_codes: Vec<Code>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            retryable_codes: vec![Code::Unavailable],
        }
    }
}

impl RetryPolicy {
    /// Full jitter: uniformly random up to the exponential ceiling, so
    /// clients that failed together do not retry together.
    fn backoff(&self, retry: u32) -> Duration {
        let factor = self
            .backoff_multiplier
            .powi(i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX));
        let ceiling = self
            .initial_backoff
            .mul_f64(factor.min(1e6))
            .min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// Per-method policies of one downstream: a default and overrides keyed by
/// method name (`CapturePayment`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryPolicies {
    pub default: RetryPolicy,
    pub methods: BTreeMap<String, RetryPolicy>,
}

impl RetryPolicies {
    fn for_path(&self, path: &str) -> &RetryPolicy {
        let method = path.rsplit('/').next().unwrap_or(path);
        self.methods.get(method).unwrap_or(&self.default)
    }
}

/// The retry budget's size in tokens (gRFC A6 `maxTokens`), by default.
pub const DEFAULT_BUDGET_MAX_TOKENS: f64 = 10.0;
/// Tokens a success gives back (gRFC A6 `tokenRatio`), by default.
pub const DEFAULT_BUDGET_TOKEN_RATIO: f64 = 0.1;

/// gRFC A6 retry throttling, shared by every call to one downstream.
#[derive(Debug)]
pub struct RetryBudget {
    max_tokens: f64,
    token_ratio: f64,
    tokens: Mutex<f64>,
    /// Attempts after the first, and retries the spent budget stopped.
    retries: AtomicU64,
    exhausted: AtomicU64,
}

impl RetryBudget {
    pub fn new(max_tokens: f64, token_ratio: f64) -> Self {
        Self {
            max_tokens,
            token_ratio,
            tokens: Mutex::new(max_tokens),
            retries: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
        }
    }

    /// Retries made, and retries the budget stopped, so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.retries.load(Ordering::Relaxed),
            self.exhausted.load(Ordering::Relaxed),
        )
    }

    fn with<T>(&self, f: impl FnOnce(&mut f64) -> T) -> T {
        f(&mut self.tokens.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn on_failure(&self) {
        self.with(|t| *t = (*t - 1.0).max(0.0));
    }

    pub fn on_success(&self) {
        let (max, ratio) = (self.max_tokens, self.token_ratio);
        self.with(|t| *t = (*t + ratio).min(max));
    }

    /// Retries are allowed while more than half the tokens remain.
    pub fn allows_retry(&self) -> bool {
        let half = self.max_tokens / 2.0;
        self.with(|t| *t > half)
    }

    pub fn tokens(&self) -> f64 {
        self.with(|t| *t)
    }

    pub fn max_tokens(&self) -> f64 {
        self.max_tokens
    }
}

#[derive(Debug, Clone)]
pub struct RetryLayer {
    policies: Arc<RetryPolicies>,
    budget: Arc<RetryBudget>,
}

impl RetryLayer {
    pub fn new(policies: RetryPolicies, budget: Arc<RetryBudget>) -> Self {
        Self {
            policies: Arc::new(policies),
            budget,
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            policies: self.policies.clone(),
            budget: self.budget.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policies: Arc<RetryPolicies>,
    budget: Arc<RetryBudget>,
}

/// What an attempt's result means for retrying.
fn retryable_code(result: &Result<Response<Body>, BoxError>) -> Option<Code> {
    match result {
        // A response this client refused would be refused again.
        Err(error) if crate::classify::refused_here(&**error) => None,
        Err(_) => Some(Code::Unavailable),
        Ok(response) if matches!(NotSent::of_response(response), Some(NotSent::Breaker { .. })) => {
            // An open breaker answers for a while; retrying only spins.
            None
        }
        Ok(response) => grpc_status(response.headers()),
    }
}

impl<S> Service<Request<Body>> for Retry<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each attempt readies its own clone of the inner service.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let policies = self.policies.clone();
        let budget = self.budget.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let policy = policies.for_path(parts.uri.path()).clone();
            // Buffered so every attempt can send it again (unary requests).
            let body: Bytes = body.collect().await.map_err(Into::<BoxError>::into)?.to_bytes();
            let deadline = parts
                .headers
                .get(GRPC_TIMEOUT)
                .and_then(grpc_timeout::parse)
                .map(|t| Instant::now() + t);
            let mut attempt: u32 = 1;
            loop {
                let mut request = Request::new(Body::new(Full::new(body.clone())));
                *request.method_mut() = parts.method.clone();
                *request.uri_mut() = parts.uri.clone();
                *request.version_mut() = parts.version;
                *request.headers_mut() = parts.headers.clone();
                // The layers below read what the caller attached (who the
                // call is for: the breaker counts failures by caller).
                *request.extensions_mut() = parts.extensions.clone();
                if attempt > 1 {
                    request
                        .headers_mut()
                        .insert("grpc-previous-rpc-attempts", HeaderValue::from(attempt - 1));
                }
                if let Some(deadline) = deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    request
                        .headers_mut()
                        .insert(GRPC_TIMEOUT, grpc_timeout::encode(left));
                }
                let ready = inner
                    .clone()
                    .ready_oneshot()
                    .await
                    .map_err(Into::<BoxError>::into);
                let result = match ready {
                    Ok(mut service) => service.call(request).await.map_err(Into::into),
                    Err(e) => Err(e),
                };
                let code = retryable_code(&result);
                let retryable = code.is_some_and(|code| policy.retryable_codes.contains(&code));
                if !retryable {
                    // Committed, or an answer retrying cannot change: the
                    // downstream is responsive, which refills the budget.
                    budget.on_success();
                    return result;
                }
                budget.on_failure();
                if attempt >= policy.max_attempts {
                    return result;
                }
                if !budget.allows_retry() {
                    budget.exhausted.fetch_add(1, Ordering::Relaxed);
                    return result;
                }
                let pause = policy.backoff(attempt);
                if let Some(deadline) = deadline
                    && Instant::now() + pause >= deadline
                {
                    return result;
                }
                tracing::debug!(path = parts.uri.path(), attempt, ?code, "retrying");
                // Each retry shows on the call's span (an event, not a log line).
                {
                    use tracing_opentelemetry::OpenTelemetrySpanExt;
                    tracing::Span::current().add_event(
                        "retry",
                        vec![
                            opentelemetry::KeyValue::new("rpc.retry.attempt", i64::from(attempt + 1)),
                            opentelemetry::KeyValue::new(
                                "rpc.grpc.status_code",
                                code.map_or(-1, |c| c as i64),
                            ),
                            opentelemetry::KeyValue::new("rpc.retry.backoff_ms", pause.as_millis() as i64),
                        ],
                    );
                }
                tokio::time::sleep(pause).await;
                budget.retries.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_stops_retries_below_half_and_refills_on_success() {
        let budget = RetryBudget::new(10.0, 0.5);
        assert!(budget.allows_retry());
        for _ in 0..5 {
            budget.on_failure();
        }
        assert!(
            !budget.allows_retry(),
            "5 of 10 tokens left is not more than half"
        );
        budget.on_success();
        assert!(budget.allows_retry(), "5.5 > 5");
        for _ in 0..100 {
            budget.on_success();
        }
        assert_eq!(budget.tokens(), 10.0, "capped at max");
    }

    #[test]
    fn backoff_is_jittered_under_an_exponential_ceiling() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            ..RetryPolicy::default()
        };
        for _ in 0..100 {
            assert!(policy.backoff(1) <= Duration::from_millis(100));
            assert!(policy.backoff(2) <= Duration::from_millis(200));
            assert!(policy.backoff(5) <= Duration::from_millis(300));
        }
    }

    #[test]
    fn method_overrides_apply_by_method_name() {
        let mut policies = RetryPolicies::default();
        policies.methods.insert(
            "CapturePayment".into(),
            RetryPolicy {
                max_attempts: 5,
                ..RetryPolicy::default()
            },
        );
        assert_eq!(
            policies
                .for_path("/ordermesh.payment.v1.PaymentService/CapturePayment")
                .max_attempts,
            5
        );
        assert_eq!(
            policies
                .for_path("/ordermesh.payment.v1.PaymentService/GetPayment")
                .max_attempts,
            3
        );
    }
}
