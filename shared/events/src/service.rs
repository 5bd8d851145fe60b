//! What every ordermesh service does with events, in one place: relay its
//! outbox to the bus, hand its store a [`Publisher`], run its consumers,
//! serve `EventAdminService` (so `ordermesh events tail` works against any
//! service's port), prune the inbox of a service whose consumers use one
//! (the relay cannot: payment has no inbox table), tell whether its
//! consumers can fetch (the health of `EventAdminService`; a consumer cut off
//! from NATS is otherwise invisible), and stop all of it on shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::AnyPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::EventAdmin;
use crate::bus::Bus;
use crate::config::{ConsumerConfig, InboxPruning};
use crate::outbox::{Outbox, Publisher};
use crate::relay::{Relay, RelayConfig};
use crate::worker::{ConsumerHealth, Handler, Inboxed, TxHandler};
use ordermesh_proto::events::v1::event_admin_service_server::EventAdminServiceServer;

/// A service's running event plumbing.
pub struct ServiceEvents {
    bus: Bus,
    relay: Relay,
    publisher: Publisher,
    stop: watch::Sender<bool>,
    consumers: Vec<JoinHandle<()>>,
    inbox_pruning: InboxPruning,
    health: Consumers,
    serving: watch::Receiver<bool>,
    /// Started with the first inboxed consumer (`Some(None)`: not pruned).
    pruner: Option<Option<JoinHandle<()>>>,
}

impl ServiceEvents {
    /// Creates (or updates) the event streams, then starts relaying the
    /// outbox in `pool` (the service's write pool) to `bus`; `source` is the
    /// service's CloudEvents source, e.g. `/ordermesh/order`. NATS being down
    /// does not stop the service: the relay and consumers retry, and create
    /// the streams when it is back.
    pub async fn start(source: &str, pool: AnyPool, bus: Bus) -> Self {
        if let Err(e) = bus.ensure_streams().await {
            tracing::warn!(error = %e, "cannot create the event streams yet; retried when NATS answers");
        }
        let service = source.rsplit('/').next().unwrap_or(source).to_owned();
        crate::measure::export_outbox(service.clone(), pool.clone());
        let relay = Relay::spawn(
            pool,
            bus.clone(),
            RelayConfig {
                service,
                ..RelayConfig::default()
            },
        );
        let publisher = Publisher::new(Outbox::new(source), relay.notifier());
        let stop = watch::channel(false).0;
        let health = Consumers::default();
        let (serving_tx, serving) = watch::channel(true);
        tokio::spawn(watch_consumers(health.clone(), serving_tx, stop.subscribe()));
        Self {
            bus,
            relay,
            publisher,
            stop,
            consumers: Vec::new(),
            inbox_pruning: InboxPruning::default(),
            health,
            serving,
            pruner: None,
        }
    }

    /// How the inbox is pruned once a consumer uses it (call before
    /// [`consume_inboxed`](Self::consume_inboxed)).
    pub fn set_inbox_pruning(&mut self, pruning: InboxPruning) {
        self.inbox_pruning = pruning;
    }

    /// Runs `handler` exactly-once through the inbox in `pool` (keyed by the
    /// consumer's name) until shutdown.
    /// The first such consumer also starts pruning that inbox
    /// ([`crate::inbox::Pruner`]); services without one have no inbox table.
    pub fn consume_inboxed<H: TxHandler>(&mut self, config: ConsumerConfig, pool: AnyPool, handler: H) {
        if self.pruner.is_none() {
            self.pruner = Some(self.start_pruner(pool.clone()));
        }
        let name = config.name.clone();
        self.consume(config, Inboxed::new(pool, name, handler));
    }

    fn start_pruner(&self, pool: AnyPool) -> Option<JoinHandle<()>> {
        let pruning = &self.inbox_pruning;
        let Some(retention) = pruning.retention_for(&self.bus.settings().streams) else {
            tracing::info!("streams keep events forever (max_age 0): the inbox is not pruned");
            return None;
        };
        let mut stop = self.stop.subscribe();
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        Some(crate::inbox::Pruner::spawn(
            pool,
            retention,
            pruning.interval,
            pruning.chunk,
            stopped,
        ))
    }

    /// Runs `handler` on `config`'s durable consumer until shutdown.
    pub fn consume<H: Handler>(&mut self, config: ConsumerConfig, handler: H) {
        let mut stop = self.stop.subscribe();
        let bus = self.bus.clone();
        let (health, watched) = watch::channel(ConsumerHealth::Starting);
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((config.name.clone(), watched));
        self.consumers.push(tokio::spawn(async move {
            let name = config.name.clone();
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            if let Err(e) = crate::worker::run_reporting(bus, config, handler, stopped, health).await {
                tracing::error!(consumer = %name, error = %e, "consumer stopped");
            }
        }));
    }

    /// Whether every consumer can fetch: turns `false` once one has been
    /// unable to (broker away, durable or stream lost and not yet re-created)
    /// for longer than [`FETCH_GRACE`], and `true` again when it can. What a
    /// server reports for `ordermesh.events.v1.EventAdminService`.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.serving.clone()
    }

    /// [`serving`](Self::serving) under the health name of the
    /// `EventAdminService` this process serves, for
    /// `ServeOptions::extra_health`.
    pub fn health(&self) -> (&'static str, watch::Receiver<bool>) {
        (
            ordermesh_proto::events::v1::event_admin_service_server::SERVICE_NAME,
            self.serving(),
        )
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The `EventAdminService` over this service's bus.
    /// The service's `EventAdminService`, for operators only (dead letters
    /// are replayed through it).
    pub fn admin(
        &self,
        trust: ordermesh_runtime::actor::Trust,
    ) -> ordermesh_runtime::actor::OperatorsOnly<EventAdminServiceServer<EventAdmin>> {
        tonic::service::interceptor::InterceptedService::new(
            EventAdmin::new(self.bus.clone()).into_server(),
            ordermesh_runtime::actor::OperatorOnly(trust),
        )
    }

    /// Stops the consumers (between deliveries) and the relay after its
    /// current round; rows not yet published are published by the next
    /// process, deliveries not yet acked are redelivered.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for consumer in self.consumers {
            let _ = consumer.await;
        }
        if let Some(Some(pruner)) = self.pruner {
            let _ = pruner.await;
        }
        self.relay.shutdown().await;
    }
}

/// How long a consumer may be unable to fetch before the events service
/// reports NOT_SERVING: longer than a NATS reconnect or a durable's
/// re-creation, short enough for a probe to notice an outage.
pub const FETCH_GRACE: Duration = Duration::from_secs(5);

/// The health of each consumer, by name.
type Consumers = Arc<Mutex<Vec<(String, watch::Receiver<ConsumerHealth>)>>>;

/// Publishes on `serving` whether no consumer has been unable to fetch for
/// longer than [`FETCH_GRACE`], until `stop`.
async fn watch_consumers(
    consumers: Consumers,
    serving: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        let stuck: Vec<(String, String)> = consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(name, health)| match &*health.borrow() {
                ConsumerHealth::CannotFetch { since, error } if since.elapsed() > FETCH_GRACE => {
                    Some((name.clone(), error.clone()))
                }
                _ => None,
            })
            .collect();
        let now = stuck.is_empty();
        if *serving.borrow() != now {
            if now {
                tracing::warn!("every event consumer fetches again");
            } else {
                tracing::warn!(consumers = ?stuck, "event consumers cannot fetch");
            }
            serving.send_replace(now);
        }
    }
}
