//! Real crashes: the `ordermesh serve` processes, killed with SIGKILL.
//!
//! - The order process, frozen at each saga boundary (after each downstream
//!   call returned and before its outcome was recorded, during compensation,
//!   between accepting a cancel and driving it) and killed there; a new
//!   process finishes every saga.
//! - The payment process, and the inventory process, killed in the middle of
//!   a load of concurrent orders and restarted.
//!
//! After each: every acknowledged order is terminal, no money is held or
//! charged twice, stock is conserved and nothing is reserved for a terminal
//! order (the audit in `ordermesh_tests::audit`, through the public APIs).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ordermesh_order::CrashPoint;
use ordermesh_proto::order::v1 as pb;
use ordermesh_proto::order::v1::OrderStatus;
use ordermesh_tests::Backend;
use ordermesh_tests::load::{self, Progress};
use ordermesh_tests::procs::Cluster;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ordermesh"))
}

async fn create(cluster: &Cluster, request_id: &str, lines: &[(&str, i64)]) -> pb::Order {
    cluster
        .order()
        .create_order(pb::CreateOrderRequest {
            request_id: request_id.into(),
            customer_id: "alice".into(),
            lines: lines
                .iter()
                .map(|(sku, quantity)| pb::CreateOrderLine {
                    sku: (*sku).into(),
                    quantity: *quantity,
                })
                .collect(),
        })
        .await
        .expect("CreateOrder")
        .into_inner()
        .order
        .expect("order")
}

async fn confirmed(cluster: &Cluster, request_id: &str) -> pb::Order {
    let order = create(cluster, request_id, &[("KB-001", 1)]).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    load::follow(&mut cluster.order(), &order.order_id, until).await;
    order
}

/// Drives a fresh cluster's order process to `point`, kills it there with
/// SIGKILL, starts a new one, and checks that every saga finished as it
/// must. Returns the order's final status.
async fn kill_order_at(backend: Backend, point: CrashPoint) -> Option<OrderStatus> {
    let name = point.name();
    let mut cluster = Cluster::start(bin(), backend, Some(&name)).await?;
    // The order the crash point catches.
    let order_id = match point {
        CrashPoint::After(ordermesh_order::store::Step::UndoPayment) | CrashPoint::CancelAccepted => {
            let order = confirmed(&cluster, "to-cancel").await;
            let mut client = cluster.order();
            let order_id = order.order_id.clone();
            // With the cancel frozen, this call never answers: the process dies.
            tokio::spawn(async move {
                let _ = client.cancel_order(pb::CancelOrderRequest { order_id }).await;
            });
            order.order_id
        }
        CrashPoint::After(ordermesh_order::store::Step::Release) => {
            // One lamp in stock: the reservation is refused and released by key.
            create(&cluster, "out-of-stock", &[("LT-005", 2)]).await.order_id
        }
        _ => {
            create(&cluster, "forward", &[("KB-001", 1), ("CB-004", 2)])
                .await
                .order_id
        }
    };
    cluster
        .wait_for_log("order", &point.announcement(), Duration::from_secs(30))
        .await;
    cluster.kill("order");
    cluster.spawn("order", None).await;

    let audit = cluster.audit();
    audit.wait_all_terminal(Duration::from_secs(60)).await;
    let findings = audit.check().await;
    let order = findings
        .orders
        .iter()
        .find(|o| o.order_id == order_id)
        .expect("the crashed order");
    Some(order.status())
}

async fn every_saga_point(backend: Backend) {
    let runs = CrashPoint::ALL.iter().map(|point| async move {
        let status = kill_order_at(backend, *point).await;
        (*point, status)
    });
    for (point, status) in futures::future::join_all(runs).await {
        let Some(status) = status else {
            return;
        };
        let expected = match point {
            CrashPoint::After(ordermesh_order::store::Step::UndoPayment) | CrashPoint::CancelAccepted => {
                OrderStatus::Cancelled
            }
            CrashPoint::After(ordermesh_order::store::Step::Release) => OrderStatus::Rejected,
            _ => OrderStatus::Confirmed,
        };
        assert_eq!(status, expected, "killed at {}", point.name());
    }
}

/// A load of 120 orders at concurrency 8; `victim` is killed with SIGKILL
/// after 30 orders were acknowledged, and restarted half a second later.
async fn kill_under_load(backend: Backend, victim: &'static str) {
    let Some(mut cluster) = Cluster::start(bin(), backend, None).await else {
        return;
    };
    let progress = Arc::new(Progress::default());
    let load = tokio::spawn(load::run(
        cluster.order(),
        victim,
        8,
        15,
        &[("CB-004", 1)],
        progress.clone(),
        Duration::from_secs(120),
    ));
    load::wait_created(&progress, 30, Duration::from_secs(60)).await;
    cluster.kill(victim);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.spawn(victim, None).await;
    let placed = load.await.expect("the load finishes");
    assert_eq!(placed.len(), 120);
    let audit = cluster.audit();
    audit.wait_all_terminal(Duration::from_secs(60)).await;
    let findings = audit.check().await;
    eprintln!(
        "{victim} killed under load ({backend:?}): {:?}",
        findings.by_status
    );
    assert_eq!(findings.orders.len(), 120);
    assert!(findings.count(OrderStatus::Confirmed) > 0);
}

async fn payment_under_load(backend: Backend) {
    kill_under_load(backend, "payment").await;
}

async fn inventory_under_load(backend: Backend) {
    kill_under_load(backend, "inventory").await;
}

macro_rules! on_both_backends {
    ($($name:ident => $body:ident),+ $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = Backend::Sqlite;
                    $body(backend).await;
                }
            )+
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = Backend::Postgres;
                    $body(backend).await;
                }
            )+
        }
    };
}

on_both_backends!(
    the_order_process_killed_at_every_saga_point_finishes_every_saga => every_saga_point,
    the_payment_process_killed_under_load => payment_under_load,
    the_inventory_process_killed_under_load => inventory_under_load,
);
