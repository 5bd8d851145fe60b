//! The process's Prometheus endpoint (`--metrics-listen`): one recorder per
//! process, installed before any target is built, and `GET /metrics` that
//! renders it in Prometheus's text format, or in OpenMetrics when the
//! scraper's `Accept` asks for it ([`openmetrics`]).
//!
//! Why it is built this way:
//! - **The `metrics` facade everywhere, one exporter here.** The crates
//!   that count (mesh, events, services, gateway) depend on the facade
//!   only; without an installed recorder (no `--metrics-listen`, the
//!   in-process tests) their calls cost a load and a branch.
//! - **State is read on scrape.** Figures that are state rather than
//!   events (a breaker's state, the outbox backlog, pool connections) are
//!   not pushed on every change: each target registers a [`on_scrape`]
//!   hook that reads them when Prometheus asks, so nobody pays for them
//!   between scrapes. A hook that takes longer than [`HOOK_TIMEOUT`] (a
//!   database that does not answer) is left behind and the scrape answers
//!   with the last values.
//! - **Process figures** (CPU, memory, descriptors) from `metrics-process`.

pub mod openmetrics;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::Error;

/// How long one scrape hook may take.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// Latency buckets of every `_seconds` histogram: 1 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What a metric is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every ordermesh metric with its kind and `# HELP` text: the list
/// docs/metrics.md's table shows (a test holds them equal), described once
/// at install so each has its help line even before its first value.
pub const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (
        "ordermesh_build_info",
        Kind::Gauge,
        "1, labelled with the binary's version",
    ),
    (
        "ordermesh_rpc_server_requests_total",
        Kind::Counter,
        "gRPC calls answered, by method and status code",
    ),
    (
        "ordermesh_rpc_server_duration_seconds",
        Kind::Histogram,
        "Time from a gRPC call's arrival to its status",
    ),
    (
        "ordermesh_rpc_client_requests_total",
        Kind::Counter,
        "Calls made through the mesh, by downstream, method and final status",
    ),
    (
        "ordermesh_rpc_client_duration_seconds",
        Kind::Histogram,
        "Time of a call through the mesh, retries included",
    ),
    (
        "ordermesh_mesh_retries_total",
        Kind::Counter,
        "Attempts after a call's first",
    ),
    (
        "ordermesh_mesh_retry_budget_exhausted_total",
        Kind::Counter,
        "Retries not made because the retry budget was spent",
    ),
    (
        "ordermesh_mesh_refused_total",
        Kind::Counter,
        "Calls the mesh answered without sending them, by reason",
    ),
    (
        "ordermesh_mesh_faults_injected_total",
        Kind::Counter,
        "Calls delayed or aborted by fault rules",
    ),
    (
        "ordermesh_mesh_breaker_state",
        Kind::Gauge,
        "Circuit breaker state: 0 closed, 1 half-open, 2 open",
    ),
    (
        "ordermesh_mesh_breaker_transitions_total",
        Kind::Counter,
        "Circuit breaker state changes, by new state",
    ),
    (
        "ordermesh_mesh_endpoints",
        Kind::Gauge,
        "Endpoints of a downstream, ready or ejected",
    ),
    (
        "ordermesh_mesh_load_shed_total",
        Kind::Counter,
        "Calls refused at the server's concurrency limit",
    ),
    (
        "ordermesh_gateway_requests_total",
        Kind::Counter,
        "Requests at the gateway, by protocol, route and status",
    ),
    (
        "ordermesh_gateway_request_duration_seconds",
        Kind::Histogram,
        "Time of a request at the gateway",
    ),
    (
        "ordermesh_gateway_auth_refusals_total",
        Kind::Counter,
        "Requests refused by authentication or authorization, by reason",
    ),
    (
        "ordermesh_gateway_rate_limited_total",
        Kind::Counter,
        "Requests refused by a rate limit",
    ),
    (
        "ordermesh_orders_ended_total",
        Kind::Counter,
        "Orders that reached a terminal status, by status and reject reason",
    ),
    (
        "ordermesh_order_completion_seconds",
        Kind::Histogram,
        "Time from an order's acceptance to its terminal status",
    ),
    (
        "ordermesh_sagas_in_flight",
        Kind::Gauge,
        "Sagas this process is driving",
    ),
    (
        "ordermesh_sagas_needing_attention",
        Kind::Gauge,
        "Sagas stopped for an operator",
    ),
    (
        "ordermesh_saga_steps_total",
        Kind::Counter,
        "Saga step results, by step and the plan's decision",
    ),
    (
        "ordermesh_saga_compensations_total",
        Kind::Counter,
        "Compensating saga steps run, by step",
    ),
    (
        "ordermesh_outbox_pending",
        Kind::Gauge,
        "Outbox rows not yet published",
    ),
    (
        "ordermesh_outbox_oldest_age_seconds",
        Kind::Gauge,
        "Age of the oldest unpublished outbox row",
    ),
    (
        "ordermesh_events_published_total",
        Kind::Counter,
        "Outbox rows the relay published",
    ),
    (
        "ordermesh_relay_errors_total",
        Kind::Counter,
        "Outbox relay rounds that failed",
    ),
    (
        "ordermesh_relay_leader",
        Kind::Gauge,
        "1 while this process's outbox relay publishes its database's events (the elected one of its replicas)",
    ),
    (
        "ordermesh_consumer_handled_total",
        Kind::Counter,
        "Events a consumer handled",
    ),
    (
        "ordermesh_consumer_redelivered_total",
        Kind::Counter,
        "Deliveries to a consumer that were redeliveries",
    ),
    (
        "ordermesh_consumer_dead_lettered_total",
        Kind::Counter,
        "Events a consumer dead-lettered",
    ),
    (
        "ordermesh_consumer_lag",
        Kind::Gauge,
        "Messages of its stream not yet delivered to a consumer",
    ),
    (
        "ordermesh_db_pool_connections",
        Kind::Gauge,
        "Connections of a database pool, in use or idle",
    ),
    (
        "ordermesh_db_transaction_begin_seconds",
        Kind::Histogram,
        "Time to get a write transaction: the wait for a pooled connection, plus BEGIN",
    ),
];

type Hook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

struct Recorder {
    handle: PrometheusHandle,
    hooks: Mutex<Vec<Hook>>,
    process: metrics_process::Collector,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// Installs the process's recorder (once; later calls reuse it). Every
/// metric recorded from then on is exported.
pub fn install() -> Result<(), Error> {
    if RECORDER.get().is_some() {
        return Ok(());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map_err(|e| Error::Metrics(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        // Another recorder won a race with this one: keep the first.
        return Ok(());
    }
    let process = metrics_process::Collector::default();
    process.describe();
    for &(name, kind, help) in DESCRIPTIONS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    let _ = RECORDER.set(Recorder {
        handle,
        hooks: Mutex::new(Vec::new()),
        process,
    });
    metrics::gauge!("ordermesh_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(())
}

/// Whether this process exports metrics.
pub fn installed() -> bool {
    RECORDER.get().is_some()
}

/// Runs `hook` before every scrape (a no-op when no recorder is
/// installed, so a target may always register its hooks).
pub fn on_scrape(hook: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static) {
    if let Some(recorder) = RECORDER.get() {
        recorder
            .hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(hook));
    }
}

/// Everything recorded so far, in Prometheus's text format, after running
/// the scrape hooks. Empty when no recorder is installed.
pub async fn render() -> String {
    let Some(recorder) = RECORDER.get() else {
        return String::new();
    };
    let hooks: Vec<Hook> = recorder.hooks.lock().unwrap_or_else(|p| p.into_inner()).clone();
    futures::future::join_all(hooks.iter().map(|hook| async move {
        if tokio::time::timeout(HOOK_TIMEOUT, hook()).await.is_err() {
            tracing::warn!("a metrics scrape hook took longer than {HOOK_TIMEOUT:?}; its figures are stale");
        }
    }))
    .await;
    recorder.process.collect();
    recorder.handle.render()
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(|headers: axum::http::HeaderMap| async move {
            let accept = headers
                .get(axum::http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let text = render().await;
            if openmetrics::wanted(accept) {
                (
                    [(axum::http::header::CONTENT_TYPE, openmetrics::CONTENT_TYPE)],
                    openmetrics::from_prometheus(&text),
                )
            } else {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "metrics at /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            source,
        })
}

/// The pools of one service's database, as `ordermesh_db_pool_connections`
/// (PostgreSQL's one pool as `write`; SQLite's writer and readers apart).
pub fn export_pools(service: &'static str, db: &crate::db::Db) {
    let pools = match db.backend {
        crate::db::Backend::Postgres => vec![("write", &db.write)],
        crate::db::Backend::Sqlite => vec![("write", &db.write), ("read", &db.read)],
    };
    for (pool, handle) in pools {
        let size = handle.size();
        let idle = u32::try_from(handle.num_idle()).unwrap_or(u32::MAX).min(size);
        for (state, count) in [("in_use", size - idle), ("idle", idle)] {
            metrics::gauge!(
                "ordermesh_db_pool_connections",
                "service" => service,
                "pool" => pool,
                "state" => state,
            )
            .set(f64::from(count));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/metrics.md's table lists exactly the metrics described here,
    /// each with its kind.
    #[test]
    fn the_docs_table_is_the_list() {
        let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md"))
            .expect("docs/metrics.md");
        let mut documented: Vec<(String, String)> = page
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split(" | ").collect();
                let name = cells.first()?.strip_prefix("| `")?.strip_suffix('`')?;
                name.starts_with("ordermesh_")
                    .then(|| (name.to_owned(), cells.get(1).copied().unwrap_or("").to_owned()))
            })
            .collect();
        documented.sort();
        let mut described: Vec<(String, String)> = DESCRIPTIONS
            .iter()
            .map(|(name, kind, _)| ((*name).to_owned(), format!("{kind:?}").to_lowercase()))
            .collect();
        described.sort();
        assert_eq!(documented, described);
    }
}
