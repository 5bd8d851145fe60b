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
    assert!(b.try_acquire(Instant::now()).is_err(), "only 2 probes");
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
