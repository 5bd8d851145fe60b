//! Inventory under concurrency and time: the last units of a SKU are sold
//! exactly once, and a reservation nobody commits expires and gives its
//! stock back. Real gRPC, both backends.

use std::time::Duration;

use ordermesh_inventory::SeedItem;
use ordermesh_proto::inventory::v1 as pb;
use ordermesh_tests::{Backend, Mesh, MeshOptions, both_backends};
use tonic::Code;
use tonic_types::StatusExt;

fn scarce(sku: &str, stock: i64) -> SeedItem {
    SeedItem {
        sku: sku.into(),
        name: format!("scarce {sku}"),
        unit_price_minor: 100,
        currency_code: "USD".into(),
        initial_stock: stock,
        low_stock_threshold: 0,
    }
}

fn reserve(order_id: String, sku: &str, quantity: i64) -> pb::ReserveStockRequest {
    pb::ReserveStockRequest {
        order_id,
        customer_id: "alice".into(),
        lines: vec![pb::StockLine {
            sku: sku.into(),
            quantity,
        }],
    }
}

async fn concurrent_reservations_sell_exactly_the_last_units(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.catalogue = vec![scarce("LAST-5", 5), scarce("PLENTY", 1000)];
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };

    let attempts = (0..24).map(|i| {
        let mut client = mesh.inventory.clone();
        async move {
            // Each order also takes an unlimited SKU first, so a failed
            // reservation must roll back a line it had already taken.
            let request = pb::ReserveStockRequest {
                order_id: format!("race-{i}"),
                customer_id: "alice".into(),
                lines: vec![
                    pb::StockLine {
                        sku: "PLENTY".into(),
                        quantity: 1,
                    },
                    pb::StockLine {
                        sku: "LAST-5".into(),
                        quantity: 1,
                    },
                ],
            };
            client.reserve_stock(request).await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 5, "exactly the available quantity is reserved");
    for lost in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(lost.code(), Code::FailedPrecondition, "{lost:?}");
        let info = lost.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "INSUFFICIENT_STOCK");
        assert_eq!(info.metadata.get("sku").map(String::as_str), Some("LAST-5"));
    }
    let last = mesh.stock("LAST-5").await;
    assert_eq!((last.available, last.reserved, last.sold), (0, 5, 0));
    let plenty = mesh.stock("PLENTY").await;
    assert_eq!(
        (plenty.available, plenty.reserved),
        (995, 5),
        "losers kept nothing"
    );
    mesh.shutdown().await;
}

async fn reserve_is_idempotent_by_order_and_commit_sells(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.catalogue = vec![scarce("ITEM", 10)];
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let mut client = mesh.inventory.clone();
    let replays = (0..6).map(|_| {
        let mut client = mesh.inventory.clone();
        async move { client.reserve_stock(reserve("o-1".into(), "ITEM", 3)).await }
    });
    for result in futures::future::join_all(replays).await {
        let reservation = result
            .expect("replay succeeds")
            .into_inner()
            .reservation
            .expect("reservation");
        assert_eq!(reservation.total.map(|m| m.amount_minor), Some(300));
    }
    assert_eq!(mesh.stock("ITEM").await.reserved, 3, "reserved once");
    for _ in 0..2 {
        let committed = client
            .commit_reservation(pb::CommitReservationRequest {
                order_id: "o-1".into(),
            })
            .await
            .expect("commit")
            .into_inner()
            .reservation
            .expect("reservation");
        assert_eq!(committed.status(), pb::ReservationStatus::Committed);
    }
    let item = mesh.stock("ITEM").await;
    assert_eq!((item.available, item.reserved, item.sold), (7, 0, 3));
    // Releasing a committed reservation returns the sold units (cancel).
    client
        .release_reservation(pb::ReleaseReservationRequest {
            order_id: "o-1".into(),
        })
        .await
        .expect("return");
    client
        .release_reservation(pb::ReleaseReservationRequest {
            order_id: "o-1".into(),
        })
        .await
        .expect("again");
    let item = mesh.stock("ITEM").await;
    assert_eq!((item.available, item.reserved, item.sold), (10, 0, 0));

    // Compensation may release an order before its (late) reservation
    // arrives: the late reservation must then hold nothing.
    client
        .release_reservation(pb::ReleaseReservationRequest {
            order_id: "o-2".into(),
        })
        .await
        .expect("release of an order never reserved");
    let late = client
        .reserve_stock(reserve("o-2".into(), "ITEM", 2))
        .await
        .expect("late reserve replays the release")
        .into_inner()
        .reservation
        .expect("reservation");
    assert_eq!(late.status(), pb::ReservationStatus::Released);
    assert_eq!(
        mesh.stock("ITEM").await.available,
        10,
        "nothing held for a released order"
    );
    mesh.shutdown().await;
}

async fn uncommitted_reservation_expires(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.catalogue = vec![scarce("ITEM", 4)];
    options.reservation_ttl = Duration::from_millis(300);
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let mut client = mesh.inventory.clone();
    client
        .reserve_stock(reserve("o-exp".into(), "ITEM", 4))
        .await
        .expect("reserve");
    assert_eq!(mesh.stock("ITEM").await.available, 0);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let item = mesh.stock("ITEM").await;
        if item.available == 4 {
            assert_eq!(item.reserved, 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reservation never expired: {item:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = client
        .commit_reservation(pb::CommitReservationRequest {
            order_id: "o-exp".into(),
        })
        .await
        .expect_err("expired reservations cannot be committed");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.get_details_error_info().map(|i| i.reason).as_deref(),
        Some("RESERVATION_EXPIRED")
    );
    mesh.shutdown().await;
}

async fn bad_requests_name_their_fields(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let mut client = mesh.inventory.clone();
    let err = client
        .reserve_stock(reserve(String::new(), "KB-001", -1))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["order_id", "lines[0].quantity"]);
    let err = client
        .reserve_stock(reserve("o".into(), "NOPE", 1))
        .await
        .expect_err("unknown sku");
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .get_stock(pb::GetStockRequest { sku: "NOPE".into() })
        .await
        .expect_err("unknown sku");
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "KB-001".into(),
            delta: -1000,
            reason: "loss".into(),
            request_id: "adj-1".into(),
        })
        .await
        .expect_err("below zero");
    assert_eq!(err.code(), Code::FailedPrecondition);
    for _ in 0..2 {
        client
            .adjust_stock(pb::AdjustStockRequest {
                sku: "KB-001".into(),
                delta: 5,
                reason: "restock".into(),
                request_id: "adj-2".into(),
            })
            .await
            .expect("restock");
    }
    assert_eq!(
        mesh.stock("KB-001").await.available,
        30,
        "a replayed adjustment applies once"
    );
    let err = client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "KB-001".into(),
            delta: 7,
            reason: "restock".into(),
            request_id: "adj-2".into(),
        })
        .await
        .expect_err("the key was used for another change");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(mesh.stock("KB-001").await.available, 30);
    mesh.shutdown().await;
}

/// Issue item 3: a release racing a reserve of the same order that is still
/// in flight. Whatever the interleaving, once both answered, the release's
/// answer is the truth: it reports the stock back (RELEASED) and nothing
/// stays reserved, or the reserve came second and replays the release.
async fn a_release_racing_an_in_flight_reserve_leaves_nothing_reserved(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.catalogue = vec![scarce("RACE", 10_000), scarce("RACE-B", 10_000)];
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    for round in 0..40 {
        let order_id = format!("race-{round}");
        let mut reserve_client = mesh.inventory.clone();
        let mut release_client = mesh.inventory.clone();
        let reserving = pb::ReserveStockRequest {
            order_id: order_id.clone(),
            customer_id: "alice".into(),
            // Two lines make the reserve's transaction longer.
            lines: vec![
                pb::StockLine {
                    sku: "RACE".into(),
                    quantity: 3,
                },
                pb::StockLine {
                    sku: "RACE-B".into(),
                    quantity: 2,
                },
            ],
        };
        let releasing = pb::ReleaseReservationRequest {
            order_id: order_id.clone(),
        };
        let (_, released) = tokio::join!(reserve_client.reserve_stock(reserving), async {
            // Vary the head start so every interleaving comes up.
            tokio::time::sleep(Duration::from_micros((round % 8) * 250)).await;
            release_client.release_reservation(releasing).await
        });
        let released = released
            .expect("release")
            .into_inner()
            .reservation
            .expect("reservation");
        assert_eq!(
            released.status(),
            pb::ReservationStatus::Released,
            "round {round}: the release reports the stock back: {released:?}"
        );
        let stored = mesh
            .inventory_store
            .reservation(&order_id)
            .await
            .expect("read")
            .expect("reservation");
        assert_eq!(
            stored.status,
            ordermesh_inventory::store::ReservationStatus::Released,
            "round {round}: nothing stays reserved after the release answered"
        );
    }
    for sku in ["RACE", "RACE-B"] {
        let item = mesh.stock(sku).await;
        assert_eq!((item.available, item.reserved), (10_000, 0), "{item:?}");
    }
    mesh.shutdown().await;
}

/// A multi-line reservation whose last line (in the SKU order rows are
/// locked in) fails gives back the lines it had already taken.
async fn a_failing_last_line_rolls_back_the_lines_taken(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.catalogue = vec![scarce("A-FIRST", 10), scarce("B-SECOND", 10), scarce("Z-LAST", 1)];
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let mut client = mesh.inventory.clone();
    let err = client
        .reserve_stock(pb::ReserveStockRequest {
            order_id: "rollback-1".into(),
            customer_id: "alice".into(),
            // Listed out of order on purpose: the store takes A, then B,
            // then fails on Z.
            lines: vec![
                pb::StockLine {
                    sku: "Z-LAST".into(),
                    quantity: 2,
                },
                pb::StockLine {
                    sku: "A-FIRST".into(),
                    quantity: 4,
                },
                pb::StockLine {
                    sku: "B-SECOND".into(),
                    quantity: 5,
                },
            ],
        })
        .await
        .expect_err("Z-LAST has one unit");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("Z-LAST"), "{}", err.message());
    for (sku, stock) in [("A-FIRST", 10), ("B-SECOND", 10), ("Z-LAST", 1)] {
        let item = mesh.stock(sku).await;
        assert_eq!(
            (item.available, item.reserved),
            (stock, 0),
            "{sku} given back: {item:?}"
        );
    }
    assert!(
        mesh.inventory_store
            .reservation("rollback-1")
            .await
            .expect("read")
            .is_none(),
        "nothing recorded: a retry may reserve once stock arrives"
    );
    mesh.shutdown().await;
}

/// Commits racing releases of the same reservations (a saga's commit and a
/// cancel's release arriving together), and commits racing each other:
/// whichever wins, the units move once. On PostgreSQL a commit of a
/// one-line reservation is the reservation read and then one statement
/// conditional on what was read; a release landing in between must leave
/// the statement writing nothing.
async fn commits_racing_releases_move_the_units_once(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.catalogue = vec![scarce("ITEM", 100)];
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    for round in 0..20 {
        let order_id = format!("race-{round}");
        let mut client = mesh.inventory.clone();
        client
            .reserve_stock(reserve(order_id.clone(), "ITEM", 2))
            .await
            .expect("reserved");
        let commit = |order_id: String| {
            let mut client = mesh.inventory.clone();
            async move {
                client
                    .commit_reservation(pb::CommitReservationRequest { order_id })
                    .await
            }
        };
        let release = |order_id: String| {
            let mut client = mesh.inventory.clone();
            async move {
                client
                    .release_reservation(pb::ReleaseReservationRequest { order_id })
                    .await
            }
        };
        let (a, b, released) = tokio::join!(
            commit(order_id.clone()),
            commit(order_id.clone()),
            release(order_id.clone())
        );
        let released = released.expect("a release always answers").into_inner();
        let status = released.reservation.expect("reservation").status();
        // A commit that answered committed came before the release, which
        // then returned the sold units; else the release came first and
        // every commit was refused.
        for result in [&a, &b] {
            if let Err(refused) = result {
                assert_eq!(
                    refused.code(),
                    Code::FailedPrecondition,
                    "round {round}: {refused:?}"
                );
            }
        }
        let committed = a.is_ok() || b.is_ok();
        let expected = if committed {
            pb::ReservationStatus::Returned
        } else {
            pb::ReservationStatus::Released
        };
        assert_eq!(status, expected, "round {round}: {a:?} {b:?}");
        let item = mesh.stock("ITEM").await;
        assert_eq!(
            (item.available, item.reserved, item.sold),
            (100, 0, 0),
            "round {round}: every unit back, moved once"
        );
    }
    mesh.shutdown().await;
}

both_backends!(
    commits_racing_releases_move_the_units_once,
    concurrent_reservations_sell_exactly_the_last_units,
    reserve_is_idempotent_by_order_and_commit_sells,
    uncommitted_reservation_expires,
    bad_requests_name_their_fields,
    a_release_racing_an_in_flight_reserve_leaves_nothing_reserved,
    a_failing_last_line_rolls_back_the_lines_taken,
);
