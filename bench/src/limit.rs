//! The machine's lower limit for an order, measured in the same run: what
//! the cheapest possible RPC and the cheapest possible commit cost here,
//! times how many of each an order needs.
//!
//! - RPC floor: the echo scenario's CPU per call (server, and client for
//!   the calls the order service makes itself). An order is six calls:
//!   the client's CreateOrder and WatchOrder, and the saga's ReserveStock,
//!   AuthorizePayment, CapturePayment and CommitReservation.
//! - Commit floor: eight concurrent loops of `BEGIN; UPDATE one row; COMMIT`
//!   on a scratch table through sqlx on the same backend (a row per loop); its CPU per commit, split into
//!   the database server's and the client's (on SQLite both are the client).
//! - Statement floor: a loop of a one-row primary-key read (autocommit).
//!
//! Two limits come of these floors:
//!
//! - The fixed floor, the least an order must do durably whatever the
//!   design: 6 RPCs and 6 commits (order accepted, stock reserved, payment
//!   authorized, payment captured, stock committed, order confirmed), its
//!   events riding in those commits. It does not move when the design
//!   issues more statements, so it is what throughput targets are set
//!   against.
//! - The limit of this design: an order with C commits and S statements
//!   (counted in the run) costs `6 RPCs + C commits + max(0, S - 3C)
//!   statements` (the simplest commit already carries three statements).
//!   A design that wastes statements raises this limit's cost with its
//!   own, so its share here flatters it; it says how far the design is
//!   from what its own statements cost alone.
//!
//! Each is CPU per order; the machine's throughput limit is the cores
//! divided by it. Measured figures are reported as ratios to both.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::procstat::{self, CpuSnapshot, Members};

/// Server-side RPCs per order (create, watch, reserve, authorize, capture, commit).
pub const RPCS_PER_ORDER: f64 = 6.0;
/// RPCs per order whose client is the order service (the saga's four steps).
pub const SAGA_CLIENT_RPCS: f64 = 4.0;
/// RPCs per order whose client is the bench (create and watch).
pub const BENCH_CLIENT_RPCS: f64 = 2.0;
/// Statements of the simplest commit (BEGIN, UPDATE, COMMIT).
pub const STATEMENTS_PER_COMMIT: f64 = 3.0;
/// Durable commits an order cannot do without: order accepted, stock
/// reserved, payment authorized, payment captured, stock committed, order
/// confirmed.
pub const FIXED_COMMITS_PER_ORDER: f64 = 6.0;

/// The measured floors, in CPU milliseconds per operation.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Floor {
    pub rpc_server_ms: f64,
    pub rpc_client_ms: f64,
    pub rpc_per_s: f64,
    pub commit_server_ms: Option<f64>,
    pub commit_client_ms: Option<f64>,
    pub commits_per_s: Option<f64>,
    pub statement_server_ms: Option<f64>,
    pub statement_client_ms: Option<f64>,
}

/// The lower limit of one order, in CPU milliseconds, and the throughput
/// it allows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Limit {
    /// What the ordermesh processes must spend (RPCs; on SQLite, the
    /// commits too).
    pub ordermesh_ms: f64,
    /// What the database server must spend (PostgreSQL).
    pub database_ms: f64,
    /// What the bench itself spends on the client's two calls.
    pub client_ms: f64,
    pub total_ms: f64,
    pub orders_per_s: f64,
    /// False when the database's share is unknown (counts or floor missing),
    /// so the limit holds RPCs only.
    pub includes_database: bool,
}

pub fn lower_limit(floor: &Floor, per_order: Option<(f64, f64)>, cores: f64) -> Limit {
    let mut ordermesh = RPCS_PER_ORDER * floor.rpc_server_ms + SAGA_CLIENT_RPCS * floor.rpc_client_ms;
    let client = BENCH_CLIENT_RPCS * floor.rpc_client_ms;
    let mut database = 0.0;
    let mut includes_database = false;
    if let (Some((commits, statements)), Some(commit_client), Some(statement_client)) =
        (per_order, floor.commit_client_ms, floor.statement_client_ms)
    {
        let extra = (statements - STATEMENTS_PER_COMMIT * commits).max(0.0);
        ordermesh += commits * commit_client + extra * statement_client;
        database += commits * floor.commit_server_ms.unwrap_or(0.0)
            + extra * floor.statement_server_ms.unwrap_or(0.0);
        includes_database = true;
    }
    let total = ordermesh + database + client;
    Limit {
        ordermesh_ms: ordermesh,
        database_ms: database,
        client_ms: client,
        total_ms: total,
        orders_per_s: if total > 0.0 { cores * 1000.0 / total } else { 0.0 },
        includes_database,
    }
}

/// The fixed floor: 6 RPCs and 6 of the simplest commits, nothing else.
/// Without a measured commit floor it holds the RPCs only
/// (`includes_database` false).
pub fn fixed_floor(floor: &Floor, cores: f64) -> Limit {
    lower_limit(
        floor,
        Some((
            FIXED_COMMITS_PER_ORDER,
            FIXED_COMMITS_PER_ORDER * STATEMENTS_PER_COMMIT,
        )),
        cores,
    )
}

/// A database to calibrate on: SQLite in a scratch file, or a scratch
/// database on the PostgreSQL server (whose processes are measured).
pub enum ScratchDb {
    Sqlite {
        dir: std::path::PathBuf,
    },
    Postgres {
        admin_url: String,
        name: String,
        server: Option<Members>,
    },
}

/// CPU per commit and per statement on `db` (client, server), each loop
/// running for `each`.
pub async fn database_floor(db: &ScratchDb, each: Duration) -> anyhow::Result<(f64, f64, f64, f64, f64)> {
    let (url, server) = match db {
        ScratchDb::Sqlite { dir } => (ordermesh_runtime::db::sqlite_url(dir, "scratch")?, None),
        ScratchDb::Postgres {
            admin_url,
            name,
            server,
        } => {
            super::postgres::create_database(admin_url, name).await?;
            (super::postgres::database_url(admin_url, name), server.clone())
        }
    };
    // The runtime's own connect: the same pool settings and SQLite pragmas
    // (WAL, synchronous = NORMAL) as the services.
    let db = ordermesh_runtime::db::connect("bench", &url, &sqlx::migrate::Migrator::DEFAULT)
        .await
        .context("connecting to the scratch database")?;
    sqlx::raw_sql("CREATE TABLE scratch (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)")
        .execute(&db.write)
        .await?;
    for id in 0..LOOPS {
        sqlx::query("INSERT INTO scratch (id, v) VALUES ($1, 0)")
            .bind(id)
            .execute(&db.write)
            .await?;
    }
    let write = db.write.clone();
    let (commit_client, commit_server, commits_per_s) = measure_loops(server.as_ref(), each, move |id| {
        let write = write.clone();
        async move {
            let mut tx = write.begin().await?;
            sqlx::query("UPDATE scratch SET v = v + 1 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }
    })
    .await?;
    let read = db.read.clone();
    let (statement_client, statement_server, _) = measure_loops(server.as_ref(), each, move |id| {
        let read = read.clone();
        async move {
            sqlx::query("SELECT v FROM scratch WHERE id = $1")
                .bind(id)
                .fetch_one(&read)
                .await?;
            Ok(())
        }
    })
    .await?;
    db.write.close().await;
    db.read.close().await;
    Ok((
        commit_client,
        commit_server,
        commits_per_s,
        statement_client,
        statement_server,
    ))
}

/// Concurrent loops of the calibration, each on a row of its own (as the
/// services commit concurrently: a serial loop would charge every commit a
/// sleep and a wake-up the real system shares through group commit, and
/// overstate the floor).
const LOOPS: i64 = 8;

/// Runs `body(loop id)` in [`LOOPS`] concurrent loops for `each` (after a
/// short warm-up); returns the client's and the server's CPU ms per
/// iteration and iterations per second.
async fn measure_loops<F, Fut>(
    server: Option<&Members>,
    each: Duration,
    body: F,
) -> anyhow::Result<(f64, f64, f64)>
where
    F: Fn(i64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let run = |until: Instant| {
        let mut loops = tokio::task::JoinSet::new();
        for id in 0..LOOPS {
            let body = body.clone();
            loops.spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    body(id).await?;
                    n += 1;
                }
                anyhow::Ok(n)
            });
        }
        async move {
            let mut total = 0;
            while let Some(done) = loops.join_next().await {
                total += done??;
            }
            anyhow::Ok(total)
        }
    };
    run(Instant::now() + Duration::from_millis(200)).await?;
    let (c0, s0) = (procstat::self_ticks(), server.map(CpuSnapshot::take));
    let began = Instant::now();
    let n = run(began + each).await?;
    let elapsed = began.elapsed();
    let n_f = n.max(1) as f64;
    let client = procstat::ticks_to_ms(procstat::self_ticks().saturating_sub(c0)) / n_f;
    let server_ms = match (server, s0) {
        (Some(members), Some(s0)) => procstat::ticks_to_ms(CpuSnapshot::take(members).since(&s0)) / n_f,
        _ => 0.0,
    };
    Ok((client, server_ms, n_f / elapsed.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor() -> Floor {
        Floor {
            rpc_server_ms: 0.010,
            rpc_client_ms: 0.020,
            rpc_per_s: 0.0,
            commit_server_ms: Some(0.050),
            commit_client_ms: Some(0.030),
            commits_per_s: None,
            statement_server_ms: Some(0.010),
            statement_client_ms: Some(0.005),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn the_limit_adds_rpcs_commits_and_statements_beyond_the_commits() {
        // 4 commits and 20 statements: 12 ride in the commits, 8 are extra.
        let limit = lower_limit(&floor(), Some((4.0, 20.0)), 2.0);
        assert!(close(
            limit.ordermesh_ms,
            6.0 * 0.010 + 4.0 * 0.020 + 4.0 * 0.030 + 8.0 * 0.005
        ));
        assert!(close(limit.database_ms, 4.0 * 0.050 + 8.0 * 0.010));
        assert!(close(limit.client_ms, 2.0 * 0.020));
        assert!(close(
            limit.total_ms,
            limit.ordermesh_ms + limit.database_ms + limit.client_ms
        ));
        assert!(close(limit.orders_per_s, 2000.0 / limit.total_ms));
        assert!(limit.includes_database);

        // Fewer statements than the commits carry add nothing extra.
        let lean = lower_limit(&floor(), Some((4.0, 5.0)), 2.0);
        assert!(close(lean.database_ms, 4.0 * 0.050));
    }

    #[test]
    fn the_fixed_floor_is_six_rpcs_and_six_commits_whatever_the_counts() {
        let fixed = fixed_floor(&floor(), 2.0);
        assert!(close(fixed.ordermesh_ms, 6.0 * 0.010 + 4.0 * 0.020 + 6.0 * 0.030));
        assert!(close(fixed.database_ms, 6.0 * 0.050));
        assert!(close(fixed.client_ms, 2.0 * 0.020));
        assert!(close(fixed.orders_per_s, 2000.0 / fixed.total_ms));
        assert!(fixed.includes_database);
        // A design with more commits and statements has a costlier limit of
        // its own, but the same fixed floor.
        let wasteful = lower_limit(&floor(), Some((13.0, 46.0)), 2.0);
        assert!(wasteful.total_ms > fixed.total_ms);
        // No commit floor measured: the RPCs alone.
        let rpcs_only = fixed_floor(
            &Floor {
                commit_client_ms: None,
                ..floor()
            },
            2.0,
        );
        assert!(!rpcs_only.includes_database);
        assert!(close(rpcs_only.total_ms, 0.14 + 0.04));
    }

    #[test]
    fn without_database_counts_the_limit_is_the_rpcs_alone() {
        let limit = lower_limit(&floor(), None, 2.0);
        assert!(!limit.includes_database);
        assert!(close(limit.database_ms, 0.0));
        assert!(close(limit.ordermesh_ms, 0.14));
    }
}
