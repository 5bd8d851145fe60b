use super::*;

fn orders_stream(s: &mut Snapshot) -> &mut Vec<EventSnap> {
    &mut s.streams.get_mut("ORDERS").expect("ORDERS").events
}

fn wipe(h: &mut History, at: u64) {
    h.faults
        .push(fault(Fault::NatsWipe { ms: 2_000 }, at, at + 2_000));
}

#[test]
fn an_event_is_stored_once_per_stream() {
    broken(Rule::DuplicateEvent, Some("o1"), |_, s| {
        orders_stream(s).push(EventSnap::new(99, "e2", "OrderConfirmed", "o1"));
    });
}

#[test]
fn an_order_is_confirmed_once_with_one_event_id() {
    broken(Rule::EventOrder, Some("o1"), |_, s| {
        orders_stream(s).push(EventSnap::new(99, "e2-again", "OrderConfirmed", "o1"));
    });
}

#[test]
fn an_order_is_created_before_it_is_confirmed() {
    broken(Rule::EventOrder, Some("o1"), |_, s| {
        orders_stream(s).swap(0, 2);
    });
}

#[test]
fn a_payment_is_captured_before_it_is_refunded() {
    broken(Rule::EventOrder, Some("o3"), |_, s| {
        s.streams.get_mut("PAYMENTS").expect("PAYMENTS").events.swap(3, 4);
    });
}

#[test]
fn an_order_is_never_both_confirmed_and_rejected() {
    broken(Rule::EventOrder, Some("o2"), |_, s| {
        orders_stream(s).push(EventSnap::new(99, "e9", "OrderConfirmed", "o2"));
    });
}

#[test]
fn an_order_has_its_events_in_its_stream() {
    broken(Rule::EventMissing, Some("o1"), |_, s| {
        orders_stream(s).retain(|e| e.id != "e2");
    });
}

#[test]
fn events_a_wiped_store_may_have_lost_are_excused() {
    let (mut h, mut s) = (history(), snapshot());
    orders_stream(&mut s).retain(|e| e.id != "e2");
    s.timelines.get_mut("o1").expect("o1").retain(|e| e.id != "e2");
    s.notices.retain(|n| n.order_id != "o1");
    wipe(&mut h, 1_500);
    let findings = check(&h, &s);
    assert_eq!(findings.violations, Vec::new());
    assert_eq!(findings.excused.len(), 3, "{:?}", findings.excused);
    // An order created after the wipe is not excused.
    let (mut h, mut s) = (history(), snapshot());
    orders_stream(&mut s).retain(|e| e.id != "e2");
    wipe(&mut h, 500);
    broken(Rule::EventMissing, Some("o1"), |hh, ss| {
        *hh = h;
        *ss = s;
    });
}

#[test]
fn a_stream_missing_at_the_end_is_a_violation() {
    broken(Rule::StreamMissing, None, |_, s| {
        s.streams.get_mut("PAYMENTS").expect("PAYMENTS").exists = false;
    });
}

#[test]
fn a_timeline_holds_each_event_once_in_order() {
    broken(Rule::Timeline, Some("o1"), |_, s| {
        let entry = s.timelines["o1"][0].clone();
        s.timelines.get_mut("o1").expect("o1").push(entry);
    });
    broken(Rule::Timeline, Some("o3"), |_, s| {
        s.timelines.get_mut("o3").expect("o3").reverse();
    });
    broken(Rule::Timeline, Some("o2"), |_, s| {
        s.timelines.remove("o2");
    });
}

#[test]
fn one_notice_per_confirmed_order() {
    broken(Rule::Notice, Some("o1"), |_, s| {
        s.notices.push(s.notices[0].clone());
    });
    broken(Rule::Notice, Some("o3"), |_, s| {
        s.notices.retain(|n| n.order_id != "o3");
    });
    broken(Rule::Notice, Some("o2"), |_, s| {
        s.notices.push(NoticeSnap {
            order_id: "o2".into(),
            event_id: "e4".into(),
        });
    });
}

#[test]
fn dead_letters_panics_and_exits_are_violations() {
    broken(Rule::DeadLetter, None, |_, s| {
        s.dead_letters.push(DeadLetterSnap {
            id: "d1".into(),
            consumer: "order-timeline".into(),
            event_type: "OrderCreated".into(),
            subject: "o1".into(),
            error: "boom".into(),
        });
    });
    broken(Rule::Panic, None, |_, s| {
        s.panics.push(PanicSnap {
            proc: "order-1".into(),
            line: "thread 'tokio' panicked at src/x.rs:1:1".into(),
        });
    });
    broken(Rule::Exited, None, |h, _| {
        h.exits.push(ExitRecord {
            proc: "inventory".into(),
            status: "exit status: 1".into(),
            at_ms: 9_000,
        });
    });
}

#[test]
fn a_rejection_for_a_short_outage_is_a_violation() {
    broken(Rule::UnavailableTooSoon, Some("o2"), |_, s| {
        get(s, "o2").reject_reason = "SERVICE_UNAVAILABLE".into();
        get(s, "o2").update_us = micros(10_500);
    });
}

#[test]
fn a_rejection_after_faults_longer_than_the_patience_is_excused() {
    let (mut h, mut s) = (history(), snapshot());
    get(&mut s, "o2").reject_reason = "SERVICE_UNAVAILABLE".into();
    get(&mut s, "o2").update_us = micros(40_000);
    h.run.settings.saga_patience_secs = 30;
    // Back to back: 10-11 s (the clean history's), 15-25 s and 30-33 s
    // merge with the 8 s grace into one 10-41 s outage, over the patience.
    h.faults
        .push(fault(Fault::PgOutage { ms: 10_000 }, 15_000, 25_000));
    h.faults.push(fault(
        Fault::MeshAbort {
            downstream: crate::schedule::Downstream::Payment,
            percent: 100,
            ms: 3_000,
        },
        30_000,
        33_000,
    ));
    assert!(check(&h, &s).of_rule(Rule::UnavailableTooSoon).is_empty());
    // A gateway or NATS fault holds no saga up: it excuses nothing.
    let last = h.faults.len() - 1;
    h.faults[last].fault = Fault::NatsStop { ms: 3_000 };
    assert!(!check(&h, &s).of_rule(Rule::UnavailableTooSoon).is_empty());
}

#[test]
fn outage_windows_merge_when_they_touch() {
    let f = |start, end| fault(Fault::PgRestart, start, end);
    let windows = outage::outage_windows(&[f(0, 1_000), f(5_000, 6_000), f(20_000, 21_000)], 4_000);
    assert_eq!(windows, vec![(0, 10_000), (20_000, 25_000)]);
}
