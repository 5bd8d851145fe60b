//! A load of concurrent orders through one order-service client: `workers`
//! tasks each place `per_worker` orders one after another and follow each to
//! a terminal status. Used by the outage and kill -9 tests, against
//! in-process services and child processes alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tonic::transport::Channel;

use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;

/// What a load reports while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Orders acknowledged by CreateOrder.
    pub created: AtomicUsize,
}

/// Places the orders; returns the ids CreateOrder acknowledged. A call that
/// fails (the order service itself restarting) is retried with the same
/// request id until `deadline`, so every order is placed exactly once.
pub async fn run(
    client: OrderServiceClient<Channel>,
    prefix: &str,
    workers: usize,
    per_worker: usize,
    lines: &[(&str, i64)],
    progress: Arc<Progress>,
    deadline: Duration,
) -> Vec<String> {
    let until = tokio::time::Instant::now() + deadline;
    let lines: Vec<order_pb::CreateOrderLine> = lines
        .iter()
        .map(|(sku, quantity)| order_pb::CreateOrderLine {
            sku: (*sku).into(),
            quantity: *quantity,
        })
        .collect();
    let tasks = (0..workers).map(|w| {
        let mut client = client.clone();
        let lines = lines.clone();
        let progress = progress.clone();
        let prefix = prefix.to_owned();
        async move {
            let mut ids = Vec::new();
            for i in 0..per_worker {
                let request = order_pb::CreateOrderRequest {
                    request_id: format!("{prefix}-{w}-{i}"),
                    customer_id: "alice".into(),
                    lines: lines.clone(),
                };
                let order = loop {
                    match client.create_order(request.clone()).await {
                        Ok(response) => break response.into_inner().order.expect("order"),
                        Err(status) => {
                            assert!(
                                tokio::time::Instant::now() < until,
                                "CreateOrder kept failing: {status:?}"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                progress.created.fetch_add(1, Ordering::Relaxed);
                follow(&mut client, &order.order_id, until).await;
                ids.push(order.order_id);
            }
            ids
        }
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Follows an order to a terminal status (re-watching when the stream
/// breaks, e.g. while the order service restarts).
pub async fn follow(client: &mut OrderServiceClient<Channel>, order_id: &str, until: tokio::time::Instant) {
    use order_pb::OrderStatus as S;
    loop {
        assert!(
            tokio::time::Instant::now() < until,
            "order {order_id} never finished"
        );
        let Ok(response) = client
            .watch_order(order_pb::WatchOrderRequest {
                order_id: order_id.into(),
            })
            .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = response.into_inner();
        while let Some(Ok(item)) = stream.next().await {
            if item
                .order
                .is_some_and(|o| matches!(o.status(), S::Confirmed | S::Rejected | S::Cancelled))
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the load acknowledged at least `n` orders.
pub async fn wait_created(progress: &Progress, n: usize, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while progress.created.load(Ordering::Relaxed) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the load never reached {n} orders"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
