//! Carrying the schedule out: each planned fault at its time (or, when the
//! previous one ran late, a minimum gap after it), undone after its span,
//! and appended to the history with when it really started and ended. A
//! fault that could not be applied or undone is recorded with its error and
//! fails the run: its history would not say what the system went through.
//!
//! A watchdog beside it notices a process that exited without being killed
//! (recorded as an exit, a violation) and starts it again so the run goes on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::transport::Channel;

use ordermesh_proto::mesh::v1 as mesh_pb;
use ordermesh_proto::mesh::v1::mesh_admin_service_client::MeshAdminServiceClient;
use ordermesh_runtime::pgcluster::{PgCluster, StopMode};

use crate::cluster::{Cluster, ClusterError, pg_command};
use crate::history::{ExitRecord, FaultRecord, HistoryWriter, Record};
use crate::schedule::{Downstream, Fault, MIN_GAP, Planned, Proc, QUIET_TAIL};

/// The order replicas' MeshAdminService, where mesh faults are set.
pub type MeshAdmins = Vec<MeshAdminServiceClient<Channel>>;

/// Applies `plan` (offsets from `traffic_start`), stopping before a fault
/// that would reach into the quiet tail before `traffic_end`. Returns the
/// faults as applied.
pub async fn drive(
    cluster: Arc<Mutex<Cluster>>,
    plan: Vec<Planned>,
    history: Arc<HistoryWriter>,
    admins: MeshAdmins,
    traffic_start: Instant,
    traffic_end: Instant,
) -> Vec<FaultRecord> {
    let pg = cluster.lock().await.pg.clone();
    let mut applied = Vec::new();
    let mut ready_at = traffic_start;
    for planned in plan {
        let at = (traffic_start + Duration::from_millis(planned.at_ms)).max(ready_at);
        if at + planned.fault.span() + QUIET_TAIL > traffic_end {
            break;
        }
        tokio::time::sleep_until(at).await;
        let start_ms = history.now_ms();
        let error = match apply(&cluster, &pg, &admins, &planned.fault).await {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        let record = FaultRecord {
            fault: planned.fault,
            start_ms,
            end_ms: history.now_ms(),
            error,
        };
        if !record.error.is_empty() {
            eprintln!("chaos: {} failed: {}", record.fault.describe(), record.error);
        }
        if let Err(e) = history.append(&Record::Fault(record.clone())) {
            eprintln!("chaos: {e}");
        }
        applied.push(record);
        ready_at = Instant::now() + MIN_GAP;
    }
    applied
}

async fn apply(
    cluster: &Mutex<Cluster>,
    pg: &Arc<PgCluster>,
    admins: &MeshAdmins,
    fault: &Fault,
) -> Result<(), ClusterError> {
    let span = fault.span();
    match fault {
        Fault::Kill { proc, .. } => {
            cluster.lock().await.procs.kill(*proc)?;
            tokio::time::sleep(span).await;
            cluster.lock().await.procs.start(*proc).await
        }
        Fault::Pause { proc, .. } => {
            cluster.lock().await.procs.signal(*proc, "STOP")?;
            tokio::time::sleep(span).await;
            cluster.lock().await.procs.signal(*proc, "CONT")
        }
        Fault::NatsStop { .. } => {
            cluster.lock().await.nats.stop().await?;
            tokio::time::sleep(span).await;
            cluster.lock().await.nats.start().await
        }
        Fault::NatsWipe { .. } => {
            {
                // A lost store comes with a lost server: killed, not drained,
                // so nothing is acknowledged once the wipe began.
                let mut cluster = cluster.lock().await;
                cluster.nats.kill()?;
                cluster.nats.wipe()?;
            }
            tokio::time::sleep(span).await;
            cluster.lock().await.nats.start().await
        }
        Fault::PgRestart => pg_command(pg, |pg| pg.restart(StopMode::Immediate)).await,
        Fault::PgOutage { .. } => {
            pg_command(pg, |pg| pg.stop(StopMode::Immediate)).await?;
            tokio::time::sleep(span).await;
            pg_command(pg, |pg| pg.start()).await
        }
        Fault::MeshDelay {
            downstream,
            percent,
            delay_ms,
            ..
        } => {
            let rule = mesh_pb::FaultRule {
                delay_percent: f64::from(*percent),
                delay_ms: i64::try_from(*delay_ms).unwrap_or(i64::MAX),
                ..Default::default()
            };
            mesh_fault(admins, *downstream, rule, span).await
        }
        Fault::MeshAbort {
            downstream, percent, ..
        } => {
            let rule = mesh_pb::FaultRule {
                abort_percent: f64::from(*percent),
                abort_code: "UNAVAILABLE".into(),
                ..Default::default()
            };
            mesh_fault(admins, *downstream, rule, span).await
        }
    }
}

/// Sets `rule` on every order replica's client of `downstream`, waits
/// `span`, then clears it (cleared even when setting failed on one).
async fn mesh_fault(
    admins: &MeshAdmins,
    downstream: Downstream,
    rule: mesh_pb::FaultRule,
    span: Duration,
) -> Result<(), ClusterError> {
    let set = |rules: Vec<mesh_pb::FaultRule>| {
        let admins = admins.clone();
        async move {
            let mut errors = Vec::new();
            for mut admin in admins {
                let mut request = tonic::Request::new(mesh_pb::SetFaultsRequest {
                    downstream: downstream.name().to_owned(),
                    rules: rules.clone(),
                });
                request.set_timeout(Duration::from_secs(5));
                if let Err(status) = admin.set_faults(request).await {
                    errors.push(format!("SetFaults: {}", status.message()));
                }
            }
            errors
        }
    };
    let mut errors = set(vec![rule]).await;
    tokio::time::sleep(span).await;
    errors.extend(set(Vec::new()).await);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::NotServing {
            what: "order replicas' MeshAdminService".into(),
            why: errors.join("; "),
        })
    }
}

/// Every half second until `stop` fires: a process that exited on its own
/// is recorded and started again.
pub async fn watchdog(
    cluster: Arc<Mutex<Cluster>>,
    history: Arc<HistoryWriter>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let mut cluster = cluster.lock().await;
        for (proc, status) in cluster.procs.reap_exited() {
            let record = ExitRecord {
                proc: proc.name().to_owned(),
                status,
                at_ms: history.now_ms(),
            };
            eprintln!(
                "chaos: {} exited unasked ({}); starting it again",
                record.proc, record.status
            );
            if let Err(e) = history.append(&Record::Exit(record)) {
                eprintln!("chaos: {e}");
            }
            if let Err(e) = cluster.procs.start(proc).await {
                eprintln!("chaos: restarting {}: {e}", proc.name());
            }
        }
    }
}

/// The MeshAdminService of both order replicas.
pub fn mesh_admins(channels: &[(Proc, Channel)]) -> MeshAdmins {
    channels
        .iter()
        .filter(|(p, _)| matches!(p, Proc::Order0 | Proc::Order1))
        .map(|(_, c)| MeshAdminServiceClient::new(c.clone()))
        .collect()
}
