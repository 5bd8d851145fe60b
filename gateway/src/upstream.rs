//! Where each public service lives, and dynamic calls to it.
//!
//! Remote services are reached through the process's mesh client stack
//! (`shared/mesh`: deadline, retry budget, circuit breaker, balancer), so the
//! edge gets the same failure handling as calls between services: a down
//! service is a prompt `UNAVAILABLE` (an open breaker answers without
//! waiting), never a hang. The gateway's own services (health, reflection,
//! its mesh admin) are "local": the same call path ends in the in-process
//! tonic router instead of a connection.

use http::uri::PathAndQuery;
use prost_reflect::{DynamicMessage, MethodDescriptor};
use tonic::body::Body;
use tower::util::BoxCloneSyncService;

use crate::codec::DynamicCodec;

/// A gRPC service an RPC is sent to: a mesh channel or the local router. Its
/// error is a call the mesh answered without sending it (an open breaker, a
/// spent deadline), already a status.
pub type Upstream = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, tonic::Status>;

#[derive(Clone)]
pub struct Upstreams {
    order: Upstream,
    inventory: Upstream,
    payment: Upstream,
    local: Upstream,
}

impl Upstreams {
    pub fn new(order: Upstream, inventory: Upstream, payment: Upstream, local: Upstream) -> Self {
        Self {
            order,
            inventory,
            payment,
            local,
        }
    }

    /// The upstream serving `service` (a full name), by its package.
    pub fn for_service(&self, service: &str) -> Option<Upstream> {
        let package = service.rsplit_once('.').map_or("", |(package, _)| package);
        Some(match package {
            "ordermesh.order.v1" | "ordermesh.events.v1" => self.order.clone(),
            "ordermesh.inventory.v1" => self.inventory.clone(),
            "ordermesh.payment.v1" => self.payment.clone(),
            "ordermesh.mesh.v1" | "grpc.health.v1" | "grpc.reflection.v1" | "grpc.reflection.v1alpha" => {
                self.local.clone()
            }
            _ => return None,
        })
    }

    fn for_method(&self, method: &MethodDescriptor) -> Result<Upstream, tonic::Status> {
        let service = method.parent_service();
        self.for_service(service.full_name())
            .ok_or_else(|| tonic::Status::unimplemented(format!("{} is not routed", service.full_name())))
    }

    /// A unary call of `method` with a dynamic request.
    pub async fn unary(
        &self,
        method: &MethodDescriptor,
        request: tonic::Request<DynamicMessage>,
    ) -> Result<tonic::Response<DynamicMessage>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.for_method(method)?);
        grpc.ready()
            .await
            .map_err(|error| tonic::Status::unavailable(format!("upstream not ready: {error}")))?;
        grpc.unary(request, path(method)?, DynamicCodec::new(method.output()))
            .await
    }

    /// A server-streaming call of `method`.
    pub async fn server_streaming(
        &self,
        method: &MethodDescriptor,
        request: tonic::Request<DynamicMessage>,
    ) -> Result<tonic::Response<tonic::Streaming<DynamicMessage>>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.for_method(method)?);
        grpc.ready()
            .await
            .map_err(|error| tonic::Status::unavailable(format!("upstream not ready: {error}")))?;
        grpc.server_streaming(request, path(method)?, DynamicCodec::new(method.output()))
            .await
    }
}

fn path(method: &MethodDescriptor) -> Result<PathAndQuery, tonic::Status> {
    PathAndQuery::try_from(crate::rules::rpc_path(method))
        .map_err(|error| tonic::Status::internal(format!("bad method path: {error}")))
}
