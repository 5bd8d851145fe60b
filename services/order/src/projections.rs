//! The order service's consumers of events (event sourcing for the audit
//! trail, and a notifier):
//! - the timeline: three durable consumers, one per stream (orders,
//!   inventory, payments), append every event about an order to its
//!   timeline, which `GetOrderTimeline` reads in occurrence order;
//! - the notifier: one consumer of OrderConfirmed records one notice per
//!   confirmed order.
//!
//! A redelivery (a consumer killed mid-way, an ack lost) changes nothing:
//! the notifier records its notice in the same transaction as its inbox
//! entry; the timeline needs no inbox, because its one write is keyed by the
//! event id itself (`ON CONFLICT DO NOTHING`), so a fetched batch is one
//! multi-row INSERT where an inbox would make each event a transaction of
//! three (six events per order).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sqlx::AnyConnection;

use ordermesh_events::{BoundedContext, DomainEvent, Event, Handler, HandlerError, TxHandler};
use ordermesh_proto::common::v1::Money;
use ordermesh_proto::events::v1 as pb;
use ordermesh_runtime::clock;

use crate::store::projections::{self, Notice, TimelineEntry};

/// The timeline's durable consumers, one per stream.
pub const TIMELINE_CONSUMERS: [(&str, BoundedContext); 3] = [
    ("order-timeline-orders", BoundedContext::Orders),
    ("order-timeline-inventory", BoundedContext::Inventory),
    ("order-timeline-payments", BoundedContext::Payments),
];

/// The notifier's durable consumer.
pub const NOTIFIER: &str = "order-confirmation-notices";

fn money(amount: Option<&Money>) -> String {
    match amount {
        Some(m) => format!(
            "{} {}.{:02}",
            m.currency_code,
            m.amount_minor.div_euclid(100),
            m.amount_minor.rem_euclid(100)
        ),
        None => "no amount".into(),
    }
}

fn lines(lines: &[pb::StockLine]) -> String {
    lines
        .iter()
        .map(|l| format!("{} x {} at {}", l.quantity, l.sku, money(l.unit_price.as_ref())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn undecodable(e: ordermesh_events::Error) -> HandlerError {
    HandlerError::poison(format!("cannot decode the payload: {e}"))
}

/// A store failure under a consumer: an outage is waited out, a refused row
/// is poison (by the events crate's classification), the rest retried.
fn store_failure(e: crate::error::Error) -> HandlerError {
    match e {
        crate::error::Error::Infra(infra) => infra.into(),
        other => HandlerError::failed(other.to_string()),
    }
}

/// The order an event concerns and a short account of it; `None` for
/// events about no order (a restock, a product update).
pub fn describe(event: &Event) -> Result<Option<(String, String)>, HandlerError> {
    macro_rules! is {
        ($ty:ty) => {
            event.ce_type == <$ty as DomainEvent>::KIND.type_name
        };
    }
    let described = if is!(pb::OrderCreated) {
        let e: pb::OrderCreated = event.decode().map_err(undecodable)?;
        let ordered: Vec<String> = e
            .lines
            .iter()
            .map(|l| format!("{} x {}", l.quantity, l.sku))
            .collect();
        (e.order_id, format!("order placed: {}", ordered.join(", ")))
    } else if is!(pb::OrderConfirmed) {
        let e: pb::OrderConfirmed = event.decode().map_err(undecodable)?;
        (
            e.order_id,
            format!("order confirmed: {} charged", money(e.total.as_ref())),
        )
    } else if is!(pb::OrderRejected) {
        let e: pb::OrderRejected = event.decode().map_err(undecodable)?;
        let reason = e
            .reject_reason()
            .as_str_name()
            .trim_start_matches("REJECT_REASON_")
            .to_owned();
        (
            e.order_id,
            format!("order rejected: {reason} ({})", e.reject_detail),
        )
    } else if is!(pb::OrderCancelled) {
        let e: pb::OrderCancelled = event.decode().map_err(undecodable)?;
        (
            e.order_id,
            format!("order cancelled: {} refunded", money(e.refund.as_ref())),
        )
    } else if is!(pb::StockReserved) {
        let e: pb::StockReserved = event.decode().map_err(undecodable)?;
        (e.order_id.clone(), format!("stock reserved: {}", lines(&e.lines)))
    } else if is!(pb::StockCommitted) {
        let e: pb::StockCommitted = event.decode().map_err(undecodable)?;
        (e.order_id.clone(), format!("stock sold: {}", lines(&e.lines)))
    } else if is!(pb::StockReleased) {
        let e: pb::StockReleased = event.decode().map_err(undecodable)?;
        let cause = e
            .cause()
            .as_str_name()
            .trim_start_matches("RELEASE_CAUSE_")
            .to_lowercase();
        (
            e.order_id.clone(),
            format!("stock back ({cause}): {}", lines(&e.lines)),
        )
    } else if is!(pb::StockLow) {
        let e: pb::StockLow = event.decode().map_err(undecodable)?;
        if e.order_id.is_empty() {
            return Ok(None);
        }
        (
            e.order_id,
            format!(
                "stock of {} low: {} left (threshold {})",
                e.sku, e.available, e.threshold
            ),
        )
    } else if is!(pb::PaymentAuthorized) {
        let e: pb::PaymentAuthorized = event.decode().map_err(undecodable)?;
        (
            e.order_id,
            format!("payment authorized: {} held", money(e.amount.as_ref())),
        )
    } else if is!(pb::PaymentCaptured) {
        let e: pb::PaymentCaptured = event.decode().map_err(undecodable)?;
        (
            e.order_id,
            format!("payment captured: {}", money(e.amount.as_ref())),
        )
    } else if is!(pb::PaymentVoided) {
        let e: pb::PaymentVoided = event.decode().map_err(undecodable)?;
        (
            e.order_id,
            format!("payment voided: {} released", money(e.amount.as_ref())),
        )
    } else if is!(pb::PaymentRefunded) {
        let e: pb::PaymentRefunded = event.decode().map_err(undecodable)?;
        (
            e.order_id,
            format!("payment refunded: {}", money(e.amount.as_ref())),
        )
    } else {
        return Ok(None);
    };
    Ok(Some(described).filter(|(order_id, _)| !order_id.is_empty()))
}

/// Appends each event about an order to its timeline.
pub struct Timeline {
    pool: sqlx::AnyPool,
}

impl Timeline {
    /// Writes through `pool` (the service's write pool).
    pub fn new(pool: sqlx::AnyPool) -> Self {
        Self { pool }
    }
}

impl Handler for Timeline {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        self.handle_batch(&[event]).await.pop().unwrap_or(Ok(()))
    }

    /// One INSERT (one commit) for every event of the fetched batch that
    /// concerns an order; an undecodable event fails alone, and so does a
    /// row the database refuses (the batch is then written row by row).
    async fn handle_batch(&self, events: &[&Event]) -> Vec<Result<(), HandlerError>> {
        let mut results = Vec::with_capacity(events.len());
        // Each entry with the index of its event's result.
        let mut entries = Vec::with_capacity(events.len());
        let mut owners = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            match describe(event) {
                Ok(Some((order_id, summary))) => {
                    owners.push(i);
                    entries.push(TimelineEntry {
                        order_id,
                        event_id: event.id.clone(),
                        occur_time: event.time_us,
                        ce_type: event.ce_type.clone(),
                        ce_source: event.source.clone(),
                        summary,
                        payload: BASE64.encode(&event.data),
                    });
                    results.push(Ok(()));
                }
                Ok(None) => results.push(Ok(())),
                Err(e) => results.push(Err(e)),
            }
        }
        if entries.is_empty() || self.write(&entries).await.is_ok() {
            return results;
        }
        for (&i, entry) in owners.iter().zip(&entries) {
            if let Err(e) = self.write(std::slice::from_ref(entry)).await {
                results[i] = Err(store_failure(e));
            }
        }
        results
    }
}

impl Timeline {
    async fn write(&self, entries: &[TimelineEntry]) -> Result<(), crate::error::Error> {
        let mut conn = self.pool.acquire().await?;
        projections::record_timeline(&mut conn, entries).await
    }
}

/// Records one confirmation notice per confirmed order.
pub struct Notifier;

impl TxHandler for Notifier {
    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        let confirmed: pb::OrderConfirmed = event.decode().map_err(undecodable)?;
        let notice = Notice {
            message: format!(
                "Your order {} is confirmed: {} charged.",
                confirmed.order_id,
                money(confirmed.total.as_ref())
            ),
            order_id: confirmed.order_id,
            event_id: event.id.clone(),
            customer_id: confirmed.customer_id,
            create_time: clock::now_micros(),
        };
        projections::record_notice(conn, &notice)
            .await
            .map_err(store_failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<E: DomainEvent>(payload: &E) -> Event {
        Event::new("/test", payload, None)
    }

    #[test]
    fn every_event_about_an_order_is_described_and_others_are_skipped() {
        let usd = |amount| Some(Money::new(amount, "USD"));
        let line = pb::StockLine {
            sku: "KB-001".into(),
            quantity: 2,
            unit_price: usd(8999),
        };
        let cases: Vec<(Event, &str)> = vec![
            (
                event(&pb::OrderCreated {
                    order_id: "o1".into(),
                    lines: vec![pb::OrderedLine {
                        sku: "KB-001".into(),
                        quantity: 2,
                    }],
                    ..Default::default()
                }),
                "order placed: 2 x KB-001",
            ),
            (
                event(&pb::StockReserved {
                    order_id: "o1".into(),
                    lines: vec![line.clone()],
                    ..Default::default()
                }),
                "stock reserved: 2 x KB-001 at USD 89.99",
            ),
            (
                event(&pb::PaymentAuthorized {
                    order_id: "o1".into(),
                    amount: usd(17998),
                    ..Default::default()
                }),
                "payment authorized: USD 179.98 held",
            ),
            (
                event(&pb::StockReleased {
                    order_id: "o1".into(),
                    lines: vec![line],
                    cause: pb::ReleaseCause::Expired.into(),
                    ..Default::default()
                }),
                "stock back (expired): 2 x KB-001 at USD 89.99",
            ),
            (
                event(&pb::OrderRejected {
                    order_id: "o1".into(),
                    reject_reason: ordermesh_proto::order::v1::RejectReason::OutOfStock.into(),
                    reject_detail: "LT-005".into(),
                    ..Default::default()
                }),
                "order rejected: OUT_OF_STOCK (LT-005)",
            ),
        ];
        for (event, summary) in cases {
            let (order_id, described) = describe(&event).expect("decodes").expect("about an order");
            assert_eq!((order_id.as_str(), described.as_str()), ("o1", summary));
        }
        let restock = event(&pb::StockAdjusted {
            sku: "KB-001".into(),
            delta: 5,
            ..Default::default()
        });
        assert_eq!(describe(&restock).expect("decodes"), None);
        let low_without_order = event(&pb::StockLow {
            sku: "KB-001".into(),
            ..Default::default()
        });
        assert_eq!(describe(&low_without_order).expect("decodes"), None);
    }
}
