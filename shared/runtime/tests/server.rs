//! The server bootstrap over real gRPC: health follows the database, and a
//! shutdown lets in-flight calls finish while refusing new connections.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use ordermesh_mesh::stack::Mesh;
use ordermesh_proto::inventory::v1 as pb;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::inventory::v1::inventory_service_server::{InventoryService, InventoryServiceServer};
use ordermesh_runtime::server::{ServeOptions, serve};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

/// Set once a GetStock call is being handled.
static IN_HANDLER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A service whose GetStock takes 500 ms: an in-flight call to drain.
struct Slow;

#[tonic::async_trait]
impl InventoryService for Slow {
    async fn check_availability(
        &self,
        _: Request<pb::CheckAvailabilityRequest>,
    ) -> Result<Response<pb::CheckAvailabilityResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn get_stock(
        &self,
        _: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        IN_HANDLER.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(Response::new(pb::GetStockResponse::default()))
    }
    async fn list_stock(
        &self,
        _: Request<pb::ListStockRequest>,
    ) -> Result<Response<pb::ListStockResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn adjust_stock(
        &self,
        _: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn reserve_stock(
        &self,
        _: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn get_reservation(
        &self,
        _: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn release_reservation(
        &self,
        _: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn commit_reservation(
        &self,
        _: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn update_product(
        &self,
        _: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::UpdateProductResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn list_restock_alerts(
        &self,
        _: Request<pb::ListRestockAlertsRequest>,
    ) -> Result<Response<pb::ListRestockAlertsResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
}

struct Running {
    addr: std::net::SocketAddr,
    db: ordermesh_runtime::db::Db,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ordermesh_runtime::Error>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = ordermesh_runtime::db::sqlite_url(dir.path(), "test").expect("url");
    let db = ordermesh_runtime::db::connect("test", &url, &MIGRATIONS)
        .await
        .expect("db");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut options = ServeOptions::new("ordermesh.inventory.v1.InventoryService", Mesh::default());
    options.health_interval = Duration::from_millis(50);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let routes = Routes::new(InventoryServiceServer::new(Slow));
    let task = tokio::spawn(serve(routes, db.clone(), listener, options, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        db,
        stop,
        task,
        _dir: dir,
    }
}

async fn health(addr: std::net::SocketAddr) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(response.into_inner().status())
}

async fn wait_for(addr: std::net::SocketAddr, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if health(addr).await == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_follows_the_database() {
    let server = start().await;
    wait_for(server.addr, ServingStatus::Serving).await;
    // The database goes away: the server stays up but stops claiming to serve.
    server.db.read.close().await;
    server.db.write.close().await;
    wait_for(server.addr, ServingStatus::NotServing).await;
    let _ = server.stop.send(());
    let _ = server.task.await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_calls_and_refuses_new_ones() {
    let server = start().await;
    wait_for(server.addr, ServingStatus::Serving).await;
    let mut client = InventoryServiceClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    let in_flight =
        tokio::spawn(async move { client.get_stock(pb::GetStockRequest { sku: "x".into() }).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !IN_HANDLER.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never reached the handler"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = server.stop.send(());
    let answer = in_flight.await.expect("task");
    assert!(answer.is_ok(), "the in-flight call finished: {answer:?}");
    let result = tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("serve returns after draining");
    assert!(result.expect("task").is_ok());
    assert!(
        InventoryServiceClient::connect(format!("http://{}", server.addr))
            .await
            .is_err(),
        "no new connections after shutdown"
    );
}
