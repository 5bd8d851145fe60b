//! Inventory's stock rows, through the store on both backends:
//! transactions over the same SKUs never deadlock, whatever the order of
//! their lines; stock hovering around its low-stock threshold publishes one
//! StockLow per low episode, not one per order; a SKU's events carry
//! occurrence times that never run backwards.

use ordermesh_events::DomainEvent;
use ordermesh_inventory::store::{Line, ProductUpdate};
use ordermesh_inventory::{Config, SeedItem, Service};
use ordermesh_proto::events::v1::StockLow;
use ordermesh_tests::{Backend, both_backends, postgres_database};

fn item(sku: &str, stock: i64, threshold: i64) -> SeedItem {
    SeedItem {
        sku: sku.into(),
        name: format!("item {sku}"),
        unit_price_minor: 100,
        currency_code: "USD".into(),
        initial_stock: stock,
        low_stock_threshold: threshold,
    }
}

fn lines(skus: &[&str]) -> Vec<Line> {
    skus.iter()
        .map(|sku| Line {
            sku: (*sku).into(),
            quantity: 1,
        })
        .collect()
}

/// An inventory service (not serving; its relay publishes to an in-process
/// bus) on a fresh database, and the directory of its SQLite file.
async fn inventory(backend: Backend, seed: Vec<SeedItem>) -> Option<(Service, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = match backend {
        Backend::Sqlite => ordermesh_runtime::db::sqlite_url(dir.path(), "inventory").expect("sqlite url"),
        Backend::Postgres => postgres_database("inventory stock").await?,
    };
    let mut config = Config::new(url);
    config.seed = seed;
    let service = ordermesh_inventory::build(config)
        .await
        .expect("inventory builds");
    Some((service, dir))
}

/// Orders reserved as [B, A] are committed or released (their stock rows
/// updated in line order before the fix) while new orders reserve [A, B]
/// (in SKU order): on PostgreSQL the two orders of locks deadlock within a
/// few hundred transactions. Every call must succeed.
async fn opposite_line_orders_never_deadlock(backend: Backend) {
    let Some((service, _dir)) =
        inventory(backend, vec![item("A", 1_000_000, 0), item("B", 1_000_000, 0)]).await
    else {
        return;
    };
    let store = service.store().clone();
    const ORDERS: usize = 300;
    for i in 0..ORDERS {
        store
            .reserve(&format!("ba-{i}"), "alice", &lines(&["B", "A"]))
            .await
            .expect("reserve [B, A]");
    }
    const WORKERS: usize = 3;
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        // Each worker commits or releases its share of the [B, A] orders...
        let settle = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in (worker..ORDERS).step_by(WORKERS) {
                let order_id = format!("ba-{i}");
                let result = if i % 2 == 0 {
                    settle.commit(&order_id).await
                } else {
                    settle.release(&order_id).await
                };
                if let Err(e) = result {
                    failures.push(format!("settle {order_id}: {e}"));
                }
            }
            failures
        }));
        // ...while another reserves new orders [A, B].
        let reserve = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in (worker..ORDERS).step_by(WORKERS) {
                let order_id = format!("ab-{i}");
                if let Err(e) = reserve.reserve(&order_id, "alice", &lines(&["A", "B"])).await {
                    failures.push(format!("reserve {order_id}: {e}"));
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.expect("worker"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} calls failed, first: {:?}",
        failures.len(),
        2 * ORDERS,
        failures.first()
    );
    let (a, b) = (
        store.item("A").await.expect("A"),
        store.item("B").await.expect("B"),
    );
    for stock in [&a, &b] {
        assert_eq!(
            (stock.available, stock.reserved, stock.sold),
            (
                1_000_000 - ORDERS as i64 - ORDERS as i64 / 2,
                ORDERS as i64,
                ORDERS as i64 / 2
            ),
            "{}: half the [B, A] orders sold, the other half given back, every [A, B] order held",
            stock.sku
        );
    }
    drop(service);
}

/// StockLow rows the SKU's changes wrote to the outbox (sent or not).
async fn stock_lows(service: &Service, sku: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE ce_type = $1 AND aggregate_id = $2")
        .bind(StockLow::KIND.type_name)
        .bind(sku)
        .fetch_one(&service.store().db().read)
        .await
        .expect("count StockLow rows")
}

/// Stock 6, threshold 5: orders take 2 (down to 4, below) and give them
/// back (up to 6) by release and by expiry, again and again. One StockLow
/// (before hysteresis: one per order); a restock re-arms it, and the next
/// take below alerts again.
async fn stock_hovering_at_its_threshold_alerts_once_per_episode(backend: Backend) {
    let Some((service, _dir)) = inventory(backend, vec![item("LOW", 6, 5)]).await else {
        return;
    };
    let store = service.store();
    let two = [Line {
        sku: "LOW".into(),
        quantity: 2,
    }];
    for i in 0..10 {
        let order_id = format!("hover-{i}");
        store.reserve(&order_id, "alice", &two).await.expect("reserve");
        if i % 2 == 0 {
            store.release(&order_id).await.expect("release");
        } else {
            // Given back by its deadline instead.
            sqlx::query("UPDATE reservations SET expire_time = 0 WHERE order_id = $1")
                .bind(&order_id)
                .execute(&store.db().write)
                .await
                .expect("backdate the deadline");
            assert!(
                store.expire(&order_id).await.expect("expire"),
                "{order_id} expires"
            );
        }
    }
    assert_eq!(store.item("LOW").await.expect("LOW").available, 6);
    assert_eq!(
        stock_lows(&service, "LOW").await,
        1,
        "one alert while stock hovers"
    );
    // A negative adjustment below is a take too: still the same episode.
    store
        .adjust("LOW", -3, "shrinkage", "adj-1")
        .await
        .expect("adjust");
    store
        .adjust("LOW", 1, "found one", "adj-2")
        .await
        .expect("adjust");
    assert_eq!(stock_lows(&service, "LOW").await, 1, "still low, already alerted");
    // A restock above the threshold re-arms; the next take below alerts.
    store.adjust("LOW", 10, "restock", "adj-3").await.expect("adjust");
    let big = [Line {
        sku: "LOW".into(),
        quantity: 12,
    }];
    store
        .reserve("after-restock", "alice", &big)
        .await
        .expect("reserve");
    assert_eq!(
        stock_lows(&service, "LOW").await,
        2,
        "a new episode after the restock"
    );
    // Lowering the threshold under the stock re-arms too; raising it again
    // alerts at the next take.
    store
        .update_product(
            "LOW",
            &ProductUpdate {
                low_stock_threshold: Some(2),
                ..ProductUpdate::default()
            },
        )
        .await
        .expect("lower the threshold");
    store
        .update_product(
            "LOW",
            &ProductUpdate {
                low_stock_threshold: Some(5),
                ..ProductUpdate::default()
            },
        )
        .await
        .expect("raise the threshold");
    assert_eq!(
        stock_lows(&service, "LOW").await,
        2,
        "a threshold change never alerts by itself"
    );
    store
        .reserve("after-threshold", "alice", &two[..])
        .await
        .expect("reserve");
    assert_eq!(
        stock_lows(&service, "LOW").await,
        3,
        "armed by the lowered threshold"
    );
    drop(service);
}

/// Many concurrent adjustments of one SKU (each reads the clock before it
/// waits for the SKU's row): its events, in their order in the aggregate,
/// have non-decreasing occurrence times (`ce-time`, and the payload's
/// `occur_time`, which it is taken from), as does the row's `update_time`.
async fn a_skus_event_times_never_run_backwards(backend: Backend) {
    let Some((service, _dir)) = inventory(backend, vec![item("HOT", 1_000, 0)]).await else {
        return;
    };
    let store = service.store().clone();
    const ADJUSTMENTS: usize = 300;
    let tasks: Vec<_> = (0..ADJUSTMENTS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let delta = if i % 2 == 0 { 1 } else { -1 };
                store.adjust("HOT", delta, "count", &format!("adj-{i}")).await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("adjust");
    }
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT aggregate_seq, occur_us FROM outbox WHERE aggregate_id = $1 ORDER BY aggregate_seq",
    )
    .bind("HOT")
    .fetch_all(&store.db().read)
    .await
    .expect("outbox rows");
    assert_eq!(rows.len(), ADJUSTMENTS, "one StockAdjusted each");
    let backwards: Vec<_> = rows
        .windows(2)
        .filter(|pair| pair[1].1 < pair[0].1)
        .map(|pair| (pair[0], pair[1]))
        .collect();
    assert!(
        backwards.is_empty(),
        "{} of {} consecutive events go back in time, first (seq, occur_us): {:?}",
        backwards.len(),
        ADJUSTMENTS - 1,
        backwards.first()
    );
    let last = rows.last().expect("rows").1;
    assert_eq!(
        store.item("HOT").await.expect("HOT").update_time,
        last,
        "the row's time is the last event's"
    );
    drop(service);
}

both_backends!(
    opposite_line_orders_never_deadlock,
    stock_hovering_at_its_threshold_alerts_once_per_episode,
    a_skus_event_times_never_run_backwards
);
