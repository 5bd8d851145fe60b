//! The real `ordermesh` binary as child processes (`ordermesh serve
//! inventory|payment|order`), for tests that kill a service with SIGKILL: a
//! graceful stop is not a crash. Each service keeps its port and database
//! across restarts, as a restarted pod would.
//!
//! The order process can be told to freeze at a named saga point
//! (`ORDERMESH_CRASH_AT`); it says so on stderr, and the test kills it there.
//! A gateway process (`ordermesh serve gateway`, development auth with its
//! key in the cluster's directory) joins on [`Cluster::spawn_gateway`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tonic::transport::Channel;

use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;

use crate::audit::Audit;
use crate::{Backend, postgres_database};

/// The services, in start order.
pub const SERVICES: [&str; 3] = ["inventory", "payment", "order"];

/// The processes a cluster may run: the services, then the gateway.
const PROCESSES: [&str; 4] = ["inventory", "payment", "order", "gateway"];

/// The order saga's timing in these tests: a short patience and lease, so
/// recovery after a kill happens within seconds.
const SAGA_FLAGS: &[&str] = &[
    "--saga-patience-secs",
    "3",
    "--saga-forward-window-secs",
    "30",
    "--saga-call-timeout-ms",
    "1000",
    "--saga-lease-ms",
    "2500",
    "--saga-recovery-interval-ms",
    "200",
];

pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub backend: Backend,
    /// Events over NATS JetStream at this URL, else each process's own
    /// in-process broker.
    nats_url: Option<String>,
    /// More environment for every process (e.g. `OTEL_*`).
    env: Vec<(String, String)>,
    databases: HashMap<&'static str, String>,
    ports: HashMap<&'static str, u16>,
    children: HashMap<&'static str, Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    /// Starts inventory, payment and order from `bin` (the order process
    /// freezing at `order_crash_at`, if given); `None` when the backend is
    /// unavailable outside CI (the test then passes as skipped).
    pub async fn start(bin: &Path, backend: Backend, order_crash_at: Option<&str>) -> Option<Cluster> {
        Self::start_with_nats(bin, backend, order_crash_at, None).await
    }

    /// [`Cluster::start`], with every process's events on NATS at `nats_url`.
    pub async fn start_with_nats(
        bin: &Path,
        backend: Backend,
        order_crash_at: Option<&str>,
        nats_url: Option<&str>,
    ) -> Option<Cluster> {
        Self::start_with_env(bin, backend, order_crash_at, nats_url, &[]).await
    }

    /// [`Cluster::start_with_nats`], with `env` set for every process.
    pub async fn start_with_env(
        bin: &Path,
        backend: Backend,
        order_crash_at: Option<&str>,
        nats_url: Option<&str>,
        env: &[(&str, &str)],
    ) -> Option<Cluster> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut databases = HashMap::new();
        for service in SERVICES {
            let url = match backend {
                Backend::Sqlite => {
                    ordermesh_runtime::db::sqlite_url(dir.path(), service).expect("sqlite url")
                }
                Backend::Postgres => postgres_database("kill -9 test").await?,
            };
            databases.insert(service, url);
        }
        std::fs::write(dir.path().join("policy.toml"), crate::TEST_POLICY).expect("policy file");
        let mut cluster = Cluster {
            bin: bin.to_owned(),
            dir,
            backend,
            nats_url: nats_url.map(str::to_owned),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            databases,
            ports: PROCESSES
                .into_iter()
                .zip(ordermesh_runtime::net::free_ports::<4>().expect("free ports"))
                .collect(),
            children: HashMap::new(),
        };
        for service in SERVICES {
            let crash_at = if service == "order" { order_crash_at } else { None };
            cluster.spawn(service, crash_at).await;
        }
        Some(cluster)
    }

    fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[service])
    }

    /// Starts a gateway process before the services; returns its port.
    pub async fn spawn_gateway(&mut self) -> u16 {
        self.spawn("gateway", None).await;
        self.ports["gateway"]
    }

    /// A development token for `customer` with the shop's scopes, signed
    /// with the gateway's key (`ordermesh token`).
    pub fn token(&self, customer: &str) -> String {
        let output = Command::new(&self.bin)
            .args(["token", "--subject", customer, "--data-dir"])
            .arg(self.dir.path())
            .output()
            .expect("ordermesh token");
        assert!(output.status.success(), "ordermesh token: {output:?}");
        String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
    }

    /// Where a service's output goes (appended across restarts).
    pub fn log_path(&self, service: &str) -> PathBuf {
        self.dir.path().join(format!("{service}.log"))
    }

    /// The service's output so far.
    pub fn log(&self, service: &str) -> String {
        std::fs::read_to_string(self.log_path(service)).unwrap_or_default()
    }

    /// Starts (or restarts) a service process; the order process freezes at
    /// `crash_at` when given. Returns once it reports SERVING.
    pub async fn spawn(&mut self, service: &'static str, crash_at: Option<&str>) {
        assert!(!self.children.contains_key(service), "{service} already runs");
        let log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(service))
            .expect("log file");
        let mut command = Command::new(&self.bin);
        command
            .args(["serve", service, "--listen"])
            .arg(format!("127.0.0.1:{}", self.ports[service]))
            .arg("--policy")
            .arg(self.dir.path().join("policy.toml"));
        if let Some(database) = self.databases.get(service) {
            command.arg("--database-url").arg(database);
        }
        for (key, _) in std::env::vars() {
            if key.starts_with("ORDERMESH_") {
                command.env_remove(key);
            }
        }
        if let Some(url) = &self.nats_url {
            command.env("ORDERMESH_NATS_URL", url);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        match service {
            "gateway" => {
                command
                    .args(["--auth-mode", "development", "--data-dir"])
                    .arg(self.dir.path())
                    .args(["--order-url", &self.url("order")])
                    .args(["--inventory-url", &self.url("inventory")])
                    .args(["--payment-url", &self.url("payment")]);
            }
            "order" => {
                command
                    .args(["--inventory-url", &self.url("inventory")])
                    .args(["--payment-url", &self.url("payment")])
                    .args(SAGA_FLAGS);
                if let Some(point) = crash_at {
                    command.env("ORDERMESH_CRASH_AT", point);
                }
            }
            _ => {
                command.arg("--seed-demo");
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("ordermesh starts");
        self.children.insert(service, child);
        self.wait_serving(service).await;
    }

    async fn wait_serving(&mut self, service: &str) {
        use tonic_health::pb::health_check_response::ServingStatus;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.children.get_mut(service)
                && let Ok(Some(exit)) = child.try_wait()
            {
                panic!("{service} exited with {exit}: {}", self.log(service));
            }
            let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel(service));
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status());
            if status.is_ok_and(|s| s == ServingStatus::Serving) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service} did not report SERVING: {}",
                self.log(service)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs a service process (no drain, no shutdown hooks).
    pub fn kill(&mut self, service: &str) {
        let mut child = self.children.remove(service).expect("the service runs");
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reaped");
        assert!(!status.success(), "{service} was killed, not stopped: {status}");
    }

    /// Waits until the service's output contains `needle`.
    pub async fn wait_for_log(&self, service: &str, needle: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.log(service).contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service} never printed {needle:?}: {}",
                self.log(service)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn channel(&self, service: &str) -> Channel {
        tonic::transport::Endpoint::from_shared(self.url(service))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy()
    }

    pub fn order(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel("order"))
    }

    pub fn audit(&self) -> Audit {
        Audit {
            order: self.order(),
            inventory: InventoryServiceClient::new(self.channel("inventory")),
            payment: PaymentServiceClient::new(self.channel("payment")),
            initial_stock: ordermesh_inventory::demo::catalogue()
                .into_iter()
                .map(|item| (item.sku, item.initial_stock))
                .collect(),
        }
    }
}
