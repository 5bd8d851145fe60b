//! The outbox relay against a real PostgreSQL, where transactions commit in
//! any order: an aggregate's events are published in their order even when
//! the transaction of the first one commits after hundreds of other rows
//! and after the relay's cursor has moved past it.
//!
//! PostgreSQL only: SQLite has one writer at a time, so a row cannot commit
//! behind rows inserted after it there.

use std::time::Duration;

use futures::StreamExt;
use ordermesh_events::relay::Rounds;
use ordermesh_events::{Bus, BusSettings, DomainEvent, Event, outbox};
use ordermesh_proto::events::v1 as pb;
use ordermesh_tests::postgres_database;
use sqlx::AnyPool;

const SOURCE: &str = "/ordermesh/test";

/// A fresh PostgreSQL database holding only the outbox.
async fn outbox_database(label: &str) -> Option<AnyPool> {
    let url = postgres_database(label).await?;
    let pool = AnyPool::connect(&url).await.expect("connect");
    sqlx::raw_sql(outbox::DDL)
        .execute(&pool)
        .await
        .expect("outbox DDL");
    Some(pool)
}

fn low(sku: &str) -> Event {
    Event::new(
        SOURCE,
        &pb::StockLow {
            sku: sku.into(),
            available: 1,
            threshold: 5,
            order_id: String::new(),
            occur_time: Some(ordermesh_runtime::clock::timestamp(
                ordermesh_runtime::clock::now_micros(),
            )),
        },
        None,
    )
}

fn adjusted(sku: &str) -> Event {
    Event::new(
        SOURCE,
        &pb::StockAdjusted {
            sku: sku.into(),
            request_id: sku.into(),
            delta: 1,
            available: 1,
            occur_time: Some(ordermesh_runtime::clock::timestamp(
                ordermesh_runtime::clock::now_micros(),
            )),
        },
        None,
    )
}

async fn commit_one(pool: &AnyPool, event: &Event) {
    let mut tx = pool.begin().await.expect("begin");
    outbox::insert(&mut tx, event).await.expect("insert");
    tx.commit().await.expect("commit");
}

/// X1 is inserted in a transaction that stays open while 300 other rows
/// commit and a full round moves the relay's cursor past X1's key; then X1
/// commits, X2 (same aggregate) commits, and the relay goes on. The stream
/// must get X1 before X2 (before the fix, the read after the cursor
/// published X2 and the next read from the start X1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_is_published_before_its_successor() {
    let Some(pool) = outbox_database("late commit").await else {
        return;
    };
    let bus = Bus::in_process(BusSettings::default());
    let mut published = bus
        .tail(&pb::StockLow::KIND.subject())
        .await
        .expect("tail StockLow");
    let (x1, x2) = (low("X"), low("X"));

    let mut late = pool.begin().await.expect("begin");
    outbox::insert(&mut late, &x1).await.expect("insert X1");
    for i in 0..300 {
        commit_one(&pool, &adjusted(&format!("other-{i}"))).await;
    }
    let mut rounds = Rounds::new(pool.clone(), bus.clone(), 256, Duration::ZERO);
    assert_eq!(
        rounds.round().await.expect("round"),
        256,
        "a full batch: the cursor moves on"
    );
    rounds.flush_marks(true).await;
    late.commit().await.expect("X1 commits, behind the cursor");
    commit_one(&pool, &x2).await;
    for _ in 0..3 {
        rounds.round().await.expect("round");
        rounds.flush_marks(true).await;
    }
    assert_eq!(
        outbox::pending_count(&pool).await.expect("pending"),
        0,
        "all published"
    );

    let mut order = Vec::new();
    while order.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), published.next())
            .await
            .expect("both X events published")
            .expect("tail open")
            .expect("event");
        order.push(event.id);
    }
    assert_eq!(
        order,
        vec![x1.id.clone(), x2.id.clone()],
        "X1 (seq 1) before X2 (seq 2)"
    );
}
