//! Keeps the gRPC health status (`grpc.health.v1`) in step with the service's
//! real readiness: SERVING only while its database answers.

use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::db;

/// Probes the database every `interval` and publishes the outcome for
/// `service_name` and for the whole server (the empty service name), until
/// `stop` completes; then reports NOT_SERVING so balancers drain the server.
pub async fn track_database(
    reporter: HealthReporter,
    service_name: &'static str,
    db: db::Db,
    interval: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut last = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {
                let status = if db::is_ready(&db).await {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                if last != Some(status) {
                    if last.is_some() || status != ServingStatus::Serving {
                        tracing::warn!(service = service_name, ?status, "health changed");
                    }
                    publish(&reporter, service_name, status).await;
                    last = Some(status);
                }
            }
        }
    }
    publish(&reporter, service_name, ServingStatus::NotServing).await;
}

async fn publish(reporter: &HealthReporter, service_name: &str, status: ServingStatus) {
    reporter.set_service_status(service_name, status).await;
    reporter.set_service_status("", status).await;
}
