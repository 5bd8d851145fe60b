//! Events: each once per stream (by `ce-id`) and once per order timeline;
//! per aggregate in causal order (an order is created before it is
//! confirmed or rejected and confirmed before it is cancelled; a payment is
//! authorized before it is captured and captured before it is refunded;
//! stock is reserved before it is committed or released), and what may
//! happen once, once; every order's own events present in its stream and
//! its timeline; one confirmation notice per order ever confirmed; no dead
//! letters; no panics; no process exiting unasked.
//!
//! Presence is excused for an order created before an empty-store NATS
//! restart (its events may have been in the store that was deleted);
//! duplicates and order are never excused.

use std::collections::{BTreeMap, BTreeSet};

use super::snapshot::{EventSnap, Snapshot};
use super::{Findings, Rule, Violation, events_kept};
use crate::history::History;

/// The streams the services publish to.
pub const STREAMS: [&str; 3] = ["ORDERS", "INVENTORY", "PAYMENTS"];

/// What may happen once, what must come first, what excludes what, for one
/// kind of aggregate.
pub struct Causality {
    pub once: &'static [&'static str],
    /// (a, b): when both are present, a comes first.
    pub before: &'static [(&'static str, &'static str)],
    pub exclusive: &'static [(&'static str, &'static str)],
}

pub const ORDER: Causality = Causality {
    once: &[
        "OrderCreated",
        "OrderConfirmed",
        "OrderRejected",
        "OrderCancelled",
    ],
    before: &[
        ("OrderCreated", "OrderConfirmed"),
        ("OrderCreated", "OrderRejected"),
        ("OrderCreated", "OrderCancelled"),
        ("OrderConfirmed", "OrderCancelled"),
    ],
    exclusive: &[
        ("OrderConfirmed", "OrderRejected"),
        ("OrderRejected", "OrderCancelled"),
    ],
};

pub const STOCK: Causality = Causality {
    once: &["StockReserved", "StockCommitted", "StockReleased"],
    before: &[
        ("StockReserved", "StockCommitted"),
        ("StockReserved", "StockReleased"),
        ("StockCommitted", "StockReleased"),
    ],
    exclusive: &[],
};

pub const PAYMENT: Causality = Causality {
    once: &[
        "PaymentAuthorized",
        "PaymentCaptured",
        "PaymentVoided",
        "PaymentRefunded",
    ],
    before: &[
        ("PaymentAuthorized", "PaymentCaptured"),
        ("PaymentAuthorized", "PaymentVoided"),
        ("PaymentAuthorized", "PaymentRefunded"),
        ("PaymentCaptured", "PaymentRefunded"),
    ],
    exclusive: &[("PaymentCaptured", "PaymentVoided")],
};

/// What is wrong with one aggregate's events, given in the order they were
/// stored (stream sequence, or timeline order).
pub fn causal_faults(rules: &Causality, kinds: &[&str]) -> Vec<String> {
    let mut wrong = Vec::new();
    let first = |kind: &str| kinds.iter().position(|k| *k == kind);
    for kind in rules.once {
        let n = kinds.iter().filter(|k| *k == kind).count();
        if n > 1 {
            wrong.push(format!("{kind} {n} times"));
        }
    }
    for (a, b) in rules.before {
        if let (Some(ia), Some(ib)) = (first(a), first(b))
            && ib < ia
        {
            wrong.push(format!("{b} before {a}"));
        }
    }
    for (a, b) in rules.exclusive {
        if first(a).is_some() && first(b).is_some() {
            wrong.push(format!("both {a} and {b}"));
        }
    }
    wrong
}

/// The events an order's status implies in the ORDERS stream and its timeline.
pub fn required_order_events(status: &str) -> &'static [&'static str] {
    match status {
        "CONFIRMED" => &["OrderCreated", "OrderConfirmed"],
        "REJECTED" => &["OrderCreated", "OrderRejected"],
        "CANCELLED" => &["OrderCreated", "OrderConfirmed", "OrderCancelled"],
        _ => &["OrderCreated"],
    }
}

pub fn check(history: &History, snapshot: &Snapshot, findings: &mut Findings) {
    streams(history, snapshot, findings);
    timelines(history, snapshot, findings);
    notices(history, snapshot, findings);
    for dead in &snapshot.dead_letters {
        findings.push(Violation::general(
            Rule::DeadLetter,
            format!(
                "{} gave up on {} {} ({}): {}",
                dead.consumer, dead.event_type, dead.subject, dead.id, dead.error
            ),
        ));
    }
    for panic in &snapshot.panics {
        findings.push(Violation::general(
            Rule::Panic,
            format!("{}: {}", panic.proc, panic.line),
        ));
    }
    for exit in &history.exits {
        findings.push(Violation::general(
            Rule::Exited,
            format!(
                "{} exited unasked at {} ms: {}",
                exit.proc, exit.at_ms, exit.status
            ),
        ));
    }
}

/// Duplicates, causal order and presence in the streams.
pub fn streams(history: &History, snapshot: &Snapshot, findings: &mut Findings) {
    let order_of_payment: BTreeMap<&str, &str> = snapshot
        .payments
        .iter()
        .map(|p| (p.payment_id.as_str(), p.reference.as_str()))
        .collect();
    let violation = |rule: Rule, event: &EventSnap, detail: String| {
        let kind = event.kind.as_str();
        let order_id = if ORDER.once.contains(&kind) || STOCK.once.contains(&kind) {
            Some(event.aggregate.as_str())
        } else {
            order_of_payment.get(event.aggregate.as_str()).copied()
        };
        match order_id {
            Some(order_id) => Violation::of_order(rule, order_id, detail),
            None => Violation::general(rule, detail),
        }
    };
    for name in STREAMS {
        let Some(stream) = snapshot.streams.get(name).filter(|s| s.exists) else {
            findings.push(Violation::general(
                Rule::StreamMissing,
                format!("stream {name} is not on the NATS server at the end"),
            ));
            continue;
        };
        let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
        for event in &stream.events {
            if let Some(first) = seen.insert(event.id.as_str(), event.seq) {
                findings.push(violation(
                    Rule::DuplicateEvent,
                    event,
                    format!(
                        "{name}: {} {} stored twice (sequences {first} and {})",
                        event.kind, event.id, event.seq
                    ),
                ));
            }
        }
        for (aggregate, events) in by_aggregate(&stream.events) {
            for rules in [&ORDER, &STOCK, &PAYMENT] {
                let of_kind: Vec<&EventSnap> = events
                    .iter()
                    .copied()
                    .filter(|e| rules.once.contains(&e.kind.as_str()))
                    .collect();
                let Some(first) = of_kind.first() else { continue };
                for wrong in causal_faults(rules, &distinct_kinds(&of_kind)) {
                    findings.push(violation(
                        Rule::EventOrder,
                        first,
                        format!("{name} {aggregate}: {wrong} (sequences {})", sequences(&of_kind)),
                    ));
                }
            }
        }
    }
    let Some(orders) = snapshot.streams.get("ORDERS").filter(|s| s.exists) else {
        return;
    };
    let present: BTreeMap<&str, BTreeSet<&str>> = by_aggregate(&orders.events)
        .into_iter()
        .map(|(aggregate, events)| (aggregate, events.iter().map(|e| e.kind.as_str()).collect()))
        .collect();
    for order in snapshot.orders.iter().filter(|o| o.terminal()) {
        let have = present.get(order.order_id.as_str());
        let missing: Vec<&str> = required_order_events(&order.status)
            .iter()
            .copied()
            .filter(|kind| !have.is_some_and(|h| h.contains(kind)))
            .collect();
        if missing.is_empty() {
            continue;
        }
        if events_kept(history, order) {
            findings.push(Violation::of_order(
                Rule::EventMissing,
                &order.order_id,
                format!("{} order, ORDERS lacks {}", order.status, missing.join(", ")),
            ));
        } else {
            findings.excuse(
                Rule::EventMissing,
                &order.order_id,
                "created before the NATS store was wiped",
            );
        }
    }
}

/// Each terminal order's timeline: no event twice, causal order per
/// aggregate kind, its own order events present.
pub fn timelines(history: &History, snapshot: &Snapshot, findings: &mut Findings) {
    for order in snapshot.orders.iter().filter(|o| o.terminal()) {
        let entries = snapshot
            .timelines
            .get(&order.order_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut ids = BTreeSet::new();
        for entry in entries {
            if !ids.insert(entry.id.as_str()) {
                findings.push(Violation::of_order(
                    Rule::Timeline,
                    &order.order_id,
                    format!("{} {} twice in the timeline", entry.kind, entry.id),
                ));
            }
        }
        for rules in [&ORDER, &STOCK, &PAYMENT] {
            let of_kind: Vec<&EventSnap> = entries
                .iter()
                .filter(|e| rules.once.contains(&e.kind.as_str()))
                .collect();
            for wrong in causal_faults(rules, &distinct_kinds(&of_kind)) {
                findings.push(Violation::of_order(
                    Rule::Timeline,
                    &order.order_id,
                    format!("timeline: {wrong}"),
                ));
            }
        }
        let missing: Vec<&str> = required_order_events(&order.status)
            .iter()
            .copied()
            .filter(|kind| !entries.iter().any(|e| e.kind == *kind))
            .collect();
        if missing.is_empty() {
            continue;
        }
        if events_kept(history, order) {
            findings.push(Violation::of_order(
                Rule::Timeline,
                &order.order_id,
                format!(
                    "{} order, its timeline lacks {}",
                    order.status,
                    missing.join(", ")
                ),
            ));
        } else {
            findings.excuse(
                Rule::Timeline,
                &order.order_id,
                "created before the NATS store was wiped",
            );
        }
    }
}

/// One confirmation notice per order ever confirmed, none for another.
pub fn notices(history: &History, snapshot: &Snapshot, findings: &mut Findings) {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for notice in &snapshot.notices {
        *count.entry(notice.order_id.as_str()).or_default() += 1;
    }
    for order in snapshot.orders.iter().filter(|o| o.terminal()) {
        let n = count.get(order.order_id.as_str()).copied().unwrap_or(0);
        let want = usize::from(order.was_confirmed());
        if n == want {
            continue;
        }
        if n == 0 && !events_kept(history, order) {
            findings.excuse(
                Rule::Notice,
                &order.order_id,
                "created before the NATS store was wiped",
            );
            continue;
        }
        findings.push(Violation::of_order(
            Rule::Notice,
            &order.order_id,
            format!(
                "{} order with {n} confirmation notices (want {want})",
                order.status
            ),
        ));
    }
}

fn by_aggregate(events: &[EventSnap]) -> BTreeMap<&str, Vec<&EventSnap>> {
    let mut map: BTreeMap<&str, Vec<&EventSnap>> = BTreeMap::new();
    for event in events {
        map.entry(event.aggregate.as_str()).or_default().push(event);
    }
    map
}

/// Kinds in order, an event id counted once (duplicates are their own rule).
fn distinct_kinds<'a>(events: &[&'a EventSnap]) -> Vec<&'a str> {
    let mut ids = BTreeSet::new();
    events
        .iter()
        .filter(|e| ids.insert(e.id.as_str()))
        .map(|e| e.kind.as_str())
        .collect()
}

fn sequences(events: &[&EventSnap]) -> String {
    events
        .iter()
        .map(|e| format!("{}:{}", e.seq, e.kind))
        .collect::<Vec<_>>()
        .join(" ")
}
