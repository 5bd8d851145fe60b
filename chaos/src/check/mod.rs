//! The checker: pure functions from a history and a snapshot (both plain
//! data, see [`snapshot`]) to violations. No I/O here: the collector
//! ([`crate::collect`]) reads the public APIs and NATS, the history is read
//! from its file, and each rule below is unit-tested with small hand-made
//! histories that break it (`check/tests/`).
//!
//! The rules, by module:
//! - [`orders`]: every order the client saw accepted is terminal (or its saga
//!   waits for an operator, listed with its reason); an acknowledged cancel
//!   ended `CANCELLED`, refunded and restocked; one order per request id, with
//!   the lines asked for; a terminal status a watch saw is final.
//! - [`stock`]: stock conserved per SKU, sold units are the confirmed orders',
//!   nothing reserved for a terminal order.
//! - [`money`]: nothing held or captured for an order that is not confirmed,
//!   each capture a confirmed order's, each movement posted once, the ledger
//!   balanced.
//! - [`events`]: every event once per stream and once per timeline, in causal
//!   order per aggregate; the events of an order present (unless an
//!   empty-store NATS restart may have lost them); one confirmation notice
//!   per confirmed order; no dead letters; no panics; no process exited
//!   unasked.
//! - [`outage`]: no order rejected `SERVICE_UNAVAILABLE` unless the faults
//!   around it made an outage at least as long as the saga's patience.

pub mod events;
pub mod money;
pub mod orders;
pub mod outage;
pub mod snapshot;
pub mod stock;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::{History, OpKind};
use crate::schedule::FaultKind;
use snapshot::{OrderSnap, Snapshot};

/// A promise the run checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// An order the client saw accepted is missing from ListOrders.
    OrderLost,
    /// An order is not terminal after the settle time, and no saga waits for an operator.
    NotTerminal,
    /// An acknowledged cancel did not end cancelled, refunded and restocked.
    CancelNotHonoured,
    /// Two orders for one request id, or an order without the lines asked for.
    RequestId,
    /// A terminal status a watch reported changed afterwards.
    StatusChanged,
    /// available + reserved + sold differs from the initial stock plus adjustments,
    /// or sold units differ from the confirmed orders'.
    StockNotConserved,
    /// A terminal order's reservation is not in the state its status demands.
    Reservation,
    /// Money held or taken for an order that is not confirmed, or a confirmed
    /// order not charged its total.
    Money,
    /// A payment's ledger entries do not match its status (a movement posted twice or lost).
    Posting,
    /// VerifyLedger says the ledger does not balance.
    Ledger,
    /// An event id twice in a stream.
    DuplicateEvent,
    /// Events of one aggregate out of causal order, or one that may happen once twice.
    EventOrder,
    /// An event an order must have is not in its stream.
    EventMissing,
    /// A stream is missing at the end.
    StreamMissing,
    /// An event twice in a timeline, out of order, or missing from it.
    Timeline,
    /// Not exactly one confirmation notice per confirmed order.
    Notice,
    /// A dead letter, and the run injected no poison message.
    DeadLetter,
    /// A process panicked.
    Panic,
    /// A process exited without being killed.
    Exited,
    /// Rejected SERVICE_UNAVAILABLE, but the outage around it was shorter than the patience.
    UnavailableTooSoon,
}

/// A broken promise; `order_id` when it concerns one order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Violation {
    pub rule: Rule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    pub detail: String,
}

impl Violation {
    pub fn of_order(rule: Rule, order_id: &str, detail: impl Into<String>) -> Self {
        Violation {
            rule,
            order_id: Some(order_id.to_owned()),
            detail: detail.into(),
        }
    }

    pub fn general(rule: Rule, detail: impl Into<String>) -> Self {
        Violation {
            rule,
            order_id: None,
            detail: detail.into(),
        }
    }
}

/// An unfinished order whose saga stopped for an operator: allowed, listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attention {
    pub order_id: String,
    pub status: String,
    pub step: String,
    pub last_error: String,
}

/// A check skipped for a reason the run itself caused (e.g. the events a
/// wiped NATS store lost), counted in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Excused {
    pub rule: Rule,
    pub order_id: String,
    pub why: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Findings {
    pub violations: Vec<Violation>,
    pub attention: Vec<Attention>,
    pub excused: Vec<Excused>,
}

impl Findings {
    pub fn push(&mut self, violation: Violation) {
        self.violations.push(violation);
    }

    pub fn excuse(&mut self, rule: Rule, order_id: &str, why: impl Into<String>) {
        self.excused.push(Excused {
            rule,
            order_id: order_id.to_owned(),
            why: why.into(),
        });
    }

    pub fn of_rule(&self, rule: Rule) -> Vec<&Violation> {
        self.violations.iter().filter(|v| v.rule == rule).collect()
    }
}

/// Every rule over one run.
pub fn check(history: &History, snapshot: &Snapshot) -> Findings {
    let mut findings = Findings::default();
    orders::check(history, snapshot, &mut findings);
    stock::check(history, snapshot, &mut findings);
    money::check(snapshot, &mut findings);
    events::check(history, snapshot, &mut findings);
    outage::check(history, snapshot, &mut findings);
    findings.violations.sort();
    findings
}

/// Orders by id.
pub fn order_index(snapshot: &Snapshot) -> BTreeMap<&str, &OrderSnap> {
    snapshot.orders.iter().map(|o| (o.order_id.as_str(), o)).collect()
}

/// When the order began, on the history's scale: the first CreateOrder sent
/// with its request id, else the service's create time.
pub fn order_start_ms(history: &History, order: &OrderSnap) -> i64 {
    history
        .ops
        .iter()
        .filter(|op| op.op == OpKind::Create && op.request_id == order.request_id)
        .map(|op| op.start_ms as i64)
        .min()
        .unwrap_or_else(|| history.ms_of_micros(order.create_us))
}

/// When the order last changed, on the history's scale.
pub fn order_end_ms(history: &History, order: &OrderSnap) -> i64 {
    history.ms_of_micros(order.update_us)
}

/// The start of the last empty-store NATS restart, if the run had one: the
/// events of an order created before it may be gone from the streams.
pub fn last_wipe_ms(history: &History) -> Option<i64> {
    history
        .faults
        .iter()
        .filter(|f| f.fault.kind() == FaultKind::NatsWipe)
        .map(|f| f.start_ms as i64)
        .max()
}

/// How long after a wipe's recorded start the old server may still have
/// acknowledged a publish: the moment is taken before the run takes the
/// cluster's lock and kills the server.
pub const WIPE_GRACE_MS: i64 = 250;

/// Whether the streams can be expected to hold all of this order's events.
pub fn events_kept(history: &History, order: &OrderSnap) -> bool {
    match last_wipe_ms(history) {
        None => true,
        Some(wipe) => {
            let after = wipe + WIPE_GRACE_MS;
            order_start_ms(history, order) >= after && history.ms_of_micros(order.create_us) >= after
        }
    }
}

#[cfg(test)]
mod tests;
