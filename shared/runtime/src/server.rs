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
    // TCP_NODELAY on every accepted connection: gRPC writes a response's
    // headers, data and trailers as separate small writes, and with Nagle's
    // algorithm the last waits for the client's delayed ACK (40 ms on Linux).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let limit = options.mesh.policy().server.concurrency_limit;
    let server = Server::builder()
        .layer(
            tower::ServiceBuilder::new()
                .layer(ShedLayer::new(limit))
                .layer(BoundErrorsLayer)
                .layer(InheritDeadlineLayer),
        )
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stopped(stop_rx));
    tokio::pin!(server);
    tracing::info!(service = options.service_name, addr = ?local, "serving");

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
    tracing::info!(service = options.service_name, "stopped");
    Ok(result?)
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
    /// How the process knows its peers, which decides whom it believes
    /// about who a call acts for ([`crate::actor`]).
    pub trust: crate::actor::Trust,
}

impl MeshSettings {
    /// The process's mesh for one service.
    pub fn build(&self) -> Mesh {
        Mesh::new(self.policy.clone())
    }

    /// Largest accepted request message, for the generated servers.
    pub fn max_request_bytes(&self) -> usize {
        self.policy.server.max_request_bytes
    }

    /// Serve options for `service_name` with this mesh.
    pub fn serve_options(&self, service_name: &'static str, mesh: Mesh) -> ServeOptions {
        let mut options = ServeOptions::new(service_name, mesh);
        options.policy_file = self.policy_file.clone();
        options.trust = self.trust;
        options
    }
}
