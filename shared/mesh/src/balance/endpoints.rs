//! The endpoint set behind the balancer: one connection per backend address,
//! kept equal to the static list or the latest DNS answer, each call's
//! outcome booked against the endpoint that served it, and misbehaving
//! endpoints ejected and re-admitted. Every change reaches the balancer as a
//! [`Discovered`] item, sent under the registry lock so the balancer applies
//! them in the registry's order.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::discover::Change;
use tower::load::PeakEwma;
use tower::load::completion::CompleteOnResponse;
use tower::{BoxError, Service};

use crate::classify::{self, Classifier, Outcome};

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

/// What [`BalancerHandle::snapshot`](super::BalancerHandle::snapshot) reports for one endpoint.
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

pub(super) type EndpointFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;
pub(super) type Discovered = Result<Change<String, PeakEwma<Endpoint>>, Infallible>;

/// State shared by the discovery task, the endpoints' outcome reports and
/// the re-admission timers. Every change to the balancer's endpoint set is
/// sent while holding the registry lock, so the balancer sees inserts and
/// removals in the same order as the registry applied them.
pub(super) struct Shared {
    pub(super) name: String,
    policy: EjectionPolicy,
    classifier: Arc<Classifier>,
    connect_timeout: Duration,
    changes: mpsc::UnboundedSender<Discovered>,
    // Outcome reports arrive from inside response bodies, which may be polled
    // outside any runtime context; timers are spawned here instead.
    pub(super) runtime: tokio::runtime::Handle,
    registry: Mutex<Registry>,
    /// Mutual TLS to every endpoint, when the process has certificates.
    tls: Option<crate::tls::Connector>,
}

#[derive(Default)]
pub(super) struct Registry {
    pub(super) endpoints: BTreeMap<String, Entry>,
    next_generation: u64,
}

pub(super) struct Entry {
    channel: Channel,
    /// Identifies the service instance currently in the balancer; outcomes
    /// of calls sent through an older instance (before an ejection) must
    /// not count against the re-admitted one.
    pub(super) generation: u64,
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
    pub(super) fn new(
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
            tls: None,
        }
    }

    /// Connects every endpoint over mutual TLS through `connector`.
    pub(super) fn with_tls(mut self, connector: Option<crate::tls::Connector>) -> Self {
        self.tls = connector;
        self
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry stays consistent across a panic in a holder (every
        // update is a few plain assignments), so poisoning is not fatal.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn channel(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let endpoint = tonic::transport::Endpoint::from_shared(address.to_owned())?
            .connect_timeout(self.connect_timeout)
            .http2_max_header_list_size(crate::server::MAX_RESPONSE_HEADER_LIST_BYTES);
        Ok(match &self.tls {
            Some(connector) => endpoint.connect_with_connector_lazy(connector.clone()),
            None => endpoint.connect_lazy(),
        })
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

    pub(super) fn add(self: &Arc<Self>, address: String, channel: Channel) {
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
    pub(super) fn reconcile(self: &Arc<Self>, addresses: &BTreeSet<String>) {
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
    pub(super) fn record(self: &Arc<Self>, address: &str, generation: u64, outcome: Outcome) {
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

    pub(super) fn snapshot(&self) -> Vec<EndpointStatus> {
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
pub(super) async fn follow_dns(shared: Arc<Shared>, host: String, port: u16, refresh: Duration) {
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
pub(super) struct Endpoint {
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
                    report(classifier.transport_error(&error));
                    return Err(error.into());
                }
            };
            Ok(classify::observe(response, classifier, report))
        })
    }
}
