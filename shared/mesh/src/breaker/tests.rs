use super::*;

fn config(window: Window) -> BreakerConfig {
    BreakerConfig {
        name: "test".into(),
        window,
        failure_rate_threshold: 0.5,
        slow_call_rate_threshold: 1.0,
        slow_call_duration: Duration::from_secs(1),
        minimum_calls: 4,
        minimum_callers: 1,
        deadline_fault_after: Duration::from_secs(1),
        wait_in_open: Duration::from_secs(10),
        permitted_in_half_open: 2,
    }
}

/// A call as the breaker counts it, by one caller (slow when it took 2 s).
fn outcome(failure: bool, elapsed: Duration) -> Call {
    Call {
        failure,
        slow: elapsed >= Duration::from_secs(1),
        caller: Caller(0),
    }
}

fn call(b: &mut CircuitBreaker, failure: bool, elapsed: Duration) -> Result<(), Rejected> {
    let now = Instant::now();
    let permit = b.try_acquire(now)?;
    b.record(permit, outcome(failure, elapsed), now);
    Ok(())
}

const FAST: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn opens_at_the_threshold_and_not_before_the_minimum_calls() {
    let mut b = CircuitBreaker::new(config(Window::Count(10)));
    for _ in 0..3 {
        call(&mut b, true, FAST).expect("closed");
    }
    assert_eq!(
        b.state(Instant::now()),
        StateKind::Closed,
        "3 failures < minimum 4"
    );
    call(&mut b, true, FAST).expect("closed");
    assert_eq!(b.state(Instant::now()), StateKind::Open);
    assert_eq!(b.stats().opened, 1);
}

#[tokio::test(start_paused = true)]
async fn stays_closed_below_the_failure_rate() {
    let mut b = CircuitBreaker::new(config(Window::Count(10)));
    for i in 0..10 {
        call(&mut b, i % 3 == 2, FAST).expect("closed");
    }
    assert_eq!(
        b.state(Instant::now()),
        StateKind::Closed,
        "never 50% failed: 1/4, 2/6, 3/9 at worst"
    );
}

#[tokio::test(start_paused = true)]
async fn rejects_while_open_then_lets_exactly_n_probes_through() {
    let mut b = CircuitBreaker::new(config(Window::Count(10)));
    for _ in 0..4 {
        call(&mut b, true, FAST).expect("closed");
    }
    let rejected = b.try_acquire(Instant::now()).expect_err("open");
    assert_eq!(rejected.state, StateKind::Open);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(
        b.try_acquire(Instant::now()).is_err(),
        "still open before the wait ends"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(b.state(Instant::now()), StateKind::HalfOpen);
    let p1 = b.try_acquire(Instant::now()).expect("probe 1");
    assert_eq!(
        b.stats().last_transition,
        Some((StateKind::Open, StateKind::HalfOpen)),
        "the log names the state it left, not the state time reports"
    );
    let p2 = b.try_acquire(Instant::now()).expect("probe 2");
    let rejected_before = b.stats().rejected;
    let third = b.try_acquire(Instant::now()).expect_err("only 2 probes");
    assert_eq!(third.state, StateKind::HalfOpen);
    assert_eq!(
        third.retry_at,
        Instant::now() + Duration::from_secs(10),
        "the next chance: when the probes are back"
    );
    assert_eq!(b.stats().rejected, rejected_before + 1);
    let now = Instant::now();
    b.record(p1, outcome(false, FAST), now);
    assert_eq!(b.state(now), StateKind::HalfOpen, "waits for every probe");
    b.record(p2, outcome(false, FAST), now);
    assert_eq!(b.state(now), StateKind::Closed, "closes on successful probes");
    assert_eq!(
        b.stats().last_transition,
        Some((StateKind::HalfOpen, StateKind::Closed))
    );
}

#[tokio::test(start_paused = true)]
async fn reopens_when_probes_fail() {
    let mut b = CircuitBreaker::new(config(Window::Count(10)));
    for _ in 0..4 {
        call(&mut b, true, FAST).expect("closed");
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    call(&mut b, true, FAST).expect("probe");
    call(&mut b, false, FAST).expect("probe");
    assert_eq!(
        b.state(Instant::now()),
        StateKind::Open,
        "1/2 failed probes >= 50%"
    );
    assert_eq!(b.stats().opened, 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_its_slot() {
    let mut b = CircuitBreaker::new(config(Window::Count(10)));
    for _ in 0..4 {
        call(&mut b, true, FAST).expect("closed");
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let p1 = b.try_acquire(Instant::now()).expect("probe 1");
    assert_eq!(
        b.stats().last_transition,
        Some((StateKind::Open, StateKind::HalfOpen)),
        "the log names the state it left, not the state time reports"
    );
    let _p2 = b.try_acquire(Instant::now()).expect("probe 2");
    b.cancel(p1);
    assert!(b.try_acquire(Instant::now()).is_ok(), "the slot came back");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_count() {
    let mut cfg = config(Window::Count(10));
    cfg.slow_call_rate_threshold = 0.5;
    let mut b = CircuitBreaker::new(cfg);
    for _ in 0..4 {
        call(&mut b, false, Duration::from_secs(2)).expect("closed");
    }
    assert_eq!(
        b.state(Instant::now()),
        StateKind::Open,
        "all successful but slow"
    );
}

#[tokio::test(start_paused = true)]
async fn a_result_from_before_the_breaker_opened_is_ignored() {
    let mut b = CircuitBreaker::new(config(Window::Count(10)));
    let early = b.try_acquire(Instant::now()).expect("closed");
    for _ in 0..4 {
        call(&mut b, true, FAST).expect("closed");
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = b.try_acquire(Instant::now()).expect("half-open");
    b.record(early, outcome(true, FAST), Instant::now());
    b.record(probe, outcome(false, FAST), Instant::now());
    assert_eq!(
        b.state(Instant::now()),
        StateKind::HalfOpen,
        "the stale failure did not count"
    );
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let mut b = CircuitBreaker::new(config(Window::Time(Duration::from_secs(5))));
    for _ in 0..3 {
        call(&mut b, true, FAST).expect("closed");
    }
    tokio::time::advance(Duration::from_secs(6)).await;
    call(&mut b, true, FAST).expect("closed");
    assert_eq!(
        b.state(Instant::now()),
        StateKind::Closed,
        "the first 3 left the window"
    );
    for _ in 0..3 {
        call(&mut b, true, FAST).expect("closed");
    }
    assert_eq!(b.state(Instant::now()), StateKind::Open);
}

#[tokio::test(start_paused = true)]
async fn failures_of_fewer_callers_than_the_minimum_never_open_it() {
    let mut cfg = config(Window::Count(10));
    cfg.minimum_callers = 3;
    let mut b = CircuitBreaker::new(cfg);
    let by = |b: &mut CircuitBreaker, caller: u64, failure: bool| {
        let permit = b.try_acquire(Instant::now()).expect("closed");
        let call = Call {
            failure,
            slow: false,
            caller: Caller(caller),
        };
        b.record(permit, call, Instant::now());
    };
    for _ in 0..10 {
        by(&mut b, 1, true);
    }
    assert_eq!(b.state(Instant::now()), StateKind::Closed, "one caller");
    by(&mut b, 2, true);
    assert_eq!(b.state(Instant::now()), StateKind::Closed, "two callers");
    by(&mut b, 3, true);
    assert_eq!(b.state(Instant::now()), StateKind::Open, "three callers");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_of_one_caller_never_open_it() {
    let mut cfg = config(Window::Time(Duration::from_secs(5)));
    cfg.minimum_callers = 2;
    cfg.slow_call_rate_threshold = 0.5;
    let mut b = CircuitBreaker::new(cfg);
    let slow = |caller| Call {
        failure: false,
        slow: true,
        caller: Caller(caller),
    };
    for _ in 0..6 {
        let permit = b.try_acquire(Instant::now()).expect("closed");
        b.record(permit, slow(7), Instant::now());
        tokio::time::advance(Duration::from_millis(400)).await;
    }
    assert_eq!(
        b.state(Instant::now()),
        StateKind::Closed,
        "one caller's slow calls"
    );
    let permit = b.try_acquire(Instant::now()).expect("closed");
    b.record(permit, slow(8), Instant::now());
    assert_eq!(b.state(Instant::now()), StateKind::Open);
}

#[test]
fn a_timeout_counts_only_when_the_server_had_time() {
    let b = CircuitBreaker::new(config(Window::Count(10)));
    let who = Caller(1);
    let timed_out = Outcome::ServerFault(tonic::Code::DeadlineExceeded);
    let short = Duration::from_millis(999);
    let fair = Duration::from_secs(1);
    assert!(
        !b.judge(timed_out, short, short, who).failure,
        "the caller's own short deadline"
    );
    assert!(b.judge(timed_out, fair, fair, who).failure);
    let internal = Outcome::ServerFault(tonic::Code::Internal);
    assert!(
        b.judge(internal, FAST, FAST, who).failure,
        "other faults count at once"
    );
    let caller_error = Outcome::CallerError(tonic::Code::InvalidArgument);
    assert!(!b.judge(caller_error, fair, fair, who).failure);
    assert_eq!(b.judge(internal, FAST, FAST, who).caller, who);
}

#[test]
fn a_call_is_slow_by_when_its_answer_began_not_by_its_end() {
    let b = CircuitBreaker::new(config(Window::Count(10)));
    let ok = Outcome::Success;
    let long = Duration::from_secs(60);
    assert!(!b.judge(ok, FAST, long, Caller(1)).slow, "a long stream");
    assert!(b.judge(ok, Duration::from_secs(1), long, Caller(1)).slow);
}

/// A time window keeps one-second buckets: calls within a second of a
/// bucket's start share it (and leave the window with it), a call a second
/// or more later starts the next.
#[tokio::test(start_paused = true)]
async fn a_time_window_counts_in_one_second_buckets() {
    let mut cfg = config(Window::Time(Duration::from_secs(2)));
    cfg.minimum_calls = 2;
    let record = |b: &mut CircuitBreaker, failure: bool| {
        let permit = b.try_acquire(Instant::now()).expect("closed");
        b.record(permit, outcome(failure, FAST), Instant::now());
    };
    // Two calls 0.9 s apart share a bucket, and leave together: at 2.5 s a
    // failure alone is below the minimum calls.
    let mut b = CircuitBreaker::new(cfg.clone());
    record(&mut b, false);
    tokio::time::advance(Duration::from_millis(900)).await;
    record(&mut b, false);
    tokio::time::advance(Duration::from_millis(1600)).await;
    record(&mut b, true);
    assert_eq!(
        b.state(Instant::now()),
        StateKind::Closed,
        "the first bucket left whole"
    );
    // A failure exactly a second after a bucket began starts a bucket of its
    // own, which is still in the window when the first leaves.
    let mut b = CircuitBreaker::new(cfg);
    for _ in 0..3 {
        record(&mut b, false);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    record(&mut b, true);
    assert_eq!(b.state(Instant::now()), StateKind::Closed, "1 failure of 4 calls");
    tokio::time::advance(Duration::from_secs(1)).await;
    record(&mut b, false);
    assert_eq!(
        b.state(Instant::now()),
        StateKind::Open,
        "1 failure of the 2 calls still in the window"
    );
}

#[tokio::test(start_paused = true)]
async fn operators_see_each_transition_counted_and_the_open_deadline() {
    let mut b = CircuitBreaker::new(config(Window::Count(10)));
    assert_eq!(b.open_until(), None);
    for _ in 0..4 {
        call(&mut b, true, FAST).expect("closed");
    }
    let opened_at = Instant::now();
    assert_eq!(b.open_until(), Some(opened_at + Duration::from_secs(10)));
    for _ in 0..2 {
        assert!(b.try_acquire(Instant::now()).is_err());
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    call(&mut b, false, FAST).expect("probe");
    assert_eq!(b.open_until(), None, "half-open");
    call(&mut b, false, FAST).expect("probe");
    assert_eq!(
        b.stats(),
        BreakerStats {
            opened: 1,
            half_opened: 1,
            closed: 1,
            rejected: 2,
            last_transition: Some((StateKind::HalfOpen, StateKind::Closed)),
        }
    );
    for _ in 0..4 {
        call(&mut b, true, FAST).expect("closed");
    }
    assert_eq!(b.stats().opened, 2);
}

#[test]
fn states_are_named_as_operators_read_them() {
    let names: Vec<&str> = [StateKind::Closed, StateKind::Open, StateKind::HalfOpen]
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(names, ["CLOSED", "OPEN", "HALF_OPEN"]);
}

#[tokio::test(start_paused = true)]
async fn many_distinct_callers_are_counted_up_to_what_it_needs() {
    let mut cfg = config(Window::Count(50));
    cfg.minimum_calls = 20;
    cfg.minimum_callers = MAX_MINIMUM_CALLERS;
    let mut b = CircuitBreaker::new(cfg);
    for caller in 0..19 {
        let permit = b.try_acquire(Instant::now()).expect("closed");
        let call = Call {
            failure: true,
            slow: false,
            caller: Caller(caller),
        };
        b.record(permit, call, Instant::now());
    }
    assert_eq!(
        b.state(Instant::now()),
        StateKind::Closed,
        "below the minimum calls"
    );
    call(&mut b, true, FAST).expect("closed");
    assert_eq!(
        b.state(Instant::now()),
        StateKind::Open,
        "twenty callers, far above eight"
    );
}

// --- The layer: readiness, and permits given back.

type MockService = tower_test::mock::Mock<Request<Body>, Response<Body>>;
type MockHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn layer_over_mock(cfg: BreakerConfig) -> (Breaker<MockService>, MockHandle, BreakerHandle) {
    let (inner, handle) = tower_test::mock::pair();
    let breaker = BreakerHandle::new(cfg);
    let layer = BreakerLayer::new(breaker.clone(), Arc::new(Classifier::default()));
    (layer.layer(inner), handle, breaker)
}

fn request() -> Request<Body> {
    Request::new(Body::empty())
}

#[tokio::test]
async fn the_layer_is_ready_only_when_its_service_is() {
    use tower::ServiceExt;
    let (mut service, mut handle, _) = layer_over_mock(config(Window::Count(10)));
    handle.allow(0);
    let ready = tokio::time::timeout(Duration::from_millis(50), service.ready()).await;
    assert!(ready.is_err(), "not ready while the inner service is not");
    handle.allow(1);
    tokio::time::timeout(Duration::from_secs(1), service.ready())
        .await
        .expect("ready once the inner service is")
        .expect("no error");
}

#[tokio::test]
async fn a_probe_whose_caller_gave_up_frees_its_slot() {
    use tower::ServiceExt;
    let mut cfg = config(Window::Count(10));
    cfg.permitted_in_half_open = 1;
    cfg.wait_in_open = Duration::from_millis(20);
    let (mut service, mut handle, breaker) = layer_over_mock(cfg);
    {
        let mut b = breaker.lock();
        for _ in 0..4 {
            let permit = b.try_acquire(Instant::now()).expect("closed");
            b.record(permit, outcome(true, FAST), Instant::now());
        }
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    handle.allow(2);
    // The one probe: its caller gives up before any answer.
    let probe = service.ready().await.expect("ready").call(request());
    let _ = handle
        .next_request()
        .await
        .expect("the probe reached the service");
    drop(probe);
    // The slot came back: the next call is a probe too, not refused.
    let next = service.ready().await.expect("ready").call(request());
    let (_, respond) = handle
        .next_request()
        .await
        .expect("the next call reached the service");
    respond.send_response(Response::new(Body::empty()));
    next.await.expect("answered");
}

/// Through the layer: failures of several callers open the breaker, whose
/// handle then reports it, and the next call is refused without reaching
/// the service, marked as not sent with the wait until the next probe.
#[tokio::test]
async fn the_layer_records_outcomes_and_refuses_while_open() {
    use tower::ServiceExt;
    let mut cfg = config(Window::Count(10));
    cfg.minimum_callers = 2;
    let (mut service, mut handle, breaker) = layer_over_mock(cfg);
    handle.allow(10);
    for _ in 0..4 {
        let call = service.ready().await.expect("ready").call(request());
        let (_, respond) = handle.next_request().await.expect("reached the service");
        respond.send_response(crate::classify::status_response(tonic::Status::internal(
            "broken",
        )));
        let response = call.await.expect("a response");
        assert!(
            NotSent::of_response(&response).is_none(),
            "answered by the server"
        );
    }
    assert_eq!(breaker.state(), StateKind::Open);
    assert_eq!(breaker.name(), "test");
    assert_eq!(breaker.stats().opened, 1);
    let wait = breaker.opens_for().expect("open");
    assert!(
        wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
        "{wait:?}"
    );
    let refused = service
        .ready()
        .await
        .expect("ready")
        .call(request())
        .await
        .expect("a response");
    match NotSent::of_response(&refused) {
        Some(NotSent::Breaker { retry_after }) => {
            assert!(retry_after > Duration::from_secs(9), "{retry_after:?}")
        }
        other => panic!("not marked as the breaker's refusal: {other:?}"),
    }
    let status = tonic::Status::from_header_map(refused.headers()).expect("a status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("\"test\" is OPEN; next probe in"),
        "{}",
        status.message()
    );
    assert_eq!(breaker.stats().rejected, 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(20), handle.next_request())
            .await
            .is_err(),
        "the refused call never reached the service"
    );
}

#[tokio::test(start_paused = true)]
async fn a_half_open_refusal_names_the_wait_for_the_probes() {
    let mut b = CircuitBreaker::new(config(Window::Count(10)));
    for _ in 0..4 {
        call(&mut b, true, FAST).expect("closed");
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let _probes = (b.try_acquire(Instant::now()), b.try_acquire(Instant::now()));
    let rejected = b.try_acquire(Instant::now()).expect_err("probes out");
    let response = rejection("test", rejected);
    assert_eq!(
        NotSent::of_response(&response),
        Some(NotSent::Breaker {
            retry_after: Duration::from_secs(10)
        }),
        "half-open: retry when the probes are back, not at once"
    );
}

/// The proptest model: the count window recomputed from scratch from the
/// full history of the current closed period, and half-open judged on
/// its probes, as the resilience4j documentation states the semantics.
mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Event {
        Call { failure: bool, slow: bool },
        Wait(u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (any::<bool>(), any::<bool>()).prop_map(|(failure, slow)| Event::Call { failure, slow }),
            1 => (0u64..15).prop_map(Event::Wait),
        ]
    }

    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    enum M {
        Closed,
        Open { until: u64 },
        HalfOpen,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn breaker_matches_model(events in proptest::collection::vec(event(), 1..200), size in 1u32..8, min in 1u32..8, probes in 1u32..4) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
            rt.block_on(async move {
                let mut cfg = config(Window::Count(size));
                cfg.minimum_calls = min;
                cfg.permitted_in_half_open = probes;
                cfg.slow_call_rate_threshold = 0.75;
                let mut b = CircuitBreaker::new(cfg);
                let start = Instant::now();
                let mut m = M::Closed;
                let mut history: Vec<(bool, bool)> = Vec::new();
                let mut probe_results: Vec<(bool, bool)> = Vec::new();
                let rates = |calls: &[(bool, bool)]| {
                    let n = calls.len().max(1) as f64;
                    let f = calls.iter().filter(|c| c.0).count() as f64 / n;
                    let s = calls.iter().filter(|c| c.1).count() as f64 / n;
                    f >= 0.5 || s >= 0.75
                };
                for event in events {
                    let now_s = Instant::now().duration_since(start).as_secs();
                    match event {
                        Event::Wait(s) => tokio::time::advance(Duration::from_secs(s)).await,
                        Event::Call { failure, slow } => {
                            if let M::Open { until } = m && now_s >= until {
                                m = M::HalfOpen;
                                probe_results.clear();
                            }
                            let elapsed = if slow { Duration::from_secs(2) } else { FAST };
                            let got = b.try_acquire(Instant::now());
                            match m {
                                M::Open { .. } => { prop_assert!(got.is_err()); }
                                M::Closed => {
                                    let permit = got.expect("closed admits");
                                    b.record(permit, outcome(failure, elapsed), Instant::now());
                                    history.push((failure, slow));
                                    let window: Vec<_> = history.iter().rev().take(size as usize).copied().collect();
                                    if window.len() as u32 >= min && rates(&window) {
                                        m = M::Open { until: now_s + 10 };
                                        history.clear();
                                    }
                                }
                                M::HalfOpen => {
                                    let permit = got.expect("half-open admits one probe at a time here");
                                    b.record(permit, outcome(failure, elapsed), Instant::now());
                                    probe_results.push((failure, slow));
                                    if probe_results.len() as u32 >= probes {
                                        if rates(&probe_results) { m = M::Open { until: now_s + 10 }; } else { m = M::Closed; history.clear(); }
                                    }
                                }
                            }
                        }
                    }
                    let expected = match m {
                        M::Closed => StateKind::Closed,
                        M::Open { until } if Instant::now().duration_since(start).as_secs() >= until => StateKind::HalfOpen,
                        M::Open { .. } => StateKind::Open,
                        M::HalfOpen => StateKind::HalfOpen,
                    };
                    prop_assert_eq!(b.state(Instant::now()), expected);
                }
                Ok::<(), TestCaseError>(())
            })?;
        }
    }
}
