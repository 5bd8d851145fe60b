//! Server bootstrap shared by every service: the service's routes plus
//! `grpc.health.v1`, reflection v1 and v1alpha (grpcurl 1.8 only speaks
//! v1alpha) and the mesh admin API, behind the mesh's server layers (load
//! shedding, inherited deadlines), served on a listener the caller bound,
//! with a graceful drain.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use ordermesh_mesh::admin::MeshAdmin;
use ordermesh_mesh::deadline::InheritDeadlineLayer;
use ordermesh_mesh::metrics::RpcMetricsLayer;
use ordermesh_mesh::server::{BoundErrorsLayer, ShedLayer};
use ordermesh_mesh::stack::Mesh;
use ordermesh_proto::mesh::v1::mesh_admin_service_server::MeshAdminServiceServer;

use crate::{Error, health};

/// How a service is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Fully-qualified gRPC service name, used for health.
    pub service_name: &'static str,
    /// How often the database is probed for the health status.
    pub health_interval: Duration,
    /// How long in-flight calls may run on after shutdown began; streams such
    /// as `WatchOrder` that outlive it are cut.
    pub drain_timeout: Duration,
    /// The process's mesh: server limits, admin API.
    pub mesh: Mesh,
    /// Re-read on change (flags and fault rules apply without a restart).
    pub policy_file: Option<std::path::PathBuf>,
    /// More gRPC services whose health is their own flag (`true`: SERVING),
    /// e.g. `ordermesh.events.v1.EventAdminService` by whether its consumers
    /// can fetch. They do not change the whole server's status (""), which
    /// stays the database's.
    pub extra_health: Vec<(&'static str, watch::Receiver<bool>)>,
    /// Whom the admin API believes (operators only).
    pub trust: crate::actor::Trust,
    /// Mutual TLS on the listener: only clients with a certificate from the
    /// mesh's CA connect, and each request knows which process called.
    pub tls: Option<std::sync::Arc<ordermesh_mesh::tls::MeshTls>>,
    /// Also answer grpc.health.v1 (nothing else) in plaintext here.
    pub probe_listen: Option<std::net::SocketAddr>,
}

impl ServeOptions {
    pub fn new(service_name: &'static str, mesh: Mesh) -> Self {
        Self {
            service_name,
            health_interval: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(10),
            mesh,
            policy_file: None,
            extra_health: Vec::new(),
            trust: crate::actor::Trust::Network,
            tls: None,
            probe_listen: None,
        }
    }
}

/// Serves `routes` with health and reflection until `shutdown` completes,
/// then stops accepting, lets in-flight calls finish (up to the drain
/// timeout) and returns.
pub async fn serve(
    routes: Routes,
    db: crate::db::Db,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(health::LIVENESS, tonic_health::ServingStatus::Serving)
        .await;
    // The probe port: the same health answers, nothing else, no TLS.
    let probe = match options.probe_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen { addr, source })?;
            tracing::info!(service = options.service_name, %addr, "health in plaintext for probes");
            let health = health_service.clone();
            Some(tokio::spawn(
                Server::builder()
                    .add_service(health)
                    .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
            ))
        }
        None => None,
    };
    let routes = with_reflection(
        routes
            .add_service(MeshAdminServiceServer::with_interceptor(
                MeshAdmin::new(options.mesh.clone()),
                crate::actor::OperatorOnly(options.trust),
            ))
            .add_service(health_service),
    )?;

    // One signal fans out to the health tracker (turns NOT_SERVING first) and
    // to the server (stops accepting, drains).
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let flags: Vec<_> = options
        .extra_health
        .iter()
        .map(|(name, flag)| {
            tokio::spawn(health::track_flag(
                reporter.clone(),
                name,
                flag.clone(),
                stopped(stop_rx.clone()),
            ))
        })
        .collect();
    // The mesh's and the pools' state, read when metrics are scraped.
    let (mesh, name) = (options.mesh.clone(), short_name(options.service_name));
    let pools = db.clone();
    crate::metrics::on_scrape(move || {
        mesh.export_metrics();
        crate::metrics::export_pools(name, &pools);
        Box::pin(async {})
    });
    let tracker = tokio::spawn(health::track_database(
        reporter,
        options.service_name,
        db,
        options.health_interval,
        stopped(stop_rx.clone()),
    ));

    let watcher = options
        .policy_file
        .clone()
        .map(|path| tokio::spawn(options.mesh.clone().watch_file(path, Duration::from_secs(2))));
    let local = listener.local_addr().ok();
    let limit = options.mesh.policy().server.concurrency_limit;
    let mut builder = Server::builder().layer(
        tower::ServiceBuilder::new()
            .layer(ordermesh_mesh::trace::ServerTraceLayer)
            .layer(RpcMetricsLayer)
            .layer(ShedLayer::new(limit))
            .layer(BoundErrorsLayer)
            .layer(InheritDeadlineLayer),
    );
    let server: std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match &options.tls {
            // TCP_NODELAY on every accepted connection (both ways): gRPC
            // writes a response's headers, data and trailers as separate
            // small writes, and with Nagle's algorithm the last waits for
            // the client's delayed ACK (40 ms on Linux).
            Some(tls) => Box::pin(
                builder
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(tls.incoming(listener), stopped(stop_rx)),
            ),
            None => Box::pin(builder.add_routes(routes).serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopped(stop_rx),
            )),
        };
    let mut server = server;
    tracing::info!(service = options.service_name, addr = ?local, tls = options.tls.is_some(), "serving");

    tokio::pin!(shutdown);
    let result = tokio::select! {
        result = &mut server => result,
        () = &mut shutdown => {
            let _ = stop_tx.send(true);
            match tokio::time::timeout(options.drain_timeout, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(service = options.service_name, "drain timeout, cutting remaining calls");
                    Ok(())
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    let _ = tracker.await;
    for flag in flags {
        let _ = flag.await;
    }
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    if let Some(probe) = probe {
        probe.abort();
    }
    tracing::info!(service = options.service_name, "stopped");
    Ok(result?)
}

/// `order` for `ordermesh.order.v1.OrderService`: the `service` label.
pub fn short_name(service_name: &'static str) -> &'static str {
    service_name.split('.').nth(1).unwrap_or(service_name)
}

/// Adds reflection v1 and v1alpha (grpcurl 1.8 only speaks v1alpha) over
/// every ordermesh contract, health, and google.rpc (whose descriptors let
/// grpcurl decode BadRequest / ErrorInfo details): what every server of the
/// system, the gateway included, answers.
pub fn with_reflection(routes: Routes) -> Result<Routes, tonic_reflection::server::Error> {
    let descriptors = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ordermesh_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    Ok(routes
        .add_service(descriptors().build_v1()?)
        .add_service(descriptors().build_v1alpha()?))
}

/// The mesh part of a service's configuration: the policy (already loaded
/// and validated in `main`) and, when it came from a file, that file, which
/// is then watched for changes.
#[derive(Debug, Clone, Default)]
pub struct MeshSettings {
    pub policy: ordermesh_mesh::policy::MeshPolicy,
    pub policy_file: Option<std::path::PathBuf>,
    /// The process's certificate, key and CA, when it talks mutual TLS: it
    /// then serves TLS only, connects to its downstreams over TLS, and
    /// believes forwarded identity from the gateway's certificate only.
    pub tls: Option<std::sync::Arc<ordermesh_mesh::tls::MeshTls>>,
    /// Where to answer grpc.health.v1 (only) in plaintext as well, for
    /// probes that hold no certificate.
    pub probe_listen: Option<std::net::SocketAddr>,
}

impl MeshSettings {
    /// The mesh of one target of the process (`order`, `gateway`, ...).
    pub fn build(&self, caller: &str) -> Mesh {
        Mesh::named(caller, self.policy.clone(), self.tls.clone())
    }

    /// How the process knows its peers, which decides whom it believes
    /// about who a call acts for ([`crate::actor`]): by their certificates
    /// with TLS, else the network is the boundary.
    pub fn trust(&self) -> crate::actor::Trust {
        if self.tls.is_some() {
            crate::actor::Trust::Certificates
        } else {
            crate::actor::Trust::Network
        }
    }

    /// Largest accepted request message, for the generated servers.
    pub fn max_request_bytes(&self) -> usize {
        self.policy.server.max_request_bytes
    }

    /// Serve options for `service_name` with this mesh.
    pub fn serve_options(&self, service_name: &'static str, mesh: Mesh) -> ServeOptions {
        let mut options = ServeOptions::new(service_name, mesh);
        options.policy_file = self.policy_file.clone();
        options.trust = self.trust();
        options.tls.clone_from(&self.tls);
        options.probe_listen = self.probe_listen;
        options
    }
}
