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
//!
//! The parts: `endpoints` keeps the endpoint set (one connection per
//! address, DNS discovery, outcome bookkeeping and ejection, with its
//! [`EjectionPolicy`] and [`EndpointStatus`]) and feeds it to the p2c
//! balancer as a stream of changes; `dispatch` is [`Balanced`], the transport
//! that lets every caller share that one balancer. This file holds the rest
//! of the configuration and [`balanced`], which wires the two together.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::classify::Classifier;

mod dispatch;
mod endpoints;
#[cfg(test)]
mod tests;

pub use dispatch::Balanced;
pub use endpoints::{EjectionPolicy, EndpointStatus};
use endpoints::{Shared, follow_dns};

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
    balanced_over(name, config, classifier, None)
}

/// [`balanced`], connecting to every endpoint through `tls` when given
/// (mutual TLS, the server's certificate naming `name`).
pub fn balanced_over(
    name: &str,
    config: BalancerConfig,
    classifier: Arc<Classifier>,
    tls: Option<crate::tls::Connector>,
) -> Result<(Balanced, BalancerHandle), BalanceError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(
        Shared::new(
            name,
            config.ejection,
            classifier,
            config.connect_timeout,
            tx,
            tokio::runtime::Handle::current(),
        )
        .with_tls(tls),
    );
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
    let balanced = Balanced::new(rx);
    Ok((balanced, BalancerHandle { shared }))
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
