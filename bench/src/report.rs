//! The run's report: every figure as JSON (what `bench/run.sh` tabulates)
//! and one summary line.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use super::args::{BenchArgs, Scenario};
use super::limit::{self, Floor};
use super::load::{Mode, Outcome, Percentiles};
use super::measure::Probe;
use super::scenarios::Spread;
use super::target::Mesh;

pub struct Inputs<'a> {
    pub args: &'a BenchArgs,
    pub mesh: &'a Mesh,
    pub outcome: &'a Outcome,
    pub probe: &'a Probe,
    pub floor: Option<&'a Floor>,
    pub spread: Option<&'a Spread>,
    pub watch: Value,
    /// (commits, statements) per order from another run.
    pub db_counts_from: Option<(f64, f64)>,
    /// RSS (KiB) per process, every second from the load's start.
    pub rss_series: BTreeMap<String, Vec<u64>>,
}

/// Statements and commits per order recorded by an earlier run's JSON.
pub fn db_counts_from(path: &Path) -> anyhow::Result<(f64, f64)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let field = |k: &str| json["database"][k].as_f64();
    let commits = field("write_transactions_per_request")
        .or_else(|| field("commit_statements_per_request"))
        .or_else(|| field("commits_per_request"));
    match (commits, field("statements_per_request")) {
        (Some(c), Some(s)) => Ok((c, s)),
        _ => anyhow::bail!(
            "{} has no database.commits_per_request and statements_per_request (a PostgreSQL run's JSON)",
            path.display()
        ),
    }
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

pub fn build(inputs: Inputs<'_>) -> Value {
    let Inputs {
        args,
        mesh,
        outcome,
        probe,
        floor,
        spread,
        watch,
        db_counts_from,
        rss_series,
    } = inputs;
    let ok = outcome.ok.max(1) as f64;
    let seconds = outcome.elapsed.as_secs_f64().max(1e-9);
    let per_request = |ms: f64| ms / ok;
    let processes = probe.process_ms();
    let ordermesh_ms = probe.ordermesh_ms();
    let database_ms = probe.database_ms();
    let pg = probe.pg_delta();
    let statements_per_request = pg.as_ref().and_then(|d| d.statements).map(|s| s as f64 / ok);
    let commits_per_request = pg.as_ref().map(|d| d.commits as f64 / ok);
    let commit_statements_per_request = pg
        .as_ref()
        .and_then(|d| d.commit_statements)
        .map(|c| c as f64 / ok);
    let write_transactions_per_request = pg
        .as_ref()
        .and_then(|d| d.write_transactions)
        .map(|c| c as f64 / ok);
    // The transactions that pay a WAL flush: those that wrote, explicit or
    // single statements (COMMIT statements alone miss the latter).
    let writes_per_request = write_transactions_per_request.or(commit_statements_per_request);

    let (mode, concurrency, rate) = match outcome_mode(args) {
        Mode::Closed { concurrency } => ("closed", Some(concurrency), None),
        Mode::Open { rate, .. } => ("open", None, Some(rate)),
    };
    let rss = probe.rss();
    let limit = floor.map(|floor| {
        // Write transactions are what pay a WAL flush; read-only
        // autocommit statements also count in xact_commit and are charged
        // as statements instead.
        let counts = match (writes_per_request, statements_per_request) {
            (Some(c), Some(s)) => Some((c, s)),
            _ => db_counts_from,
        };
        let lower = limit::lower_limit(floor, counts, cores());
        let fixed = limit::fixed_floor(floor, cores());
        let ratio = |measured: f64, lower: f64| (measured > 0.0 && lower > 0.0).then(|| measured / lower);
        json!({
            "floor": floor,
            "rpcs_per_order": limit::RPCS_PER_ORDER,
            // 6 RPCs and 6 of the simplest commits: what targets are set
            // against (it does not move with the design's own counts).
            "fixed": fixed,
            "commits_per_order_fixed": limit::FIXED_COMMITS_PER_ORDER,
            "throughput_share_of_fixed_floor": ratio(outcome.throughput(), fixed.orders_per_s),
            "ordermesh_cpu_times_fixed_floor": ratio(per_request(ordermesh_ms), fixed.ordermesh_ms),
            "database_cpu_times_fixed_floor": database_ms.and_then(|ms| ratio(per_request(ms), fixed.database_ms)),
            "database_counts_from": if writes_per_request.is_some() && statements_per_request.is_some() {
                "this run"
            } else if db_counts_from.is_some() {
                "--db-counts-from"
            } else {
                "none (limit counts RPCs only)"
            },
            "lower": lower,
            // This design's limit (its own commits and statements, each at
            // its floor): throughput as a share of it, CPU as a multiple.
            "throughput_share_of_limit": ratio(outcome.throughput(), lower.orders_per_s),
            "ordermesh_cpu_times_limit": ratio(per_request(ordermesh_ms), lower.ordermesh_ms),
            "database_cpu_times_limit": database_ms.and_then(|ms| ratio(per_request(ms), lower.database_ms)),
        })
    });
    json!({
        "label": args.label.clone().unwrap_or_else(|| default_label(args, mesh)),
        "scenario": args.scenario,
        "mode": mode,
        "concurrency": concurrency,
        "rate_per_s": rate,
        "client": (args.scenario == Scenario::Echo).then_some(args.client),
        "follow": (args.scenario == Scenario::CreateOrder).then_some(args.follow),
        "binary": args.server_bin.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "this".into()),
        "bench_version": env!("CARGO_PKG_VERSION"),
        "target": {
            "kind": mesh.kind,
            "backend": mesh.backend,
            "order_replicas": mesh.order_urls.len(),
            "start_to_healthy_ms": mesh.start_to_healthy_ms,
            "idle_rss_kib": mesh.idle_rss_kib.iter().cloned().collect::<BTreeMap<_, _>>(),
            "idle_rss_anon_kib": mesh.idle_rss_anon_kib.iter().cloned().collect::<BTreeMap<_, _>>(),
            "processes": mesh.processes.iter().map(|(n, p)| (n.clone(), *p)).collect::<BTreeMap<_, _>>(),
        },
        "machine": {
            "cores": cores(),
            // Other processes' CPU in the window (other builds, other
            // benchmarks): a measurement on a busy machine says so here.
            "busy_cores": probe.machine_busy_ms().map(|ms| ms / 1000.0 / seconds),
            "other_cores": probe.machine_busy_ms().map(|ms| {
                ((ms - ordermesh_ms - database_ms.unwrap_or(0.0) - probe.client_ms()) / 1000.0 / seconds).max(0.0)
            }),
        },
        "spread": spread,
        "warmup_s": args.warmup.as_secs_f64(),
        "window_s": seconds,
        "requests": {
            "ok": outcome.ok,
            "errors": outcome.errors,
            "error_total": outcome.errors.values().sum::<u64>(),
            "started": outcome.started,
            "budget_exhausted": outcome.budget_exhausted,
        },
        "throughput_per_s": outcome.throughput(),
        "latency_ms": Percentiles::of(&outcome.latency),
        "latency_by_client_ms": outcome.by_tag.iter().map(|(k, h)| (k.to_string(), Percentiles::of(h))).collect::<BTreeMap<_, _>>(),
        "cpu": {
            "ordermesh_ms_per_request": per_request(ordermesh_ms),
            "process_ms_per_request": processes.iter().map(|(k, v)| (k.clone(), per_request(*v))).collect::<BTreeMap<_, _>>(),
            "thread_kind_ms_per_request": probe.thread_kind_ms().iter().map(|(k, v)| (k.clone(), per_request(*v))).collect::<BTreeMap<_, _>>(),
            "database_ms_per_request": database_ms.map(per_request),
            "client_ms_per_request": per_request(probe.client_ms()),
            "ordermesh_cores": ordermesh_ms / 1000.0 / seconds,
            "database_cores": database_ms.map(|ms| ms / 1000.0 / seconds),
            "client_cores": probe.client_ms() / 1000.0 / seconds,
        },
        "database": {
            "backend": mesh.backend,
            "statements_per_request": statements_per_request,
            "commits_per_request": commits_per_request,
            "commit_statements_per_request": commit_statements_per_request,
            "write_transactions_per_request": write_transactions_per_request,
            "rollbacks": pg.as_ref().map(|d| d.rollbacks),
            "statements_counted": pg.as_ref().is_some_and(|d| d.statements.is_some()),
            "error": probe.pg_error,
            "top_statements": pg.as_ref().map(|d| d.top.iter().take(40).map(|t| json!({
                "database": t.database,
                "calls_per_request": t.calls as f64 / ok,
                "query": t.query.chars().take(240).collect::<String>(),
            })).collect::<Vec<_>>()),
        },
        "rss_kib": rss.iter().map(|(k, (start, end))| (k.clone(), json!({
            "window_start": start,
            "window_end": end,
            "growth_pct": (*start > 0).then(|| (*end as f64 - *start as f64) * 100.0 / *start as f64),
        }))).collect::<BTreeMap<_, _>>(),
        "rss_series_kib": { "interval_s": 1, "from": "load start (warm-up included)", "series": rss_series },
        "limit": limit,
        "watch": watch,
    })
}

fn outcome_mode(args: &BenchArgs) -> Mode {
    match args.rate {
        Some(rate) => Mode::Open {
            rate,
            max_in_flight: args.max_in_flight,
        },
        None => Mode::Closed {
            concurrency: args.concurrency,
        },
    }
}

fn default_label(args: &BenchArgs, mesh: &Mesh) -> String {
    let load = match args.rate {
        Some(rate) => format!("{rate}/s"),
        None => format!("c={}", args.concurrency),
    };
    let scenario = serde_json::to_value(args.scenario)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("{scenario} {}/{} {load}", mesh.kind, mesh.backend)
}

/// One line: what a person scanning a terminal wants.
pub fn summary(json: &Value) -> String {
    let f = |v: &Value| v.as_f64();
    let mut parts = vec![format!(
        "{}: {:.1} ok/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, errors {}",
        json["label"].as_str().unwrap_or(""),
        f(&json["throughput_per_s"]).unwrap_or(0.0),
        f(&json["latency_ms"]["p50_ms"]).unwrap_or(0.0),
        f(&json["latency_ms"]["p99_ms"]).unwrap_or(0.0),
        f(&json["latency_ms"]["p999_ms"]).unwrap_or(0.0),
        json["requests"]["error_total"],
    )];
    if let Some(ms) = f(&json["cpu"]["ordermesh_ms_per_request"]) {
        parts.push(format!("ordermesh {ms:.3} ms CPU/req"));
    }
    if let Some(ms) = f(&json["cpu"]["database_ms_per_request"]) {
        parts.push(format!("database {ms:.3} ms CPU/req"));
    }
    if let Some(s) = f(&json["database"]["statements_per_request"]) {
        parts.push(format!("{s:.1} statements/req"));
    }
    if let Some(c) = f(&json["database"]["commits_per_request"]) {
        parts.push(format!("{c:.1} commits/req"));
    }
    if let Some(share) = f(&json["limit"]["throughput_share_of_fixed_floor"]) {
        parts.push(format!(
            "{share:.2}x of the fixed floor ({:.0} orders/s)",
            f(&json["limit"]["fixed"]["orders_per_s"]).unwrap_or(0.0)
        ));
    }
    if let Some(share) = f(&json["limit"]["throughput_share_of_limit"]) {
        parts.push(format!(
            "{share:.2}x of this design's limit ({:.0} orders/s)",
            f(&json["limit"]["lower"]["orders_per_s"]).unwrap_or(0.0)
        ));
    }
    for (tag, p) in json["latency_by_client_ms"].as_object().into_iter().flatten() {
        parts.push(format!(
            "{tag} p50 {:.3} ms p99 {:.3} ms",
            f(&p["p50_ms"]).unwrap_or(0.0),
            f(&p["p99_ms"]).unwrap_or(0.0)
        ));
    }
    if let Some(w) = f(&json["watch"]["added_statements_per_watcher_s"]) {
        parts.push(format!("watchers add {w:.3} statements per watcher-second"));
    }
    if json["requests"]["budget_exhausted"].as_bool() == Some(true) {
        parts.push("(customer's balance used up: window cut short)".into());
    }
    parts.join(", ")
}
