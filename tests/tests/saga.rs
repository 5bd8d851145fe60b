//! The order saga end to end, over real gRPC, on SQLite and on PostgreSQL:
//! every scenario ends by checking the stock and ledger invariants.

use std::time::Duration;

use ordermesh_proto::inventory::v1 as inventory_pb;
use ordermesh_proto::mesh::v1 as mesh_pb;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::{OrderStatus, RejectReason};
use ordermesh_proto::payment::v1 as payment_pb;
use ordermesh_tests::{Backend, Mesh, MeshOptions, both_backends};
use tonic::Code;
use tonic_types::StatusExt;

// Demo numbers (ordermesh_inventory::demo, ordermesh_payment::demo).
const KEYBOARD: &str = "KB-001"; // 8999 cents, 25 in stock
const CABLE: &str = "CB-004"; // 999 cents, 200 in stock
const MONITOR: &str = "MN-003"; // 27900 cents, 10 in stock
const LAMP: &str = "LT-005"; // 14900 cents, 1 in stock

async fn happy_path(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let alice_before = mesh.balance("alice").await;
    let keyboards_before = mesh.stock(KEYBOARD).await;

    let created = mesh
        .create_order("happy-1", "alice", &[(KEYBOARD, 2), (CABLE, 1)])
        .await
        .expect("created");
    assert_eq!(created.status(), OrderStatus::Pending);
    let (seen, order) = mesh.wait_terminal(&created.order_id).await;

    assert_eq!(order.status(), OrderStatus::Confirmed, "{order:?}");
    // WatchOrder sends each status once, in saga order (it may join late).
    let forward = [
        OrderStatus::Pending,
        OrderStatus::StockReserved,
        OrderStatus::PaymentAuthorized,
        OrderStatus::PaymentCaptured,
        OrderStatus::Confirmed,
    ];
    let positions: Vec<usize> = seen
        .iter()
        .map(|s| forward.iter().position(|f| f == s).expect("a forward status"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&OrderStatus::Confirmed));
    let expected_total = 2 * 8999 + 999;
    let total = order.total.as_ref().expect("total");
    assert_eq!(
        (total.amount_minor, total.currency_code.as_str()),
        (expected_total, "USD")
    );
    assert_eq!(
        order.lines[0].unit_price.as_ref().map(|m| m.amount_minor),
        Some(8999)
    );
    assert_eq!(
        mesh.balance("alice").await,
        alice_before - expected_total,
        "charged the catalogue price"
    );
    let keyboards = mesh.stock(KEYBOARD).await;
    assert_eq!(keyboards.available, keyboards_before.available - 2);
    assert_eq!(keyboards.sold, keyboards_before.sold + 2);

    let mut payment = mesh.payment.clone();
    let charged = payment
        .get_payment(payment_pb::GetPaymentRequest {
            payment_id: order.payment_id.clone(),
        })
        .await
        .expect("payment")
        .into_inner()
        .payment
        .expect("payment");
    assert_eq!(charged.status(), payment_pb::PaymentStatus::Captured);
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

async fn out_of_stock_is_rejected_without_charge(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let alice_before = mesh.balance("alice").await;
    let created = mesh
        .create_order("oos-1", "alice", &[(CABLE, 1), (LAMP, 2)])
        .await
        .expect("created");
    let (_, order) = mesh.wait_terminal(&created.order_id).await;

    assert_eq!(order.status(), OrderStatus::Rejected);
    assert_eq!(order.reject_reason(), RejectReason::OutOfStock, "{order:?}");
    assert!(
        order.reject_detail.contains(LAMP),
        "detail names the SKU: {}",
        order.reject_detail
    );
    assert_eq!(mesh.balance("alice").await, alice_before, "nothing charged");
    assert_eq!(
        mesh.payment_store
            .count_payments("alice", &order.order_id)
            .await
            .expect("count"),
        0
    );
    assert_eq!(
        mesh.stock(CABLE).await.available,
        200,
        "the line that fitted was not kept"
    );
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

async fn declined_payment_releases_stock(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let bob_before = mesh.balance("bob").await;
    let created = mesh
        .create_order("declined-1", "bob", &[(MONITOR, 1)])
        .await
        .expect("created");
    let (seen, order) = mesh.wait_terminal(&created.order_id).await;

    assert_eq!(order.status(), OrderStatus::Rejected);
    assert_eq!(
        order.reject_reason(),
        RejectReason::InsufficientFunds,
        "{order:?}"
    );
    assert!(seen.contains(&OrderStatus::Rejected));
    assert!(
        !order.payment_id.is_empty(),
        "the declined payment is recorded on the order"
    );
    assert_eq!(mesh.balance("bob").await, bob_before);
    let monitor = mesh.stock(MONITOR).await;
    assert_eq!(
        (monitor.available, monitor.reserved),
        (10, 0),
        "reservation released"
    );
    let mut inventory = mesh.inventory.clone();
    let reservation = inventory
        .get_reservation(inventory_pb::GetReservationRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("reservation")
        .into_inner()
        .reservation
        .expect("reservation");
    assert_eq!(reservation.status(), inventory_pb::ReservationStatus::Released);

    // A blocked account is declined with its own reason.
    let created = mesh
        .create_order("declined-2", "carol", &[(CABLE, 1)])
        .await
        .expect("created");
    let (_, order) = mesh.wait_terminal(&created.order_id).await;
    assert_eq!(order.reject_reason(), RejectReason::AccountBlocked, "{order:?}");
    // And an unknown customer is rejected, not retried forever.
    let created = mesh
        .create_order("declined-3", "nobody", &[(CABLE, 1)])
        .await
        .expect("created");
    let (_, order) = mesh.wait_terminal(&created.order_id).await;
    assert_eq!(order.reject_reason(), RejectReason::UnknownCustomer, "{order:?}");
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

async fn cancel_refunds_and_returns_stock(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let alice_before = mesh.balance("alice").await;
    let created = mesh
        .create_order("cancel-1", "alice", &[(MONITOR, 2)])
        .await
        .expect("created");
    let (_, order) = mesh.wait_terminal(&created.order_id).await;
    assert_eq!(order.status(), OrderStatus::Confirmed);
    assert_eq!(mesh.balance("alice").await, alice_before - 2 * 27900);

    let mut client = mesh.order.clone();
    let cancelling = client
        .cancel_order(order_pb::CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("cancel accepted")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(cancelling.status(), OrderStatus::Cancelling);
    let (_, order) = mesh.wait_terminal(&order.order_id).await;
    assert_eq!(order.status(), OrderStatus::Cancelled);
    assert_eq!(mesh.balance("alice").await, alice_before, "refunded");
    let monitor = mesh.stock(MONITOR).await;
    assert_eq!((monitor.available, monitor.sold), (10, 0), "stock returned");

    // Cancelling again changes nothing; a rejected order cannot be cancelled.
    let again = client
        .cancel_order(order_pb::CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("idempotent cancel")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(again.status(), OrderStatus::Cancelled);
    assert_eq!(mesh.balance("alice").await, alice_before, "no second refund");
    let rejected = mesh
        .create_order("cancel-2", "bob", &[(MONITOR, 1)])
        .await
        .expect("created");
    mesh.wait_terminal(&rejected.order_id).await;
    let err = client
        .cancel_order(order_pb::CancelOrderRequest {
            order_id: rejected.order_id.clone(),
        })
        .await
        .expect_err("rejected orders are not cancellable");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = client
        .cancel_order(order_pb::CancelOrderRequest {
            order_id: "no-such-order".into(),
        })
        .await
        .expect_err("unknown order");
    assert_eq!(err.code(), Code::NotFound);
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

async fn same_request_id_yields_one_order_and_one_charge(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let alice_before = mesh.balance("alice").await;
    let lines = [(KEYBOARD, 1)];
    let attempts = (0..8).map(|_| mesh.create_order("idem-1", "alice", &lines));
    let results = futures::future::join_all(attempts).await;
    let mut ids: Vec<String> = results
        .into_iter()
        .map(|r| r.expect("every duplicate succeeds").order_id)
        .collect();
    let again = mesh
        .create_order("idem-1", "alice", &lines)
        .await
        .expect("sequential replay");
    ids.push(again.order_id);
    ids.dedup();
    assert_eq!(ids.len(), 1, "one order for one request_id: {ids:?}");
    let (_, order) = mesh.wait_terminal(&ids[0]).await;
    assert_eq!(order.status(), OrderStatus::Confirmed);
    assert_eq!(mesh.balance("alice").await, alice_before - 8999, "charged once");
    assert_eq!(
        mesh.payment_store
            .count_payments("alice", &order.order_id)
            .await
            .expect("count"),
        1
    );

    // The same key for a different order is refused and writes nothing.
    let err = mesh
        .create_order("idem-1", "alice", &[(KEYBOARD, 2)])
        .await
        .expect_err("reused key");
    assert_eq!(err.code(), Code::AlreadyExists);
    let mut client = mesh.order.clone();
    let listed = client
        .list_orders(order_pb::ListOrdersRequest {
            customer_id: "alice".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.orders.len(), 1);
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

async fn payment_outage_is_compensated(backend: Backend) {
    let Some(mut mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let alice_before = mesh.balance("alice").await;
    mesh.stop("payment").await;
    let created = mesh
        .create_order("outage-1", "alice", &[(KEYBOARD, 1)])
        .await
        .expect("created while payment is down");
    // Authorization gives up after its retries. If its last attempt was
    // sent and never answered, compensation must ask payment whether it
    // happened, and waits in COMPENSATING (stock held) while payment is down;
    // if the mesh knows it was never sent (breaker open), the order is
    // rejected at once. Either way nothing is charged and no stock is kept.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let order = mesh.get_order(&created.order_id).await;
        if matches!(order.status(), OrderStatus::Compensating | OrderStatus::Rejected) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never compensated: {order:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Once payment is back, the recovery worker finishes the compensation.
    mesh.restart_payment().await;
    let (_, order) = mesh.wait_terminal(&created.order_id).await;
    assert_eq!(order.status(), OrderStatus::Rejected);
    assert_eq!(
        order.reject_reason(),
        RejectReason::ServiceUnavailable,
        "{order:?}"
    );
    let keyboards = mesh.stock(KEYBOARD).await;
    assert_eq!(
        (keyboards.available, keyboards.reserved),
        (25, 0),
        "stock released"
    );
    assert_eq!(mesh.balance("alice").await, alice_before, "nothing charged");
    assert_eq!(
        mesh.payment_store
            .count_payments("alice", &order.order_id)
            .await
            .expect("count"),
        0,
        "compensation looked the authorization up instead of making one"
    );
    mesh.assert_invariants().await;

    // And new orders go through again (once the breaker has probed).
    mesh.order_until_confirmed("outage-2", "alice", &[(KEYBOARD, 1)], Duration::from_secs(15))
        .await;
    mesh.shutdown().await;
}

/// The chaos walkthrough of docs/mesh.md: a fault injected through the admin
/// API makes every payment call fail before it is sent. Orders wait out the
/// outage for the saga's patience, then are rejected with their stock
/// released and the payment service never called (every attempt was refused
/// by the mesh, so there is nothing to undo); once the fault is removed
/// orders confirm again and the breaker closes.
async fn injected_payment_outage_rejects_after_patience_without_calling_payment(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let mut admin = mesh.order_admin();
    let alice_before = mesh.balance("alice").await;
    admin
        .set_faults(mesh_pb::SetFaultsRequest {
            downstream: "payment".into(),
            rules: vec![mesh_pb::FaultRule {
                abort_percent: 100.0,
                abort_code: "UNAVAILABLE".into(),
                ..Default::default()
            }],
        })
        .await
        .expect("fault set");

    let placed = (0..4).map(|i| {
        let mesh = &mesh;
        async move {
            let created = mesh
                .create_order(&format!("chaos-{i}"), "alice", &[(CABLE, 1)])
                .await
                .expect("created");
            let started = tokio::time::Instant::now();
            let (_, order) = mesh.wait_terminal(&created.order_id).await;
            (order, started.elapsed())
        }
    });
    let mut rejected = Vec::new();
    for (order, waited) in futures::future::join_all(placed).await {
        assert_eq!(order.status(), OrderStatus::Rejected, "{order:?}");
        assert_eq!(
            order.reject_reason(),
            RejectReason::ServiceUnavailable,
            "{order:?}"
        );
        assert!(
            waited >= mesh.options.saga.limits.patience - Duration::from_millis(500),
            "the outage was waited out first ({waited:?})"
        );
        rejected.push(order.order_id);
    }
    let cable = mesh.stock(CABLE).await;
    assert_eq!(
        (cable.available, cable.reserved),
        (200, 0),
        "every reservation released"
    );
    assert_eq!(mesh.balance("alice").await, alice_before);
    assert_eq!(mesh.payment_store.ledger_sum().await.expect("sum"), 0);
    let state = admin
        .get_mesh_state(mesh_pb::GetMeshStateRequest {})
        .await
        .expect("state")
        .into_inner();
    let payment = state
        .downstreams
        .iter()
        .find(|d| d.name == "payment")
        .expect("payment downstream");
    assert!(
        payment.breaker_opened_total >= 1,
        "the breaker opened: {payment:?}"
    );
    assert_eq!(payment.faults.len(), 1);
    for order_id in &rejected {
        let made = mesh
            .payment_store
            .count_payments("alice", order_id)
            .await
            .expect("count");
        assert_eq!(made, 0, "no authorization reached the payment service");
    }

    admin
        .set_faults(mesh_pb::SetFaultsRequest {
            downstream: "payment".into(),
            rules: vec![],
        })
        .await
        .expect("fault cleared");
    // Orders confirm again, and with traffic the breaker's probes close it
    // (a probe slowed past its deadline on a loaded machine reopens it, so
    // keep ordering until it is closed).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for round in 0.. {
        mesh.order_until_confirmed(
            &format!("chaos-after-{round}"),
            "alice",
            &[(CABLE, 1)],
            Duration::from_secs(15),
        )
        .await;
        let state = admin
            .get_mesh_state(mesh_pb::GetMeshStateRequest {})
            .await
            .expect("state")
            .into_inner();
        let payment = state
            .downstreams
            .iter()
            .find(|d| d.name == "payment")
            .expect("payment downstream");
        if payment.breaker_state == "CLOSED" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the breaker never closed: {payment:?}"
        );
    }
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

async fn bad_input_is_rejected_with_field_violations(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let err = mesh
        .create_order("", "alice", &[(KEYBOARD, 0), ("", 1), (CABLE, 1), (CABLE, 2)])
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        ["request_id", "lines[0].quantity", "lines[1].sku", "lines[3].sku"]
    );
    let err = mesh
        .create_order("bad-2", "alice", &[])
        .await
        .expect_err("no lines");
    assert!(err.message().contains("lines"), "{}", err.message());

    let mut client = mesh.order.clone();
    let listed = client
        .list_orders(order_pb::ListOrdersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.orders.is_empty(), "nothing was written: {listed:?}");
    let err = client
        .list_orders(order_pb::ListOrdersRequest {
            page_token: "garbage!".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"));
    let err = client
        .get_order(order_pb::GetOrderRequest {
            order_id: "missing".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

async fn orders_are_listed_newest_first_in_pages(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..5 {
        let order = mesh
            .create_order(&format!("page-{i}"), "alice", &[(CABLE, 1)])
            .await
            .expect("created");
        ids.push(order.order_id);
    }
    for id in &ids {
        mesh.wait_terminal(id).await;
    }
    let mut client = mesh.order.clone();
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_orders(order_pb::ListOrdersRequest {
                customer_id: "alice".into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.orders.len() <= 2);
        listed.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    ids.reverse();
    assert_eq!(listed, ids, "newest first, each order once");
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

/// The `order_availability_precheck` flag governs CreateOrder: off, an
/// order that cannot be filled is accepted and rejected by the saga; on
/// (set at runtime through the admin API), it is refused up front and
/// nothing is written.
async fn precheck_flag_refuses_unfillable_orders_up_front(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let accepted = mesh
        .create_order("flag-off", "alice", &[(LAMP, 5)])
        .await
        .expect("accepted with the flag off");
    let (_, order) = mesh.wait_terminal(&accepted.order_id).await;
    assert_eq!(order.reject_reason(), RejectReason::OutOfStock);

    let mut admin = mesh.order_admin();
    admin
        .set_flag(mesh_pb::SetFlagRequest {
            flag: Some(mesh_pb::Flag {
                name: "order_availability_precheck".into(),
                enabled: true,
                rollout_percent: 100.0,
                description: String::new(),
            }),
        })
        .await
        .expect("flag set");
    let err = mesh
        .create_order("flag-on", "alice", &[(LAMP, 5)])
        .await
        .expect_err("refused up front");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains(LAMP), "{}", err.message());
    // The refusal is this service's error, with this service's reason.
    let info = err.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("INSUFFICIENT_STOCK", "order.ordermesh")
    );
    let unknown = mesh
        .create_order("flag-on-unknown", "alice", &[(CABLE, 1), ("NO-SUCH-SKU", 1)])
        .await
        .expect_err("unknown sku refused up front");
    assert_eq!(unknown.code(), Code::InvalidArgument);
    let violations = unknown
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations;
    assert_eq!(violations[0].field, "lines[1].sku", "{violations:?}");
    let info = unknown.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("UNKNOWN_SKU", "order.ordermesh")
    );

    let fine = mesh
        .create_order("flag-on-ok", "alice", &[(LAMP, 1)])
        .await
        .expect("fillable orders pass");
    assert_eq!(
        mesh.wait_terminal(&fine.order_id).await.1.status(),
        OrderStatus::Confirmed
    );
    // That order took the last lamp. A client retrying its request gets the
    // first answer (the confirmed order), not the precheck's refusal.
    let replay = mesh
        .create_order("flag-on-ok", "alice", &[(LAMP, 1)])
        .await
        .expect("a replay is answered before any check");
    assert_eq!(replay.order_id, fine.order_id);
    assert_eq!(replay.status(), OrderStatus::Confirmed);
    let mut client = mesh.order.clone();
    let listed = client
        .list_orders(order_pb::ListOrdersRequest {
            customer_id: "alice".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.orders.len(), 2, "the refused order was never written");
    let state = admin
        .get_mesh_state(mesh_pb::GetMeshStateRequest {})
        .await
        .expect("state")
        .into_inner();
    assert!(
        state
            .flags
            .iter()
            .any(|f| f.name == "order_availability_precheck" && f.enabled)
    );
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

/// `server.max_request_bytes` caps request messages: an oversized
/// CreateOrder is refused before it is decoded, and nothing is written.
async fn oversized_requests_are_refused(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.policy =
        ordermesh_tests::MeshPolicy::parse("[server]\nmax_request_bytes = 512\n", []).expect("policy");
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let skus: Vec<String> = (0..40).map(|i| format!("SKU-{i:04}-PADDING-PADDING")).collect();
    let lines: Vec<(&str, i64)> = skus.iter().map(|s| (s.as_str(), 1)).collect();
    let err = mesh
        .create_order("big-1", "alice", &lines)
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());
    let small = mesh
        .create_order("small-1", "alice", &[(CABLE, 1)])
        .await
        .expect("small requests pass");
    assert_eq!(
        mesh.wait_terminal(&small.order_id).await.1.status(),
        OrderStatus::Confirmed
    );
    let mut client = mesh.order.clone();
    let listed = client
        .list_orders(order_pb::ListOrdersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.orders.len(), 1, "the oversized order was not written");
    mesh.shutdown().await;
}

/// WatchOrder of an order this process's saga worker drives starts from the
/// worker's memory: with the order service's read connections closed
/// (SQLite, where reads have a pool of their own) a watch of an order held
/// at CapturePayment still starts, its first message is exactly what the
/// database held, and it follows the order to CONFIRMED. Once no worker
/// drives the order, a watch reads it, and fails with the reads closed.
#[tokio::test]
async fn a_watch_of_a_driven_order_starts_without_a_read() {
    let Some(mesh) = Mesh::start(MeshOptions::new(Backend::Sqlite)).await else {
        return;
    };
    mesh.set_faults(
        "payment",
        vec![mesh_pb::FaultRule {
            method: "CapturePayment".into(),
            delay_percent: 100.0,
            // Under the tests' 1 s call timeout.
            delay_ms: 700,
            ..Default::default()
        }],
    )
    .await;
    let order = mesh
        .create_order("watch-driven", "alice", &[(CABLE, 1)])
        .await
        .expect("created");
    // Authorized, then held at the capture: the row stays as it is.
    let held = mesh
        .wait_order(&order.order_id, Duration::from_secs(5), |o| {
            !o.payment_id.is_empty()
        })
        .await;
    mesh.order_store.db().read.close().await;
    let watch = |order_id: String| {
        let mut client = mesh.order.clone();
        async move {
            client
                .watch_order(order_pb::WatchOrderRequest { order_id })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let mut stream = watch(order.order_id.clone())
        .await
        .expect("the watch starts without a read");
    let first = stream.message().await.expect("first").expect("an order").order;
    assert_eq!(first.as_ref(), Some(&held), "the worker's view is the database's");
    let mut last = first;
    while let Some(update) = stream.message().await.expect("update") {
        last = update.order;
    }
    assert_eq!(last.map(|o| o.status()), Some(OrderStatus::Confirmed));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mesh.order_runner.driving() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the worker never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let read = async { watch(order.order_id.clone()).await?.message().await };
    assert!(read.await.is_err(), "no worker drives it: the watch reads it");
    mesh.set_faults("payment", vec![]).await;
    mesh.shutdown().await;
}

both_backends!(
    happy_path,
    out_of_stock_is_rejected_without_charge,
    declined_payment_releases_stock,
    cancel_refunds_and_returns_stock,
    same_request_id_yields_one_order_and_one_charge,
    payment_outage_is_compensated,
    injected_payment_outage_rejects_after_patience_without_calling_payment,
    precheck_flag_refuses_unfillable_orders_up_front,
    oversized_requests_are_refused,
    bad_input_is_rejected_with_field_violations,
    orders_are_listed_newest_first_in_pages,
);
