//! Orders: accepted ones are terminal (or wait for an operator), cancels
//! are honoured, one order per request id, terminal statuses are final.

use std::collections::{BTreeMap, BTreeSet};

use super::snapshot::{Snapshot, is_terminal};
use super::{Attention, Findings, Rule, Violation, order_index};
use crate::history::{History, Line, OpKind};

pub fn check(history: &History, snapshot: &Snapshot, findings: &mut Findings) {
    accepted_are_terminal(history, snapshot, findings);
    cancels_honoured(history, snapshot, findings);
    one_order_per_request(history, snapshot, findings);
    terminal_is_final(history, snapshot, findings);
}

/// Every order CreateOrder answered is known, and every order is terminal
/// or flagged for an operator.
pub fn accepted_are_terminal(history: &History, snapshot: &Snapshot, findings: &mut Findings) {
    let orders = order_index(snapshot);
    let accepted: BTreeSet<&str> = history
        .ops
        .iter()
        .filter(|op| op.op == OpKind::Create && op.ok() && !op.order_id.is_empty())
        .map(|op| op.order_id.as_str())
        .collect();
    for order_id in &accepted {
        if !orders.contains_key(order_id) {
            findings.push(Violation::of_order(
                Rule::OrderLost,
                order_id,
                "CreateOrder answered this order, ListOrders does not have it",
            ));
        }
    }
    let sagas: BTreeMap<&str, _> = snapshot.sagas.iter().map(|s| (s.order_id.as_str(), s)).collect();
    for order in &snapshot.orders {
        if order.terminal() {
            continue;
        }
        match sagas.get(order.order_id.as_str()) {
            Some(saga) if saga.needs_attention => findings.attention.push(Attention {
                order_id: order.order_id.clone(),
                status: order.status.clone(),
                step: saga.step.clone(),
                last_error: saga.last_error.clone(),
            }),
            saga => {
                let seen = if accepted.contains(order.order_id.as_str()) {
                    "accepted"
                } else {
                    "never acknowledged to the client"
                };
                let saga = saga.map_or_else(
                    || "no unfinished saga listed".to_owned(),
                    |s| format!("saga {} at {}, last error {:?}", s.state, s.step, s.last_error),
                );
                findings.push(Violation::of_order(
                    Rule::NotTerminal,
                    &order.order_id,
                    format!("{} after the settle time ({seen}); {saga}", order.status),
                ));
            }
        }
    }
}

/// An acknowledged cancel ends CANCELLED, with its payment refunded and its
/// reservation returned.
pub fn cancels_honoured(history: &History, snapshot: &Snapshot, findings: &mut Findings) {
    let orders = order_index(snapshot);
    let cancelled: BTreeSet<&str> = history
        .ops
        .iter()
        .filter(|op| op.op == OpKind::Cancel && op.ok())
        .map(|op| op.order_id.as_str())
        .collect();
    for order_id in cancelled {
        let Some(order) = orders.get(order_id) else {
            findings.push(Violation::of_order(
                Rule::CancelNotHonoured,
                order_id,
                "CancelOrder acknowledged an order ListOrders does not have",
            ));
            continue;
        };
        let mut wrong = Vec::new();
        if order.status != "CANCELLED" {
            wrong.push(format!("status {}", order.status));
        }
        let refunded = snapshot
            .payments
            .iter()
            .any(|p| p.reference == order_id && p.status == "REFUNDED");
        if !refunded {
            wrong.push("no refunded payment".to_owned());
        }
        let returned = snapshot
            .reservations
            .get(order_id)
            .is_some_and(|r| r.status == "RETURNED");
        if !returned {
            let status = snapshot
                .reservations
                .get(order_id)
                .map_or("none", |r| r.status.as_str());
            wrong.push(format!("reservation {status}, not RETURNED"));
        }
        if !wrong.is_empty() {
            findings.push(Violation::of_order(
                Rule::CancelNotHonoured,
                order_id,
                format!("cancel acknowledged, but: {}", wrong.join("; ")),
            ));
        }
    }
}

/// One order per request id, holding the lines that request asked for, and
/// every answer to one request id naming the same order.
pub fn one_order_per_request(history: &History, snapshot: &Snapshot, findings: &mut Findings) {
    let mut by_request: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for order in &snapshot.orders {
        by_request
            .entry(order.request_id.as_str())
            .or_default()
            .push(order.order_id.as_str());
    }
    for (request_id, orders) in &by_request {
        if orders.len() > 1 {
            findings.push(Violation::of_order(
                Rule::RequestId,
                orders[0],
                format!(
                    "request id {request_id:?} has {} orders: {}",
                    orders.len(),
                    orders.join(", ")
                ),
            ));
        }
    }
    let mut answers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut asked: BTreeMap<&str, &[Line]> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.op == OpKind::Create) {
        asked.insert(op.request_id.as_str(), &op.lines);
        if op.ok() && !op.order_id.is_empty() {
            answers
                .entry(op.request_id.as_str())
                .or_default()
                .insert(op.order_id.as_str());
        }
    }
    for (request_id, order_ids) in &answers {
        if order_ids.len() > 1 {
            let ids: Vec<&str> = order_ids.iter().copied().collect();
            findings.push(Violation::of_order(
                Rule::RequestId,
                ids[0],
                format!(
                    "CreateOrder {request_id:?} answered different orders: {}",
                    ids.join(", ")
                ),
            ));
        }
    }
    for order in &snapshot.orders {
        let Some(lines) = asked.get(order.request_id.as_str()) else {
            continue;
        };
        let mut want = lines.to_vec();
        let mut have = order.lines.clone();
        want.sort();
        have.sort();
        if want != have {
            findings.push(Violation::of_order(
                Rule::RequestId,
                &order.order_id,
                format!("asked for {want:?}, the order has {have:?}"),
            ));
        }
    }
}

/// A terminal status a watch (or any answer) reported stays, except that a
/// confirmed order may be cancelled.
pub fn terminal_is_final(history: &History, snapshot: &Snapshot, findings: &mut Findings) {
    let orders = order_index(snapshot);
    for op in &history.ops {
        if !op.ok() || !is_terminal(&op.status) {
            continue;
        }
        let Some(order) = orders.get(op.order_id.as_str()) else {
            continue;
        };
        let allowed = order.status == op.status || (op.status == "CONFIRMED" && order.status == "CANCELLED");
        if !allowed {
            findings.push(Violation::of_order(
                Rule::StatusChanged,
                &order.order_id,
                format!(
                    "{} via {} at {} ms reported {}, the order is now {}",
                    op_name(op.op),
                    op.via,
                    op.end_ms,
                    op.status,
                    order.status
                ),
            ));
        }
    }
}

fn op_name(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Create => "CreateOrder",
        OpKind::Cancel => "CancelOrder",
        OpKind::Get => "GetOrder",
        OpKind::Watch => "WatchOrder",
        OpKind::Adjust => "AdjustStock",
    }
}
