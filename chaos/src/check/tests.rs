//! Each rule against a small clean run (three orders: one confirmed, one
//! rejected out of stock, one confirmed then cancelled) and that run broken
//! in exactly the way the rule is about.

use std::collections::BTreeMap;

use super::snapshot::*;
use super::*;
use crate::history::{ExitRecord, FaultRecord, Line, Op, OpKind, RunHeader, Setup};
use crate::schedule::{Fault, Proc};
use crate::settings::RunSettings;

const T0_MS: i64 = 1_700_000_000_000;

fn line(sku: &str, quantity: i64) -> Line {
    Line {
        sku: sku.into(),
        quantity,
    }
}

fn op(kind: OpKind, request_id: &str, order_id: &str, code: &str, status: &str, at: u64) -> Op {
    Op {
        op: kind,
        workload: "test".into(),
        via: "order-0".into(),
        request_id: request_id.into(),
        order_id: order_id.into(),
        code: code.into(),
        status: status.into(),
        start_ms: at,
        end_ms: at + 5,
        ..Op::default()
    }
}

fn create(request_id: &str, order_id: &str, lines: Vec<Line>, at: u64) -> Op {
    Op {
        lines,
        ..op(OpKind::Create, request_id, order_id, "OK", "PENDING", at)
    }
}

fn fault(fault: Fault, start_ms: u64, end_ms: u64) -> FaultRecord {
    FaultRecord {
        fault,
        start_ms,
        end_ms,
        error: String::new(),
    }
}

fn history() -> History {
    let ops = vec![
        create("r1", "o1", vec![line("CB-004", 2)], 1_000),
        create("r2", "o2", vec![line("KB-001", 20)], 2_000),
        create("r3", "o3", vec![line("KB-001", 1)], 3_000),
        op(OpKind::Watch, "", "o1", "OK", "CONFIRMED", 1_100),
        op(OpKind::Cancel, "", "o3", "OK", "CANCELLING", 4_000),
        Op {
            lines: vec![line("KB-001", 5)],
            ..op(OpKind::Adjust, "a1", "", "OK", "", 500)
        },
    ];
    History {
        run: RunHeader {
            seed: 1,
            duration_ms: 60_000,
            started_unix_ms: T0_MS,
            settings: RunSettings::default(),
            schedule: Vec::new(),
        },
        setup: Setup {
            stock: BTreeMap::from([("CB-004".into(), 100), ("KB-001".into(), 10)]),
            accounts: vec!["c0".into()],
        },
        ops,
        faults: vec![fault(
            Fault::Kill {
                proc: Proc::Payment,
                down_ms: 1_000,
            },
            10_000,
            11_000,
        )],
        exits: Vec::new(),
    }
}

fn micros(ms: i64) -> i64 {
    (T0_MS + ms) * 1000
}

fn order(id: &str, request_id: &str, status: &str, lines: Vec<Line>, total: i64, at: i64) -> OrderSnap {
    OrderSnap {
        order_id: id.into(),
        request_id: request_id.into(),
        customer_id: "c0".into(),
        status: status.into(),
        lines,
        total_minor: total,
        create_us: micros(at + 2),
        update_us: micros(at + 200),
        ..OrderSnap::default()
    }
}

fn payment(id: &str, order_id: &str, status: &str, amount: i64, entries: usize) -> PaymentSnap {
    PaymentSnap {
        payment_id: id.into(),
        account_id: "c0".into(),
        reference: order_id.into(),
        status: status.into(),
        amount_minor: amount,
        ledger_entries: entries,
    }
}

fn events(list: &[(&str, &str, &str)]) -> Vec<EventSnap> {
    list.iter()
        .enumerate()
        .map(|(i, (id, kind, aggregate))| EventSnap::new(i as u64 + 1, id, kind, aggregate))
        .collect()
}

fn stream(list: &[(&str, &str, &str)]) -> StreamSnap {
    StreamSnap {
        exists: true,
        events: events(list),
    }
}

fn snapshot() -> Snapshot {
    let mut rejected = order("o2", "r2", "REJECTED", vec![line("KB-001", 20)], 0, 2_000);
    rejected.reject_reason = "OUT_OF_STOCK".into();
    let reservation = |status: &str, lines: Vec<Line>| ReservationSnap {
        status: status.into(),
        lines,
    };
    Snapshot {
        orders: vec![
            order("o1", "r1", "CONFIRMED", vec![line("CB-004", 2)], 1998, 1_000),
            rejected,
            order("o3", "r3", "CANCELLED", vec![line("KB-001", 1)], 8999, 3_000),
        ],
        sagas: Vec::new(),
        reservations: BTreeMap::from([
            ("o1".into(), reservation("COMMITTED", vec![line("CB-004", 2)])),
            ("o3".into(), reservation("RETURNED", vec![line("KB-001", 1)])),
        ]),
        payments: vec![
            payment("p1", "o1", "CAPTURED", 1998, 4),
            payment("p3", "o3", "REFUNDED", 8999, 6),
        ],
        ledger: LedgerSnap::default(),
        stock: BTreeMap::from([
            (
                "CB-004".into(),
                StockSnap {
                    available: 98,
                    reserved: 0,
                    sold: 2,
                },
            ),
            (
                "KB-001".into(),
                StockSnap {
                    available: 15,
                    reserved: 0,
                    sold: 0,
                },
            ),
        ]),
        timelines: BTreeMap::from([
            (
                "o1".into(),
                events(&[
                    ("e1", "OrderCreated", "o1"),
                    ("s1", "StockReserved", "o1"),
                    ("q1", "PaymentAuthorized", "p1"),
                    ("q2", "PaymentCaptured", "p1"),
                    ("s2", "StockCommitted", "o1"),
                    ("e2", "OrderConfirmed", "o1"),
                ]),
            ),
            (
                "o2".into(),
                events(&[("e3", "OrderCreated", "o2"), ("e4", "OrderRejected", "o2")]),
            ),
            (
                "o3".into(),
                events(&[
                    ("e5", "OrderCreated", "o3"),
                    ("e6", "OrderConfirmed", "o3"),
                    ("e7", "OrderCancelled", "o3"),
                ]),
            ),
        ]),
        notices: vec![
            NoticeSnap {
                order_id: "o1".into(),
                event_id: "e2".into(),
            },
            NoticeSnap {
                order_id: "o3".into(),
                event_id: "e6".into(),
            },
        ],
        streams: BTreeMap::from([
            (
                "ORDERS".into(),
                stream(&[
                    ("e1", "OrderCreated", "o1"),
                    ("e3", "OrderCreated", "o2"),
                    ("e2", "OrderConfirmed", "o1"),
                    ("e4", "OrderRejected", "o2"),
                    ("e5", "OrderCreated", "o3"),
                    ("e6", "OrderConfirmed", "o3"),
                    ("e7", "OrderCancelled", "o3"),
                ]),
            ),
            (
                "INVENTORY".into(),
                stream(&[
                    ("a1", "StockAdjusted", "KB-001"),
                    ("s1", "StockReserved", "o1"),
                    ("s2", "StockCommitted", "o1"),
                ]),
            ),
            (
                "PAYMENTS".into(),
                stream(&[
                    ("q1", "PaymentAuthorized", "p1"),
                    ("q2", "PaymentCaptured", "p1"),
                    ("q3", "PaymentAuthorized", "p3"),
                    ("q4", "PaymentCaptured", "p3"),
                    ("q5", "PaymentRefunded", "p3"),
                ]),
            ),
        ]),
        dead_letters: Vec::new(),
        panics: Vec::new(),
    }
}

/// The violations of `rule` after `breaking` the clean run; asserts there
/// is one, and that it names `order` when given.
fn broken(rule: Rule, order: Option<&str>, breaking: impl FnOnce(&mut History, &mut Snapshot)) -> Findings {
    let (mut h, mut s) = (history(), snapshot());
    breaking(&mut h, &mut s);
    let findings = check(&h, &s);
    let found = findings.of_rule(rule);
    assert!(
        !found.is_empty(),
        "{rule:?} not found in {:#?}",
        findings.violations
    );
    if let Some(order) = order {
        assert!(
            found.iter().any(|v| v.order_id.as_deref() == Some(order)),
            "{rule:?} does not name {order}: {found:#?}"
        );
    }
    findings
}

fn get<'a>(s: &'a mut Snapshot, id: &str) -> &'a mut OrderSnap {
    s.orders.iter_mut().find(|o| o.order_id == id).expect("order")
}

#[test]
fn a_clean_run_has_no_violations() {
    let findings = check(&history(), &snapshot());
    assert_eq!(findings.violations, Vec::new());
    assert!(findings.attention.is_empty() && findings.excused.is_empty());
}

mod events_rules;
mod orders_rules;
mod stock_money_rules;
