//! One database per service, reached through sqlx's `AnyPool` so that the same
//! SQL runs on the embedded SQLite default and on PostgreSQL in production.
//!
//! Why `AnyPool` rather than a store trait per backend: the stores use only
//! portable SQL (`$n` placeholders, `RETURNING`, integers for money and time,
//! text ids), so one implementation serves both and the same tests prove both.
//! The DDL is portable too (TEXT, BIGINT, CHECK, unique keys), so each service
//! ships one migration set for both backends.
//!
//! # Writers and readers
//! A [`Db`] holds two pools. On PostgreSQL they are the same pool. On SQLite
//! they differ, because SQLite has one writer at a time:
//! - `write`: one connection. Concurrent writers queue in the pool (fair,
//!   bounded by the acquire timeout) instead of failing with `SQLITE_BUSY`.
//!   Consequence: never acquire a second `write` connection while a
//!   transaction is open in the same task (it would wait for itself).
//! - `read`: several read-only connections. In WAL mode readers see the last
//!   committed state and never wait for the writer, so `GetOrder`,
//!   `ListOrders` and the health probe stay fast while sagas write.
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL`: a commit is durable
//! against a crash of the process (kill -9 included: the WAL is in the OS's
//! page cache), and only a power loss or kernel crash can lose the last
//! commits; `FULL` would add an fsync per commit for that case. A busy
//! timeout covers the short moments a checkpoint holds the lock.

use std::path::Path;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;

use crate::Error;

/// Which database engine a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Its OpenTelemetry `db.system.name`.
    pub fn system_name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }

    /// The backend of a `sqlite:` or `postgres:`/`postgresql:` URL.
    pub fn of_url(url: &str) -> Result<Self, Error> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::DatabaseUrl {
                url: url.to_owned(),
                reason: "expected a sqlite: or postgres:// URL".into(),
            })
        }
    }
}

/// The SQLite URL of a service's database file under `data_dir`
/// (`<data_dir>/<service>.db`, created if missing).
pub fn sqlite_url(data_dir: &Path, service: &str) -> Result<String, Error> {
    std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    Ok(format!(
        "sqlite://{}?mode=rwc",
        data_dir.join(format!("{service}.db")).display()
    ))
}

/// A service's database: a pool for writes and one for reads (see the
/// module docs; on PostgreSQL both are the same pool).
#[derive(Debug, Clone)]
pub struct Db {
    pub write: AnyPool,
    pub read: AnyPool,
    pub backend: Backend,
    /// The service the database belongs to (its metrics' `service` label).
    pub service: &'static str,
}

impl Db {
    /// A write transaction. The time taken to get it (the wait for a free
    /// write connection, plus BEGIN's round trip) is recorded as
    /// `ordermesh_db_transaction_begin_seconds`: the pool's wait is what
    /// grows when a service's transactions queue for its few connections.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        let started = std::time::Instant::now();
        let transaction = self.write.begin().await;
        metrics::histogram!(
            "ordermesh_db_transaction_begin_seconds",
            "service" => self.service,
            "pool" => "write",
        )
        .record(started.elapsed().as_secs_f64());
        transaction
    }
}

/// How long a statement waits for SQLite's write lock (held briefly by the
/// writer connection's commits and by WAL checkpoints).
const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;
/// Read connections of a SQLite database.
const SQLITE_READERS: u32 = 4;
/// Connections of a PostgreSQL pool (each service has one). Four, not ten:
/// a saga step's transactions are short, so a few connections keep a
/// service's share of the server busy, and every further backend is a
/// process that sleeps and wakes on the same hot rows (one SKU's stock, one
/// account's balance) and competes for the server's cores. On two cores,
/// three services at 10 connections each took about 20 % more PostgreSQL CPU
/// per order, and gave about 15 % fewer orders per second, than at 4
/// (`ordermesh bench --start serve -c 32`, A/B); 2 measured the same as 4.
const POSTGRES_CONNECTIONS: u32 = 4;

/// Connects `service` to `url` and applies the service's migrations.
pub async fn connect(service: &'static str, url: &str, migrations: &Migrator) -> Result<Db, Error> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(url)?;
    // No ping before each acquire (sqlx's default): it is one more round
    // trip per statement (to the SQLite worker thread, or to PostgreSQL). A
    // broken connection fails its statement instead, which the caller sees
    // as a database error and retries like any other.
    let options = || {
        AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
    };
    match backend {
        Backend::Sqlite => {
            let write = options()
                .max_connections(1)
                .after_connect(|conn, _| Box::pin(async move { sqlite_pragmas(conn, false).await }))
                .connect(url)
                .await
                .map_err(Error::Connect)?;
            // Migrations first: they create the file's WAL mode and tables
            // before any reader opens it.
            migrations.run(&write).await?;
            let read = options()
                .max_connections(SQLITE_READERS)
                .after_connect(|conn, _| Box::pin(async move { sqlite_pragmas(conn, true).await }))
                .connect(url)
                .await
                .map_err(Error::Connect)?;
            Ok(Db {
                write,
                read,
                backend,
                service,
            })
        }
        Backend::Postgres => {
            let pool = wait_for_postgres(service, url, || {
                options().max_connections(POSTGRES_CONNECTIONS).connect(url)
            })
            .await;
            migrations.run(&pool).await?;
            Ok(Db {
                read: pool.clone(),
                write: pool,
                backend,
                service,
            })
        }
    }
}

/// The first wait after a failed connection to PostgreSQL, doubled after
/// each failure up to [`CONNECT_RETRY_MAX`].
const CONNECT_RETRY_FIRST: Duration = Duration::from_millis(500);
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(10);

/// Connects with `connect` until it succeeds, logging each failure. A
/// service whose PostgreSQL is not there yet (a cluster where the database
/// starts after the pods, a failover, a credential not yet rotated in)
/// waits for it, live and not ready, instead of exiting: an exit would put
/// the pod into CrashLoopBackOff, whose growing back-off delays the service
/// well past the database's return. Every failure is worth waiting out here,
/// a refused password included: the fix comes from outside the process, and
/// the log line says what to fix.
async fn wait_for_postgres<T, F, Fut>(service: &'static str, url: &str, mut connect: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut wait = CONNECT_RETRY_FIRST;
    for attempt in 1u64.. {
        match connect().await {
            Ok(pool) => {
                if attempt > 1 {
                    tracing::info!(service, attempt, "connected to the database");
                }
                return pool;
            }
            Err(error) => {
                tracing::warn!(
                    service,
                    attempt,
                    database = %redacted(url),
                    %error,
                    retry_in_ms = wait.as_millis() as u64,
                    "cannot connect to the database; not ready until it answers"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(CONNECT_RETRY_MAX);
            }
        }
    }
    unreachable!("the attempts never run out")
}

/// `url` without its secrets, for logs: `postgres://user:***@host/db`, and
/// no query string (it may carry `password=` or `sslpassword=`).
fn redacted(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, _)) => (url, "?..."),
        None => (url, ""),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url}{query}");
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}{path}{query}")
}

/// `sql` with its placeholders `$1`, `$2`, ... renumbered from `$first`:
/// a fixed statement made a part of a larger one (a data-modifying `WITH`
/// on PostgreSQL) whose earlier parts hold the placeholders before it.
/// `$` occurs in the services' SQL only as a placeholder.
pub fn renumbered(sql: &str, first: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + first - 1).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// Per-connection SQLite settings (see the module docs for why).
async fn sqlite_pragmas(conn: &mut sqlx::AnyConnection, read_only: bool) -> Result<(), sqlx::Error> {
    let mut pragmas = format!(
        "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
    );
    if read_only {
        pragmas.push_str(" PRAGMA query_only = ON;");
    }
    // Fixed text from constants above, never input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(pragmas)).execute(conn).await?;
    Ok(())
}

/// True when the database answers a trivial query (on the read pool, so a
/// busy writer does not make a healthy service look down).
pub async fn is_ready(db: &Db) -> bool {
    sqlx::query("SELECT 1").execute(&db.read).await.is_ok()
}

/// Whose fault a database error is, which decides what its caller does: a
/// consumer waits out a transient one and dead-letters on a constraint, a
/// service answers UNAVAILABLE (worth a retry) or INTERNAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database is down, busy or contended (connection lost, pool timed
    /// out, shutting down, deadlock, serialization failure, lock timeout):
    /// the same work may succeed when tried again.
    Transient,
    /// A constraint refused the data (unique, foreign key, not null, check):
    /// the same work fails the same way.
    Constraint,
    /// Anything else.
    Other,
}

/// Classifies a database error (see [`ErrorClass`]).
pub fn classify(error: &sqlx::Error) -> ErrorClass {
    use sqlx::error::ErrorKind;
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ErrorClass::Transient,
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation
            | ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation
            | ErrorKind::ExclusionViolation => ErrorClass::Constraint,
            _ => {
                if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    postgres_class(pg.code())
                } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    sqlite_class(db.code().as_deref())
                } else {
                    ErrorClass::Other
                }
            }
        },
        _ => ErrorClass::Other,
    }
}

/// SQLSTATE classes of an unavailable or contended server: connection
/// exceptions (08), insufficient resources (53), operator intervention
/// (57P01-57P05: shutdown, crash, cannot connect now), serialization and
/// deadlock (40001, 40P01), lock not available (55P03).
fn postgres_class(sqlstate: &str) -> ErrorClass {
    let transient = sqlstate.starts_with("08")
        || sqlstate.starts_with("53")
        || sqlstate.starts_with("57P0")
        || matches!(sqlstate, "40001" | "40P01" | "55P03");
    if transient {
        ErrorClass::Transient
    } else {
        ErrorClass::Other
    }
}

/// SQLite primary result codes of a busy or failing file: BUSY (5), LOCKED
/// (6), IOERR (10), FULL (13), CANTOPEN (14). Extended codes carry the
/// primary one in their low byte.
fn sqlite_class(code: Option<&str>) -> ErrorClass {
    let primary = code.and_then(|c| c.parse::<i64>().ok()).map(|c| c & 0xff);
    if matches!(primary, Some(5 | 6 | 10 | 13 | 14)) {
        ErrorClass::Transient
    } else {
        ErrorClass::Other
    }
}

/// True when the error is a unique-constraint violation (an idempotent
/// replay or a lost race on an idempotency key).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_logged_without_secrets() {
        for (url, logged) in [
            (
                "postgres://u:secret@db:5432/order",
                "postgres://u:***@db:5432/order",
            ),
            ("postgres://u:p@ss:w@rd@db/order", "postgres://u:***@db/order"),
            ("postgres://u@db/order", "postgres://u@db/order"),
            (
                "postgres://db/order?password=secret&x=1",
                "postgres://db/order?...",
            ),
            ("postgres://u:secret@db", "postgres://u:***@db"),
        ] {
            assert_eq!(redacted(url), logged, "{url}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn postgres_is_waited_for_with_a_doubling_back_off() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let attempts = std::sync::Arc::new(AtomicU32::new(0));
        let started = tokio::time::Instant::now();
        let counted = attempts.clone();
        let connected = wait_for_postgres("test", "postgres://u:p@db/x", move || {
            let attempt = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if attempt < 8 {
                    Err(sqlx::Error::PoolTimedOut)
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(connected, 8);
        assert_eq!(attempts.load(Ordering::SeqCst), 8);
        // 0.5 + 1 + 2 + 4 + 8 + 10 + 10 s between the eight attempts.
        assert_eq!(started.elapsed(), Duration::from_millis(35_500));
    }

    #[test]
    fn sqlstates_and_result_codes_are_classified() {
        for transient in ["08006", "53300", "57P01", "40001", "40P01", "55P03"] {
            assert_eq!(postgres_class(transient), ErrorClass::Transient, "{transient}");
        }
        for other in ["42601", "22003", "XX000"] {
            assert_eq!(postgres_class(other), ErrorClass::Other, "{other}");
        }
        for transient in ["5", "517", "6", "10", "13", "14"] {
            assert_eq!(
                sqlite_class(Some(transient)),
                ErrorClass::Transient,
                "{transient}"
            );
        }
        assert_eq!(sqlite_class(Some("1")), ErrorClass::Other);
        assert_eq!(sqlite_class(None), ErrorClass::Other);
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), ErrorClass::Transient);
        assert_eq!(classify(&sqlx::Error::RowNotFound), ErrorClass::Other);
    }

    #[test]
    fn placeholders_are_renumbered_and_nothing_else() {
        assert_eq!(
            renumbered("UPDATE t SET a = $1, b = $10 WHERE c = $2 AND d = '$'", 9),
            "UPDATE t SET a = $9, b = $18 WHERE c = $10 AND d = '$'"
        );
        assert_eq!(renumbered("SELECT $1", 1), "SELECT $1");
        assert_eq!(renumbered("no placeholders", 5), "no placeholders");
    }

    #[test]
    fn backend_is_read_from_the_url_scheme() {
        assert_eq!(Backend::of_url("sqlite://x.db").ok(), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("postgres://u@h/db").ok(), Some(Backend::Postgres));
        assert_eq!(
            Backend::of_url("postgresql://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        let err = Backend::of_url("mysql://h/db").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("mysql://h/db")));
    }
}
