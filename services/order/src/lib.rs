//! The order service: takes orders and runs the durable saga that reserves
//! stock, takes payment and confirms them, or compensates.
//!
//! # Layout
//! - [`store`]: orders, lines and saga rows in the order database.
//! - [`saga`]: the saga: its decisions ([`saga::plan`]), its downstream calls
//!   ([`saga::steps`]) and its workers ([`saga::runner`]).
//! - [`api`]: the `OrderService` gRPC surface (validation, conversion).
//! - [`admin`]: the `OrderAdminService` (sagas that need an operator).
//! - [`watch`]: WatchOrder's feed (saga updates, one poll per process).
//! - [`projections`]: the consumers of events: each order's timeline, and
//!   the confirmation notices.
//! - [`catalogue`]: the catalogue read cache, invalidated by inventory's
//!   ProductUpdated events.
//! - [`error`]: domain errors and their mapping to `tonic::Status`.
//!
//! Shape: [`Config`] (plain data) -> [`build`] (pool, migrations, clients) ->
//! [`Service::serve`] on a listener the caller bound.

pub mod admin;
pub mod api;
pub mod catalogue;
pub mod error;
pub mod projections;
pub mod saga;
pub mod store;
pub mod watch;

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;

use ordermesh_events::{BoundedContext, Bus, BusSettings, ConsumerConfig, DomainEvent, ServiceEvents};
use ordermesh_mesh::stack::{Mesh, MeshChannel};
use ordermesh_proto::events::v1::OrderConfirmed;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::order::v1::order_admin_service_server::OrderAdminServiceServer;
use ordermesh_proto::order::v1::order_service_server::{OrderServiceServer, SERVICE_NAME};
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh_runtime::actor::OperatorOnly;
use ordermesh_runtime::server::{MeshSettings, serve};
use tonic::service::interceptor::InterceptedService;

pub use error::Error;
pub use saga::{CrashPoint, Pause, SagaConfig, SagaRunner};
pub use store::Store;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The CloudEvents source of order events.
pub const EVENT_SOURCE: &str = "/ordermesh/order";

/// Most catalogue entries the cache keeps.
const CATALOGUE_CAPACITY: usize = 10_000;

/// Everything the order service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// The inventory service, e.g. `http://127.0.0.1:50052`.
    pub inventory_url: String,
    /// The payment service, e.g. `http://127.0.0.1:50053`.
    pub payment_url: String,
    pub saga: SagaConfig,
    /// How often WatchOrder looks for changes made by other replicas (one
    /// query per process, only while someone watches).
    pub watch_poll_interval: Duration,
    /// How long a catalogue cache entry may serve without an update event.
    pub catalogue_ttl: Duration,
    /// Where its events go and come from (JetStream, or the process's
    /// in-process broker, which `up` shares between the services).
    pub bus: Bus,
    pub mesh: MeshSettings,
}

impl Config {
    pub fn new(
        database_url: impl Into<String>,
        inventory_url: impl Into<String>,
        payment_url: impl Into<String>,
    ) -> Self {
        Self {
            database_url: database_url.into(),
            inventory_url: inventory_url.into(),
            payment_url: payment_url.into(),
            saga: SagaConfig::default(),
            watch_poll_interval: Duration::from_secs(1),
            catalogue_ttl: Duration::from_secs(300),
            bus: Bus::in_process(BusSettings::default()),
            mesh: MeshSettings::default(),
        }
    }
}

/// What can stop the order service from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Runtime(#[from] ordermesh_runtime::Error),
    #[error(
        "saga.lease ({lease:?}) must be longer than saga.call_timeout + saga.lease_margin ({needed:?}) \
         (--saga-lease-ms, --saga-call-timeout-ms)"
    )]
    LeaseTooShort { lease: Duration, needed: Duration },
    #[error("cannot build the mesh client stack: {0}")]
    Mesh(#[from] ordermesh_mesh::stack::MeshError),
}

/// A built order service, ready to serve.
pub struct Service {
    store: Store,
    runner: SagaRunner,
    watch: watch::WatchHub,
    watch_poll_interval: Duration,
    inventory: InventoryServiceClient<MeshChannel>,
    catalogue: catalogue::Catalogue,
    events: ServiceEvents,
    mesh: Mesh,
    settings: MeshSettings,
}

/// Connects to the database, applies migrations and prepares the clients of
/// the inventory and payment services.
pub async fn build(config: Config) -> Result<Service, StartError> {
    // A worker renews its lease before any call the lease would not cover
    // with the clock-skew margin to spare; a shorter lease could never cover
    // one. (A lease that lapses while a worker waits to retry is safe: the
    // worker's next renewal or write is fenced.)
    let saga = &config.saga;
    let needed = saga.call_timeout + saga.lease_margin;
    if saga.lease <= needed {
        return Err(StartError::LeaseTooShort {
            lease: saga.lease,
            needed,
        });
    }
    let db = ordermesh_runtime::db::connect("order", &config.database_url, &MIGRATIONS).await?;
    let mut events = ServiceEvents::start(EVENT_SOURCE, db.write.clone(), config.bus.clone()).await;
    let store = Store::new(db.clone(), events.publisher().clone());
    // The timeline follows all three streams; the notifier, confirmations.
    for (name, context) in projections::TIMELINE_CONSUMERS {
        events.consume(
            ConsumerConfig::new(name, context),
            projections::Timeline::new(db.write.clone()),
        );
    }
    let mut notifier = ConsumerConfig::new(projections::NOTIFIER, BoundedContext::Orders);
    notifier.filter_subjects = vec![<OrderConfirmed as DomainEvent>::KIND.subject()];
    events.consume_inboxed(notifier, db.write.clone(), projections::Notifier);
    // Every outgoing call goes through the mesh stack (deadline, retry
    // budget, breaker, faults, balancing). Channels connect lazily, so the
    // service starts, and recovers sagas, while a peer is still down.
    let mesh = config.mesh.build("order");
    mesh.flags().define(
        api::PRECHECK_FLAG,
        ordermesh_mesh::flags::Flag {
            enabled: false,
            rollout_percent: 100.0,
            description:
                "CreateOrder refuses an order whose lines are out of stock now (FAILED_PRECONDITION) \
                          instead of accepting it and rejecting it in the saga; rolled out per customer id."
                    .into(),
        },
    );
    let participant = |name: &str, url: &str| -> Result<_, StartError> {
        let channel = mesh.client(name, url)?;
        let handles = mesh
            .downstream(name)
            .expect("Mesh::client registers the downstream it builds");
        Ok((channel, handles))
    };
    let (inventory_channel, inventory_mesh) = participant("inventory", &config.inventory_url)?;
    let (payment_channel, payment_mesh) = participant("payment", &config.payment_url)?;
    let inventory = InventoryServiceClient::new(inventory_channel);
    let steps = saga::steps::Steps {
        inventory: saga::steps::Participant {
            client: inventory.clone(),
            mesh: inventory_mesh,
        },
        payment: saga::steps::Participant {
            client: PaymentServiceClient::new(payment_channel),
            mesh: payment_mesh,
        },
        call_timeout: config.saga.call_timeout,
    };
    let watch = watch::WatchHub::new(store.clone());
    let runner = SagaRunner::new(store.clone(), steps, config.saga, watch.clone());
    let (measured, counted) = (runner.clone(), store.clone());
    ordermesh_runtime::metrics::on_scrape(move || {
        let (runner, store) = (measured.clone(), counted.clone());
        Box::pin(async move {
            metrics::gauge!(saga::measure::IN_FLIGHT).set(runner.driving() as f64);
            match store.count_needing_attention().await {
                Ok(count) => metrics::gauge!(saga::measure::NEEDING_ATTENTION).set(count as f64),
                Err(error) => tracing::warn!(%error, "cannot count the sagas needing attention"),
            }
        })
    });
    let catalogue = catalogue::Catalogue::new(inventory.clone(), config.catalogue_ttl, CATALOGUE_CAPACITY);
    Ok(Service {
        store,
        runner,
        watch,
        watch_poll_interval: config.watch_poll_interval,
        inventory,
        catalogue,
        events,
        mesh,
        settings: config.mesh,
    })
}

impl Service {
    /// The store, for tests and tools that check invariants.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The saga runner, for tests that count what it did.
    pub fn runner(&self) -> &SagaRunner {
        &self.runner
    }

    /// Serves gRPC on `listener` until `shutdown` completes; meanwhile the
    /// recovery worker resumes sagas left unfinished by an earlier process.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ordermesh_runtime::Error> {
        let recovery = tokio::spawn(self.runner.clone().recover_forever());
        let poll = tokio::spawn(self.watch.clone().poll_forever(self.watch_poll_interval));
        let catalogue_updates = tokio::spawn(self.catalogue.clone().follow(self.events.bus().clone()));
        let trust = self.settings.trust();
        let api = api::OrderApi::new(
            self.store.clone(),
            self.runner.clone(),
            self.watch.clone(),
            (self.inventory.clone(), self.catalogue.clone()),
            self.mesh.flags().clone(),
            trust,
        );
        let max = self.settings.max_request_bytes();
        let routes = Routes::new(OrderServiceServer::new(api).max_decoding_message_size(max))
            .add_service(InterceptedService::new(
                OrderAdminServiceServer::new(admin::OrderAdmin::new(self.store.clone(), self.runner.clone()))
                    .max_decoding_message_size(max),
                OperatorOnly(trust),
            ))
            .add_service(self.events.admin(trust));
        let db = self.store.db().clone();
        let mut options = self.settings.serve_options(SERVICE_NAME, self.mesh.clone());
        options.extra_health.push(self.events.health());
        let result = serve(routes, db, listener, options, shutdown).await;
        recovery.abort();
        poll.abort();
        catalogue_updates.abort();
        self.runner.stop();
        self.events.shutdown().await;
        result
    }
}
