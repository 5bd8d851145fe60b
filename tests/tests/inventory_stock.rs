//! Inventory's stock rows under concurrency, through the store on both
//! backends: transactions over the same SKUs never deadlock, whatever the
//! order of their lines.

use ordermesh_inventory::store::Line;
use ordermesh_inventory::{Config, SeedItem, Service};
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
            .reserve(&format!("ba-{i}"), &lines(&["B", "A"]))
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
                if let Err(e) = reserve.reserve(&order_id, &lines(&["A", "B"])).await {
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

both_backends!(opposite_line_orders_never_deadlock);
