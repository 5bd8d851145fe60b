//! PostgreSQL for the bench: a throwaway cluster of its own (as
//! `.ci/postgres.sh` starts one, but with `fsync` on and
//! `pg_stat_statements` loaded; the cluster itself is
//! `ordermesh_runtime::pgcluster`, shared with `ordermesh chaos`), fresh
//! databases per run on it or on a server given by URL, and the counters
//! read before and after the window: statements per query
//! (`pg_stat_statements`) and commits (`pg_stat_database.xact_commit`).

use std::collections::HashMap;

use anyhow::Context;
use ordermesh_runtime::pgcluster::PgCluster;
use sqlx::{Connection, Row};

use super::procstat::Members;

/// A cluster started for one bench run, stopped (and deleted) on drop.
pub struct Cluster {
    // Declared first: dropped (stopped) before the directory is deleted.
    pg: PgCluster,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// initdb in a temporary directory, then start on a free loopback port
    /// with `pg_stat_statements` and durable commits (`fsync` on, as in
    /// production; `fsync = false` only when asked).
    pub fn start(fsync: bool) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ordermesh-bench-pg").tempdir()?;
        let port = ordermesh_runtime::net::free_port()?;
        let pg = PgCluster::init(
            dir.path(),
            port,
            &[
                ("fsync", if fsync { "on" } else { "off" }),
                ("max_connections", "300"),
                ("shared_preload_libraries", "pg_stat_statements"),
                ("pg_stat_statements.max", "2000"),
            ],
        )
        .context("starting the bench's PostgreSQL cluster")?;
        Ok(Cluster { pg, _dir: dir })
    }

    pub fn admin_url(&self) -> String {
        self.pg.admin_url()
    }

    /// The postmaster's pid (first line of `postmaster.pid`).
    pub fn postmaster(&self) -> anyhow::Result<u32> {
        Ok(self.pg.postmaster()?)
    }
}

/// The server process tree behind a PostgreSQL URL on this machine: the
/// postmaster listening on its port, and (at each snapshot) every backend
/// and helper under it. `None` for a server elsewhere.
pub fn server_processes(url: &str) -> Option<Members> {
    let rest = url.split_once("://")?.1;
    let host_port = rest.split('/').next()?.rsplit('@').next()?;
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (host_port, 5432),
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]") {
        return None;
    }
    let postmasters: Vec<u32> = super::procstat::listening_on(port);
    (!postmasters.is_empty()).then_some(Members::Trees(postmasters))
}

/// The URL of database `name` on the server of `admin_url`.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let base = admin_url.split('?').next().unwrap_or(admin_url);
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    format!("{prefix}/{name}")
}

/// Creates database `name` and, where the server loads it,
/// `pg_stat_statements` in it; true when statement counts are available.
pub async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<bool> {
    sqlx::any::install_default_drivers();
    let mut admin = sqlx::AnyConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to {admin_url} (--postgres-url)"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    let mut db = sqlx::AnyConnection::connect(&database_url(admin_url, name)).await?;
    let created = sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut db)
        .await
        .is_ok();
    // The extension exists everywhere it can be created; it counts only
    // where the server preloads it.
    Ok(created
        && sqlx::raw_sql("SELECT 1 FROM pg_stat_statements LIMIT 1")
            .execute(&mut db)
            .await
            .is_ok())
}

/// Every non-template database of a server (what a `--target` run counts).
pub async fn all_databases(admin_url: &str) -> anyhow::Result<Vec<String>> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to {admin_url} (--postgres-url)"))?;
    let rows =
        sqlx::query("SELECT CAST(datname AS TEXT) FROM pg_database WHERE NOT datistemplate ORDER BY datname")
            .fetch_all(&mut conn)
            .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect())
}

/// Whether the server at `admin_url` counts statements (the extension
/// loaded and created in that database).
pub async fn statements_available(admin_url: &str) -> bool {
    let Ok(mut conn) = sqlx::AnyConnection::connect(admin_url).await else {
        return false;
    };
    sqlx::raw_sql("SELECT 1 FROM pg_stat_statements LIMIT 1")
        .execute(&mut conn)
        .await
        .is_ok()
}

/// Counters of a set of databases at one moment.
#[derive(Debug, Clone, Default)]
pub struct PgCounters {
    pub commits: i64,
    pub rollbacks: i64,
    /// The next transaction id the server will assign: a transaction gets
    /// one when it first writes, so its growth counts the transactions that
    /// wrote (whether they ended in COMMIT or were single autocommit
    /// statements), read-only ones not. Server-wide. None before
    /// PostgreSQL 13.
    pub next_xid: Option<i64>,
    /// Calls per statement (database, query text), when pg_stat_statements
    /// is loaded.
    pub statements: Option<HashMap<(String, String), i64>>,
}

/// Reads the counters of `databases` through a connection to `stats_url`
/// (a database where the extension was created).
pub async fn counters(stats_url: &str, databases: &[String], statements: bool) -> anyhow::Result<PgCounters> {
    if databases.is_empty() {
        return Ok(PgCounters::default());
    }
    // Our own generated names (letters, digits, '_'): safe to inline.
    let list = databases
        .iter()
        .map(|d| format!("'{d}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut conn = sqlx::AnyConnection::connect(stats_url).await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COALESCE(SUM(xact_commit), 0) AS BIGINT), CAST(COALESCE(SUM(xact_rollback), 0) AS BIGINT)
         FROM pg_stat_database WHERE datname IN ({list})"
    )))
    .fetch_one(&mut conn)
    .await?;
    // Read without being assigned one (pg_current_xact_id would take one).
    let next_xid =
        sqlx::query_scalar::<_, String>("SELECT CAST(pg_snapshot_xmax(pg_current_snapshot()) AS TEXT)")
            .fetch_one(&mut conn)
            .await
            .ok()
            .and_then(|x| x.parse().ok());
    let mut out = PgCounters {
        commits: row.try_get(0)?,
        rollbacks: row.try_get(1)?,
        next_xid,
        statements: None,
    };
    if statements {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(d.datname AS TEXT), s.query, CAST(SUM(s.calls) AS BIGINT)
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
             WHERE d.datname IN ({list}) GROUP BY d.datname, s.query"
        )))
        .fetch_all(&mut conn)
        .await?;
        let mut map = HashMap::new();
        for row in rows {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            map.insert(key, row.try_get::<i64, _>(2)?);
        }
        out.statements = Some(map);
    }
    let _ = conn.close().await;
    Ok(out)
}

/// One statement's calls in the window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TopStatement {
    pub database: String,
    pub calls: i64,
    pub query: String,
}

/// Window deltas: commits, rollbacks, statements, and the statements by
/// calls (most first).
#[derive(Debug, Clone, Default)]
pub struct PgDelta {
    /// Transactions committed (`xact_commit`: read-only autocommit
    /// statements count too).
    pub commits: i64,
    /// `COMMIT` statements: the explicit transactions.
    pub commit_statements: Option<i64>,
    /// Transactions that wrote (transaction ids assigned): explicit ones
    /// and single-statement writes alike.
    pub write_transactions: Option<i64>,
    pub rollbacks: i64,
    pub statements: Option<i64>,
    pub top: Vec<TopStatement>,
}

pub fn delta(before: &PgCounters, after: &PgCounters) -> PgDelta {
    let mut out = PgDelta {
        commits: after.commits - before.commits,
        rollbacks: after.rollbacks - before.rollbacks,
        commit_statements: None,
        write_transactions: after.next_xid.zip(before.next_xid).map(|(a, b)| a - b),
        statements: None,
        top: Vec::new(),
    };
    if let (Some(b), Some(a)) = (&before.statements, &after.statements) {
        let mut top: Vec<TopStatement> = a
            .iter()
            .map(|((database, query), calls)| TopStatement {
                // The database names end in the service's name.
                database: database.rsplit('_').next().unwrap_or(database).to_owned(),
                calls: calls - b.get(&(database.clone(), query.clone())).copied().unwrap_or(0),
                query: query.split_whitespace().collect::<Vec<_>>().join(" "),
            })
            .filter(|t| t.calls > 0)
            .collect();
        top.sort_by(|x, y| y.calls.cmp(&x.calls).then_with(|| x.query.cmp(&y.query)));
        out.statements = Some(top.iter().map(|t| t.calls).sum());
        out.commit_statements = Some(
            top.iter()
                .filter(|t| t.query.trim().eq_ignore_ascii_case("COMMIT"))
                .map(|t| t.calls)
                .sum(),
        );
        out.top = top;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_the_server_and_swap_the_name() {
        assert_eq!(
            database_url(
                "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
                "om_x"
            ),
            "postgres://postgres@127.0.0.1:5432/om_x"
        );
    }

    #[test]
    fn deltas_count_new_and_grown_statements_most_called_first() {
        let key = |db: &str, q: &str| (db.to_owned(), q.to_owned());
        let before = PgCounters {
            commits: 100,
            rollbacks: 1,
            next_xid: Some(1_000),
            statements: Some(HashMap::from([
                (key("om_b_order", "SELECT 1"), 10),
                (key("om_b_order", "BEGIN"), 5),
            ])),
        };
        let after = PgCounters {
            commits: 130,
            rollbacks: 1,
            next_xid: Some(1_047),
            statements: Some(HashMap::from([
                (key("om_b_order", "SELECT 1"), 15),
                (key("om_b_order", "BEGIN"), 5),
                (key("om_b_payment", "UPDATE  accounts\n SET x"), 40),
                (key("om_b_payment", "COMMIT"), 7),
            ])),
        };
        let d = delta(&before, &after);
        assert_eq!(d.commits, 30);
        assert_eq!(d.commit_statements, Some(7));
        assert_eq!(d.write_transactions, Some(47), "ids assigned in the window");
        assert_eq!(d.statements, Some(52));
        assert_eq!(d.top.len(), 3);
        assert_eq!(d.top[0].calls, 40);
        assert_eq!(d.top[0].database, "payment");
        assert_eq!(d.top[0].query, "UPDATE accounts SET x");
        assert_eq!(
            delta(&PgCounters::default(), &PgCounters::default()).statements,
            None
        );
    }
}
