//! Harness for the system tests: starts the three services in-process, each
//! on its own `127.0.0.1:0` port with real gRPC between them, on SQLite files
//! in a temporary directory or on fresh PostgreSQL databases.
//!
//! PostgreSQL comes from `ORDERMESH_TEST_POSTGRES_URL` (an admin URL whose
//! user may `CREATE DATABASE`), else `postgres://postgres@127.0.0.1:5432/postgres`.
//! When no server answers, a PostgreSQL test prints a loud SKIP line and
//! passes, except under `CI`, where it fails: CI must run both backends.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::mesh::v1::mesh_admin_service_client::MeshAdminServiceClient;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::payment::v1 as payment_pb;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;

pub use ordermesh_mesh::policy::Policy;
pub use ordermesh_order::{CrashPoint, SagaConfig};
use ordermesh_runtime::server::MeshSettings;

/// The database engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend from an async scenario
/// `fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::Backend::Postgres).await;
                }
            )+
        }
    };
}

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Creates a fresh PostgreSQL database and returns its URL, or `None` (after
/// a SKIP line) when no server is reachable outside CI.
pub async fn postgres_database(label: &str) -> Option<String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let admin = std::env::var("ORDERMESH_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    let mut conn = match sqlx::AnyConnection::connect(&admin).await {
        Ok(conn) => conn,
        Err(e) if in_ci() => panic!("CI needs PostgreSQL at {admin}: {e}"),
        Err(e) => {
            eprintln!(
                "\n*** SKIP {label}: no PostgreSQL at {admin} ({e}); set ORDERMESH_TEST_POSTGRES_URL ***\n"
            );
            return None;
        }
    };
    let name = format!("om_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let base = admin.split('?').next().unwrap_or(&admin);
    let prefix = base.rsplit_once('/').map(|(p, _)| p).unwrap_or(base);
    Some(format!("{prefix}/{name}"))
}

/// How to start a mesh.
#[derive(Clone)]
pub struct MeshOptions {
    pub backend: Backend,
    pub catalogue: Vec<ordermesh_inventory::SeedItem>,
    pub accounts: Vec<ordermesh_payment::SeedAccount>,
    pub reservation_ttl: Duration,
    pub saga: SagaConfig,
    /// The mesh policy of every service (the order service's downstreams).
    pub policy: Policy,
}

impl MeshOptions {
    /// The demo catalogue and customers, a fast saga (short lease and
    /// back-off, so recovery and give-up happen within a test).
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            catalogue: ordermesh_inventory::demo::catalogue(),
            accounts: ordermesh_payment::demo::accounts(),
            reservation_ttl: Duration::from_secs(600),
            saga: fast_saga(),
            policy: test_policy(),
        }
    }
}

/// A mesh policy for tests: breakers that open after a handful of calls and
/// probe again after half a second, so outages and recoveries fit in a test.
pub fn test_policy() -> Policy {
    let text = r#"
        [downstream.payment.breaker]
        window_size = 8
        minimum_calls = 4
        wait_in_open_ms = 500
        permitted_in_half_open = 2
        [downstream.inventory.breaker]
        window_size = 8
        minimum_calls = 4
        wait_in_open_ms = 500
        permitted_in_half_open = 2
        [flags.fault_injection]
        enabled = true
    "#;
    Policy::parse(text, []).expect("the test policy is valid")
}

/// Saga tuning for tests: quick retries, a three-second patience (so an
/// outage of a second is waited out and a longer one compensates within a
/// test), a three-second lease.
pub fn fast_saga() -> SagaConfig {
    SagaConfig {
        call_timeout: Duration::from_secs(1),
        patience: Duration::from_secs(3),
        forward_window: Duration::from_secs(10),
        max_compensation_attempts: 20,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        compensation_max_backoff: Duration::from_millis(500),
        lease: Duration::from_secs(3),
        lease_margin: Duration::from_millis(200),
        recovery_interval: Duration::from_millis(200),
        crash_at: None,
    }
}

/// One running service: its address and how to stop it.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

fn stop_signal() -> (oneshot::Sender<()>, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

async fn spawn_order(
    db: &str,
    inventory_url: &str,
    payment_url: &str,
    saga: SagaConfig,
    policy: Policy,
) -> (ordermesh_order::Store, Running) {
    let mut config = ordermesh_order::Config::new(db, inventory_url, payment_url);
    config.saga = saga;
    config.mesh = MeshSettings {
        policy,
        policy_file: None,
    };
    let order = ordermesh_order::build(config).await.expect("order starts");
    let store = order.store().clone();
    let (order_listener, addr) = listener().await;
    let (stop, signal) = stop_signal();
    let task = tokio::spawn(async move {
        order.serve(order_listener, signal).await.expect("order serves");
    });
    (
        store,
        Running {
            addr,
            stop: Some(stop),
            task,
        },
    )
}

async fn spawn_payment(
    db: &str,
    accounts: Vec<ordermesh_payment::SeedAccount>,
    listener: TcpListener,
) -> (ordermesh_payment::Store, Running) {
    let mut config = ordermesh_payment::Config::new(db);
    config.seed = accounts;
    let payment = ordermesh_payment::build(config).await.expect("payment starts");
    let store = payment.store().clone();
    let addr = listener.local_addr().expect("local addr");
    let (stop, signal) = stop_signal();
    let task = tokio::spawn(async move {
        payment.serve(listener, signal).await.expect("payment serves");
    });
    (
        store,
        Running {
            addr,
            stop: Some(stop),
            task,
        },
    )
}

/// Three services on loopback, with clients and direct store access for
/// invariant checks.
pub struct Mesh {
    pub options: MeshOptions,
    pub order: OrderServiceClient<Channel>,
    pub inventory: InventoryServiceClient<Channel>,
    pub payment: PaymentServiceClient<Channel>,
    pub inventory_store: ordermesh_inventory::Store,
    pub payment_store: ordermesh_payment::Store,
    pub order_store: ordermesh_order::Store,
    inventory_url: String,
    payment_url: String,
    order_db: String,
    payment_db: String,
    services: Vec<(&'static str, Running)>,
    _dir: tempfile::TempDir,
}

fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy()
}

impl Mesh {
    /// Starts inventory, payment and order; `None` when the backend is
    /// unavailable outside CI (the test then passes as skipped).
    pub async fn start(options: MeshOptions) -> Option<Mesh> {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = |name: &str| ordermesh_runtime::db::sqlite_url(dir.path(), name).expect("sqlite url");
        let (inventory_db, payment_db, order_db) = match options.backend {
            Backend::Sqlite => (url("inventory"), url("payment"), url("order")),
            Backend::Postgres => (
                postgres_database("postgres variant").await?,
                postgres_database("postgres variant").await?,
                postgres_database("postgres variant").await?,
            ),
        };

        let mut inventory_config = ordermesh_inventory::Config::new(inventory_db);
        inventory_config.seed = options.catalogue.clone();
        inventory_config.reservation_ttl = options.reservation_ttl;
        inventory_config.sweep_interval = Duration::from_millis(100);
        let inventory = ordermesh_inventory::build(inventory_config)
            .await
            .expect("inventory starts");
        let inventory_store = inventory.store().clone();
        let (inventory_listener, inventory_addr) = listener().await;
        let (stop, signal) = stop_signal();
        let task = tokio::spawn(async move {
            inventory
                .serve(inventory_listener, signal)
                .await
                .expect("inventory serves");
        });
        let inventory_running = Running {
            addr: inventory_addr,
            stop: Some(stop),
            task,
        };

        let (payment_listener, payment_addr) = listener().await;
        let (payment_store, payment_running) =
            spawn_payment(&payment_db, options.accounts.clone(), payment_listener).await;

        let inventory_url = format!("http://{inventory_addr}");
        let payment_url = format!("http://{payment_addr}");
        let (order_store, order_running) = spawn_order(
            &order_db,
            &inventory_url,
            &payment_url,
            options.saga.clone(),
            options.policy.clone(),
        )
        .await;
        Some(Mesh {
            order: OrderServiceClient::new(channel(order_running.addr)),
            inventory: InventoryServiceClient::new(channel(inventory_addr)),
            payment: PaymentServiceClient::new(channel(payment_addr)),
            inventory_store,
            payment_store,
            order_store,
            inventory_url,
            payment_url,
            order_db,
            payment_db,
            services: vec![
                ("inventory", inventory_running),
                ("payment", payment_running),
                ("order", order_running),
            ],
            options,
            _dir: dir,
        })
    }

    /// Starts the order service again on the same database, as a new process
    /// would after the old one died (stop it first with [`Mesh::stop`]).
    pub async fn restart_order(&mut self, saga: SagaConfig) {
        self.stop("order").await;
        let (store, running) = spawn_order(
            &self.order_db,
            &self.inventory_url,
            &self.payment_url,
            saga,
            self.options.policy.clone(),
        )
        .await;
        self.order_store = store;
        self.order = OrderServiceClient::new(channel(running.addr));
        self.services.push(("order", running));
    }

    /// Starts the payment service again on its old address and database
    /// (after [`Mesh::stop`]), as a restarted pod would come back.
    pub async fn restart_payment(&mut self) {
        let addr: SocketAddr = self
            .payment_url
            .trim_start_matches("http://")
            .parse()
            .expect("payment addr");
        let listener = TcpListener::bind(addr).await.expect("rebind the payment port");
        let (store, running) = spawn_payment(&self.payment_db, self.options.accounts.clone(), listener).await;
        self.payment_store = store;
        self.services.push(("payment", running));
    }

    /// Stops a service (gracefully) by name.
    pub async fn stop(&mut self, name: &str) {
        if let Some(index) = self.services.iter().position(|(n, _)| *n == name) {
            let (_, running) = self.services.remove(index);
            running.stop().await;
        }
    }

    /// The mesh admin API of the order service (its payment and inventory
    /// client stacks).
    pub fn order_admin(&self) -> MeshAdminServiceClient<Channel> {
        MeshAdminServiceClient::new(channel(self.addr("order").expect("order runs")))
    }

    /// Places orders (request ids `{prefix}-0`, `-1`, ...) until one
    /// confirms, within `within`; returns how many were needed.
    pub async fn order_until_confirmed(
        &self,
        prefix: &str,
        customer: &str,
        lines: &[(&str, i64)],
        within: Duration,
    ) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        for attempt in 0.. {
            let created = self
                .create_order(&format!("{prefix}-{attempt}"), customer, lines)
                .await
                .expect("created");
            let (_, order) = self.wait_terminal(&created.order_id).await;
            if order.status() == order_pb::OrderStatus::Confirmed {
                return attempt + 1;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no order confirmed within {within:?}: last {order:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!("the loop returns or panics")
    }

    /// The address a service listens on.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.services
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r.addr)
    }

    /// Places an order and returns it as created (PENDING).
    pub async fn create_order(
        &self,
        request_id: &str,
        customer: &str,
        lines: &[(&str, i64)],
    ) -> Result<order_pb::Order, tonic::Status> {
        let request = order_pb::CreateOrderRequest {
            request_id: request_id.into(),
            customer_id: customer.into(),
            lines: lines
                .iter()
                .map(|(sku, quantity)| order_pb::CreateOrderLine {
                    sku: (*sku).into(),
                    quantity: *quantity,
                })
                .collect(),
        };
        let mut client = self.order.clone();
        Ok(client
            .create_order(request)
            .await?
            .into_inner()
            .order
            .expect("order in response"))
    }

    /// Follows WatchOrder until the order is terminal; returns every status
    /// seen and the final order.
    pub async fn wait_terminal(&self, order_id: &str) -> (Vec<order_pb::OrderStatus>, order_pb::Order) {
        let mut client = self.order.clone();
        let follow = async {
            let mut stream = client
                .watch_order(order_pb::WatchOrderRequest {
                    order_id: order_id.into(),
                })
                .await
                .expect("watch starts")
                .into_inner();
            let mut seen = Vec::new();
            let mut last = None;
            while let Some(item) = stream.next().await {
                let order = item.expect("watch item").order.expect("order");
                seen.push(order.status());
                last = Some(order);
            }
            (seen, last.expect("at least one update"))
        };
        tokio::time::timeout(Duration::from_secs(30), follow)
            .await
            .expect("order reaches a terminal status within 30 s")
    }

    pub async fn get_order(&self, order_id: &str) -> order_pb::Order {
        let mut client = self.order.clone();
        client
            .get_order(order_pb::GetOrderRequest {
                order_id: order_id.into(),
            })
            .await
            .expect("GetOrder")
            .into_inner()
            .order
            .expect("order")
    }

    pub async fn account(&self, account_id: &str) -> payment_pb::Account {
        let mut client = self.payment.clone();
        client
            .get_account(payment_pb::GetAccountRequest {
                account_id: account_id.into(),
            })
            .await
            .expect("GetAccount")
            .into_inner()
            .account
            .expect("account")
    }

    pub async fn balance(&self, account_id: &str) -> i64 {
        self.account(account_id)
            .await
            .balance
            .expect("balance")
            .amount_minor
    }

    pub async fn stock(&self, sku: &str) -> ordermesh_inventory::store::Item {
        self.inventory_store.item(sku).await.expect("stock item")
    }

    /// The invariants that hold whenever no saga is in flight: no stock
    /// stays reserved, every SKU's buckets add up to its initial stock, the
    /// ledger sums to zero and every balance matches its ledger account.
    pub async fn assert_invariants(&self) {
        for seed in &self.options.catalogue {
            let item = self.stock(&seed.sku).await;
            assert_eq!(
                item.available + item.reserved + item.sold,
                seed.initial_stock,
                "stock buckets of {} must add up to the initial stock: {item:?}",
                seed.sku
            );
            assert_eq!(
                item.reserved, 0,
                "no stock of {} may stay reserved: {item:?}",
                seed.sku
            );
        }
        assert_eq!(
            self.payment_store.ledger_sum().await.expect("ledger sum"),
            0,
            "the ledger must balance"
        );
        for seed in &self.options.accounts {
            let balance = self.balance(&seed.account_id).await;
            let ledger = self
                .payment_store
                .customer_ledger_balance(&seed.account_id)
                .await
                .expect("ledger balance");
            assert_eq!(
                balance, ledger,
                "balance of {} must equal its ledger account",
                seed.account_id
            );
        }
    }

    /// Stops every service.
    pub async fn shutdown(mut self) {
        while let Some((_, running)) = self.services.pop() {
            running.stop().await;
        }
    }
}
