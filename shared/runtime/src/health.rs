//! Keeps the gRPC health status (`grpc.health.v1`) in step with the service's
//! real readiness: SERVING only while its database answers. Parts of a
//! service with a readiness of their own (its event consumers) report under
//! their own service name ([`track_flag`]) without changing the whole
//! server's status.
//!
//! Liveness is another question, answered under [`LIVENESS`]: SERVING while
//! the process serves at all, whatever its database says. A liveness probe
//! that followed the database would restart every pod during a database
//! outage, which a restart cannot fix and which delays recovery.

use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::db;

/// The health service name that answers whether the process is alive (for
/// liveness probes), independent of its database.
pub const LIVENESS: &str = "liveness";

/// A server's answer to a health check.
pub use tonic_health::pb::health_check_response::ServingStatus as Answer;

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

/// Publishes `flag` (`true`: SERVING) as the status of `service_name` alone
/// whenever it changes, until `stop` completes; then NOT_SERVING.
pub async fn track_flag(
    reporter: HealthReporter,
    service_name: &'static str,
    mut flag: tokio::sync::watch::Receiver<bool>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let status = if *flag.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(service_name, status).await;
        tokio::select! {
            () = &mut stop => break,
            changed = flag.changed() => {
                if changed.is_err() {
                    // The flag's owner is gone: its last word stands.
                    stop.as_mut().await;
                    break;
                }
            }
        }
    }
    reporter
        .set_service_status(service_name, ServingStatus::NotServing)
        .await;
}

async fn publish(reporter: &HealthReporter, service_name: &str, status: ServingStatus) {
    reporter.set_service_status(service_name, status).await;
    reporter.set_service_status("", status).await;
}

/// Why a health check gave no status.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0:?} is not a valid address (want http://host:port)")]
    Address(String),
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{url} service {service:?}: {code} {message}", code = .status.code(), message = .status.message())]
    Refused {
        url: String,
        service: String,
        status: tonic::Status,
    },
}

/// Asks the server at `url` (`http://host:port`) once about `service` (""
/// is the whole server): the one health client of the binary (`ordermesh
/// health`, `up`'s readiness wait, the bench's start-up timing).
pub async fn check(url: &str, service: &str) -> Result<Answer, CheckError> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|_| CheckError::Address(url.to_owned()))?;
    let channel = endpoint.connect().await.map_err(|source| CheckError::Connect {
        url: url.to_owned(),
        source,
    })?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| CheckError::Refused {
            url: url.to_owned(),
            service: service.to_owned(),
            status,
        })?;
    Ok(response.into_inner().status())
}

/// Why [`wait_until_serving`] stopped waiting.
#[derive(Debug, thiserror::Error)]
pub enum WaitError<E> {
    #[error("{url} did not report SERVING within {within:?}")]
    Timeout { url: String, within: Duration },
    /// `alive` said to stop (a server process exited, say).
    #[error(transparent)]
    Stopped(E),
}

/// Polls each server's health every `poll` until every one reports SERVING,
/// for at most `within` in all; `alive` is asked between polls and its error
/// ends the wait at once.
pub async fn wait_until_serving<E>(
    urls: &[String],
    within: Duration,
    poll: Duration,
    mut alive: impl FnMut() -> Result<(), E>,
) -> Result<(), WaitError<E>> {
    let deadline = tokio::time::Instant::now() + within;
    for url in urls {
        while !matches!(check(url, "").await, Ok(Answer::Serving)) {
            alive().map_err(WaitError::Stopped)?;
            if tokio::time::Instant::now() > deadline {
                return Err(WaitError::Timeout {
                    url: url.clone(),
                    within,
                });
            }
            tokio::time::sleep(poll).await;
        }
    }
    Ok(())
}
