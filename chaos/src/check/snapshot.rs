//! What the collector read through the public APIs once the run settled,
//! as plain data: statuses are the proto enum names without their prefix
//! (`CONFIRMED`, `COMMITTED`, `REFUNDED`), event types the payload's short
//! name (`OrderConfirmed`). Plain data so the checks are pure functions a
//! test feeds by hand, and so the run can save it beside the history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::Line;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every order (ListOrders).
    pub orders: Vec<OrderSnap>,
    /// Every unfinished saga (OrderAdminService/ListSagas).
    pub sagas: Vec<SagaSnap>,
    /// Each order's reservation (GetReservation); absent when it has none.
    pub reservations: BTreeMap<String, ReservationSnap>,
    /// Every payment of the run's accounts (ListPayments), with its ledger entries.
    pub payments: Vec<PaymentSnap>,
    pub ledger: LedgerSnap,
    /// Each SKU's stock (ListStock).
    pub stock: BTreeMap<String, StockSnap>,
    /// Each order's timeline (GetOrderTimeline), in the service's order.
    pub timelines: BTreeMap<String, Vec<EventSnap>>,
    /// OrderAdminService/ListConfirmationNotices.
    pub notices: Vec<NoticeSnap>,
    /// Each stream read from sequence 1 (ORDERS, INVENTORY, PAYMENTS, DEADLETTER).
    pub streams: BTreeMap<String, StreamSnap>,
    /// EventAdminService/ListDeadLetters of every service, de-duplicated.
    pub dead_letters: Vec<DeadLetterSnap>,
    /// `panicked at` lines in the processes' logs.
    pub panics: Vec<PanicSnap>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderSnap {
    pub order_id: String,
    pub request_id: String,
    pub customer_id: String,
    pub status: String,
    /// Empty unless rejected.
    pub reject_reason: String,
    pub reject_detail: String,
    pub lines: Vec<Line>,
    pub total_minor: i64,
    /// Service clock, µs since the epoch.
    pub create_us: i64,
    pub update_us: i64,
}

impl OrderSnap {
    pub fn terminal(&self) -> bool {
        is_terminal(&self.status)
    }

    /// Confirmed now, or confirmed before it was cancelled.
    pub fn was_confirmed(&self) -> bool {
        matches!(self.status.as_str(), "CONFIRMED" | "CANCELLED")
    }
}

pub fn is_terminal(status: &str) -> bool {
    matches!(status, "CONFIRMED" | "REJECTED" | "CANCELLED")
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SagaSnap {
    pub order_id: String,
    pub state: String,
    pub step: String,
    pub needs_attention: bool,
    pub last_error: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReservationSnap {
    pub status: String,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PaymentSnap {
    pub payment_id: String,
    pub account_id: String,
    /// The order id (the saga's reference).
    pub reference: String,
    pub status: String,
    pub amount_minor: i64,
    /// Its entries in the ledger (ListLedgerEntries by payment id).
    pub ledger_entries: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerSnap {
    pub balanced: bool,
    pub mismatched_accounts: Vec<String>,
}

impl Default for LedgerSnap {
    fn default() -> Self {
        LedgerSnap {
            balanced: true,
            mismatched_accounts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockSnap {
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
}

/// One event, in a stream or a timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSnap {
    /// The stream sequence (0 in a timeline).
    pub seq: u64,
    /// `ce-id`.
    pub id: String,
    /// The payload's short name, e.g. `OrderConfirmed`.
    pub kind: String,
    /// `ce-subject`: the aggregate (order id, payment id or SKU).
    pub aggregate: String,
}

impl EventSnap {
    pub fn new(seq: u64, id: &str, kind: &str, aggregate: &str) -> Self {
        EventSnap {
            seq,
            id: id.to_owned(),
            kind: kind.to_owned(),
            aggregate: aggregate.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamSnap {
    /// False when the stream was not on the server at the end.
    pub exists: bool,
    pub events: Vec<EventSnap>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoticeSnap {
    pub order_id: String,
    pub event_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterSnap {
    pub id: String,
    pub consumer: String,
    pub event_type: String,
    pub subject: String,
    pub error: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PanicSnap {
    pub proc: String,
    pub line: String,
}
