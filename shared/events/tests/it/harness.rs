//! Test harness of the events crate: a real `nats-server -js` per test (its
//! own loopback port and store directory, restartable on the same port),
//! databases on both backends with the outbox and inbox tables, and helpers
//! to wait on conditions with deadlines.
//!
//! nats-server 2.10+ comes from `NATS_SERVER`, else `target/tools/bin`
//! (`bash .ci/tools.sh`), else `PATH`. PostgreSQL from
//! `ORDERMESH_TEST_POSTGRES_URL` (default the local server). A missing one
//! makes a test print a SKIP line and pass, except under `CI`, where it fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tokio::process::{Child, Command};

use ordermesh_events::{Bus, BusSettings, inbox, outbox};

/// The database engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Which bus a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    Memory,
    Nats,
}

pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

fn skip(what: &str, why: &str) {
    assert!(!in_ci(), "CI needs {what}: {why}");
    eprintln!("\n*** SKIP: no {what} ({why}) ***\n");
}

/// Generates one `#[tokio::test]` per database backend from `fn(Backend)`.
#[macro_export]
macro_rules! per_backend {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario($crate::harness::Backend::Sqlite).await; })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario($crate::harness::Backend::Postgres).await; })+
        }
    };
}

/// Generates one `#[tokio::test]` per bus and backend from `fn(BusKind, Backend)`.
#[macro_export]
macro_rules! per_bus_and_backend {
    ($($scenario:ident),+ $(,)?) => {
        mod memory_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::harness::BusKind::Memory, $crate::harness::Backend::Sqlite).await;
            })+
        }
        mod memory_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::harness::BusKind::Memory, $crate::harness::Backend::Postgres).await;
            })+
        }
        mod nats_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::harness::BusKind::Nats, $crate::harness::Backend::Sqlite).await;
            })+
        }
        mod nats_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::harness::BusKind::Nats, $crate::harness::Backend::Postgres).await;
            })+
        }
    };
}

// === NATS ===

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn version_at_least_2_10(binary: &Path) -> bool {
    let Ok(output) = std::process::Command::new(binary).arg("--version").output() else {
        return false;
    };
    // "nats-server: v2.15.1"
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(version) = text.trim().rsplit('v').next() else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

/// The nats-server binary to test with, if one (2.10 or newer) is found.
pub fn nats_server_binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("NATS_SERVER").map(PathBuf::from),
        Some(workspace_root().join("target/tools/bin/nats-server")),
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nats-server"))
                .find(|p| p.is_file())
        }),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file() && version_at_least_2_10(p))
}

/// A nats-server with JetStream, on a port of its own.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl NatsServer {
    /// Starts a server, or `None` (after a SKIP line) when none is installed
    /// outside CI.
    pub async fn start() -> Option<Self> {
        let Some(binary) = nats_server_binary() else {
            skip("nats-server 2.10+", "run `bash .ci/tools.sh` or set NATS_SERVER");
            return None;
        };
        let mut server = Self {
            binary,
            port: free_port(),
            store: tempfile::tempdir().expect("store dir"),
            child: None,
        };
        server.run().await;
        Some(server)
    }

    async fn run(&mut self) {
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not listen on {} within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's process id (the benchmark reads its CPU time).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, as a crash) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }

    /// A plain client (for reading streams directly).
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.expect("connect to nats")
    }
}

/// Test bus settings: a short publish timeout so outages are noticed fast.
pub fn bus_settings() -> BusSettings {
    BusSettings {
        publish_timeout: Duration::from_millis(500),
        ..BusSettings::default()
    }
}

/// A bus of the given kind; for NATS also the server behind it.
pub async fn bus(kind: BusKind) -> Option<(Bus, Option<NatsServer>)> {
    match kind {
        BusKind::Memory => Some((Bus::in_process(bus_settings()), None)),
        BusKind::Nats => {
            let server = NatsServer::start().await?;
            let bus = Bus::connect(&server.url(), bus_settings())
                .await
                .expect("bus connects");
            bus.ensure_streams().await.expect("streams");
            Some((bus, Some(server)))
        }
    }
}

// === Databases ===

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh database with the outbox, the inbox and a test `effects` table.
pub struct Db {
    pub pool: AnyPool,
    _dir: Option<tempfile::TempDir>,
}

/// A consumer's observable effect: one row per processing.
pub const EFFECTS_DDL: &str = "CREATE TABLE effects (consumer TEXT NOT NULL, event_id TEXT NOT NULL)";

impl Db {
    pub async fn new(backend: Backend) -> Option<Self> {
        sqlx::any::install_default_drivers();
        let (url, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("events.db").display());
                (url, Some(dir))
            }
            Backend::Postgres => (postgres_database().await?, None),
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        // As the runtime does: one SQLite connection, a real pool on PostgreSQL.
        let options = match backend {
            Backend::Sqlite => options.max_connections(1),
            Backend::Postgres => options.max_connections(8),
        };
        let pool = options.connect(&url).await.expect("connect to the test database");
        // Whole files at once, as a service's embedded migrations run them.
        for ddl in [outbox::DDL, inbox::DDL, EFFECTS_DDL] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                .execute(&pool)
                .await
                .expect("DDL applies");
        }
        Some(Self { pool, _dir: dir })
    }

    /// Effects recorded by `consumer` for `event_id`.
    pub async fn effects(&self, consumer: &str, event_id: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM effects WHERE consumer = $1 AND event_id = $2")
            .bind(consumer)
            .bind(event_id)
            .fetch_one(&self.pool)
            .await
            .expect("count effects")
    }

    pub async fn pending(&self) -> i64 {
        outbox::pending_count(&self.pool).await.expect("pending count")
    }
}

async fn postgres_database() -> Option<String> {
    use sqlx::Connection;
    let admin = std::env::var("ORDERMESH_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    let mut conn = match sqlx::AnyConnection::connect(&admin).await {
        Ok(conn) => conn,
        Err(e) => {
            skip(
                "PostgreSQL",
                &format!("{admin}: {e}; set ORDERMESH_TEST_POSTGRES_URL"),
            );
            return None;
        }
    };
    let name = format!("om_events_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let base = admin.split('?').next().unwrap_or(&admin);
    let prefix = base.rsplit_once('/').map(|(p, _)| p).unwrap_or(base);
    Some(format!("{prefix}/{name}"))
}

// === Waiting ===

/// Polls `condition` until it holds, failing with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
