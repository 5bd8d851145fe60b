//! Health while a service starts. Building a service waits for its
//! database (see `db::connect`), which may take as long as the database is
//! away. Meanwhile the service's port answers `grpc.health.v1` as a live
//! process that is not ready: `liveness` SERVING, the whole server and the
//! service's own name NOT_SERVING. A kubelet then keeps the pod (a restart
//! cannot bring the database back) and sends it no traffic, and the pod
//! turns ready as soon as its service is built, with no restart back-off to
//! wait out. Silence instead (a port that accepts and never answers) would
//! fail the liveness probe and restart the pod every minute or so.
//!
//! Every other call meanwhile is UNAVAILABLE ("starting"), which callers
//! retry: a peer whose client connects in these moments (the order
//! service's saga, retrying against an inventory that just restarted) must
//! not read UNIMPLEMENTED, a permanent answer, into a passing state. At the
//! handover the connections get HTTP/2 GOAWAY, and clients reconnect to the
//! service's own server.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::server::MeshSettings;
use crate::{Error, health};

/// How long answered probes may take to finish once the service is built,
/// before their connections are cut and the service's own server takes the
/// listener.
const HANDOVER: Duration = Duration::from_secs(1);

/// Runs `starting` while answering health as described in the module docs:
/// on `listener` when it is plaintext (with mutual TLS, probes go to the
/// plaintext probe address instead) and on the settings' probe address.
/// Returns the listener, for the service's own server, with what `starting`
/// gave.
pub async fn answer_health_while<T>(
    listener: TcpListener,
    service_name: &'static str,
    settings: &MeshSettings,
    starting: impl Future<Output = T>,
) -> Result<(TcpListener, T), Error> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(health::LIVENESS, ServingStatus::Serving)
        .await;
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter
        .set_service_status(service_name, ServingStatus::NotServing)
        .await;
    let probe = match settings.probe_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen { addr, source })?,
        ),
        None => None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let routes = Routes::from(
        Routes::new(health_service)
            .into_axum_router()
            .fallback(|| async { not_yet().into_http::<axum::body::Body>() }),
    );
    let answer_on = |listener| answer_on(listener, routes.clone(), stopped.clone());
    let on_main = (settings.tls.is_none()).then(|| answer_on(&listener));
    let on_probe = probe.as_ref().map(answer_on);
    let value = {
        let answering = futures::future::join(
            async move {
                if let Some(server) = on_main {
                    let _ = server.await;
                }
            },
            async move {
                if let Some(server) = on_probe {
                    let _ = server.await;
                }
            },
        );
        tokio::pin!(answering, starting);
        let mut answered = false;
        let value = loop {
            tokio::select! {
                value = &mut starting => break value,
                _ = &mut answering, if !answered => answered = true,
            }
        };
        let _ = stop.send(true);
        if !answered {
            let _ = tokio::time::timeout(HANDOVER, &mut answering).await;
        }
        value
    };
    Ok((listener, value))
}

/// Serves `routes` on connections accepted from a borrowed listener (so that
/// it is still there for the service's own server afterwards) until
/// `stopped` turns true.
fn answer_on(
    listener: &TcpListener,
    routes: Routes,
    mut stopped: watch::Receiver<bool>,
) -> impl Future<Output = Result<(), tonic::transport::Error>> + '_ {
    let incoming = futures::stream::unfold(listener, |listener| async move {
        Some((listener.accept().await.map(|(stream, _)| stream), listener))
    });
    Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
}

/// The answer to any call but health while the service starts.
fn not_yet() -> tonic::Status {
    tonic::Status::unavailable("the service is starting: waiting for its database")
}
