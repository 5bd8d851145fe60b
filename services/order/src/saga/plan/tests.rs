//! Every step x every outcome class, and the properties that must hold for
//! any combination (checked over all of them).

use super::*;

fn limits() -> Limits {
    Limits {
        patience: Duration::from_secs(30),
        forward_window: Duration::from_secs(600),
        max_compensation_attempts: 5,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        compensation_max_backoff: Duration::from_secs(60),
    }
}

fn placing(step: Step) -> SagaView {
    let state = match step {
        Step::UndoPayment | Step::Release => SagaState::Compensating,
        _ => SagaState::Running,
    };
    SagaView {
        kind: SagaKind::Place,
        state,
        step,
        stock_maybe_reserved: step != Step::Reserve,
        payment_maybe_made: matches!(step, Step::Capture | Step::Commit | Step::UndoPayment),
        payment_captured: step == Step::Commit,
        attempts: 0,
        step_maybe_sent: false,
        step_age: Duration::ZERO,
    }
}

fn cancelling(step: Step) -> SagaView {
    SagaView {
        kind: SagaKind::Cancel,
        state: SagaState::Compensating,
        step,
        stock_maybe_reserved: true,
        payment_maybe_made: true,
        payment_captured: true,
        attempts: 0,
        step_maybe_sent: false,
        step_age: Duration::ZERO,
    }
}

fn pricing() -> Pricing {
    Pricing {
        unit_prices: vec![999],
        total_minor: 999,
        currency_code: "USD".into(),
    }
}

fn refused(reason: RejectReason) -> StepResult {
    StepResult::Refused {
        reason,
        detail: "refused".into(),
        declined_payment_id: None,
    }
}

/// Sent, and no answer came (a timeout, a reset).
fn unavailable() -> StepResult {
    StepResult::Unavailable {
        detail: "UNAVAILABLE: down".into(),
        maybe_sent: true,
        retry_after: None,
    }
}

/// Refused by the mesh itself: certainly not sent.
fn not_sent() -> StepResult {
    StepResult::Unavailable {
        detail: "circuit breaker open".into(),
        maybe_sent: false,
        retry_after: Some(Duration::from_secs(4)),
    }
}

fn invariant() -> StepResult {
    StepResult::Invariant {
        detail: "reservation lacks sku".into(),
    }
}

/// One sample of every outcome class.
fn every_result() -> Vec<StepResult> {
    vec![
        StepResult::Nothing,
        StepResult::Reserved(pricing()),
        StepResult::Authorized {
            payment_id: "p1".into(),
        },
        StepResult::Captured,
        StepResult::Committed,
        StepResult::PaymentUndone,
        StepResult::PaymentFoundCaptured {
            payment_id: "p1".into(),
        },
        StepResult::StockReleased,
        refused(RejectReason::OutOfStock),
        refused(RejectReason::ReservationExpired),
        StepResult::Refused {
            reason: RejectReason::InsufficientFunds,
            detail: "declined".into(),
            declined_payment_id: Some("p9".into()),
        },
        unavailable(),
        not_sent(),
        invariant(),
    ]
}

fn record(decision: Decision) -> Advance {
    match decision {
        Decision::Record(advance) => advance,
        other => panic!("expected a record, got {other:?}"),
    }
}

fn compensating_with(advance: &Advance, reason: RejectReason, first: Step) {
    assert_eq!(advance.state, Some(SagaState::Compensating), "{advance:?}");
    assert_eq!(
        advance.order_status,
        Some(OrderStatus::Compensating),
        "{advance:?}"
    );
    assert_eq!(advance.step, Some(first), "{advance:?}");
    assert_eq!(advance.reject.as_ref().map(|r| r.0), Some(reason), "{advance:?}");
}

// --- Forward steps succeed.

#[test]
fn reserve_records_prices_and_goes_on_to_authorize() {
    let a = record(decide(
        &placing(Step::Reserve),
        StepResult::Reserved(pricing()),
        &limits(),
        0.5,
    ));
    assert_eq!(a.step, Some(Step::Authorize));
    assert_eq!(a.order_status, Some(OrderStatus::StockReserved));
    assert_eq!(a.stock_maybe_reserved, Some(true));
    assert_eq!(a.pricing, Some(pricing()));
    assert_eq!(a.state, None, "still running");
}

#[test]
fn authorize_records_the_payment_and_goes_on_to_capture() {
    let a = record(decide(
        &placing(Step::Authorize),
        StepResult::Authorized {
            payment_id: "p1".into(),
        },
        &limits(),
        0.5,
    ));
    assert_eq!(a.step, Some(Step::Capture));
    assert_eq!(a.order_status, Some(OrderStatus::PaymentAuthorized));
    assert_eq!(a.payment_maybe_made, Some(true));
    assert_eq!(a.payment_id.as_deref(), Some("p1"));
}

#[test]
fn capture_is_the_pivot() {
    let a = record(decide(
        &placing(Step::Capture),
        StepResult::Captured,
        &limits(),
        0.5,
    ));
    assert_eq!(a.step, Some(Step::Commit));
    assert_eq!(a.order_status, Some(OrderStatus::PaymentCaptured));
    assert_eq!(a.payment_captured, Some(true));
}

#[test]
fn commit_confirms_in_the_same_record() {
    let a = record(decide(
        &placing(Step::Commit),
        StepResult::Committed,
        &limits(),
        0.5,
    ));
    assert_eq!(a.state, Some(SagaState::Done));
    assert_eq!(a.order_status, Some(OrderStatus::Confirmed));
}

#[test]
fn legacy_confirm_and_finish_rows_finish_without_a_call() {
    let a = record(decide(
        &placing(Step::Confirm),
        StepResult::Nothing,
        &limits(),
        0.5,
    ));
    assert_eq!(
        (a.state, a.order_status),
        (Some(SagaState::Done), Some(OrderStatus::Confirmed))
    );
    let mut finishing = placing(Step::Finish);
    finishing.state = SagaState::Compensating;
    let a = record(decide(&finishing, StepResult::Nothing, &limits(), 0.5));
    assert_eq!(a.order_status, Some(OrderStatus::Rejected));
    let a = record(decide(
        &cancelling(Step::Finish),
        StepResult::Nothing,
        &limits(),
        0.5,
    ));
    assert_eq!(a.order_status, Some(OrderStatus::Cancelled));
}

// --- Forward steps refused: compensate, undoing every reached step by key.

#[test]
fn a_refused_reservation_still_releases_by_key() {
    let a = record(decide(
        &placing(Step::Reserve),
        refused(RejectReason::OutOfStock),
        &limits(),
        0.5,
    ));
    compensating_with(&a, RejectReason::OutOfStock, Step::Release);
    assert_eq!(a.payment_maybe_made, Some(false));
}

#[test]
fn a_refused_authorization_voids_the_key_but_a_decline_does_not() {
    let a = record(decide(
        &placing(Step::Authorize),
        refused(RejectReason::UnknownCustomer),
        &limits(),
        0.5,
    ));
    compensating_with(&a, RejectReason::UnknownCustomer, Step::UndoPayment);

    let a = record(decide(
        &placing(Step::Authorize),
        StepResult::Refused {
            reason: RejectReason::InsufficientFunds,
            detail: "payment p9 declined".into(),
            declined_payment_id: Some("p9".into()),
        },
        &limits(),
        0.5,
    ));
    compensating_with(&a, RejectReason::InsufficientFunds, Step::Release);
    assert_eq!(
        a.payment_id.as_deref(),
        Some("p9"),
        "the declined payment is shown"
    );
    assert_eq!(a.payment_maybe_made, Some(false));
}

#[test]
fn a_refused_capture_undoes_the_payment_first() {
    let a = record(decide(
        &placing(Step::Capture),
        refused(RejectReason::AuthorizationExpired),
        &limits(),
        0.5,
    ));
    compensating_with(&a, RejectReason::AuthorizationExpired, Step::UndoPayment);
}

// --- Outages before the pivot: patience, then compensation.

#[test]
fn an_outage_before_the_pivot_is_waited_out_within_patience() {
    for step in [Step::Reserve, Step::Authorize, Step::Capture] {
        let mut saga = placing(step);
        saga.step_age = Duration::from_secs(29);
        saga.attempts = 40;
        match decide(&saga, unavailable(), &limits(), 0.5) {
            Decision::Retry {
                wait,
                error,
                maybe_sent,
            } => {
                assert!(wait <= limits().max_backoff, "{step:?}: {wait:?}");
                assert!(error.contains("down"), "{error}");
                assert!(maybe_sent, "a sent attempt is remembered");
            }
            other => panic!("{step:?}: {other:?}"),
        }
    }
}

#[test]
fn an_open_breaker_is_retried_at_its_next_probe_and_uncertainty_sticks() {
    let mut saga = placing(Step::Authorize);
    assert_eq!(
        decide(&saga, not_sent(), &limits(), 0.5),
        Decision::Retry {
            wait: Duration::from_secs(4),
            error: "circuit breaker open".into(),
            maybe_sent: false,
        }
    );
    // An earlier attempt may have landed: a later refusal to send does not
    // make the step certain again.
    saga.step_maybe_sent = true;
    assert!(matches!(
        decide(&saga, not_sent(), &limits(), 0.5),
        Decision::Retry { maybe_sent: true, .. }
    ));
}

#[test]
fn past_patience_an_outage_compensates_every_step_that_may_have_happened() {
    let mut saga = placing(Step::Reserve);
    saga.step_age = Duration::from_secs(30);
    let a = record(decide(&saga, unavailable(), &limits(), 0.5));
    compensating_with(&a, RejectReason::ServiceUnavailable, Step::Release);
    assert_eq!(a.stock_maybe_reserved, Some(true));
    let detail = &a.reject.as_ref().expect("reject").1;
    assert!(detail.contains("RESERVE") && detail.contains("down"), "{detail}");

    // The lost-reply case: an earlier AUTHORIZE attempt was sent and never
    // answered; the last one was refused by an open breaker. The key is
    // voided all the same.
    let mut saga = placing(Step::Authorize);
    saga.step_age = Duration::from_secs(31);
    saga.step_maybe_sent = true;
    let a = record(decide(&saga, not_sent(), &limits(), 0.5));
    compensating_with(&a, RejectReason::ServiceUnavailable, Step::UndoPayment);
    assert_eq!(a.payment_maybe_made, Some(true));
}

#[test]
fn past_patience_a_step_the_mesh_never_sent_is_not_undone() {
    // Every AUTHORIZE attempt refused by the mesh: only the stock goes back.
    let mut saga = placing(Step::Authorize);
    saga.step_age = Duration::from_secs(31);
    let a = record(decide(&saga, not_sent(), &limits(), 0.5));
    compensating_with(&a, RejectReason::ServiceUnavailable, Step::Release);
    assert_eq!(a.payment_maybe_made, Some(false));
    // Every RESERVE attempt refused by the mesh: nothing to undo at all.
    let mut saga = placing(Step::Reserve);
    saga.step_age = Duration::from_secs(31);
    let a = record(decide(&saga, not_sent(), &limits(), 0.5));
    assert_eq!(
        (a.state, a.order_status),
        (Some(SagaState::Done), Some(OrderStatus::Rejected))
    );
    assert_eq!(a.reject.map(|r| r.0), Some(RejectReason::ServiceUnavailable));
}

#[test]
fn a_broken_invariant_before_the_pivot_compensates_as_internal_never_as_an_outage() {
    for step in [Step::Reserve, Step::Authorize, Step::Capture] {
        let a = record(decide(&placing(step), invariant(), &limits(), 0.5));
        let first = if step == Step::Reserve {
            Step::Release
        } else {
            Step::UndoPayment
        };
        compensating_with(&a, RejectReason::Internal, first);
        let detail = &a.reject.as_ref().expect("reject").1;
        assert!(detail.contains("reservation lacks sku"), "{detail}");
    }
}

// --- After the pivot: forward only.

#[test]
fn after_the_pivot_an_outage_is_retried_through_the_forward_window_then_flagged() {
    let mut saga = placing(Step::Commit);
    saga.step_age = Duration::from_secs(599);
    assert!(matches!(
        decide(&saga, unavailable(), &limits(), 0.5),
        Decision::Retry { .. }
    ));
    saga.step_age = Duration::from_secs(600);
    match decide(&saga, unavailable(), &limits(), 0.5) {
        Decision::NeedsAttention { error } => assert!(error.contains("COMMIT"), "{error}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn after_the_pivot_an_expired_reservation_is_the_one_refund() {
    let a = record(decide(
        &placing(Step::Commit),
        refused(RejectReason::ReservationExpired),
        &limits(),
        0.5,
    ));
    compensating_with(&a, RejectReason::ReservationExpired, Step::UndoPayment);
    let detail = &a.reject.as_ref().expect("reject").1;
    assert!(detail.contains("refunded"), "the reject detail says so: {detail}");
}

#[test]
fn after_the_pivot_any_other_refusal_or_invariant_stops_for_an_operator() {
    for result in [
        refused(RejectReason::StepRefused),
        invariant(),
        StepResult::Captured,
    ] {
        assert!(
            matches!(
                decide(&placing(Step::Commit), result.clone(), &limits(), 0.5),
                Decision::NeedsAttention { .. }
            ),
            "{result:?}"
        );
    }
}

// --- Compensation.

#[test]
fn undo_then_release_then_rejected() {
    let a = record(decide(
        &placing(Step::UndoPayment),
        StepResult::PaymentUndone,
        &limits(),
        0.5,
    ));
    assert_eq!(a.step, Some(Step::Release));
    assert_eq!(a.payment_maybe_made, Some(false));
    let mut releasing = placing(Step::Release);
    releasing.payment_maybe_made = false;
    let a = record(decide(&releasing, StepResult::StockReleased, &limits(), 0.5));
    assert_eq!(
        (a.state, a.order_status),
        (Some(SagaState::Done), Some(OrderStatus::Rejected))
    );
}

#[test]
fn a_cancel_refunds_returns_stock_and_ends_cancelled() {
    let a = record(decide(
        &cancelling(Step::UndoPayment),
        StepResult::PaymentUndone,
        &limits(),
        0.5,
    ));
    assert_eq!(a.step, Some(Step::Release));
    let a = record(decide(
        &cancelling(Step::Release),
        StepResult::StockReleased,
        &limits(),
        0.5,
    ));
    assert_eq!(a.order_status, Some(OrderStatus::Cancelled));
}

#[test]
fn a_payment_found_captured_turns_a_placing_saga_forward() {
    let a = record(decide(
        &placing(Step::UndoPayment),
        StepResult::PaymentFoundCaptured {
            payment_id: "p1".into(),
        },
        &limits(),
        0.5,
    ));
    assert_eq!(a.state, Some(SagaState::Running));
    assert_eq!(a.step, Some(Step::Commit));
    assert_eq!(a.order_status, Some(OrderStatus::PaymentCaptured));
    assert_eq!(a.payment_captured, Some(true));
    assert_eq!(
        a.payment_id.as_deref(),
        Some("p1"),
        "the captured payment is the order's"
    );
    assert_eq!(a.reject, Some((RejectReason::NotRejected, String::new())));
    // A refund (after an expired reservation) that finds the payment
    // captured does not turn forward again: a failed attempt.
    let mut refunding = placing(Step::UndoPayment);
    refunding.payment_captured = true;
    assert!(matches!(
        decide(
            &refunding,
            StepResult::PaymentFoundCaptured {
                payment_id: "p1".into()
            },
            &limits(),
            0.5
        ),
        Decision::Retry { .. }
    ));
    // A cancel that finds a capture where it refunds is a failed attempt.
    assert!(matches!(
        decide(
            &cancelling(Step::UndoPayment),
            StepResult::PaymentFoundCaptured {
                payment_id: "p1".into()
            },
            &limits(),
            0.5
        ),
        Decision::Retry { .. }
    ));
}

#[test]
fn a_compensating_step_is_retried_with_capped_backoff_then_flagged() {
    let policy = limits();
    for step in [Step::UndoPayment, Step::Release] {
        for result in [unavailable(), refused(RejectReason::StepRefused), invariant()] {
            let mut saga = placing(step);
            for attempts in 0..policy.max_compensation_attempts - 1 {
                saga.attempts = attempts;
                match decide(&saga, result.clone(), &policy, 0.999) {
                    Decision::Retry { wait, .. } => {
                        assert!(wait <= policy.compensation_max_backoff, "{wait:?}");
                        assert!(
                            wait >= compensation_backoff(attempts, &policy, 0.999),
                            "exponential: attempt {attempts}"
                        );
                    }
                    other => panic!("{step:?} {result:?} attempt {attempts}: {other:?}"),
                }
            }
            saga.attempts = policy.max_compensation_attempts - 1;
            match decide(&saga, result.clone(), &policy, 0.5) {
                Decision::NeedsAttention { error } => {
                    assert!(error.contains(step.as_str()), "{error}");
                    assert!(
                        error.contains(&policy.max_compensation_attempts.to_string()),
                        "{error}"
                    );
                }
                other => panic!("{step:?} {result:?}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_compensation_waits_for_an_open_breaker_probe_when_it_is_later_than_the_backoff() {
    let result = StepResult::Unavailable {
        detail: "breaker".into(),
        maybe_sent: false,
        retry_after: Some(Duration::from_secs(5)),
    };
    match decide(&placing(Step::UndoPayment), result, &limits(), 0.5) {
        Decision::Retry { wait, .. } => assert_eq!(wait, Duration::from_secs(5)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn backoff_doubles_and_caps() {
    let p = limits();
    assert_eq!(backoff(0, &p, 1.0), Duration::from_millis(100));
    assert_eq!(backoff(1, &p, 1.0), Duration::from_millis(200));
    assert_eq!(backoff(4, &p, 1.0), Duration::from_millis(1600));
    assert_eq!(backoff(5, &p, 1.0), Duration::from_secs(2));
    assert_eq!(backoff(1_000, &p, 1.0), Duration::from_secs(2));
    assert_eq!(backoff(3, &p, 0.0), Duration::ZERO);
    assert_eq!(backoff(-1, &p, 1.0), Duration::from_millis(100));
    // Compensation spans an outage: the same doubling, a longer cap.
    assert_eq!(compensation_backoff(5, &p, 1.0), Duration::from_millis(3200));
    assert_eq!(compensation_backoff(9, &p, 1.0), Duration::from_millis(51_200));
    assert_eq!(compensation_backoff(10, &p, 1.0), Duration::from_secs(60));
}

#[test]
fn a_lease_must_cover_the_call_and_the_skew_margin() {
    let s = Duration::from_secs;
    assert!(lease_covers(s(10), s(5), s(1)));
    assert!(!lease_covers(s(6), s(5), s(1)));
    assert!(!lease_covers(s(0), s(5), s(1)));
}

// --- Properties over every step x every result.

fn every_saga() -> Vec<SagaView> {
    let mut sagas = Vec::new();
    for step in Step::ALL.iter().copied() {
        for age in [Duration::ZERO, Duration::from_secs(10_000)] {
            for attempts in [0, 4] {
                for step_maybe_sent in [false, true] {
                    for saga in [placing(step), cancelling(step)] {
                        if saga.kind == SagaKind::Cancel
                            && !matches!(step, Step::UndoPayment | Step::Release | Step::Finish)
                        {
                            continue;
                        }
                        sagas.push(SagaView {
                            step_age: age,
                            attempts,
                            step_maybe_sent,
                            ..saga
                        });
                    }
                }
            }
        }
    }
    sagas
}

#[test]
fn every_combination_decides_and_keeps_the_saga_promises() {
    let policy = limits();
    for saga in every_saga() {
        for result in every_result() {
            let decision = decide(&saga, result.clone(), &policy, 0.5);
            let case = format!("{saga:?} / {result:?} -> {decision:?}");
            match &decision {
                Decision::Record(a) => {
                    // After the pivot the saga never compensates, except for
                    // an expired reservation at COMMIT.
                    if saga.payment_captured
                        && saga.kind == SagaKind::Place
                        && saga.state == SagaState::Running
                        && a.state == Some(SagaState::Compensating)
                    {
                        assert_eq!(
                            a.reject.as_ref().map(|r| r.0),
                            Some(RejectReason::ReservationExpired),
                            "{case}"
                        );
                    }
                    // Entering compensation past RESERVE always releases
                    // stock by key, and says why.
                    if a.state == Some(SagaState::Compensating) && saga.state == SagaState::Running {
                        if saga.step != Step::Reserve {
                            assert_eq!(a.stock_maybe_reserved, Some(true), "{case}");
                        }
                        assert!(a.reject.is_some(), "{case}");
                    }
                    // Uncertainty is sticky: a step an attempt may have
                    // reached is undone (a decline excepted: its key holds it).
                    let declined = matches!(
                        result,
                        StepResult::Refused {
                            declined_payment_id: Some(_),
                            ..
                        }
                    );
                    if saga.step_maybe_sent
                        && saga.state == SagaState::Running
                        && a.reject.is_some()
                        && !declined
                    {
                        match saga.step {
                            Step::Reserve => assert_eq!(a.stock_maybe_reserved, Some(true), "{case}"),
                            Step::Authorize => assert_eq!(a.payment_maybe_made, Some(true), "{case}"),
                            _ => {}
                        }
                    }
                    // A reached AUTHORIZE is undone unless the key holds a decline.
                    if a.state == Some(SagaState::Compensating)
                        && matches!(saga.step, Step::Capture | Step::Commit)
                    {
                        assert_eq!(a.step, Some(Step::UndoPayment), "{case}");
                    }
                    // A compensating saga goes forward again only on a found capture.
                    if saga.state == SagaState::Compensating && a.state == Some(SagaState::Running) {
                        assert!(
                            matches!(result, StepResult::PaymentFoundCaptured { .. }),
                            "{case}"
                        );
                        assert_eq!(saga.kind, SagaKind::Place, "{case}");
                    }
                    // A terminal record publishes the matching event, and
                    // only a terminal record publishes one.
                    let expected_event = match a.order_status {
                        Some(OrderStatus::Confirmed) => Some(OrderEvent::Confirmed),
                        Some(OrderStatus::Rejected) => Some(OrderEvent::Rejected),
                        Some(OrderStatus::Cancelled) => Some(OrderEvent::Cancelled),
                        _ => None,
                    };
                    assert_eq!(a.event, expected_event, "{case}");
                    assert_eq!(a.event.is_some(), a.state == Some(SagaState::Done), "{case}");
                    // Cancels end cancelled, placements confirmed or rejected.
                    if a.state == Some(SagaState::Done) {
                        assert_eq!(a.step, Some(Step::Finish), "{case}");
                        let want: &[OrderStatus] = match (saga.kind, saga.state) {
                            (SagaKind::Cancel, _) => &[OrderStatus::Cancelled],
                            (SagaKind::Place, SagaState::Compensating) => &[OrderStatus::Rejected],
                            (SagaKind::Place, _) => &[OrderStatus::Confirmed, OrderStatus::Rejected],
                        };
                        assert!(a.order_status.is_some_and(|s| want.contains(&s)), "{case}");
                    }
                }
                Decision::Retry {
                    wait,
                    error,
                    maybe_sent,
                } => {
                    assert!(!error.is_empty(), "{case}");
                    assert!(*maybe_sent || !saga.step_maybe_sent, "never forgotten: {case}");
                    assert!(*wait <= policy.compensation_max_backoff, "{case}");
                    // Retries are for outages, or for compensation attempts.
                    assert!(
                        matches!(result, StepResult::Unavailable { .. })
                            || saga.state == SagaState::Compensating,
                        "{case}"
                    );
                }
                Decision::NeedsAttention { error } => {
                    assert!(!error.is_empty(), "{case}");
                    // Only after the pivot or in compensation does a saga
                    // stop for an operator.
                    assert!(
                        saga.step == Step::Commit || saga.state == SagaState::Compensating,
                        "{case}"
                    );
                }
            }
        }
    }
}

// --- Decisions that the properties above leave open (each found by
// mutation testing: flipping it made no test fail).

#[test]
fn a_step_recorded_before_the_failed_one_is_undone_whatever_its_flag_says() {
    // CAPTURE comes after a recorded AUTHORIZE: the payment is undone even
    // if the flag says nothing was paid.
    let mut saga = placing(Step::Capture);
    saga.payment_maybe_made = false;
    let a = record(decide(
        &saga,
        refused(RejectReason::AuthorizationExpired),
        &limits(),
        0.5,
    ));
    compensating_with(&a, RejectReason::AuthorizationExpired, Step::UndoPayment);
    assert_eq!(a.payment_maybe_made, Some(true));
    // Past RESERVE the stock is released by key, even for a step never sent.
    let mut saga = placing(Step::Authorize);
    saga.stock_maybe_reserved = false;
    saga.step_age = Duration::from_secs(31);
    let a = record(decide(&saga, not_sent(), &limits(), 0.5));
    compensating_with(&a, RejectReason::ServiceUnavailable, Step::Release);
    assert_eq!(a.stock_maybe_reserved, Some(true));
}

#[test]
fn only_an_authorization_can_be_declined() {
    // A payment id on a refusal at RESERVE is no decline: the stock is still
    // released, and no payment is named.
    let declined = StepResult::Refused {
        reason: RejectReason::InsufficientFunds,
        detail: "declined".into(),
        declined_payment_id: Some("p9".into()),
    };
    let a = record(decide(&placing(Step::Reserve), declined.clone(), &limits(), 0.5));
    assert_eq!(a.stock_maybe_reserved, Some(true));
    assert_eq!(a.payment_id, None);
    let a = record(decide(&placing(Step::Capture), declined, &limits(), 0.5));
    assert_eq!(
        a.payment_id, None,
        "a refused capture keeps its authorization's id"
    );
}

#[test]
fn undoing_the_payment_of_a_saga_that_reserved_nothing_finishes_with_nothing_held() {
    let mut saga = placing(Step::UndoPayment);
    saga.stock_maybe_reserved = false;
    let a = record(decide(&saga, StepResult::PaymentUndone, &limits(), 0.5));
    assert_eq!(
        (a.state, a.step, a.order_status),
        (
            Some(SagaState::Done),
            Some(Step::Finish),
            Some(OrderStatus::Rejected)
        )
    );
    assert_eq!(a.payment_maybe_made, Some(false), "the payment is known undone");
}

#[test]
fn an_unexpected_result_is_named_in_the_error() {
    match decide(&placing(Step::Commit), StepResult::Captured, &limits(), 0.5) {
        Decision::NeedsAttention { error } => {
            assert!(error.contains("Captured"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    // Before the pivot the unexpected result compensates, its name in the detail.
    let a = record(decide(
        &placing(Step::Reserve),
        StepResult::PaymentUndone,
        &limits(),
        0.5,
    ));
    let (reason, detail) = a.reject.expect("a reject reason");
    assert_eq!(reason, RejectReason::Internal);
    assert!(detail.contains("PaymentUndone"), "{detail}");
}

#[test]
fn a_reservation_must_outlive_three_patiences_and_the_forward_window() {
    assert_eq!(limits().reservation_needed(), Duration::from_secs(3 * 30 + 600));
}
