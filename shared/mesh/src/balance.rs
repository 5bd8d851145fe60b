//! Discovery, load balancing and outlier ejection for one downstream service.
//!
//! gRPC runs over long-lived HTTP/2 connections, so a plain tonic `Channel`
//! pointed at a Kubernetes Service pins every call of a client to whichever
//! pod it connected to first: kube-proxy balances connections, not requests.
//! Without a sidecar proxy the client has to balance by itself. This module
//! keeps one connection per backend address (a static list, or every A/AAAA
//! record of a headless Service, re-resolved periodically so pods that come
//! and go are followed) and picks a backend per request with
//! power-of-two-choices over peak-EWMA latency: of two random backends, the
//! one with less expected pending work wins. That spreads load evenly over
//! healthy pods and steers it away from a slow one quickly, because the
//! estimate jumps to the worst recent latency and only decays slowly. The
//! cost is that estimate times the requests in flight, so under concurrent
//! load equally fast pods end up with equal shares; strictly one-at-a-time
//! traffic instead sticks to whichever pod currently looks fastest, which is
//! harmless at that volume.
//!
//! Latency alone does not catch a pod that fails fast (a fast UNAVAILABLE
//! looks cheap), so every call's outcome is also fed to the shared
//! [`Classifier`]: an endpoint that returns `consecutive_failures` server
//! faults in a row is taken out of the balancer for a growing back-off, the
//! way Envoy's outlier detection does. At most `max_ejected_percent` of the
//! known endpoints, and never the last one, are out at once: when most pods
//! fail the cause is usually shared, and piling all traffic onto the few
//! survivors would only take them down too.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::PeakEwma;
use tower::load::completion::{CompleteOnResponse, TrackCompletionFuture};
use tower::{BoxError, Service};

use crate::classify::{self, Classifier, Outcome};

/// Where the addresses of a service's backends come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSource {
    /// Fixed endpoints, e.g. "http://127.0.0.1:50053".
    Static(Vec<String>),
    /// A DNS name resolved (A/AAAA via `tokio::net::lookup_host`) now and
    /// every `refresh`; each address becomes an endpoint (a Kubernetes
    /// headless Service gives one per pod). Addresses that disappear are
    /// removed, new ones added.
    Dns {
        host: String,
        port: u16,
        refresh: Duration,
    },
}

/// When a misbehaving endpoint is taken out of rotation, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EjectionPolicy {
    /// Server faults in a row that eject an endpoint; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// The first ejection lasts this long; each further one of the same
    /// endpoint one `base_ejection` longer.
    pub base_ejection: Duration,
    /// Upper bound on a single ejection.
    pub max_ejection: Duration,
    /// Never eject more than this share (percent) of the known endpoints.
    pub max_ejected_percent: u8,
}

impl Default for EjectionPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// Everything [`balanced`] needs for one downstream service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerConfig {
    pub source: EndpointSource,
    pub ejection: EjectionPolicy,
    pub connect_timeout: Duration,
}

impl BalancerConfig {
    /// Default ejection policy and a 5 s connect timeout.
    pub fn new(source: EndpointSource) -> Self {
        Self {
            source,
            ejection: EjectionPolicy::default(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A configuration [`balanced`] refuses.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error("service {service}: invalid endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        service: String,
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("service {service}: static endpoint list is empty")]
    NoEndpoints { service: String },
    #[error("service {service}: DNS refresh interval must be positive")]
    ZeroRefresh { service: String },
}

/// What [`BalancerHandle::snapshot`] reports for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatus {
    pub address: String,
    pub ejected: bool,
    /// Time left until re-admission.
    pub ejected_for: Option<Duration>,
    pub consecutive_failures: u32,
}

/// Linkerd's defaults: a new endpoint is assumed moderately slow until it has
/// answered, so a freshly discovered pod is not flooded before it has a
/// latency record, and a latency peak is remembered for seconds, long enough
/// to steer away from a struggling pod without overreacting to one blip.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
const EWMA_DECAY_NS: f64 = 10_000_000_000.0;

type EndpointFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;
type Discovered = Result<Change<String, PeakEwma<Endpoint>>, Infallible>;
type BalanceFuture = futures::future::MapErr<
    TrackCompletionFuture<EndpointFuture, CompleteOnResponse, tower::load::peak_ewma::Handle>,
    fn(BoxError) -> BoxError,
>;

/// Starts discovery (spawns tokio tasks; needs a runtime) and returns the
/// balanced service plus a handle for visibility.
///
/// Calls made before any endpoint is known (a DNS source's first answer is
/// still pending) wait for one; bound them with a deadline.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn balanced(
    name: &str,
    config: BalancerConfig,
    classifier: Arc<Classifier>,
) -> Result<(Balanced, BalancerHandle), BalanceError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(
        name,
        config.ejection,
        classifier,
        config.connect_timeout,
        tx,
        tokio::runtime::Handle::current(),
    ));
    match config.source {
        EndpointSource::Static(endpoints) => {
            if endpoints.is_empty() {
                return Err(BalanceError::NoEndpoints {
                    service: name.to_owned(),
                });
            }
            // Validate everything before inserting anything, so a bad entry
            // fails the whole configuration instead of silently shrinking it.
            let channels = endpoints
                .into_iter()
                .map(|endpoint| match shared.channel(&endpoint) {
                    Ok(channel) => Ok((endpoint, channel)),
                    Err(source) => Err(BalanceError::InvalidEndpoint {
                        service: name.to_owned(),
                        endpoint,
                        source,
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            for (endpoint, channel) in channels {
                shared.add(endpoint, channel);
            }
        }
        EndpointSource::Dns { host, port, refresh } => {
            if refresh.is_zero() {
                return Err(BalanceError::ZeroRefresh {
                    service: name.to_owned(),
                });
            }
            shared
                .runtime
                .spawn(follow_dns(Arc::clone(&shared), host, port, refresh));
        }
    }
    let balance = Balance::new(UnboundedReceiverStream::new(rx));
    let balanced = Balanced {
        shared: Arc::new(SharedBalance {
            balance: Mutex::new(balance),
            ready: Arc::new(tokio::sync::Notify::new()),
        }),
    };
    Ok((balanced, BalancerHandle { shared }))
}

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

/// Read-only view of the balancer's endpoints, for status pages and tests.
#[derive(Clone)]
pub struct BalancerHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for BalancerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerHandle")
            .field("service", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl BalancerHandle {
    /// Every known endpoint, ordered by address.
    pub fn snapshot(&self) -> Vec<EndpointStatus> {
        self.shared.snapshot()
    }
}

/// State shared by the discovery task, the endpoints' outcome reports and
/// the re-admission timers. Every change to the balancer's endpoint set is
/// sent while holding the registry lock, so the balancer sees inserts and
/// removals in the same order as the registry applied them.
struct Shared {
    name: String,
    policy: EjectionPolicy,
    classifier: Arc<Classifier>,
    connect_timeout: Duration,
    changes: mpsc::UnboundedSender<Discovered>,
    // Outcome reports arrive from inside response bodies, which may be polled
    // outside any runtime context; timers are spawned here instead.
    runtime: tokio::runtime::Handle,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    endpoints: BTreeMap<String, Entry>,
    next_generation: u64,
}

struct Entry {
    channel: Channel,
    /// Identifies the service instance currently in the balancer; outcomes
    /// of calls sent through an older instance (before an ejection) must
    /// not count against the re-admitted one.
    generation: u64,
    consecutive_failures: u32,
    times_ejected: u32,
    ejected_until: Option<Instant>,
}

impl Registry {
    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn ejected(&self) -> usize {
        self.endpoints
            .values()
            .filter(|e| e.ejected_until.is_some())
            .count()
    }

    /// Whether one more ejection keeps within the cap and leaves at least one
    /// endpoint serving.
    fn may_eject_one_more(&self, max_percent: u8) -> bool {
        let known = self.endpoints.len();
        let after = self.ejected() + 1;
        after < known && after * 100 <= usize::from(max_percent) * known
    }
}

impl Shared {
    fn new(
        name: &str,
        policy: EjectionPolicy,
        classifier: Arc<Classifier>,
        connect_timeout: Duration,
        changes: mpsc::UnboundedSender<Discovered>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            name: name.to_owned(),
            policy,
            classifier,
            connect_timeout,
            changes,
            runtime,
            registry: Mutex::new(Registry::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry stays consistent across a panic in a holder (every
        // update is a few plain assignments), so poisoning is not fatal.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn channel(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        Ok(tonic::transport::Endpoint::from_shared(address.to_owned())?
            .connect_timeout(self.connect_timeout)
            .connect_lazy())
    }

    fn service(self: &Arc<Self>, address: &str, generation: u64, channel: Channel) -> PeakEwma<Endpoint> {
        let endpoint = Endpoint {
            address: Arc::from(address),
            generation,
            channel,
            shared: Arc::clone(self),
        };
        PeakEwma::new(
            endpoint,
            DEFAULT_RTT,
            EWMA_DECAY_NS,
            CompleteOnResponse::default(),
        )
    }

    fn send(&self, change: Change<String, PeakEwma<Endpoint>>) {
        // Fails only once the balancer is gone, when nobody needs the change.
        let _ = self.changes.send(Ok(change));
    }

    fn add(self: &Arc<Self>, address: String, channel: Channel) {
        let mut registry = self.lock();
        if registry.endpoints.contains_key(&address) {
            return;
        }
        let generation = registry.generation();
        let service = self.service(&address, generation, channel.clone());
        registry.endpoints.insert(
            address.clone(),
            Entry {
                channel,
                generation,
                consecutive_failures: 0,
                times_ejected: 0,
                ejected_until: None,
            },
        );
        tracing::info!(service = %self.name, endpoint = %address, "endpoint added");
        self.send(Change::Insert(address, service));
    }

    fn remove(&self, address: &str) {
        let mut registry = self.lock();
        let Some(entry) = registry.endpoints.remove(address) else {
            return;
        };
        tracing::info!(service = %self.name, endpoint = %address, "endpoint removed");
        // An ejected endpoint is already out of the balancer; its pending
        // re-admission finds no entry and does nothing.
        if entry.ejected_until.is_none() {
            self.send(Change::Remove(address.to_owned()));
        }
    }

    /// Makes the endpoint set equal to `addresses` (one DNS answer).
    fn reconcile(self: &Arc<Self>, addresses: &BTreeSet<String>) {
        let gone: Vec<String> = self
            .lock()
            .endpoints
            .keys()
            .filter(|known| !addresses.contains(*known))
            .cloned()
            .collect();
        for address in gone {
            self.remove(&address);
        }
        for address in addresses {
            // Known endpoints keep their channel (building one spawns a
            // connection task that `add` would only throw away).
            if self.lock().endpoints.contains_key(address) {
                continue;
            }
            match self.channel(address) {
                Ok(channel) => self.add(address.clone(), channel),
                Err(error) => {
                    tracing::warn!(service = %self.name, endpoint = %address, %error, "unusable address");
                }
            }
        }
    }

    /// Books one finished call against the endpoint instance that served it.
    fn record(self: &Arc<Self>, address: &str, generation: u64, outcome: Outcome) {
        let mut registry = self.lock();
        let may_eject = registry.may_eject_one_more(self.policy.max_ejected_percent);
        let Some(entry) = registry.endpoints.get_mut(address) else {
            return;
        };
        if entry.generation != generation || entry.ejected_until.is_some() {
            return;
        }
        if !outcome.is_server_fault() {
            entry.consecutive_failures = 0;
            return;
        }
        entry.consecutive_failures = entry.consecutive_failures.saturating_add(1);
        let threshold = self.policy.consecutive_failures;
        if threshold == 0 || entry.consecutive_failures < threshold {
            return;
        }
        if !may_eject {
            // Keep counting: the next fault retries once another endpoint
            // has come back and the cap has room again.
            tracing::debug!(
                service = %self.name,
                endpoint = %address,
                failures = entry.consecutive_failures,
                "not ejecting: too many endpoints already ejected"
            );
            return;
        }
        let factor = entry.times_ejected.saturating_add(1);
        let duration = self
            .policy
            .base_ejection
            .saturating_mul(factor)
            .min(self.policy.max_ejection);
        entry.times_ejected = factor;
        entry.ejected_until = Some(Instant::now() + duration);
        tracing::warn!(
            service = %self.name,
            endpoint = %address,
            failures = entry.consecutive_failures,
            last = ?outcome.code(),
            ejected_for = ?duration,
            times_ejected = factor,
            "endpoint ejected"
        );
        self.send(Change::Remove(address.to_owned()));
        let shared = Arc::clone(self);
        let address = address.to_owned();
        self.runtime.spawn(async move {
            tokio::time::sleep(duration).await;
            shared.readmit(&address, generation);
        });
    }

    fn readmit(self: &Arc<Self>, address: &str, ejected_generation: u64) {
        let mut registry = self.lock();
        let generation = registry.generation();
        let Some(entry) = registry.endpoints.get_mut(address) else {
            return;
        };
        // A different generation means the address was dropped by DNS and
        // re-added meanwhile: that instance is already in the balancer.
        if entry.generation != ejected_generation || entry.ejected_until.is_none() {
            return;
        }
        entry.generation = generation;
        entry.ejected_until = None;
        entry.consecutive_failures = 0;
        let service = self.service(address, generation, entry.channel.clone());
        tracing::info!(service = %self.name, endpoint = %address, "endpoint re-admitted");
        self.send(Change::Insert(address.to_owned(), service));
    }

    fn snapshot(&self) -> Vec<EndpointStatus> {
        let now = Instant::now();
        self.lock()
            .endpoints
            .iter()
            .map(|(address, entry)| EndpointStatus {
                address: address.clone(),
                ejected: entry.ejected_until.is_some(),
                ejected_for: entry
                    .ejected_until
                    .map(|until| until.saturating_duration_since(now)),
                consecutive_failures: entry.consecutive_failures,
            })
            .collect()
    }
}

/// Re-resolves `host` until the balancer is dropped.
async fn follow_dns(shared: Arc<Shared>, host: String, port: u16, refresh: Duration) {
    loop {
        // A hung resolver must not stall the refreshes after it.
        let lookup = tokio::time::timeout(refresh, tokio::net::lookup_host((host.as_str(), port))).await;
        match lookup {
            Ok(Ok(addresses)) => {
                let addresses: BTreeSet<String> = addresses.map(|a| format!("http://{a}")).collect();
                if addresses.is_empty() {
                    // An empty answer is far more often a DNS hiccup than a
                    // service scaled to zero; keep what we have.
                    tracing::warn!(service = %shared.name, %host, "DNS returned no addresses; keeping endpoints");
                } else {
                    shared.reconcile(&addresses);
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(service = %shared.name, %host, %error, "DNS resolution failed; keeping endpoints");
            }
            Err(_) => {
                tracing::warn!(service = %shared.name, %host, "DNS resolution timed out; keeping endpoints");
            }
        }
        tokio::select! {
            () = shared.changes.closed() => return,
            () = tokio::time::sleep(refresh) => {}
        }
    }
}

/// One backend as the balancer sees it: the connection plus the reporting
/// of each call's outcome to the ejection bookkeeping.
struct Endpoint {
    address: Arc<str>,
    generation: u64,
    channel: Channel,
    shared: Arc<Shared>,
}

impl Endpoint {
    fn reporter(&self) -> impl FnOnce(Outcome) + Send + 'static {
        let shared = Arc::clone(&self.shared);
        let address = Arc::clone(&self.address);
        let generation = self.generation;
        move |outcome| shared.record(&address, generation, outcome)
    }
}

impl Service<Request<Body>> for Endpoint {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let call = self.channel.call(request);
        let report = self.reporter();
        let classifier = Arc::clone(&self.shared.classifier);
        Box::pin(async move {
            let response = match call.await {
                Ok(response) => response,
                Err(error) => {
                    report(classifier.transport_error());
                    return Err(error.into());
                }
            };
            Ok(classify::observe(response, classifier, report))
        })
    }
}

#[cfg(test)]
mod tests;
