//! The three services in-process, each on its own loopback port with real
//! gRPC between them, plus clients, direct store access and the invariants
//! every scenario ends by checking.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::mesh::v1 as mesh_pb;
use ordermesh_proto::mesh::v1::mesh_admin_service_client::MeshAdminServiceClient;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::order_admin_service_client::OrderAdminServiceClient;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::payment::v1 as payment_pb;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh_runtime::server::MeshSettings;

use ordermesh_events::{Bus, BusSettings};

use crate::audit::Audit;
use crate::proxy::Proxy;
use crate::{Backend, MeshOptions, MeshPolicy, SagaConfig, postgres_database};

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

async fn spawn_inventory(
    db: &str,
    (options, bus): (&MeshOptions, &Bus),
    listener: TcpListener,
) -> (ordermesh_inventory::Store, Running) {
    let mut config = ordermesh_inventory::Config::new(db);
    config.bus = bus.clone();
    config.seed = options.catalogue.clone();
    config.reservation_ttl = options.reservation_ttl;
    config.sweep_interval = Duration::from_millis(100);
    let inventory = ordermesh_inventory::build(config)
        .await
        .expect("inventory starts");
    let store = inventory.store().clone();
    let addr = listener.local_addr().expect("local addr");
    let (stop, signal) = stop_signal();
    let task = tokio::spawn(async move {
        inventory.serve(listener, signal).await.expect("inventory serves");
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
    (options, bus): (&MeshOptions, &Bus),
    listener: TcpListener,
) -> (ordermesh_payment::Store, Running) {
    let mut config = ordermesh_payment::Config::new(db);
    config.bus = bus.clone();
    config.seed = options.accounts.clone();
    config.authorization_hold = options.authorization_hold;
    config.sweep_interval = Duration::from_millis(100);
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

/// An order service process (in-process): its clients, store and runner.
pub struct OrderProcess {
    pub client: OrderServiceClient<Channel>,
    pub admin: OrderAdminServiceClient<Channel>,
    pub mesh_admin: MeshAdminServiceClient<Channel>,
    pub store: ordermesh_order::Store,
    pub runner: ordermesh_order::SagaRunner,
    running: Running,
}

impl OrderProcess {
    /// Starts an order service on `db`, calling inventory and payment at the
    /// given URLs.
    pub async fn start(
        db: &str,
        (inventory_url, payment_url): (&str, &str),
        saga: SagaConfig,
        (policy, bus): (MeshPolicy, Bus),
    ) -> Self {
        let mut config = ordermesh_order::Config::new(db, inventory_url, payment_url);
        config.bus = bus;
        config.saga = saga;
        config.watch_poll_interval = Duration::from_millis(200);
        config.mesh = MeshSettings {
            policy,
            ..MeshSettings::default()
        };
        let order = ordermesh_order::build(config).await.expect("order starts");
        let store = order.store().clone();
        let runner = order.runner().clone();
        let (order_listener, addr) = listener().await;
        let (stop, signal) = stop_signal();
        let task = tokio::spawn(async move {
            order.serve(order_listener, signal).await.expect("order serves");
        });
        OrderProcess {
            client: OrderServiceClient::new(channel(addr)),
            admin: OrderAdminServiceClient::new(channel(addr)),
            mesh_admin: MeshAdminServiceClient::new(channel(addr)),
            store,
            runner,
            running: Running {
                addr,
                stop: Some(stop),
                task,
            },
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// Three services on loopback, with clients and direct store access for
/// invariant checks.
pub struct Mesh {
    pub options: MeshOptions,
    pub order: OrderServiceClient<Channel>,
    pub order_admin_api: OrderAdminServiceClient<Channel>,
    pub inventory: InventoryServiceClient<Channel>,
    pub payment: PaymentServiceClient<Channel>,
    pub inventory_store: ordermesh_inventory::Store,
    pub payment_store: ordermesh_payment::Store,
    pub order_store: ordermesh_order::Store,
    pub order_runner: ordermesh_order::SagaRunner,
    /// The services' one event bus.
    pub bus: Bus,
    /// Between the order service and payment, when the options ask for it.
    pub payment_proxy: Option<Proxy>,
    inventory_addr: SocketAddr,
    payment_addr: SocketAddr,
    /// What the order service calls payment at (the proxy, if any).
    payment_url_for_order: String,
    inventory_db: String,
    payment_db: String,
    pub order_db: String,
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
        let bus = Bus::from_url(options.nats_url.as_deref(), BusSettings::default())
            .await
            .expect("event bus");
        let (inventory_listener, inventory_addr) = listener().await;
        let (inventory_store, inventory_running) =
            spawn_inventory(&inventory_db, (&options, &bus), inventory_listener).await;
        let (payment_listener, payment_addr) = listener().await;
        let (payment_store, payment_running) =
            spawn_payment(&payment_db, (&options, &bus), payment_listener).await;
        let payment_proxy = if options.payment_proxy {
            Some(Proxy::start(payment_addr).await)
        } else {
            None
        };
        let payment_url_for_order = payment_proxy
            .as_ref()
            .map_or_else(|| format!("http://{payment_addr}"), Proxy::url);
        let order = OrderProcess::start(
            &order_db,
            (&format!("http://{inventory_addr}"), &payment_url_for_order),
            options.saga.clone(),
            (options.policy.clone(), bus.clone()),
        )
        .await;
        Some(Mesh {
            order: order.client.clone(),
            order_admin_api: order.admin.clone(),
            inventory: InventoryServiceClient::new(channel(inventory_addr)),
            payment: PaymentServiceClient::new(channel(payment_addr)),
            inventory_store,
            payment_store,
            order_store: order.store.clone(),
            order_runner: order.runner.clone(),
            bus,
            payment_proxy,
            inventory_addr,
            payment_addr,
            payment_url_for_order,
            inventory_db,
            payment_db,
            order_db,
            services: vec![
                ("inventory", inventory_running),
                ("payment", payment_running),
                ("order", order.running),
            ],
            options,
            _dir: dir,
        })
    }

    /// Another order service on the same order database (a second replica).
    pub async fn start_order_replica(&self, saga: SagaConfig) -> OrderProcess {
        OrderProcess::start(
            &self.order_db,
            (
                &format!("http://{}", self.inventory_addr),
                &self.payment_url_for_order,
            ),
            saga,
            (self.options.policy.clone(), self.bus.clone()),
        )
        .await
    }

    /// Starts the order service again on the same database, as a new process
    /// would after the old one died (stop it first with [`Mesh::stop`]).
    pub async fn restart_order(&mut self, saga: SagaConfig) {
        self.stop("order").await;
        let order = self.start_order_replica(saga).await;
        self.order_store = order.store.clone();
        self.order_runner = order.runner.clone();
        self.order = order.client.clone();
        self.order_admin_api = order.admin.clone();
        self.services.push(("order", order.running));
    }

    /// Stops payment (gracefully) and starts it again on its old address and
    /// database, as a restarted pod would come back.
    pub async fn restart_payment(&mut self) {
        self.stop("payment").await;
        let listener = TcpListener::bind(self.payment_addr)
            .await
            .expect("rebind the payment port");
        let (store, running) = spawn_payment(&self.payment_db, (&self.options, &self.bus), listener).await;
        self.payment_store = store;
        self.services.push(("payment", running));
    }

    /// The same for inventory.
    pub async fn restart_inventory(&mut self) {
        self.stop("inventory").await;
        let listener = TcpListener::bind(self.inventory_addr)
            .await
            .expect("rebind the inventory port");
        let (store, running) =
            spawn_inventory(&self.inventory_db, (&self.options, &self.bus), listener).await;
        self.inventory_store = store;
        self.services.push(("inventory", running));
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

    /// The audit of the saga's promise through the public APIs.
    pub fn audit(&self) -> Audit {
        Audit {
            order: self.order.clone(),
            inventory: self.inventory.clone(),
            payment: self.payment.clone(),
            initial_stock: self
                .options
                .catalogue
                .iter()
                .map(|item| (item.sku.clone(), item.initial_stock))
                .collect(),
        }
    }

    /// Sets (or, with no rules, clears) the fault rules the order service
    /// applies to its calls to `downstream`.
    pub async fn set_faults(&self, downstream: &str, rules: Vec<mesh_pb::FaultRule>) {
        self.order_admin()
            .set_faults(mesh_pb::SetFaultsRequest {
                downstream: downstream.into(),
                rules,
            })
            .await
            .expect("SetFaults");
    }

    /// Polls GetOrder until `done` holds for the order, within `within`.
    pub async fn wait_order(
        &self,
        order_id: &str,
        within: Duration,
        done: impl Fn(&order_pb::Order) -> bool,
    ) -> order_pb::Order {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let order = self.get_order(order_id).await;
            if done(&order) {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order never got there within {within:?}: {order:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The payment made under an order's authorization key, if any.
    pub async fn payment_of(&self, order_id: &str) -> Option<payment_pb::Payment> {
        self.audit().payment_of(order_id).await.pop()
    }

    /// The invariants that hold whenever no saga is in flight: the audit of
    /// every order (see [`Audit::check`]), and every account's balance equal
    /// to its ledger account with no amount held.
    pub async fn assert_invariants(&self) {
        self.audit().check().await;
        for seed in &self.options.accounts {
            assert_eq!(
                self.payment_store
                    .ledger_balance(&ordermesh_payment::store::holds_ledger(&seed.account_id))
                    .await
                    .expect("holds"),
                0,
                "no money of {} stays held",
                seed.account_id
            );
        }
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
