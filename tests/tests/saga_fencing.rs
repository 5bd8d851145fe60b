//! The saga's writes are fenced on the worker's view of the saga, not only on
//! the process that holds its lease: a record whose reply was lost is not
//! made twice, a cancel accepted while a stale worker waits is carried out,
//! a worker waiting out a back-off longer than its lease keeps the saga (so
//! one process and several behave alike), and an operator's retry of a saga
//! its own process still drives starts it afresh. SQLite and PostgreSQL.

use std::time::Duration;

use ordermesh_events::DomainEvent;
use ordermesh_order::store::Step;
use ordermesh_proto::events::v1 as events_pb;
use ordermesh_proto::mesh::v1 as mesh_pb;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::OrderStatus;
use ordermesh_tests::{Backend, Mesh, MeshOptions, both_backends};

const CABLE: &str = "CB-004"; // 999 cents, 200 in stock
const MONITOR: &str = "MN-003"; // 27900 cents: more than bob has

/// Every ReleaseReservation fails with UNAVAILABLE after `delay_ms`.
fn release_fails(delay_ms: i64) -> Vec<mesh_pb::FaultRule> {
    vec![mesh_pb::FaultRule {
        method: "ReleaseReservation".into(),
        delay_percent: if delay_ms > 0 { 100.0 } else { 0.0 },
        delay_ms,
        abort_percent: 100.0,
        abort_code: "UNAVAILABLE".into(),
    }]
}

/// Waits (with a deadline) until no worker of the process drives a saga.
async fn idle(runner: &ordermesh_order::SagaRunner) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while runner.driving() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "a worker never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many OrderConfirmed events the order's outbox holds.
async fn confirmations(mesh: &Mesh, order_id: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE aggregate_id = $1 AND ce_type = $2")
        .bind(order_id)
        .bind(<events_pb::OrderConfirmed as DomainEvent>::KIND.type_name)
        .fetch_one(&mesh.order_store.db().read)
        .await
        .expect("count the outbox")
}

/// COMMIT's record commits, its reply is lost: the worker reads the record
/// back instead of running COMMIT again, so the order is confirmed once
/// (one OrderConfirmed, one event id).
async fn a_lost_commit_reply_confirms_once(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.saga.lose_record_reply = Some(Step::Commit);
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let order = mesh
        .create_order("lost-commit", "alice", &[(CABLE, 1)])
        .await
        .expect("created");
    assert_eq!(
        mesh.wait_terminal(&order.order_id).await.1.status(),
        OrderStatus::Confirmed
    );
    idle(&mesh.order_runner).await;
    assert_eq!(confirmations(&mesh, &order.order_id).await, 1, "confirmed once");
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

/// COMMIT's reply is lost and the worker waits two seconds before its next
/// attempt; meanwhile the customer cancels the (confirmed) order. The cancel
/// is carried out: refunded and restocked, never overwritten back to
/// CONFIRMED by the waiting worker.
async fn a_cancel_accepted_while_a_worker_waits_is_carried_out(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.saga.lose_record_reply = Some(Step::Commit);
    options.saga.limits.initial_backoff = Duration::from_secs(2);
    options.saga.limits.max_backoff = Duration::from_secs(2);
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let before = mesh.balance("alice").await;
    let order = mesh
        .create_order("cancel-race", "alice", &[(CABLE, 1)])
        .await
        .expect("created");
    mesh.wait_order(&order.order_id, Duration::from_secs(10), |o| {
        o.status() == OrderStatus::Confirmed
    })
    .await;
    let accepted = mesh
        .order
        .clone()
        .cancel_order(order_pb::CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("cancel accepted")
        .into_inner()
        .order
        .expect("the order");
    assert_eq!(accepted.status(), OrderStatus::Cancelling);
    let (_, last) = mesh.wait_terminal(&order.order_id).await;
    assert_eq!(last.status(), OrderStatus::Cancelled, "{last:?}");
    idle(&mesh.order_runner).await;
    assert_eq!(
        mesh.get_order(&order.order_id).await.status(),
        OrderStatus::Cancelled
    );
    assert_eq!(mesh.balance("alice").await, before, "refunded");
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

/// Compensation back-off longer than the lease, two order processes: the
/// worker waiting it out keeps its lease, so the other process never takes
/// the saga over, and the saga stops for an operator after exactly its
/// attempts, as it does with one process.
async fn a_back_off_longer_than_the_lease_keeps_the_saga(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    let saga = &mut options.saga;
    saga.call_timeout = Duration::from_millis(500);
    saga.lease = Duration::from_millis(1_200);
    saga.lease_margin = Duration::from_millis(100);
    saga.recovery_interval = Duration::from_millis(100);
    saga.limits.initial_backoff = Duration::from_secs(4);
    saga.limits.compensation_max_backoff = Duration::from_secs(4);
    saga.limits.max_compensation_attempts = 5;
    let saga = options.saga.clone();
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let replica = mesh.start_order_replica(saga).await;
    mesh.set_faults("inventory", release_fails(0)).await;
    // bob cannot pay for a monitor: the saga compensates, and RELEASE fails.
    let order = mesh
        .create_order("long-wait", "bob", &[(MONITOR, 1)])
        .await
        .expect("created");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let parked = loop {
        let saga = mesh
            .order_store
            .saga(&order.order_id)
            .await
            .expect("read")
            .expect("saga");
        if saga.needs_attention {
            break saga;
        }
        assert!(tokio::time::Instant::now() < deadline, "never parked: {saga:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(parked.attempts, 5, "{parked:?}");
    assert_eq!(
        mesh.order_runner.resumed() + replica.runner.resumed(),
        0,
        "no process took the saga over from the one waiting out its back-off"
    );
    mesh.set_faults("inventory", vec![]).await;
    replica.stop().await;
    mesh.shutdown().await;
}

/// An operator retries a saga its own process still drives (the worker in
/// its last attempt): the saga starts afresh, with all its attempts, not
/// with the worker's old count.
async fn a_retry_of_a_saga_still_driven_starts_it_afresh(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.saga.limits.initial_backoff = Duration::from_millis(500);
    options.saga.limits.compensation_max_backoff = Duration::from_millis(500);
    options.saga.limits.max_compensation_attempts = 4;
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    // Each attempt's call takes a second before it fails: the back-off has
    // full jitter and may be nearly nothing, so the call is what holds the
    // last attempt open long enough for the operator's retry to meet it.
    mesh.set_faults("inventory", release_fails(1_000)).await;
    let order = mesh
        .create_order("retry-live", "bob", &[(MONITOR, 1)])
        .await
        .expect("created");
    let saga_of = || async {
        mesh.order_store
            .saga(&order.order_id)
            .await
            .expect("read")
            .expect("saga")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while saga_of().await.attempts < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached its last attempt"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!saga_of().await.needs_attention);
    mesh.order_admin_api
        .clone()
        .retry_saga(order_pb::RetrySagaRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("retry");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let parked = loop {
        let saga = saga_of().await;
        if saga.needs_attention {
            break saga;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never parked again: {saga:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        parked.attempts, 4,
        "every attempt again after the retry: {parked:?}"
    );
    assert!(
        parked.last_error.contains("failed 4 times"),
        "{}",
        parked.last_error
    );
    mesh.set_faults("inventory", vec![]).await;
    mesh.shutdown().await;
}

/// A record made on a stale view writes nothing, not even the parts that
/// ride with it (the lines' prices, the order's event): on PostgreSQL they
/// are parts of one statement guarded by the record's own UPDATE, on SQLite
/// a transaction rolled back. The same record on the current view writes
/// all three (the control: the check can see them).
async fn a_stale_record_writes_neither_prices_nor_events(backend: Backend) {
    use ordermesh_order::store::{Advance, AdvanceError, Fence, OrderEvent, Pricing};
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let order = mesh
        .create_order("stale-record", "alice", &[(CABLE, 1)])
        .await
        .expect("created");
    assert_eq!(
        mesh.wait_terminal(&order.order_id).await.1.status(),
        OrderStatus::Confirmed
    );
    idle(&mesh.order_runner).await;
    let store = &mesh.order_store;
    let saga = store.saga(&order.order_id).await.expect("read").expect("saga");
    let version = store
        .order(&order.order_id)
        .await
        .expect("read")
        .expect("order")
        .version;
    let price = || async {
        sqlx::query_scalar::<_, Option<i64>>("SELECT unit_price_minor FROM order_lines WHERE order_id = $1")
            .bind(&order.order_id)
            .fetch_one(&store.db().read)
            .await
            .expect("read the line")
    };
    let advance = Advance {
        pricing: Some(Pricing {
            unit_prices: vec![1],
            total_minor: 1,
            currency_code: "USD".into(),
        }),
        event: Some(OrderEvent::Confirmed),
        ..Advance::default()
    };
    let event = store.events().event(&events_pb::OrderConfirmed {
        order_id: order.order_id.clone(),
        customer_id: "alice".into(),
        total: None,
        payment_id: "stale".into(),
        occur_time: None,
    });
    let record = |version| {
        let (advance, event, saga) = (&advance, &event, &saga);
        async move {
            let fence = Fence {
                owner: &saga.lease_owner,
                version,
            };
            store
                .advance(&saga.order_id, fence, 0, advance, Some(event))
                .await
        }
    };
    let stale = record(version - 1).await;
    assert!(matches!(stale, Err(AdvanceError::LeaseLost(_))), "{stale:?}");
    assert_eq!(price().await, Some(999), "the stale record priced no line");
    assert_eq!(confirmations(&mesh, &order.order_id).await, 1, "nor published");
    let current = record(version).await;
    assert!(current.is_ok(), "{current:?}");
    assert_eq!(price().await, Some(1));
    assert_eq!(confirmations(&mesh, &order.order_id).await, 2);
    mesh.shutdown().await;
}

both_backends!(
    a_stale_record_writes_neither_prices_nor_events,
    a_lost_commit_reply_confirms_once,
    a_cancel_accepted_while_a_worker_waits_is_carried_out,
    a_back_off_longer_than_the_lease_keeps_the_saga,
    a_retry_of_a_saga_still_driven_starts_it_afresh,
);
