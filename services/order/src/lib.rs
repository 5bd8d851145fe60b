//! The order service: takes orders and runs the durable saga that reserves
//! stock, takes payment and confirms them, or compensates.
//!
//! # Layout
//! - [`store`]: orders, lines and saga rows in the order database.
//! - [`saga`]: the saga runner and the recovery worker.
//! - [`api`]: the gRPC surface (validation, conversion, WatchOrder).
//! - [`error`]: domain errors and their mapping to `tonic::Status`.
//!
//! Shape: [`Config`] (plain data) -> [`build`] (pool, migrations, clients) ->
//! [`Service::serve`] on a listener the caller bound.

pub mod api;
pub mod error;
pub mod saga;
pub mod store;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tonic::service::Routes;

use ordermesh_mesh::stack::{Mesh, MeshChannel};
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::order::v1::order_service_server::{OrderServiceServer, SERVICE_NAME};
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh_runtime::server::{MeshSettings, serve};

pub use error::Error;
pub use saga::{CrashPoint, SagaConfig, SagaRunner};
pub use store::Store;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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
            mesh: MeshSettings::default(),
        }
    }
}

/// What can stop the order service from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Runtime(#[from] ordermesh_runtime::Error),
    #[error("saga.lease ({lease:?}) must be longer than saga.call_timeout + saga.max_backoff ({needed:?})")]
    LeaseTooShort {
        lease: std::time::Duration,
        needed: std::time::Duration,
    },
    #[error("cannot build the mesh client stack: {0}")]
    Mesh(#[from] ordermesh_mesh::stack::MeshError),
}

/// A built order service, ready to serve.
pub struct Service {
    store: Store,
    runner: SagaRunner,
    updates: broadcast::Sender<Arc<store::Order>>,
    inventory: InventoryServiceClient<MeshChannel>,
    mesh: Mesh,
    settings: MeshSettings,
}

/// Connects to the database, applies migrations and prepares the clients of
/// the inventory and payment services.
pub async fn build(config: Config) -> Result<Service, StartError> {
    // A lease that can lapse during one call and its back-off would let a
    // second worker drive the saga concurrently.
    let needed = config.saga.call_timeout + config.saga.max_backoff;
    if config.saga.lease <= needed {
        return Err(StartError::LeaseTooShort {
            lease: config.saga.lease,
            needed,
        });
    }
    let pool = ordermesh_runtime::db::connect(&config.database_url, &MIGRATIONS).await?;
    let store = Store::new(pool);
    // Every outgoing call goes through the mesh stack (deadline, retry
    // budget, breaker, faults, balancing). Channels connect lazily, so the
    // service starts, and recovers sagas, while a peer is still down.
    let mesh = config.mesh.build();
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
    let inventory = InventoryServiceClient::new(mesh.client("inventory", &config.inventory_url)?);
    let payment = PaymentServiceClient::new(mesh.client("payment", &config.payment_url)?);
    let (updates, _) = broadcast::channel(1024);
    let runner = SagaRunner::new(
        store.clone(),
        inventory.clone(),
        payment,
        config.saga,
        updates.clone(),
    );
    Ok(Service {
        store,
        runner,
        updates,
        inventory,
        mesh,
        settings: config.mesh,
    })
}

impl Service {
    /// The store, for tests and tools that check invariants.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves gRPC on `listener` until `shutdown` completes; meanwhile the
    /// recovery worker resumes sagas left unfinished by an earlier process.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ordermesh_runtime::Error> {
        let recovery = tokio::spawn(self.runner.clone().recover_forever());
        let api = api::OrderApi::new(
            self.store.clone(),
            self.runner.clone(),
            self.updates.clone(),
            self.inventory.clone(),
            self.mesh.flags().clone(),
        );
        let server =
            OrderServiceServer::new(api).max_decoding_message_size(self.settings.max_request_bytes());
        let routes = Routes::new(server);
        let pool = self.store.pool().clone();
        let options = self.settings.serve_options(SERVICE_NAME, self.mesh.clone());
        let result = serve(routes, pool, listener, options, shutdown).await;
        recovery.abort();
        self.runner.stop();
        result
    }
}
