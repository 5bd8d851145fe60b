use super::*;

#[test]
fn stock_must_add_up_to_the_initial_stock_and_adjustments() {
    broken(Rule::StockNotConserved, None, |_, s| {
        s.stock.get_mut("KB-001").expect("sku").available = 14;
    });
    // An acknowledged restock the stock does not show.
    broken(Rule::StockNotConserved, None, |h, _| {
        h.ops.push(Op {
            lines: vec![line("KB-001", 5)],
            ..op(OpKind::Adjust, "a2", "", "OK", "", 600)
        });
    });
}

#[test]
fn an_adjustment_of_unknown_outcome_is_excused_not_guessed() {
    let (mut h, s) = (history(), snapshot());
    h.ops.push(Op {
        lines: vec![line("KB-001", 7)],
        ..op(OpKind::Adjust, "a3", "", "UNAVAILABLE", "", 700)
    });
    let findings = check(&h, &s);
    assert!(findings.of_rule(Rule::StockNotConserved).is_empty());
    assert_eq!(findings.excused.len(), 1);
}

#[test]
fn sold_units_are_the_confirmed_orders() {
    broken(Rule::StockNotConserved, None, |_, s| {
        let cb = s.stock.get_mut("CB-004").expect("sku");
        cb.available -= 1;
        cb.sold += 1;
    });
}

#[test]
fn nothing_stays_reserved_when_every_order_is_terminal() {
    broken(Rule::StockNotConserved, None, |_, s| {
        let cb = s.stock.get_mut("CB-004").expect("sku");
        cb.available -= 1;
        cb.reserved += 1;
    });
}

#[test]
fn a_terminal_order_keeps_no_active_reservation() {
    broken(Rule::Reservation, Some("o1"), |_, s| {
        s.reservations.get_mut("o1").expect("o1").status = "ACTIVE".into();
    });
    broken(Rule::Reservation, Some("o2"), |_, s| {
        s.reservations.insert(
            "o2".into(),
            ReservationSnap {
                status: "ACTIVE".into(),
                lines: vec![line("KB-001", 20)],
            },
        );
    });
}

#[test]
fn nothing_is_held_or_taken_for_a_rejected_order() {
    broken(Rule::Money, Some("o2"), |_, s| {
        s.payments.push(payment("p2", "o2", "AUTHORIZED", 100, 2));
    });
    broken(Rule::Money, Some("o2"), |_, s| {
        s.payments.push(payment("p2", "o2", "CAPTURED", 100, 4));
    });
}

#[test]
fn a_confirmed_order_is_charged_its_total_once() {
    broken(Rule::Money, Some("o1"), |_, s| {
        s.payments[0].amount_minor = 1999;
    });
    broken(Rule::Money, Some("o1"), |_, s| {
        s.payments.push(payment("p1b", "o1", "CAPTURED", 1998, 4));
    });
}

#[test]
fn a_capture_names_an_order() {
    broken(Rule::Money, None, |_, s| {
        s.payments.push(payment("px", "nobody", "CAPTURED", 100, 4));
    });
}

#[test]
fn each_movement_is_posted_once() {
    broken(Rule::Posting, Some("o3"), |_, s| {
        s.payments[1].ledger_entries = 8;
    });
}

#[test]
fn the_ledger_balances() {
    broken(Rule::Ledger, None, |_, s| {
        s.ledger.balanced = false;
    });
}
