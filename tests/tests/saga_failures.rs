//! The saga under failure, over real gRPC, on SQLite and on PostgreSQL:
//! lost replies, outages shorter and longer than the saga's patience,
//! compensation that keeps failing, a reservation that expires after the
//! payment was captured, two order processes on one database, watchers on
//! another replica, reads while a write is open. Every scenario ends with
//! the audit of every order (nothing held, nothing charged twice).

use std::time::Duration;

use std::sync::Arc;

use ordermesh_proto::mesh::v1 as mesh_pb;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::{OrderStatus, RejectReason};
use ordermesh_proto::payment::v1::PaymentStatus;
use ordermesh_tests::proxy::Replies;
use ordermesh_tests::{Backend, Mesh, MeshOptions, both_backends, load};

const KEYBOARD: &str = "KB-001"; // 8999 cents, 25 in stock
const CABLE: &str = "CB-004"; // 999 cents, 200 in stock

fn abort(method: Option<&str>, code: &str) -> mesh_pb::FaultRule {
    mesh_pb::FaultRule {
        method: method.unwrap_or_default().into(),
        abort_percent: 100.0,
        abort_code: code.into(),
        ..Default::default()
    }
}

/// Issue item 1, deterministically: AUTHORIZE reaches payment and commits,
/// its answer is held past the deadline (a lost reply), and every later
/// attempt is refused by the mesh without being sent (as by an open
/// breaker). The saga must not conclude "never happened" from the last
/// attempt: it compensates by voiding the authorization's key, so the
/// customer's money is released.
async fn a_lost_authorization_reply_is_voided_by_key(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.payment_proxy = true;
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let alice_before = mesh.balance("alice").await;
    let proxy = mesh.payment_proxy.as_ref().expect("a payment proxy");
    proxy.set_replies(Replies::Hold);
    let created = mesh
        .create_order("lost-1", "alice", &[(KEYBOARD, 1)])
        .await
        .expect("created");
    // Payment authorized (committed), but the answer does not come back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mesh.payment_of(&created.order_id).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "authorization never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mesh.set_faults("payment", vec![abort(None, "UNAVAILABLE")]).await;

    // Past its patience the order compensates; the void cannot be sent
    // either, so the order waits in COMPENSATING with the money still held.
    let order = mesh
        .wait_order(&created.order_id, Duration::from_secs(15), |o| {
            o.status() == OrderStatus::Compensating
        })
        .await;
    assert_eq!(
        order.reject_reason(),
        RejectReason::ServiceUnavailable,
        "{order:?}"
    );
    let held = mesh.payment_of(&created.order_id).await.expect("payment");
    assert_eq!(held.status(), PaymentStatus::Authorized);
    assert_eq!(mesh.balance("alice").await, alice_before - 8999);

    // Payment reachable again: the void by key releases the hold.
    proxy.set_replies(Replies::Pass);
    mesh.set_faults("payment", vec![]).await;
    let (_, order) = mesh.wait_terminal(&created.order_id).await;
    assert_eq!(order.status(), OrderStatus::Rejected, "{order:?}");
    assert_eq!(order.reject_reason(), RejectReason::ServiceUnavailable);
    let voided = mesh.payment_of(&created.order_id).await.expect("payment");
    assert_eq!(voided.status(), PaymentStatus::Voided, "{voided:?}");
    assert_eq!(mesh.balance("alice").await, alice_before, "nothing stays held");
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

/// Issue item 4: a compensating step that keeps failing stops after its
/// attempts, flagged for an operator with its last error, the order left
/// COMPENSATING; the recovery worker leaves it alone; RetrySaga finishes it
/// once the cause is gone.
async fn a_compensation_that_keeps_failing_needs_an_operator(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.saga.limits.max_compensation_attempts = 3;
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let alice_before = mesh.balance("alice").await;
    mesh.set_faults(
        "payment",
        vec![
            abort(Some("CapturePayment"), "FAILED_PRECONDITION"),
            abort(Some("VoidAuthorization"), "UNAVAILABLE"),
        ],
    )
    .await;
    let created = mesh
        .create_order("attention-1", "alice", &[(KEYBOARD, 1)])
        .await
        .expect("created");
    let mut admin = mesh.order_admin_api.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let saga = loop {
        let saga = admin
            .get_saga(order_pb::GetSagaRequest {
                order_id: created.order_id.clone(),
            })
            .await
            .expect("GetSaga")
            .into_inner()
            .saga
            .expect("saga");
        if saga.needs_attention {
            break saga;
        }
        assert!(tokio::time::Instant::now() < deadline, "never flagged: {saga:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(saga.step(), order_pb::SagaStep::UndoPayment, "{saga:?}");
    assert_eq!(saga.attempts, 3, "bounded: {saga:?}");
    assert!(
        saga.last_error.contains("UNAVAILABLE") || saga.last_error.contains("Unavailable"),
        "{saga:?}"
    );
    let order = mesh.get_order(&created.order_id).await;
    assert_eq!(
        order.status(),
        OrderStatus::Compensating,
        "the order shows it is not finished"
    );
    let listed = admin
        .list_sagas(order_pb::ListSagasRequest {
            needs_attention_only: true,
            ..Default::default()
        })
        .await
        .expect("ListSagas")
        .into_inner()
        .sagas;
    assert_eq!(
        listed.iter().map(|s| s.order_id.as_str()).collect::<Vec<_>>(),
        [created.order_id.as_str()]
    );
    // The recovery worker (every 200 ms) does not retry it silently.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = admin
        .get_saga(order_pb::GetSagaRequest {
            order_id: created.order_id.clone(),
        })
        .await
        .expect("GetSaga")
        .into_inner()
        .saga
        .expect("saga");
    assert_eq!((still.needs_attention, still.attempts), (true, 3), "{still:?}");

    // The operator fixes the cause and re-drives it.
    mesh.set_faults("payment", vec![]).await;
    let retried = admin
        .retry_saga(order_pb::RetrySagaRequest {
            order_id: created.order_id.clone(),
        })
        .await
        .expect("RetrySaga")
        .into_inner()
        .saga
        .expect("saga");
    assert!(!retried.needs_attention);
    let (_, order) = mesh.wait_terminal(&created.order_id).await;
    assert_eq!(order.status(), OrderStatus::Rejected);
    assert_eq!(order.reject_reason(), RejectReason::StepRefused, "{order:?}");
    assert_eq!(
        mesh.payment_of(&created.order_id)
            .await
            .expect("payment")
            .status(),
        PaymentStatus::Voided
    );
    assert_eq!(mesh.balance("alice").await, alice_before);
    let finished = admin
        .retry_saga(order_pb::RetrySagaRequest {
            order_id: created.order_id.clone(),
        })
        .await
        .expect_err("nothing to retry on a finished saga");
    assert_eq!(finished.code(), tonic::Code::FailedPrecondition);
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

/// The one refund after the pivot: COMMIT is held off until the
/// reservation expired; the order is rejected with RESERVATION_EXPIRED, the
/// captured payment refunded, and the detail says so.
async fn a_commit_after_the_reservation_expired_refunds(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.reservation_ttl = Duration::from_secs(2);
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let alice_before = mesh.balance("alice").await;
    mesh.set_faults("inventory", vec![abort(Some("CommitReservation"), "UNAVAILABLE")])
        .await;
    let created = mesh
        .create_order("expired-1", "alice", &[(KEYBOARD, 2)])
        .await
        .expect("created");
    mesh.wait_order(&created.order_id, Duration::from_secs(10), |o| {
        o.status() == OrderStatus::PaymentCaptured
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reservation = mesh
            .inventory_store
            .reservation(&created.order_id)
            .await
            .expect("read")
            .expect("reservation");
        if reservation.status == ordermesh_inventory::store::ReservationStatus::Expired {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never expired: {reservation:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mesh.set_faults("inventory", vec![]).await;
    let (_, order) = mesh.wait_terminal(&created.order_id).await;
    assert_eq!(order.status(), OrderStatus::Rejected);
    assert_eq!(order.reject_reason(), RejectReason::ReservationExpired);
    assert!(
        order.reject_detail.contains("refunded"),
        "{}",
        order.reject_detail
    );
    assert_eq!(
        mesh.payment_of(&created.order_id)
            .await
            .expect("payment")
            .status(),
        PaymentStatus::Refunded
    );
    assert_eq!(mesh.balance("alice").await, alice_before);
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

/// Issue items 8 and 9: a one-second outage of payment, then of inventory,
/// in the middle of a load of concurrent orders. No order is rejected for
/// it and no paid order refunded: the saga waits outages out.
async fn a_one_second_outage_rejects_nothing(backend: Backend) {
    for service in ["payment", "inventory"] {
        let Some(mut mesh) = Mesh::start(MeshOptions::new(backend)).await else {
            return;
        };
        let progress = Arc::new(load::Progress::default());
        let load = tokio::spawn(load::run(
            mesh.order.clone(),
            service,
            8,
            6,
            &[(CABLE, 1)],
            progress.clone(),
            Duration::from_secs(60),
        ));
        // The outage lands in the middle of the load.
        load::wait_created(&progress, 16, Duration::from_secs(30)).await;
        mesh.stop(service).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        match service {
            "payment" => mesh.restart_payment().await,
            _ => mesh.restart_inventory().await,
        }
        let placed = load.await.expect("load");
        assert_eq!(placed.len(), 48);
        let findings = mesh.audit().check().await;
        assert_eq!(
            findings.count(OrderStatus::Confirmed),
            48,
            "{service} outage of 1 s: every order confirmed, none rejected or refunded: {:?}",
            findings.by_status
        );
        mesh.assert_invariants().await;
        mesh.shutdown().await;
    }
}

both_backends!(
    a_one_second_outage_rejects_nothing,
    a_lost_authorization_reply_is_voided_by_key,
    a_compensation_that_keeps_failing_needs_an_operator,
    a_commit_after_the_reservation_expired_refunds,
);
