//! Events survive a crash between a state change's commit and its publish:
//! the real `ordermesh serve` processes on NATS JetStream, orders placed
//! while NATS is down (every change commits, its event waits in the outbox),
//! then every service killed with SIGKILL before it could publish. After
//! NATS and the services come back, every event is published, once.

use std::path::Path;
use std::time::Duration;

use ordermesh_proto::order::v1 as pb;
use ordermesh_tests::procs::{Cluster, SERVICES};
use ordermesh_tests::{Backend, NatsServer, load};

async fn killed_before_publishing(backend: Backend) {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let bin = Path::new(env!("CARGO_BIN_EXE_ordermesh"));
    let Some(mut cluster) = Cluster::start_with_nats(bin, backend, None, Some(&nats.url())).await else {
        return;
    };
    nats.stop().await;
    let mut client = cluster.order();
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut ids = Vec::new();
    for i in 0..4 {
        let order = client
            .create_order(pb::CreateOrderRequest {
                request_id: format!("crash-{i}"),
                customer_id: "alice".into(),
                lines: vec![pb::CreateOrderLine {
                    sku: "CB-004".into(),
                    quantity: 1,
                }],
            })
            .await
            .expect("orders need no NATS")
            .into_inner()
            .order
            .expect("order");
        load::follow(&mut client, &order.order_id, until).await;
        ids.push(order.order_id);
    }
    // Every change is committed; no event could be published. Crash.
    for service in SERVICES {
        cluster.kill(service);
    }
    nats.restart().await;
    for service in SERVICES {
        cluster.spawn(service, None).await;
    }
    // Each stream ends up with each event once: 4 orders x 2 events each.
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    for stream in ["ORDERS", "INVENTORY", "PAYMENTS"] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let messages = match jetstream.get_stream(stream).await {
                Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
                Err(_) => 0,
            };
            if messages >= 8 {
                // Settled: a re-publish would be de-duplicated, not added.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let settled = jetstream
                    .get_stream(stream)
                    .await
                    .expect("stream")
                    .info()
                    .await
                    .expect("info")
                    .state
                    .messages;
                assert_eq!(settled, 8, "{stream}: each event of {ids:?} once");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{stream} holds {messages} of 8 events after the restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_events_committed_before_a_kill_are_published_once() {
    killed_before_publishing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_events_committed_before_a_kill_are_published_once() {
    killed_before_publishing(Backend::Postgres).await;
}
