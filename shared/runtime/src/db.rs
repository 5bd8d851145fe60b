//! One database per service, reached through sqlx's `AnyPool` so that the same
//! SQL runs on the embedded SQLite default and on PostgreSQL in production.
//!
//! Why `AnyPool` rather than a store trait per backend: the stores use only
//! portable SQL (`$n` placeholders, `RETURNING`, integers for money and time,
//! text ids), so one implementation serves both and the same tests prove both.
//! The DDL is portable too (TEXT, BIGINT, CHECK, unique keys), so each service
//! ships one migration set for both backends.

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

/// Connects to `url` and applies the service's migrations.
///
/// SQLite gets a single connection: it allows one writer at a time anyway,
/// and one connection turns what would be `SQLITE_BUSY` failures under
/// concurrent writes into an orderly queue. PostgreSQL gets a real pool.
pub async fn connect(url: &str, migrations: &Migrator) -> Result<AnyPool, Error> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(url)?;
    let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
    let options = match backend {
        Backend::Sqlite => options.max_connections(1),
        Backend::Postgres => options.max_connections(10),
    };
    let pool = options.connect(url).await.map_err(Error::Connect)?;
    migrations.run(&pool).await?;
    Ok(pool)
}

/// True when the database answers a trivial query.
pub async fn is_ready(pool: &AnyPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
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
