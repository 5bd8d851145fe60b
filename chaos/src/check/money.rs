//! Money: a confirmed order is charged its total once; nothing is held or
//! taken for an order that is not confirmed; a capture belongs to a
//! confirmed order or was refunded once; each payment's ledger entries are
//! the ones its status implies (two per movement), and the ledger balances.

use std::collections::BTreeMap;

use super::snapshot::{PaymentSnap, Snapshot};
use super::{Findings, Rule, Violation, order_index};

pub fn check(snapshot: &Snapshot, findings: &mut Findings) {
    orders_paid_as_their_status_says(snapshot, findings);
    payments_belong(snapshot, findings);
    postings(snapshot, findings);
    if !snapshot.ledger.balanced || !snapshot.ledger.mismatched_accounts.is_empty() {
        findings.push(Violation::general(
            Rule::Ledger,
            format!(
                "VerifyLedger: balanced {}, accounts whose balance differs from their entries: {:?}",
                snapshot.ledger.balanced, snapshot.ledger.mismatched_accounts
            ),
        ));
    }
}

fn by_order(snapshot: &Snapshot) -> BTreeMap<&str, Vec<&PaymentSnap>> {
    let mut map: BTreeMap<&str, Vec<&PaymentSnap>> = BTreeMap::new();
    for payment in &snapshot.payments {
        map.entry(payment.reference.as_str()).or_default().push(payment);
    }
    map
}

/// Each terminal order's payments, by its status.
pub fn orders_paid_as_their_status_says(snapshot: &Snapshot, findings: &mut Findings) {
    let payments = by_order(snapshot);
    for order in snapshot.orders.iter().filter(|o| o.terminal()) {
        let mine = payments.get(order.order_id.as_str()).cloned().unwrap_or_default();
        let statuses: Vec<&str> = mine.iter().map(|p| p.status.as_str()).collect();
        let moved: Vec<&&PaymentSnap> = mine.iter().filter(|p| p.status != "DECLINED").collect();
        if moved.len() > 1 {
            findings.push(Violation::of_order(
                Rule::Money,
                &order.order_id,
                format!("{} payments moved money for one order: {statuses:?}", moved.len()),
            ));
            continue;
        }
        let wrong = match order.status.as_str() {
            "CONFIRMED" => match moved.first() {
                Some(p) if p.status == "CAPTURED" && p.amount_minor == order.total_minor => None,
                Some(p) if p.status == "CAPTURED" => Some(format!(
                    "charged {} for a total of {}",
                    p.amount_minor, order.total_minor
                )),
                _ => Some(format!("confirmed, payments {statuses:?} (want one CAPTURED)")),
            },
            "CANCELLED" => match moved.first() {
                Some(p) if p.status == "REFUNDED" => None,
                _ => Some(format!("cancelled, payments {statuses:?} (want one REFUNDED)")),
            },
            _ => match moved.first() {
                Some(p) if matches!(p.status.as_str(), "AUTHORIZED" | "CAPTURED") => Some(format!(
                    "{} order with its payment {} ({} held or taken)",
                    order.status, p.status, p.amount_minor
                )),
                _ => None,
            },
        };
        if let Some(wrong) = wrong {
            findings.push(Violation::of_order(Rule::Money, &order.order_id, wrong));
        }
    }
}

/// A payment held or captured names a confirmed order (or one still
/// running); one that names no order holds nothing.
pub fn payments_belong(snapshot: &Snapshot, findings: &mut Findings) {
    let orders = order_index(snapshot);
    for payment in &snapshot.payments {
        let holds = matches!(payment.status.as_str(), "AUTHORIZED" | "CAPTURED");
        if !holds {
            continue;
        }
        match orders.get(payment.reference.as_str()) {
            None => findings.push(Violation::general(
                Rule::Money,
                format!(
                    "payment {} ({}, {} from {}) names no order: {:?}",
                    payment.payment_id,
                    payment.status,
                    payment.amount_minor,
                    payment.account_id,
                    payment.reference
                ),
            )),
            Some(order) if payment.status == "AUTHORIZED" && order.terminal() => {
                findings.push(Violation::of_order(
                    Rule::Money,
                    &order.order_id,
                    format!(
                        "payment {} still AUTHORIZED ({} held) for a {} order",
                        payment.payment_id, payment.amount_minor, order.status
                    ),
                ))
            }
            // Confirmed orders are checked above; others are not terminal.
            Some(_) => {}
        }
    }
}

/// Two ledger entries per movement: an authorization's hold, a capture, a
/// void, a refund. More means a movement posted twice; fewer, one lost.
pub fn postings(snapshot: &Snapshot, findings: &mut Findings) {
    for payment in &snapshot.payments {
        let expected = match payment.status.as_str() {
            "DECLINED" => 0,
            "AUTHORIZED" => 2,
            "CAPTURED" | "VOIDED" => 4,
            "REFUNDED" => 6,
            _ => continue,
        };
        if payment.ledger_entries != expected {
            let order_id = payment.reference.as_str();
            let detail = format!(
                "payment {} is {} with {} ledger entries (want {expected})",
                payment.payment_id, payment.status, payment.ledger_entries
            );
            findings.push(if order_id.is_empty() {
                Violation::general(Rule::Posting, detail)
            } else {
                Violation::of_order(Rule::Posting, order_id, detail)
            });
        }
    }
}
