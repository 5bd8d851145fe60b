//! Circuit breaker, per downstream service: closed, open, half-open, with the
//! resilience4j semantics (count- or time-based sliding window, failure-rate
//! and slow-call-rate thresholds, a minimum number of calls, a wait in open,
//! a fixed number of half-open probes, automatic move to half-open).
//!
//! One rule beyond resilience4j's: a breaker protects everyone from a sick
//! downstream, so no single caller may open it. Failures count only when
//! they come from several distinct callers ([`Caller`]: the gateway's
//! principal, the saga's order), a timeout counts only when the caller gave
//! the server a fair time, a call is slow only by when its answer began (a
//! stream's length is its caller's choice), and a response this client
//! refused to relay is not the server's fault ([`crate::classify`]).
//!
//! Why not the `tower-resilience` crate (evaluated, v0.13): its classifier
//! sees a call's `Result` when the response *headers* arrive, but a gRPC
//! status often arrives in the *trailers*, and a slow call is only slow once
//! its body ends; its rejection is a tower error, where callers need a gRPC
//! `UNAVAILABLE` that names the breaker and the next probe; and it rejects
//! in `poll_ready`, which tower treats as final. This layer records outcomes
//! through [`ObservedBody`](crate::classify::ObservedBody) at the end of the body, and an open breaker stays
//! ready and fails inside `call` (as linkerd's fail-fast does).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tonic::body::Body;
use tower::{BoxError, Layer, Service};

use crate::classify::{Classifier, Outcome, observe};
use crate::refused::NotSent;

/// How many recent calls the breaker judges by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last N calls.
    Count(u32),
    /// The calls of the last duration (kept in one-second buckets).
    Time(Duration),
}

/// Most distinct callers the breaker tells apart (`minimum_callers` is at
/// most this).
pub const MAX_MINIMUM_CALLERS: u32 = 8;

/// Breaker settings. `Default` holds the defaults of the policy file's
/// `[downstream.NAME.breaker]` (the file's section reads them from here).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Names the breaker in logs, metrics and rejection messages.
    pub name: String,
    pub window: Window,
    /// Opens when this share of the window's calls failed (0 < r <= 1).
    pub failure_rate_threshold: f64,
    /// Opens when this share of the window's calls was slow (0 < r <= 1).
    pub slow_call_rate_threshold: f64,
    /// A call whose answer takes at least this long to begin is slow (a
    /// stream's length is the caller's choice, so its end does not count).
    pub slow_call_duration: Duration,
    /// Never opens before the window holds this many calls.
    pub minimum_calls: u32,
    /// Never opens on the failures (or slow calls) of fewer distinct callers
    /// than this (see [`Caller`]): one caller provoking errors with its own
    /// requests must not take the downstream away from everyone.
    pub minimum_callers: u32,
    /// A DEADLINE_EXCEEDED counts as a server fault only when the call had
    /// at least this long: a caller's own short deadline is not the server's
    /// fault.
    pub deadline_fault_after: Duration,
    /// How long it stays open before letting probes through.
    pub wait_in_open: Duration,
    /// Probes allowed in half-open; their outcome decides close or reopen.
    pub permitted_in_half_open: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            name: "downstream".into(),
            window: Window::Count(20),
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_duration: Duration::from_secs(5),
            minimum_calls: 10,
            minimum_callers: 3,
            deadline_fault_after: Duration::from_secs(1),
            wait_in_open: Duration::from_secs(5),
            permitted_in_half_open: 3,
        }
    }
}

/// Who a call is made for: the gateway's caller (its token's subject, else
/// its address) or the order a saga step serves. The breaker counts failures
/// by distinct callers, so that one caller cannot open it for all. A call
/// without one counts as a caller of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Caller(pub u64);

impl Caller {
    /// The caller named by `key` (a subject, an address, an order id).
    pub fn of(key: &str) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        Caller(hasher.finish())
    }

    /// A caller of its own, for a call that names none (a clash with a
    /// hashed key is as unlikely as two keys' hashes clashing).
    fn anonymous() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Caller(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// One finished call, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// A server fault (see [`CircuitBreaker::judge`]).
    pub failure: bool,
    /// Its answer was slow to begin.
    pub slow: bool,
    pub caller: Caller,
}

/// The state as reported to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Closed,
    Open,
    HalfOpen,
}

impl StateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Closed => "CLOSED",
            StateKind::Open => "OPEN",
            StateKind::HalfOpen => "HALF_OPEN",
        }
    }
}

/// A few distinct callers (enough to tell whether `minimum_callers` are
/// reached), without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Callers {
    seen: [u64; MAX_MINIMUM_CALLERS as usize],
    len: u32,
}

impl Callers {
    fn add(&mut self, caller: Caller) {
        let seen = &self.seen[..self.len as usize];
        if self.len < MAX_MINIMUM_CALLERS && !seen.contains(&caller.0) {
            self.seen[self.len as usize] = caller.0;
            self.len += 1;
        }
    }

    fn merge(&mut self, other: &Callers) {
        for caller in &other.seen[..other.len as usize] {
            self.add(Caller(*caller));
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    calls: u32,
    failures: u32,
    slow: u32,
    failing: Callers,
    slow_callers: Callers,
}

impl Tally {
    fn add(&mut self, call: Call) {
        self.calls += 1;
        if call.failure {
            self.failures += 1;
            self.failing.add(call.caller);
        }
        if call.slow {
            self.slow += 1;
            self.slow_callers.add(call.caller);
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
        self.failing.merge(&other.failing);
        self.slow_callers.merge(&other.slow_callers);
    }

    /// Whether the failure or slow-call rate reaches its threshold, among at
    /// least `minimum_callers` distinct callers.
    fn exceeds(&self, config: &BreakerConfig, minimum_callers: u32) -> bool {
        let calls = f64::from(self.calls.max(1));
        let failing = f64::from(self.failures) / calls >= config.failure_rate_threshold
            && self.failing.len >= minimum_callers;
        let slow = f64::from(self.slow) / calls >= config.slow_call_rate_threshold
            && self.slow_callers.len >= minimum_callers;
        failing || slow
    }
}

/// The sliding window of recent outcomes.
#[derive(Debug, Clone)]
enum Recent {
    Count {
        size: usize,
        calls: VecDeque<Call>,
    },
    Time {
        span: Duration,
        buckets: VecDeque<(Instant, Tally)>,
    },
}

impl Recent {
    fn new(window: Window) -> Self {
        match window {
            Window::Count(size) => Recent::Count {
                size: size.max(1) as usize,
                calls: VecDeque::new(),
            },
            Window::Time(span) => Recent::Time {
                span,
                buckets: VecDeque::new(),
            },
        }
    }

    fn record(&mut self, call: Call, now: Instant) {
        match self {
            Recent::Count { size, calls } => {
                calls.push_back(call);
                if calls.len() > *size {
                    calls.pop_front();
                }
            }
            Recent::Time { buckets, .. } => {
                match buckets.back_mut() {
                    Some((start, tally)) if now.duration_since(*start) < Duration::from_secs(1) => {
                        tally.add(call)
                    }
                    _ => {
                        let mut tally = Tally::default();
                        tally.add(call);
                        buckets.push_back((now, tally));
                    }
                }
                self.evict(now);
            }
        }
    }

    fn evict(&mut self, now: Instant) {
        if let Recent::Time { span, buckets } = self {
            while buckets
                .front()
                .is_some_and(|(start, _)| now.duration_since(*start) >= *span)
            {
                buckets.pop_front();
            }
        }
    }

    fn tally(&mut self, now: Instant) -> Tally {
        self.evict(now);
        let mut sum = Tally::default();
        match self {
            Recent::Count { calls, .. } => calls.iter().for_each(|call| sum.add(*call)),
            Recent::Time { buckets, .. } => buckets.iter().for_each(|(_, tally)| sum.merge(tally)),
        }
        sum
    }
}

#[derive(Debug, Clone)]
enum State {
    Closed(Recent),
    Open { until: Instant },
    HalfOpen { admitted: u32, done: Tally },
}

/// Admission to call through the breaker; hand it back with the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// Which state period admitted it: a result from an earlier period (a
    /// call started before the breaker opened) must not sway the current one.
    epoch: u64,
}

/// The breaker refused a call; probes resume at `retry_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub retry_at: Instant,
    pub state: StateKind,
}

/// Counters for visibility.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerStats {
    pub opened: u64,
    pub half_opened: u64,
    pub closed: u64,
    pub rejected: u64,
    /// The last state change (from, to), as the transition log names it.
    pub last_transition: Option<(StateKind, StateKind)>,
}

/// The breaker's state machine. Time is passed in, so tests drive it with
/// paused tokio time and the proptest model drives it with any sequence.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
    epoch: u64,
    stats: BreakerStats,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        let state = State::Closed(Recent::new(config.window));
        Self {
            config,
            state,
            epoch: 0,
            stats: BreakerStats::default(),
        }
    }

    pub fn stats(&self) -> BreakerStats {
        self.stats
    }

    /// The state now (an open breaker past its wait reports HALF_OPEN).
    pub fn state(&self, now: Instant) -> StateKind {
        match &self.state {
            State::Closed(_) => StateKind::Closed,
            State::Open { until } if now >= *until => StateKind::HalfOpen,
            State::Open { .. } => StateKind::Open,
            State::HalfOpen { .. } => StateKind::HalfOpen,
        }
    }

    /// When an open breaker lets probes through.
    pub fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// How a finished call counts: a failure when the classifier calls its
    /// outcome a server fault, except a DEADLINE_EXCEEDED of a call that ran
    /// for less than `deadline_fault_after` (its caller's deadline was
    /// short); slow when its answer took `slow_call_duration` to begin.
    pub fn judge(&self, outcome: Outcome, to_headers: Duration, ran: Duration, caller: Caller) -> Call {
        let timed_out_early =
            outcome.code() == tonic::Code::DeadlineExceeded && ran < self.config.deadline_fault_after;
        Call {
            failure: outcome.is_server_fault() && !timed_out_early,
            slow: to_headers >= self.config.slow_call_duration,
            caller,
        }
    }

    /// The state as stored, without the move from open to half-open that
    /// time alone makes (which [`CircuitBreaker::state`] reports).
    fn stored_kind(&self) -> StateKind {
        match &self.state {
            State::Closed(_) => StateKind::Closed,
            State::Open { .. } => StateKind::Open,
            State::HalfOpen { .. } => StateKind::HalfOpen,
        }
    }

    fn transition(&mut self, to: State) {
        let from = self.stored_kind();
        self.epoch += 1;
        self.state = to;
        let to_kind = self.stored_kind();
        self.stats.last_transition = Some((from, to_kind));
        match to_kind {
            StateKind::Open => self.stats.opened += 1,
            StateKind::HalfOpen => self.stats.half_opened += 1,
            StateKind::Closed => self.stats.closed += 1,
        }
        tracing::warn!(breaker = %self.config.name, from = from.as_str(), to = to_kind.as_str(), "circuit breaker transition");
    }

    fn open(&mut self, now: Instant) {
        let until = now + self.config.wait_in_open;
        self.transition(State::Open { until });
    }

    /// Admits a call, or rejects it while open (or while half-open has
    /// admitted all its probes).
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejected> {
        if let State::Open { until } = self.state {
            if now < until {
                self.stats.rejected += 1;
                return Err(Rejected {
                    retry_at: until,
                    state: StateKind::Open,
                });
            }
            self.transition(State::HalfOpen {
                admitted: 0,
                done: Tally::default(),
            });
        }
        let epoch = self.epoch;
        match &mut self.state {
            State::HalfOpen { admitted, .. } if *admitted >= self.config.permitted_in_half_open => {
                self.stats.rejected += 1;
                // The probes decide; the next chance is when they are back.
                Err(Rejected {
                    retry_at: now + self.config.wait_in_open,
                    state: StateKind::HalfOpen,
                })
            }
            State::HalfOpen { admitted, .. } => {
                *admitted += 1;
                Ok(Permit { epoch })
            }
            // Closed (Open was turned into HalfOpen or returned above).
            _ => Ok(Permit { epoch }),
        }
    }

    /// Records an admitted call's outcome (see [`CircuitBreaker::judge`]).
    pub fn record(&mut self, permit: Permit, call: Call, now: Instant) {
        if permit.epoch != self.epoch {
            return;
        }
        let config = &self.config;
        match &mut self.state {
            State::Closed(recent) => {
                recent.record(call, now);
                let tally = recent.tally(now);
                let minimum_callers = config.minimum_callers.min(MAX_MINIMUM_CALLERS);
                if tally.calls >= config.minimum_calls && tally.exceeds(config, minimum_callers) {
                    self.open(now);
                }
            }
            State::HalfOpen { done, .. } => {
                done.add(call);
                if done.calls >= config.permitted_in_half_open {
                    // The probes alone decide, whoever made them.
                    if done.exceeds(config, 0) {
                        self.open(now);
                    } else {
                        let recent = Recent::new(self.config.window);
                        self.transition(State::Closed(recent));
                    }
                }
            }
            State::Open { .. } => {}
        }
    }

    /// An admitted call ended without an outcome (the caller gave up): in
    /// half-open its probe slot is given back.
    pub fn cancel(&mut self, permit: Permit) {
        if permit.epoch != self.epoch {
            return;
        }
        if let State::HalfOpen { admitted, .. } = &mut self.state {
            *admitted = admitted.saturating_sub(1);
        }
    }
}

/// A breaker shared by every clone of a client stack, readable by the admin
/// endpoint.
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    inner: Arc<Mutex<CircuitBreaker>>,
}

impl BreakerHandle {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(CircuitBreaker::new(config))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn name(&self) -> String {
        self.lock().config.name.clone()
    }

    pub fn state(&self) -> StateKind {
        self.lock().state(Instant::now())
    }

    pub fn stats(&self) -> BreakerStats {
        self.lock().stats()
    }

    /// Time until an open breaker probes again.
    pub fn opens_for(&self) -> Option<Duration> {
        self.lock()
            .open_until()
            .map(|until| until.saturating_duration_since(Instant::now()))
    }
}

// === impl BreakerLayer ===

/// Wraps a client service in a circuit breaker.
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    breaker: BreakerHandle,
    classifier: Arc<Classifier>,
}

impl BreakerLayer {
    pub fn new(breaker: BreakerHandle, classifier: Arc<Classifier>) -> Self {
        Self { breaker, classifier }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

// === impl Breaker ===

#[derive(Debug, Clone)]
pub struct Breaker<S> {
    inner: S,
    breaker: BreakerHandle,
    classifier: Arc<Classifier>,
}

/// Hands the permit back exactly once: with the outcome, or as cancelled
/// when dropped without one.
struct PermitGuard {
    breaker: BreakerHandle,
    permit: Option<Permit>,
    caller: Caller,
    started: Instant,
    /// How long until the response began (its headers came).
    to_headers: Duration,
}

impl PermitGuard {
    fn finish(mut self, outcome: Outcome) {
        if let Some(permit) = self.permit.take() {
            let now = Instant::now();
            let mut breaker = self.breaker.lock();
            let call = breaker.judge(outcome, self.to_headers, now - self.started, self.caller);
            breaker.record(permit, call, now);
        }
    }
}

impl Drop for PermitGuard {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.lock().cancel(permit);
        }
    }
}

/// The open-breaker answer: UNAVAILABLE, marked as never sent.
pub fn rejection(name: &str, rejected: Rejected) -> Response<Body> {
    let wait = rejected.retry_at.saturating_duration_since(Instant::now());
    let message = format!(
        "circuit breaker {name:?} is {}; next probe in {} ms",
        rejected.state.as_str(),
        wait.as_millis()
    );
    NotSent::Breaker { retry_after: wait }.respond(tonic::Status::unavailable(message))
}

impl<S> Service<Request<Body>> for Breaker<S>
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

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let acquired = self.breaker.lock().try_acquire(Instant::now());
        let permit = match acquired {
            Ok(permit) => permit,
            Err(rejected) => {
                let name = self.breaker.name();
                return Box::pin(async move { Ok(rejection(&name, rejected)) });
            }
        };
        let started = Instant::now();
        let mut guard = PermitGuard {
            breaker: self.breaker.clone(),
            permit: Some(permit),
            caller: request
                .extensions()
                .get::<Caller>()
                .copied()
                .unwrap_or_else(Caller::anonymous),
            started,
            to_headers: Duration::ZERO,
        };
        let classifier = self.classifier.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            match future.await {
                Ok(response) => {
                    guard.to_headers = started.elapsed();
                    Ok(observe(response, classifier, move |outcome| {
                        guard.finish(outcome)
                    }))
                }
                Err(error) => {
                    let error: BoxError = error.into();
                    guard.to_headers = started.elapsed();
                    guard.finish(classifier.transport_error(&*error));
                    Err(error)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
