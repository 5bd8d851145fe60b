//! More than one order process on one order database: sagas driven by
//! whichever holds the lease, watchers on a replica that does not drive the
//! order, and reads that never wait for the saga's writes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ordermesh_proto::mesh::v1 as mesh_pb;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::OrderStatus;
use ordermesh_tests::{Backend, Limits, Mesh, MeshOptions, Pause, SagaConfig, both_backends, load};

const CABLE: &str = "CB-004"; // 999 cents, 200 in stock
const MOUSE: &str = "MS-002"; // 2499 cents, 50 in stock

/// A short lease, quick recovery, and workers that pause between a call and
/// its record for longer than the lease (as a starved process would), so
/// replicas take sagas over from each other and stale workers wake up.
fn contended_saga() -> SagaConfig {
    SagaConfig {
        limits: Limits {
            patience: Duration::from_secs(2),
            forward_window: Duration::from_secs(20),
            max_compensation_attempts: 30,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
            compensation_max_backoff: Duration::from_secs(2),
        },
        call_timeout: Duration::from_millis(500),
        lease: Duration::from_millis(1_200),
        lease_margin: Duration::from_millis(100),
        recovery_interval: Duration::from_millis(100),
        crash_at: None,
        pause_before_record: Some(Pause {
            percent: 15.0,
            duration: Duration::from_millis(1_500),
        }),
        lose_record_reply: None,
    }
}

fn chaos() -> Vec<mesh_pb::FaultRule> {
    vec![mesh_pb::FaultRule {
        delay_percent: 40.0,
        delay_ms: 300,
        abort_percent: 25.0,
        abort_code: "UNAVAILABLE".into(),
        ..Default::default()
    }]
}

async fn set_faults(
    admin: &mut ordermesh_proto::mesh::v1::mesh_admin_service_client::MeshAdminServiceClient<
        tonic::transport::Channel,
    >,
    rules: Vec<mesh_pb::FaultRule>,
) {
    for downstream in ["payment", "inventory"] {
        admin
            .set_faults(mesh_pb::SetFaultsRequest {
                downstream: downstream.into(),
                rules: rules.clone(),
            })
            .await
            .expect("SetFaults");
    }
}

/// Two order processes on one database, a short lease and injected delays
/// and failures: sagas lapse and are taken over mid-way, and still every
/// order ends terminal, nothing is held, and no step's effect happens twice
/// (the audit counts each payment's ledger entries and each SKU's sold
/// units).
async fn two_order_processes_share_the_sagas_safely(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.saga = contended_saga();
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let replica = mesh.start_order_replica(contended_saga()).await;
    let mut admin_a = mesh.order_admin();
    let mut admin_b = replica.mesh_admin.clone();
    set_faults(&mut admin_a, chaos()).await;
    set_faults(&mut admin_b, chaos()).await;

    let progress = Arc::new(load::Progress::default());
    let on_a = load::run(
        mesh.order.clone(),
        "a",
        4,
        6,
        &[(CABLE, 1), (MOUSE, 1)],
        progress.clone(),
        Duration::from_secs(120),
    );
    let on_b = load::run(
        replica.client.clone(),
        "b",
        4,
        6,
        &[(CABLE, 2)],
        progress.clone(),
        Duration::from_secs(120),
    );
    let calm = async {
        load::wait_created(&progress, 40, Duration::from_secs(60)).await;
        set_faults(&mut admin_a, vec![]).await;
        set_faults(&mut admin_b, vec![]).await;
    };
    let (a, b, ()) = tokio::join!(on_a, on_b, calm);
    assert_eq!(a.len() + b.len(), 48);
    let findings = mesh.audit().check().await;
    let resumed = mesh.order_runner.resumed() + replica.runner.resumed();
    eprintln!(
        "two processes: {:?}; sagas taken over from the other process: {resumed}",
        findings.by_status
    );
    assert!(resumed > 0, "the pauses made leases lapse and sagas change hands");
    mesh.assert_invariants().await;
    replica.stop().await;
    mesh.shutdown().await;
}

/// A watcher connected to the replica that does not drive the order still
/// sees every step to the end (the replica's one poll for other processes'
/// changes feeds it).
async fn a_watcher_on_another_replica_follows_the_order(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let replica = mesh.start_order_replica(ordermesh_tests::fast_saga()).await;
    // Slow payment down so the watch starts before the order is done.
    mesh.set_faults(
        "payment",
        vec![mesh_pb::FaultRule {
            delay_percent: 100.0,
            delay_ms: 400,
            ..Default::default()
        }],
    )
    .await;
    let created = mesh
        .create_order("watched-1", "alice", &[(CABLE, 1)])
        .await
        .expect("created on the first process");
    let mut client = replica.client.clone();
    let mut stream = client
        .watch_order(order_pb::WatchOrderRequest {
            order_id: created.order_id.clone(),
        })
        .await
        .expect("watch on the replica")
        .into_inner();
    let mut seen = Vec::new();
    let follow = async {
        while let Some(item) = stream.next().await {
            seen.push(item.expect("item").order.expect("order").status());
        }
    };
    tokio::time::timeout(Duration::from_secs(20), follow)
        .await
        .expect("the replica's watch ends at the terminal status");
    assert_eq!(seen.last(), Some(&OrderStatus::Confirmed), "{seen:?}");
    assert!(seen.len() >= 2, "intermediate steps seen too: {seen:?}");
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted, seen, "each status once: {seen:?}");
    replica.stop().await;
    mesh.shutdown().await;
}

/// A write that commits late, with a time stamp older than changes the
/// replica already saw (a writer that waited for a connection or a lock),
/// still reaches a watcher on another replica: the replica polls its
/// watched orders by version, not by a window of update times.
async fn a_late_commit_reaches_a_watcher_on_another_replica(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let replica = mesh.start_order_replica(ordermesh_tests::fast_saga()).await;
    // Payment answers after 10 s: the order stays PENDING for seconds.
    mesh.set_faults(
        "payment",
        vec![mesh_pb::FaultRule {
            delay_percent: 100.0,
            delay_ms: 10_000,
            ..Default::default()
        }],
    )
    .await;
    let watched = mesh
        .create_order("late-1", "alice", &[(CABLE, 1)])
        .await
        .expect("created");
    let other = mesh
        .create_order("late-2", "alice", &[(CABLE, 1)])
        .await
        .expect("created");
    let watch = |order_id: String| {
        let mut client = replica.client.clone();
        async move {
            client
                .watch_order(order_pb::WatchOrderRequest { order_id })
                .await
                .expect("watch on the replica")
                .into_inner()
        }
    };
    let mut stream = watch(watched.order_id.clone()).await;
    let mut other_stream = watch(other.order_id.clone()).await;
    let open = |status: OrderStatus| {
        !matches!(
            status,
            OrderStatus::Confirmed | OrderStatus::Rejected | OrderStatus::Cancelled
        )
    };
    let first = stream.next().await.expect("a first snapshot").expect("ok");
    assert!(open(first.order.expect("order").status()));
    let db = &mesh.order_store.db().write;
    let now = ordermesh_runtime::clock::now_micros();
    // Another order ends with a later stamp, and the replica sees it (its
    // watcher gets the change)...
    sqlx::query(
        "UPDATE orders SET status = 'CANCELLED', saga_state = 'DONE', lease_owner = 'elsewhere',
            update_time = $1, version = version + 1 WHERE order_id = $2",
    )
    .bind(now + 10_000_000)
    .bind(&other.order_id)
    .execute(db)
    .await
    .expect("update");
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(item) = other_stream.next().await {
            if item.expect("ok").order.expect("order").status() == OrderStatus::Cancelled {
                return;
            }
        }
        panic!("the other watch ended without the change");
    })
    .await
    .expect("the replica saw the later change");
    // ...then the watched order's terminal write lands, stamped earlier.
    sqlx::query(
        "UPDATE orders SET status = 'CANCELLED', saga_state = 'DONE', lease_owner = 'elsewhere',
            update_time = $1, version = version + 1 WHERE order_id = $2",
    )
    .bind(now)
    .bind(&watched.order_id)
    .execute(db)
    .await
    .expect("update");
    let last = tokio::time::timeout(Duration::from_secs(5), async {
        let mut last = None;
        while let Some(item) = stream.next().await {
            last = Some(item.expect("ok").order.expect("order").status());
        }
        last
    })
    .await
    .expect("the watch ends with the late terminal write");
    assert_eq!(last, Some(OrderStatus::Cancelled));
    mesh.set_faults("payment", vec![]).await;
    replica.stop().await;
    mesh.shutdown().await;
}

/// A gRPC watch keeps its deadline: the stream ends with DEADLINE_EXCEEDED
/// at the caller's deadline, not when the order ends.
async fn a_watch_ends_at_its_deadline(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    mesh.set_faults(
        "payment",
        vec![mesh_pb::FaultRule {
            delay_percent: 100.0,
            delay_ms: 10_000,
            ..Default::default()
        }],
    )
    .await;
    let order = mesh
        .create_order("deadline-1", "alice", &[(CABLE, 1)])
        .await
        .expect("created");
    let mut request = tonic::Request::new(order_pb::WatchOrderRequest {
        order_id: order.order_id.clone(),
    });
    request.set_timeout(Duration::from_secs(1));
    let started = std::time::Instant::now();
    let mut stream = mesh
        .order
        .clone()
        .watch_order(request)
        .await
        .expect("watch")
        .into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => {}
                Some(Err(status)) => return Some(status.code()),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(ended, Some(tonic::Code::DeadlineExceeded));
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );
    mesh.set_faults("payment", vec![]).await;
    mesh.shutdown().await;
}

/// Reads (GetOrder, ListOrders, health) do not queue behind
/// the saga's writes. A write transaction is held open on the order
/// database; reads still answer.
async fn reads_do_not_wait_for_an_open_write(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let created = mesh
        .create_order("read-1", "alice", &[(CABLE, 1)])
        .await
        .expect("created");
    mesh.wait_terminal(&created.order_id).await;
    let mut tx = mesh.order_store.db().write.begin().await.expect("begin");
    sqlx::query("UPDATE orders SET update_time = update_time WHERE order_id = $1")
        .bind(&created.order_id)
        .execute(&mut *tx)
        .await
        .expect("a write holds the writer");
    let reads = async {
        let order = mesh.get_order(&created.order_id).await;
        let mut client = mesh.order.clone();
        let listed = client
            .list_orders(order_pb::ListOrdersRequest::default())
            .await
            .expect("ListOrders")
            .into_inner();
        let mut health = tonic_health::pb::health_client::HealthClient::new(
            tonic::transport::Endpoint::from_shared(format!(
                "http://{}",
                mesh.addr("order").expect("order runs")
            ))
            .expect("endpoint")
            .connect_lazy(),
        );
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health")
            .into_inner()
            .status();
        (order, listed, status)
    };
    let (order, listed, status) = tokio::time::timeout(Duration::from_secs(3), reads)
        .await
        .expect("reads answer while a write is open");
    assert_eq!(order.status(), OrderStatus::Confirmed);
    assert_eq!(listed.orders.len(), 1);
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    tx.rollback().await.expect("rollback");
    mesh.shutdown().await;
}

both_backends!(
    two_order_processes_share_the_sagas_safely,
    a_watcher_on_another_replica_follows_the_order,
    a_late_commit_reaches_a_watcher_on_another_replica,
    a_watch_ends_at_its_deadline,
    reads_do_not_wait_for_an_open_write,
);
