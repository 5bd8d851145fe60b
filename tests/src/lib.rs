//! Harness for the system tests: starts the three services in-process, each
//! on its own `127.0.0.1:0` port with real gRPC between them, on SQLite files
//! in a temporary directory or on fresh PostgreSQL databases.
//!
//! PostgreSQL comes from `ORDERMESH_TEST_POSTGRES_URL` (an admin URL whose
//! user may `CREATE DATABASE`), else `postgres://postgres@127.0.0.1:5432/postgres`.
//! When no server answers, a PostgreSQL test prints a loud SKIP line and
//! passes, except under `CI`, where it fails: CI must run both backends.

//!
//! # Layout
//! - this module: backends, the both-backends macro, mesh options.
//! - [`audit`]: the saga's promise checked through the public APIs.
//! - [`gateway`]: the gateway in-process, and a recording stand-in upstream.
//! - [`load`]: concurrent orders through one client, followed to the end.
//! - [`mesh`]: the three services in-process, with clients and invariants.
//! - [`proxy`]: a TCP proxy that can hold replies (a lost answer).
//! - [`procs`]: the real `ordermesh serve` binaries as child processes, for
//!   kill -9 tests.

pub mod audit;
pub mod gateway;
pub mod load;
pub mod mesh;
pub mod procs;
pub mod proxy;

use std::time::Duration;

pub use mesh::{Mesh, OrderProcess};
pub use ordermesh_events::testing::NatsServer;
pub use ordermesh_mesh::policy::MeshPolicy;
pub use ordermesh_order::saga::plan::Limits;
pub use ordermesh_order::{CrashPoint, Pause, SagaConfig};

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

/// Which event bus a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    /// The in-process broker the services share (as in `ordermesh up`).
    Memory,
    /// A real `nats-server -js` started for the test.
    Nats,
}

/// Generates one `#[tokio::test]` per bus and backend from an async scenario
/// `fn(BusKind, Backend)`.
#[macro_export]
macro_rules! per_bus_and_backend {
    ($($scenario:ident),+ $(,)?) => {
        mod memory_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::BusKind::Memory, $crate::Backend::Sqlite).await;
            })+
        }
        mod memory_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::BusKind::Memory, $crate::Backend::Postgres).await;
            })+
        }
        mod nats_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::BusKind::Nats, $crate::Backend::Sqlite).await;
            })+
        }
        mod nats_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::BusKind::Nats, $crate::Backend::Postgres).await;
            })+
        }
    };
}

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Whether this runs under CI (`CI` set and not "false"), where a missing dependency fails a test instead of skipping it.
pub fn in_ci() -> bool {
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

/// Lets the database at `database_url` (one [`postgres_database`] made)
/// accept connections, or refuses them and ends those it has: PostgreSQL's
/// own switch for a database that is "down" while the server runs.
pub async fn allow_connections(database_url: &str, allowed: bool) {
    use sqlx::Connection;
    let admin = std::env::var("ORDERMESH_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    let name = database_url.rsplit('/').next().expect("a database name");
    let mut admin = sqlx::PgConnection::connect(&admin)
        .await
        .expect("admin connection");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS {allowed}"
    )))
    .execute(&mut admin)
    .await
    .expect("ALTER DATABASE");
    if !allowed {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )))
        .execute(&mut admin)
        .await
        .expect("terminate");
    }
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
    pub policy: MeshPolicy,
    /// How long payment holds an uncaptured authorization.
    pub authorization_hold: Duration,
    /// Put a [`proxy::Proxy`] between the order service and payment.
    pub payment_proxy: bool,
    /// Events over NATS JetStream at this URL; else one in-process broker
    /// shared by the three services.
    pub nats_url: Option<String>,
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
            authorization_hold: ordermesh_payment::Config::DEFAULT_AUTHORIZATION_HOLD,
            payment_proxy: false,
            nats_url: None,
        }
    }
}

/// The mesh policy of the tests, as a policy file: breakers that open after
/// a handful of calls and probe again after half a second, so outages and
/// recoveries fit in a test.
pub const TEST_POLICY: &str = r#"
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

/// [`TEST_POLICY`], parsed.
/// Polls the health of `service` ("" is the whole server) at `url` until it
/// answers `want`; fails the test after `within`.
pub async fn until_health(
    url: &str,
    service: &str,
    want: ordermesh_runtime::health::Answer,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let answer = ordermesh_runtime::health::check(url, service)
            .await
            .expect("health answers");
        if answer == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service:?} stayed {answer:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn test_policy() -> MeshPolicy {
    MeshPolicy::parse(TEST_POLICY, []).expect("the test policy is valid")
}

/// Saga tuning for tests: quick retries, a three-second patience (so an
/// outage of a second is waited out and a longer one compensates within a
/// test), a three-second lease.
pub fn fast_saga() -> SagaConfig {
    SagaConfig {
        limits: Limits {
            patience: Duration::from_secs(3),
            forward_window: Duration::from_secs(10),
            max_compensation_attempts: 20,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            compensation_max_backoff: Duration::from_millis(500),
        },
        call_timeout: Duration::from_secs(1),
        lease: Duration::from_secs(3),
        lease_margin: Duration::from_millis(200),
        recovery_interval: Duration::from_millis(200),
        crash_at: None,
        pause_before_record: None,
        lose_record_reply: None,
    }
}
