//! Stock: conserved per SKU (available + reserved + sold is the initial
//! stock plus the acknowledged adjustments), sold units are exactly the
//! confirmed orders' lines, and no terminal order keeps a reservation in a
//! state its status forbids.

use std::collections::{BTreeMap, BTreeSet};

use super::snapshot::Snapshot;
use super::{Findings, Rule, Violation};
use crate::history::{History, OpKind};

pub fn check(history: &History, snapshot: &Snapshot, findings: &mut Findings) {
    conserved(history, snapshot, findings);
    reservations_match(snapshot, findings);
}

/// The adjustments applied per SKU (each request id once, when any call
/// with it was acknowledged), and the SKUs with an adjustment whose outcome
/// stayed unknown.
pub fn adjustments(history: &History) -> (BTreeMap<String, i64>, BTreeSet<String>) {
    let mut acknowledged: BTreeMap<&str, (&str, i64)> = BTreeMap::new();
    let mut sent: BTreeMap<&str, &str> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.op == OpKind::Adjust) {
        let Some(line) = op.lines.first() else { continue };
        sent.insert(op.request_id.as_str(), line.sku.as_str());
        if op.ok() {
            acknowledged.insert(op.request_id.as_str(), (line.sku.as_str(), line.quantity));
        }
    }
    let mut applied: BTreeMap<String, i64> = BTreeMap::new();
    for (sku, delta) in acknowledged.values() {
        *applied.entry((*sku).to_owned()).or_default() += delta;
    }
    let unknown = sent
        .iter()
        .filter(|(request_id, _)| !acknowledged.contains_key(*request_id))
        .map(|(_, sku)| (*sku).to_owned())
        .collect();
    (applied, unknown)
}

pub fn conserved(history: &History, snapshot: &Snapshot, findings: &mut Findings) {
    let (applied, unknown) = adjustments(history);
    let all_terminal = snapshot.orders.iter().all(|o| o.terminal());
    let mut sold_by_confirmed: BTreeMap<&str, i64> = BTreeMap::new();
    for order in snapshot.orders.iter().filter(|o| o.status == "CONFIRMED") {
        for line in &order.lines {
            *sold_by_confirmed.entry(line.sku.as_str()).or_default() += line.quantity;
        }
    }
    for (sku, initial) in &history.setup.stock {
        let Some(now) = snapshot.stock.get(sku) else {
            findings.push(Violation::general(
                Rule::StockNotConserved,
                format!("{sku} is no longer listed by ListStock"),
            ));
            continue;
        };
        let total = now.available + now.reserved + now.sold;
        let expected = initial + applied.get(sku).copied().unwrap_or(0);
        if unknown.contains(sku) {
            findings.excuse(
                Rule::StockNotConserved,
                "",
                format!("{sku}: an AdjustStock's outcome stayed unknown; total {total}, at least {expected}"),
            );
        } else if total != expected {
            findings.push(Violation::general(
                Rule::StockNotConserved,
                format!(
                    "{sku}: available {} + reserved {} + sold {} = {total}, expected {expected} (initial {initial} + adjustments)",
                    now.available, now.reserved, now.sold
                ),
            ));
        }
        if all_terminal && now.reserved != 0 {
            findings.push(Violation::general(
                Rule::StockNotConserved,
                format!("{sku}: {} units reserved with every order terminal", now.reserved),
            ));
        }
        let sold = sold_by_confirmed.get(sku.as_str()).copied().unwrap_or(0);
        if all_terminal && now.sold != sold {
            findings.push(Violation::general(
                Rule::StockNotConserved,
                format!("{sku}: {} units sold, the confirmed orders hold {sold}", now.sold),
            ));
        }
    }
}

/// A confirmed order's reservation is COMMITTED, a cancelled one's
/// RETURNED, a rejected one's absent or given back; none stays ACTIVE.
pub fn reservations_match(snapshot: &Snapshot, findings: &mut Findings) {
    for order in snapshot.orders.iter().filter(|o| o.terminal()) {
        let status = snapshot
            .reservations
            .get(&order.order_id)
            .map_or("NONE", |r| r.status.as_str());
        let fits = match order.status.as_str() {
            "CONFIRMED" => status == "COMMITTED",
            "CANCELLED" => status == "RETURNED",
            _ => matches!(status, "NONE" | "RELEASED" | "EXPIRED" | "RETURNED"),
        };
        if !fits {
            findings.push(Violation::of_order(
                Rule::Reservation,
                &order.order_id,
                format!("{} order with reservation {status}", order.status),
            ));
        }
    }
}
