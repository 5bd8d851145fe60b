use super::*;

#[test]
fn an_accepted_order_missing_from_the_service_is_lost() {
    broken(Rule::OrderLost, Some("o9"), |h, _| {
        h.ops.push(create("r9", "o9", vec![line("CB-004", 1)], 5_000));
    });
}

#[test]
fn an_order_left_half_way_is_not_terminal() {
    broken(Rule::NotTerminal, Some("o1"), |_, s| {
        get(s, "o1").status = "PAYMENT_CAPTURED".into();
        s.sagas.push(SagaSnap {
            order_id: "o1".into(),
            state: "RUNNING".into(),
            step: "COMMIT".into(),
            needs_attention: false,
            last_error: "unavailable".into(),
        });
    });
}

#[test]
fn a_saga_waiting_for_an_operator_is_listed_not_failed() {
    let (h, mut s) = (history(), snapshot());
    get(&mut s, "o2").status = "COMPENSATING".into();
    s.sagas.push(SagaSnap {
        order_id: "o2".into(),
        state: "COMPENSATING".into(),
        step: "RELEASE".into(),
        needs_attention: true,
        last_error: "inventory unavailable".into(),
    });
    let findings = check(&h, &s);
    assert!(findings.of_rule(Rule::NotTerminal).is_empty());
    assert_eq!(findings.attention.len(), 1);
    assert_eq!(findings.attention[0].last_error, "inventory unavailable");
}

#[test]
fn an_acknowledged_cancel_must_refund_and_restock() {
    broken(Rule::CancelNotHonoured, Some("o3"), |_, s| {
        get(s, "o3").status = "CONFIRMED".into();
    });
    broken(Rule::CancelNotHonoured, Some("o3"), |_, s| {
        s.payments[1].status = "CAPTURED".into();
    });
    broken(Rule::CancelNotHonoured, Some("o3"), |_, s| {
        s.reservations.get_mut("o3").expect("o3").status = "COMMITTED".into();
    });
}

#[test]
fn one_request_id_makes_one_order() {
    broken(Rule::RequestId, None, |_, s| {
        let mut twin = s.orders[0].clone();
        twin.order_id = "o1-twin".into();
        twin.status = "REJECTED".into();
        twin.reject_reason = "OUT_OF_STOCK".into();
        s.orders.push(twin);
    });
    broken(Rule::RequestId, None, |h, _| {
        h.ops
            .push(create("r1", "o1-other", vec![line("CB-004", 2)], 1_001));
    });
}

#[test]
fn an_order_holds_the_lines_asked_for() {
    broken(Rule::RequestId, Some("o1"), |_, s| {
        get(s, "o1").lines = vec![line("CB-004", 3)];
    });
}

#[test]
fn a_terminal_status_seen_stays() {
    broken(Rule::StatusChanged, Some("o1"), |h, _| {
        h.ops.push(op(OpKind::Watch, "", "o1", "OK", "REJECTED", 1_200));
    });
    // Confirmed, then cancelled: allowed.
    let (mut h, s) = (history(), snapshot());
    h.ops.push(op(OpKind::Watch, "", "o3", "OK", "CONFIRMED", 3_500));
    assert!(check(&h, &s).of_rule(Rule::StatusChanged).is_empty());
}
