//! The inventory service: the catalogue, stock on hand and reservations of
//! stock for orders.
//!
//! # Layout
//! - [`store`]: the database; every stock movement is a conditional update.
//! - [`api`]: the gRPC surface (validation and conversion).
//! - [`error`]: domain errors and their mapping to `tonic::Status`.
//! - [`demo`]: the demo catalogue `ordermesh up` seeds.
//! - [`alerts`]: the consumer recording restock alerts from StockLow events.
//!
//! Shape: [`Config`] (plain data) -> [`build`] (pool, migrations, seed) ->
//! [`Service::serve`] on a listener the caller bound.

pub mod alerts;
pub mod api;
pub mod demo;
pub mod error;
pub mod store;

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;

use ordermesh_events::{BoundedContext, Bus, BusSettings, ConsumerConfig, DomainEvent, ServiceEvents};
use ordermesh_proto::events::v1::StockLow;
use ordermesh_proto::inventory::v1::inventory_service_server::{InventoryServiceServer, SERVICE_NAME};
use ordermesh_runtime::server::{MeshSettings, serve};

pub use error::Error;
pub use store::{SeedItem, Store};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The CloudEvents source of inventory events.
pub const EVENT_SOURCE: &str = "/ordermesh/inventory";

/// Everything the inventory service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// How long a reservation may stay uncommitted before its stock returns.
    pub reservation_ttl: Duration,
    /// How often expired reservations are swept.
    pub sweep_interval: Duration,
    /// Catalogue entries created on start when missing.
    pub seed: Vec<SeedItem>,
    /// Where its events go (JetStream, or the process's in-process broker).
    pub bus: Bus,
    pub mesh: MeshSettings,
}

impl Config {
    /// Fifteen minutes: well past the saga's default windows (3 x 30 s of
    /// patience + 10 minutes forward), which it must outlive.
    pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(15 * 60);

    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            reservation_ttl: Self::DEFAULT_RESERVATION_TTL,
            sweep_interval: Duration::from_secs(1),
            seed: Vec::new(),
            bus: Bus::in_process(BusSettings::default()),
            mesh: MeshSettings::default(),
        }
    }
}

/// A built inventory service, ready to serve.
pub struct Service {
    store: Store,
    events: ServiceEvents,
    config: Config,
}

/// Connects to the database, applies migrations and seeds the catalogue.
pub async fn build(config: Config) -> Result<Service, ordermesh_runtime::Error> {
    let db = ordermesh_runtime::db::connect("inventory", &config.database_url, &MIGRATIONS).await?;
    let mut events = ServiceEvents::start(EVENT_SOURCE, db.write.clone(), config.bus.clone()).await;
    let store = Store::new(db.clone(), config.reservation_ttl, events.publisher().clone());
    if let Err(e) = store.seed(&config.seed).await {
        tracing::error!(error = %e, "seeding the catalogue failed");
    }
    // Restock alerts: one per StockLow event, exactly once (its inbox,
    // pruned by `events`).
    let mut alerts = ConsumerConfig::new(alerts::CONSUMER, BoundedContext::Inventory);
    alerts.filter_subjects = vec![<StockLow as DomainEvent>::KIND.subject()];
    events.consume_inboxed(alerts, db.write, alerts::RestockAlerts);
    Ok(Service {
        store,
        events,
        config,
    })
}

impl Service {
    /// The store, for tests and tools that check invariants.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves gRPC on `listener` until `shutdown` completes, sweeping expired
    /// reservations in the background meanwhile.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ordermesh_runtime::Error> {
        let store = self.store.clone();
        let sweeper = tokio::spawn(ordermesh_runtime::periodic::every(
            "reservation expiry",
            self.config.sweep_interval,
            move || {
                let store = store.clone();
                async move { store.expire_due().await }
            },
        ));
        let server = InventoryServiceServer::new(api::InventoryApi::new(
            self.store.clone(),
            self.config.mesh.trust(),
        ))
        .max_decoding_message_size(self.config.mesh.max_request_bytes());
        let routes = Routes::new(server).add_service(self.events.admin(self.config.mesh.trust()));
        let mut options = self
            .config
            .mesh
            .serve_options(SERVICE_NAME, self.config.mesh.build("inventory"));
        options.extra_health.push(self.events.health());
        let db = self.store.db().clone();
        let result = serve(routes, db, listener, options, shutdown).await;
        sweeper.abort();
        self.events.shutdown().await;
        result
    }
}
