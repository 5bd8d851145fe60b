//! `ordermesh up`: every service in one process, each on its own loopback
//! port, talking real gRPC to each other, on SQLite files under a data
//! directory, with the demo catalogue and customers seeded on first start.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use futures::future::Shared;
use tokio::task::JoinSet;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cli::UpArgs;
use crate::{bind, config};
use ordermesh_runtime::db::sqlite_url;

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let order_addr = SocketAddr::new(args.host, args.order_port);
    let inventory_addr = SocketAddr::new(args.host, args.inventory_port);
    let payment_addr = SocketAddr::new(args.host, args.payment_port);
    let gateway_addr = SocketAddr::new(args.host, args.gateway_port);
    let mesh = crate::mesh_settings(args.policy.as_deref())?;
    // One bus for the three services: with no NATS, they share one
    // in-process broker, so each sees the others' events.
    let bus = args.events.bus().await?;
    config::check_reservation_outlives_saga(&args.inventory, &args.saga)?;
    let inventory_listener = bind(inventory_addr).await?;
    let payment_listener = bind(payment_addr).await?;
    let order_listener = bind(order_addr).await?;
    let gateway_listener = bind(gateway_addr).await?;

    // A URL given per service (PostgreSQL, as the Helm chart's SingleBinary
    // mode passes them) wins over the SQLite file under the data directory.
    let database = |url: &Option<String>, name: &str| match url {
        Some(url) => Ok(url.clone()),
        None => sqlite_url(&args.data_dir, name),
    };
    let inventory = config::inventory(
        database(&args.inventory_database_url, "inventory")?,
        &args.inventory,
        true,
        (mesh.clone(), bus.clone()),
    );
    let payment = config::payment(
        database(&args.payment_database_url, "payment")?,
        &args.payment,
        true,
        (mesh.clone(), bus.clone()),
    );
    // The gateway in development mode: its signing key lives in the data
    // directory (created private if missing), where `ordermesh token` finds it.
    let gateway = config::gateway(
        &args.gateway,
        [
            format!("http://{order_addr}"),
            format!("http://{inventory_addr}"),
            format!("http://{payment_addr}"),
        ],
        &args.data_dir,
        true,
        mesh.clone(),
    )?;
    let order = config::order(
        database(&args.order_database_url, "order")?,
        format!("http://{inventory_addr}"),
        format!("http://{payment_addr}"),
        &args.saga,
        (mesh, bus),
    );
    let inventory = ordermesh_inventory::build(inventory)
        .await
        .context("starting inventory")?;
    let payment = ordermesh_payment::build(payment)
        .await
        .context("starting payment")?;
    let order = ordermesh_order::build(order).await.context("starting order")?;
    let gateway = ordermesh_gateway::build(gateway)
        .await
        .context("starting the gateway")?;

    let shutdown: Shared<_> = ordermesh_runtime::shutdown::signal().boxed().shared();
    let mut services = JoinSet::new();
    services.spawn(
        inventory
            .serve(inventory_listener, shutdown.clone())
            .map(|r| ("inventory", r.map_err(anyhow::Error::from))),
    );
    services.spawn(
        payment
            .serve(payment_listener, shutdown.clone())
            .map(|r| ("payment", r.map_err(anyhow::Error::from))),
    );
    services.spawn(
        order
            .serve(order_listener, shutdown.clone())
            .map(|r| ("order", r.map_err(anyhow::Error::from))),
    );
    services.spawn(
        gateway
            .serve(gateway_listener, shutdown.clone())
            .map(|r| ("gateway", r)),
    );

    println!("ordermesh is starting (data in {})", args.data_dir.display());
    println!(
        "  gateway    {gateway_addr}    REST/JSON, grpc-web and gRPC (openapi: http://{gateway_addr}/openapi.json)"
    );
    println!("  order      {order_addr}   ordermesh.order.v1.OrderService");
    println!("  inventory  {inventory_addr}   ordermesh.inventory.v1.InventoryService");
    println!("  payment    {payment_addr}   ordermesh.payment.v1.PaymentService");
    let all = [order_addr, inventory_addr, payment_addr, gateway_addr];
    tokio::select! {
        ready = wait_until_serving(&all) => {
            ready?;
            println!("try: grpcurl -plaintext {order_addr} list");
            println!(
                "try: curl -H \"Authorization: Bearer $(ordermesh token --data-dir {})\" http://{gateway_addr}/v1/orders",
                args.data_dir.display()
            );
            println!("ordermesh is ready: every service reports SERVING");
        }
        Some(exited) = services.join_next() => {
            return report_exit(exited);
        }
    }
    while let Some(exited) = services.join_next().await {
        report_exit(exited)?;
    }
    Ok(())
}

fn report_exit(
    exited: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> anyhow::Result<()> {
    let (name, result) = exited.context("a service task panicked")?;
    result.with_context(|| format!("{name} service failed"))
}

/// Polls each server's `grpc.health.v1` until it reports SERVING.
async fn wait_until_serving(addrs: &[SocketAddr]) -> anyhow::Result<()> {
    for addr in addrs {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let serving = async {
                let channel = endpoint.connect().await.ok()?;
                let response = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .ok()?;
                Some(response.into_inner().status() == ServingStatus::Serving)
            };
            if serving.await == Some(true) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("{addr} did not report SERVING within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
