//! The payment service: customer accounts, payments (authorize, capture,
//! void, refund) and the double-entry ledger behind them.
//!
//! # Layout
//! - [`store`]: the database; every movement is a conditional update plus
//!   two ledger entries that sum to zero, and its event in the outbox, in one
//!   transaction; authorizations hold for a limited time and a background
//!   sweep releases lapsed holds.
//! - [`api`]: the gRPC surface (validation and conversion).
//! - [`error`]: domain errors and their mapping to `tonic::Status`.
//! - [`demo`]: the demo customers `ordermesh up` seeds.
//!
//! Shape: [`Config`] (plain data) -> [`build`] (pool, migrations, seed) ->
//! [`Service::serve`] on a listener the caller bound.

pub mod api;
pub mod demo;
pub mod error;
pub mod store;

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;

use ordermesh_events::{Bus, BusSettings, ServiceEvents};
use ordermesh_proto::payment::v1::payment_service_server::{PaymentServiceServer, SERVICE_NAME};
use ordermesh_runtime::server::{MeshSettings, serve};

pub use error::Error;
pub use store::{SeedAccount, Store};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The CloudEvents source of payment events.
pub const EVENT_SOURCE: &str = "/ordermesh/payment";

/// Everything the payment service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// Accounts created on start when missing.
    pub seed: Vec<SeedAccount>,
    /// How long an uncaptured authorization holds its amount before it is
    /// voided automatically (as a card authorization lapses): the safety net
    /// for a hold its caller never finished.
    pub authorization_hold: Duration,
    /// How often lapsed holds are swept.
    pub sweep_interval: Duration,
    /// Where its events go (JetStream, or the process's in-process broker).
    pub bus: Bus,
    pub mesh: MeshSettings,
}

impl Config {
    /// Seven days, as card networks commonly hold an authorization.
    pub const DEFAULT_AUTHORIZATION_HOLD: Duration = Duration::from_secs(7 * 24 * 60 * 60);

    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            seed: Vec::new(),
            authorization_hold: Self::DEFAULT_AUTHORIZATION_HOLD,
            sweep_interval: Duration::from_secs(5),
            bus: Bus::in_process(BusSettings::default()),
            mesh: MeshSettings::default(),
        }
    }
}

/// A built payment service, ready to serve.
pub struct Service {
    store: Store,
    events: ServiceEvents,
    mesh: MeshSettings,
    sweep_interval: Duration,
}

/// Connects to the database, applies migrations and seeds the accounts.
pub async fn build(config: Config) -> Result<Service, ordermesh_runtime::Error> {
    let db = ordermesh_runtime::db::connect("payment", &config.database_url, &MIGRATIONS).await?;
    let events = ServiceEvents::start(EVENT_SOURCE, db.write.clone(), config.bus).await;
    let store = Store::new(db, config.authorization_hold, events.publisher().clone());
    if let Err(e) = store.seed(&config.seed).await {
        tracing::error!(error = %e, "seeding the accounts failed");
    }
    Ok(Service {
        store,
        events,
        mesh: config.mesh,
        sweep_interval: config.sweep_interval,
    })
}

impl Service {
    /// The store, for tests and tools that check invariants.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves gRPC on `listener` until `shutdown` completes, releasing lapsed
    /// holds in the background meanwhile.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ordermesh_runtime::Error> {
        let trust = self.mesh.trust();
        let server = PaymentServiceServer::new(api::PaymentApi::new(self.store.clone(), trust))
            .max_decoding_message_size(self.mesh.max_request_bytes());
        let routes = Routes::new(server).add_service(self.events.admin(trust));
        let store = self.store.clone();
        let sweeper = tokio::spawn(ordermesh_runtime::periodic::every(
            "authorization hold expiry",
            self.sweep_interval,
            move || {
                let store = store.clone();
                async move { store.expire_due().await }
            },
        ));
        let db = self.store.db().clone();
        let mut options = self.mesh.serve_options(SERVICE_NAME, self.mesh.build("payment"));
        options.extra_health.push(self.events.health());
        let result = serve(routes, db, listener, options, shutdown).await;
        sweeper.abort();
        self.events.shutdown().await;
        result
    }
}
