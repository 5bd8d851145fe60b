//! Event payloads and consumer handlers shared by the tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::{AnyConnection, AnyPool};

use ordermesh_events::envelope::timestamp;
use ordermesh_events::{Event, Handler, HandlerError, Outbox, TxHandler};
use ordermesh_proto::common::v1::Money;
use ordermesh_proto::events::v1 as pb;

pub fn order_created(order_id: &str) -> pb::OrderCreated {
    pb::OrderCreated {
        order_id: order_id.into(),
        customer_id: "alice".into(),
        lines: vec![pb::OrderedLine {
            sku: "KB-001".into(),
            quantity: 1,
        }],
        occur_time: Some(timestamp(ordermesh_events::envelope::now_micros())),
    }
}

pub fn order_confirmed(order_id: &str) -> pb::OrderConfirmed {
    pb::OrderConfirmed {
        order_id: order_id.into(),
        customer_id: "alice".into(),
        total: Some(Money::new(8999, "USD")),
        payment_id: format!("pay-{order_id}"),
        occur_time: Some(timestamp(ordermesh_events::envelope::now_micros())),
    }
}

pub fn payment_captured(payment_id: &str, order_id: &str) -> pb::PaymentCaptured {
    pb::PaymentCaptured {
        payment_id: payment_id.into(),
        order_id: order_id.into(),
        account_id: "alice".into(),
        amount: Some(Money::new(8999, "USD")),
        occur_time: Some(timestamp(ordermesh_events::envelope::now_micros())),
    }
}

/// Writes `OrderCreated` for `order_id` in its own committed transaction.
pub async fn commit_created(pool: &AnyPool, outbox: &Outbox, order_id: &str) -> Event {
    let mut tx = pool.begin().await.expect("begin");
    let event = outbox
        .add(
            &mut tx,
            &order_created(order_id),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        )
        .await
        .expect("outbox insert");
    tx.commit().await.expect("commit");
    event
}

/// Records one `effects` row per processing, in the inbox transaction.
/// While `broken` is set it fails (unclassified: retried, then
/// dead-lettered) instead; while `hang` is
/// set it writes the effect and then never finishes (a worker that dies
/// mid-handling once its task is aborted).
#[derive(Clone, Default)]
pub struct Recorder {
    pub consumer: String,
    pub calls: Arc<AtomicUsize>,
    pub broken: Arc<AtomicBool>,
    pub hang: Arc<AtomicBool>,
}

impl Recorder {
    pub fn new(consumer: &str) -> Self {
        Self {
            consumer: consumer.into(),
            ..Self::default()
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TxHandler for Recorder {
    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // Decoding with the generated type is part of handling.
        event.decode::<pb::OrderCreated>()?;
        if self.broken.load(Ordering::SeqCst) {
            return Err(HandlerError::failed("downstream unavailable"));
        }
        sqlx::query("INSERT INTO effects (consumer, event_id) VALUES ($1, $2)")
            .bind(&self.consumer)
            .bind(&event.id)
            .execute(&mut *conn)
            .await?;
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Counts finished calls of any handler (including ones the inbox answers),
/// so a count reached means the call's effects are committed.
pub struct Counted<H> {
    pub inner: H,
    pub calls: Arc<AtomicUsize>,
}

impl<H: Handler> Handler for Counted<H> {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let result = self.inner.handle(event).await;
        self.calls.fetch_add(1, Ordering::SeqCst);
        result
    }
}

pub const SHORT: Duration = Duration::from_secs(15);
