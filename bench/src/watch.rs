//! The watch-order scenario: what many concurrent WatchOrder streams cost
//! the database and the servers on a busy system.
//!
//! Orders flow at a fixed rate, each held open for a few seconds by an
//! injected delay of CapturePayment (the mesh's own fault injection: a rule
//! and the flag that arms it, set through the order service's
//! MeshAdminService and put back afterwards), so
//! there are always open orders to watch. Phase A measures the flow alone;
//! phase B the same flow plus N watchers, each following the newest order
//! until it ends and then the next. The difference per watcher-second is
//! what a watcher costs while it waits; a subscription's first read (one
//! GetOrder's statements, measured before the flow starts) is counted apart,
//! and only reads count as the watchers' (the flow's writes vary by a saga
//! step or two between windows).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::scenarios::Conn;
use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::watch;

use ordermesh_mesh::classify::code_name;
use ordermesh_mesh::fault::FAULT_FLAG;
use ordermesh_proto::mesh::v1 as mesh_pb;
use ordermesh_proto::mesh::v1::mesh_admin_service_client::MeshAdminServiceClient;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;

use super::load::Window;
use super::measure::Probe;
use super::target::Mesh;

/// Rates of one phase.
fn phase(probe: &Probe, seconds: f64) -> serde_json::Value {
    let pg = probe.pg_delta();
    json!({
        "seconds": seconds,
        "statements_per_s": pg.as_ref().and_then(|d| d.statements).map(|s| s as f64 / seconds),
        "commits_per_s": pg.as_ref().map(|d| d.commits as f64 / seconds),
        "ordermesh_cpu_ms_per_s": probe.ordermesh_ms() / seconds,
        "database_cpu_ms_per_s": probe.database_ms().map(|ms| ms / seconds),
        "process_cpu_ms_per_s": probe.process_ms().into_iter().map(|(k, v)| (k, v / seconds)).collect::<std::collections::BTreeMap<_, _>>(),
    })
}

/// Holds every order at CapturePayment for `hold`: a fault rule on the
/// order service's payment downstream, and the `fault_injection` flag that
/// arms rules turned on. Returns the flag as it was, for [`release_hold`].
pub async fn hold_orders(
    admin: &mut MeshAdminServiceClient<Conn>,
    hold: Duration,
) -> anyhow::Result<Option<mesh_pb::Flag>> {
    let previous = admin
        .get_mesh_state(mesh_pb::GetMeshStateRequest::default())
        .await
        .map_err(|s| anyhow::anyhow!("MeshAdminService/GetMeshState: {s}"))?
        .into_inner()
        .flags
        .into_iter()
        .find(|f| f.name == FAULT_FLAG);
    set_rules(
        admin,
        vec![mesh_pb::FaultRule {
            method: "CapturePayment".into(),
            delay_percent: 100.0,
            delay_ms: i64::try_from(hold.as_millis()).unwrap_or(i64::MAX),
            abort_percent: 0.0,
            abort_code: String::new(),
        }],
    )
    .await?;
    set_flag(
        admin,
        mesh_pb::Flag {
            name: FAULT_FLAG.into(),
            enabled: true,
            rollout_percent: 100.0,
            description: "armed by ordermesh bench (watch-order)".into(),
        },
    )
    .await?;
    Ok(previous)
}

/// Clears the rule and puts the flag back as [`hold_orders`] found it.
pub async fn release_hold(
    admin: &mut MeshAdminServiceClient<Conn>,
    previous: Option<mesh_pb::Flag>,
) -> anyhow::Result<()> {
    set_rules(admin, Vec::new()).await?;
    let flag = previous.unwrap_or_else(|| mesh_pb::Flag {
        name: FAULT_FLAG.into(),
        enabled: false,
        ..Default::default()
    });
    set_flag(admin, flag).await
}

async fn set_rules(
    admin: &mut MeshAdminServiceClient<Conn>,
    rules: Vec<mesh_pb::FaultRule>,
) -> anyhow::Result<()> {
    admin
        .set_faults(mesh_pb::SetFaultsRequest {
            downstream: "payment".into(),
            rules,
        })
        .await
        .map_err(|s| anyhow::anyhow!("MeshAdminService/SetFaults: {s}"))?;
    Ok(())
}

async fn set_flag(admin: &mut MeshAdminServiceClient<Conn>, flag: mesh_pb::Flag) -> anyhow::Result<()> {
    admin
        .set_flag(mesh_pb::SetFlagRequest { flag: Some(flag) })
        .await
        .map_err(|s| anyhow::anyhow!("MeshAdminService/SetFlag: {s}"))?;
    Ok(())
}

/// Counts of the watchers.
#[derive(Default)]
struct Watchers {
    /// Streams open now (answered at least once).
    active: AtomicI64,
    /// Streams that answered (a refused one did no database read).
    subscriptions: AtomicU64,
    /// Refused or broken streams by gRPC code.
    errors: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

/// The watch-order [`Window`]: phase A happens inside `start` (the flow is
/// already running), then the watchers start and phase B is the load
/// engine's own window.
pub struct WatchWindow {
    a: Probe,
    pub b: Probe,
    duration: Duration,
    watchers: usize,
    channels: Vec<Conn>,
    newest: watch::Receiver<String>,
    counts: Arc<Watchers>,
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    a_seconds: f64,
    b_started: Option<(Instant, u64)>,
    samples: Arc<std::sync::Mutex<Vec<i64>>>,
    pub report: serde_json::Value,
    statements_per_get: Option<f64>,
    /// How long each order is held: the flow reaches its steady state (every
    /// step of the saga happening at the arrival rate) only after it.
    hold: Duration,
}

impl WatchWindow {
    pub fn new(
        mesh: &Mesh,
        duration: Duration,
        watchers: usize,
        channels: Vec<Conn>,
        newest: watch::Receiver<String>,
        statements_per_get: Option<f64>,
        hold: Duration,
    ) -> Self {
        WatchWindow {
            a: Probe::new(mesh),
            b: Probe::new(mesh),
            duration,
            watchers,
            channels,
            newest,
            counts: Arc::default(),
            stop: watch::channel(false).0,
            tasks: tokio::task::JoinSet::new(),
            a_seconds: 0.0,
            b_started: None,
            samples: Arc::default(),
            report: serde_json::Value::Null,
            statements_per_get,
            hold,
        }
    }

    fn spawn_watchers(&mut self) {
        for i in 0..self.watchers {
            let channel = self.channels[i % self.channels.len()].clone();
            let mut newest = self.newest.clone();
            let mut stop = self.stop.subscribe();
            let counts = self.counts.clone();
            self.tasks.spawn(async move {
                let mut client = OrderServiceClient::new(channel);
                loop {
                    let order_id = newest.borrow_and_update().clone();
                    if !order_id.is_empty() {
                        let mut opened = false;
                        let follow = async {
                            let mut stream = client
                                .watch_order(order_pb::WatchOrderRequest { order_id })
                                .await?
                                .into_inner();
                            while stream.message().await?.is_some() {
                                if !opened {
                                    opened = true;
                                    counts.active.fetch_add(1, Ordering::AcqRel);
                                    counts.subscriptions.fetch_add(1, Ordering::AcqRel);
                                }
                            }
                            Ok::<(), tonic::Status>(())
                        };
                        let ended = tokio::select! {
                            r = follow => Some(r),
                            _ = stop.changed() => None,
                        };
                        if opened {
                            counts.active.fetch_sub(1, Ordering::AcqRel);
                        }
                        match ended {
                            None => return,
                            Some(Err(status)) => {
                                *counts
                                    .errors
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .entry(code_name(status.code()))
                                    .or_default() += 1;
                            }
                            Some(Ok(())) => {}
                        }
                    }
                    // The next order: a newer one than the one just watched.
                    tokio::select! {
                        changed = newest.changed() => if changed.is_err() { return },
                        _ = stop.changed() => return,
                    }
                }
            });
        }
        // Watcher-seconds: the active count sampled every 50 ms.
        let (counts, samples, mut stop) = (self.counts.clone(), self.samples.clone(), self.stop.subscribe());
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = tick.tick() => samples.lock().unwrap_or_else(|p| p.into_inner()).push(counts.active.load(Ordering::Acquire)),
                    _ = stop.changed() => return,
                }
            }
        });
    }
}

impl Window for WatchWindow {
    fn start(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            // Phase A: the flow alone, once orders complete as fast as they
            // arrive.
            tokio::time::sleep(self.hold + Duration::from_millis(500)).await;
            self.a.start().await;
            let began = Instant::now();
            tokio::time::sleep(self.duration).await;
            self.a_seconds = began.elapsed().as_secs_f64();
            self.a.end().await;
            // Phase B: watchers join; measured once nearly all are watching.
            self.spawn_watchers();
            let ramp = tokio::time::Instant::now() + Duration::from_secs(15);
            let target = (self.watchers as i64 * 9) / 10;
            while self.counts.active.load(Ordering::Acquire) < target && tokio::time::Instant::now() < ramp {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.samples.lock().unwrap_or_else(|p| p.into_inner()).clear();
            self.b.start().await;
            self.b_started = Some((Instant::now(), self.counts.subscriptions.load(Ordering::Acquire)));
        })
    }

    fn end(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            self.b.end().await;
            let (began, subs0) = self.b_started.unwrap_or((Instant::now(), 0));
            let b_seconds = began.elapsed().as_secs_f64().max(1e-6);
            let subscriptions = self.counts.subscriptions.load(Ordering::Acquire) - subs0;
            let _ = self.stop.send(true);
            while self.tasks.join_next().await.is_some() {}
            let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let avg_active = if samples.is_empty() {
                0.0
            } else {
                samples.iter().sum::<i64>() as f64 / samples.len() as f64
            };
            let watcher_seconds = avg_active * b_seconds;
            let a = phase(&self.a, self.a_seconds.max(1e-6));
            let b = phase(&self.b, b_seconds);
            let rate = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
            let added = |k: &str| Some(rate(&b, k)? - rate(&a, k)?);
            let per_watcher = |x: Option<f64>| x.map(|x| x * b_seconds / watcher_seconds.max(1e-6));
            let added_statements = added("statements_per_s");
            let subscribe_statements = self
                .statements_per_get
                .map(|per_get| per_get * subscriptions as f64 / b_seconds);
            // Watchers only read: the reads they add beyond their first
            // ones, so that the flow's own writes (a saga step more or less
            // in a window) do not count as theirs.
            let reads_per_s = |d: &super::postgres::PgDelta, seconds: f64| -> f64 {
                d.top
                    .iter()
                    .filter(|t| t.query.trim_start().to_ascii_uppercase().starts_with("SELECT"))
                    .map(|t| t.calls as f64)
                    .sum::<f64>()
                    / seconds
            };
            let added_reads = match (self.a.pg_delta(), self.b.pg_delta()) {
                (Some(da), Some(db)) if db.statements.is_some() => {
                    Some(reads_per_s(&db, b_seconds) - reads_per_s(&da, self.a_seconds.max(1e-6)))
                }
                _ => None,
            };
            let beyond = match (added_reads, subscribe_statements) {
                (Some(added), Some(sub)) => per_watcher(Some(added - sub)),
                _ => None,
            };
            // Which statements the watchers added, per second.
            let mut added_by_statement: Vec<(String, String, f64)> = Vec::new();
            if let (Some(da), Some(db)) = (self.a.pg_delta(), self.b.pg_delta()) {
                let a_seconds = self.a_seconds.max(1e-6);
                for t in &db.top {
                    let before = da
                        .top
                        .iter()
                        .find(|x| x.database == t.database && x.query == t.query)
                        .map_or(0.0, |x| x.calls as f64 / a_seconds);
                    let added = t.calls as f64 / b_seconds - before;
                    if added > 1.0 {
                        added_by_statement.push((
                            t.database.clone(),
                            t.query.chars().take(200).collect(),
                            added,
                        ));
                    }
                }
                added_by_statement.sort_by(|x, y| y.2.total_cmp(&x.2));
                added_by_statement.truncate(8);
            }
            self.report = json!({
                "added_by_statement_per_s": added_by_statement
                    .iter()
                    .map(|(database, query, per_s)| json!({"database": database, "per_s": per_s, "query": query}))
                    .collect::<Vec<_>>(),
                "watchers": self.watchers,
                "average_active_watchers": avg_active,
                "watcher_errors": self.counts.errors.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                "subscriptions_per_s": subscriptions as f64 / b_seconds,
                "statements_per_get_order": self.statements_per_get,
                "phase_a_flow_only": a,
                "phase_b_with_watchers": b,
                "added_statements_per_s": added_statements,
                "added_statements_per_watcher_s": per_watcher(added_statements),
                "added_reads_per_s": added_reads,
                "added_statements_per_watcher_s_beyond_subscribe": beyond,
                "added_commits_per_s": added("commits_per_s"),
                "added_ordermesh_cpu_ms_per_watcher_s": per_watcher(added("ordermesh_cpu_ms_per_s")),
                "added_database_cpu_ms_per_watcher_s": per_watcher(added("database_cpu_ms_per_s")),
            });
        })
    }
}
