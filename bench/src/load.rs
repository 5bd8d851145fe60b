//! The load generator: closed loop (a fixed number of workers, each sending
//! its next request when the last one finished) or open loop (requests sent
//! at a fixed rate whatever the answers do), a warm-up, then a measured
//! window.
//!
//! Latency in the open loop is measured from each request's *intended* send
//! time (start + i / rate), not from when it was actually sent: when the
//! server stalls, requests that queue behind it (in the client's in-flight
//! limit, a connection, or the server) count their waiting. Measuring from
//! the actual send would hide exactly the stalls a user sees: the
//! "coordinated omission" of closed-loop tools.
//!
//! A request counts when it *completes* inside the window; the window's
//! start and end call a [`Window`] (the CPU and database snapshots) while
//! the load is still running, so both ends of the measurement see the same
//! steady state.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Closed { concurrency: usize },
    Open { rate: f64, max_in_flight: usize },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    pub warmup: Duration,
    pub duration: Duration,
    /// Most requests to start in all (warm-up included); the window ends
    /// early when they are used up (a customer with a limited balance).
    pub budget: Option<u64>,
}

/// What one request came to: `tag` sorts it into a histogram of its own
/// besides the overall one (e.g. "bare" / "mesh" in the echo comparison);
/// an error is a short key such as `UNAVAILABLE` or `REJECTED:OUT_OF_STOCK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub tag: &'static str,
    pub result: Result<(), String>,
}

#[cfg(test)]
impl Done {
    pub fn ok() -> Self {
        Done {
            tag: "",
            result: Ok(()),
        }
    }

    pub fn err(key: impl Into<String>) -> Self {
        Done {
            tag: "",
            result: Err(key.into()),
        }
    }
}

/// Called at the start and the end of the measured window.
pub trait Window: Send {
    fn start(&mut self) -> BoxFuture<'_, ()>;
    fn end(&mut self) -> BoxFuture<'_, ()>;
}

/// A window that measures nothing beyond latency and counts.
#[cfg(test)]
pub struct NoWindow;

#[cfg(test)]
impl Window for NoWindow {
    fn start(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn end(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Latencies in microseconds, three significant figures, up to an hour.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What the window saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Successful requests' latency (µs).
    pub latency: Histogram<u64>,
    pub by_tag: BTreeMap<&'static str, Histogram<u64>>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// The window's real length.
    pub elapsed: Duration,
    /// Requests started in all.
    pub started: u64,
    pub budget_exhausted: bool,
}

impl Outcome {
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Default)]
struct Counts {
    window: Option<(Instant, Option<Instant>)>,
    latency: Option<Histogram<u64>>,
    by_tag: BTreeMap<&'static str, Histogram<u64>>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

struct Shared {
    counts: Mutex<Counts>,
    stop: AtomicBool,
    started: AtomicU64,
    budget: Option<u64>,
    exhausted: Notify,
    budget_exhausted: AtomicBool,
}

impl Shared {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next request's sequence number, or `None` once stopped or out of
    /// budget.
    fn next(&self) -> Option<u64> {
        if self.stop.load(Ordering::Acquire) {
            return None;
        }
        let seq = self.started.fetch_add(1, Ordering::AcqRel);
        if self.budget.is_some_and(|b| seq >= b) {
            self.budget_exhausted.store(true, Ordering::Release);
            self.exhausted.notify_one();
            return None;
        }
        Some(seq)
    }

    fn record(&self, intended: Instant, done: Instant, outcome: Done) {
        let mut counts = self.counts();
        let Some((start, end)) = counts.window else {
            return;
        };
        if done < start || end.is_some_and(|end| done >= end) {
            return;
        }
        match outcome.result {
            Ok(()) => {
                let micros = u64::try_from(done.duration_since(intended).as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                counts.ok += 1;
                if let Some(h) = counts.latency.as_mut() {
                    h.saturating_record(micros);
                }
                if !outcome.tag.is_empty() {
                    counts
                        .by_tag
                        .entry(outcome.tag)
                        .or_insert_with(histogram)
                        .saturating_record(micros);
                }
            }
            Err(key) => *counts.errors.entry(key).or_default() += 1,
        }
    }
}

/// Runs `op(seq)` as `plan` says and returns what the window saw. In-flight
/// requests are given `drain` to finish after the window (not counted).
pub async fn run<F, Fut>(plan: &Plan, op: F, window: &mut dyn Window) -> Outcome
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Done> + Send + 'static,
{
    let shared = Arc::new(Shared {
        counts: Mutex::new(Counts::default()),
        stop: AtomicBool::new(false),
        started: AtomicU64::new(0),
        budget: plan.budget,
        exhausted: Notify::new(),
        budget_exhausted: AtomicBool::new(false),
    });
    let op = Arc::new(op);
    let begin = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    match plan.mode {
        Mode::Closed { concurrency } => {
            for _ in 0..concurrency.max(1) {
                let (shared, op) = (shared.clone(), op.clone());
                tasks.spawn(async move {
                    while let Some(seq) = shared.next() {
                        let sent = Instant::now();
                        let outcome = op(seq).await;
                        shared.record(sent, Instant::now(), outcome);
                    }
                });
            }
        }
        Mode::Open { rate, max_in_flight } => {
            let (shared, op) = (shared.clone(), op.clone());
            let interval = Duration::from_secs_f64(1.0 / rate.max(1e-6));
            let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
            tasks.spawn(async move {
                let mut inflight = tokio::task::JoinSet::new();
                let mut i: u32 = 0;
                loop {
                    let intended = begin + interval * i;
                    i = i.saturating_add(1);
                    tokio::time::sleep_until(intended).await;
                    // Waiting for a permit delays the send, not the clock
                    // the latency is measured from.
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    let Some(seq) = shared.next() else {
                        break;
                    };
                    let (shared, op) = (shared.clone(), op.clone());
                    inflight.spawn(async move {
                        let outcome = op(seq).await;
                        shared.record(intended, Instant::now(), outcome);
                        drop(permit);
                    });
                    while inflight.try_join_next().is_some() {}
                }
                while inflight.join_next().await.is_some() {}
            });
        }
    }

    let warm = begin + plan.warmup;
    let out_of_budget = async {
        loop {
            shared.exhausted.notified().await;
            if shared.budget_exhausted.load(Ordering::Acquire) {
                break;
            }
        }
    };
    tokio::pin!(out_of_budget);
    tokio::select! {
        () = tokio::time::sleep_until(warm) => {}
        () = &mut out_of_budget => {}
    }
    window.start().await;
    let start = Instant::now();
    {
        let mut counts = shared.counts();
        counts.window = Some((start, None));
        counts.latency = Some(histogram());
    }
    if !shared.budget_exhausted.load(Ordering::Acquire) {
        tokio::select! {
            () = tokio::time::sleep_until(start + plan.duration) => {}
            () = &mut out_of_budget => {}
        }
    }
    let end = Instant::now();
    shared.counts().window = Some((start, Some(end)));
    window.end().await;
    shared.stop.store(true, Ordering::Release);
    // Requests still in flight finish (or are dropped after a deadline);
    // they are outside the window either way.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    let mut counts = shared.counts();
    Outcome {
        latency: counts.latency.take().unwrap_or_else(histogram),
        by_tag: std::mem::take(&mut counts.by_tag),
        ok: counts.ok,
        errors: std::mem::take(&mut counts.errors),
        elapsed: end.duration_since(start),
        started: shared
            .started
            .load(Ordering::Acquire)
            .min(plan.budget.unwrap_or(u64::MAX)),
        budget_exhausted: shared.budget_exhausted.load(Ordering::Acquire),
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Percentiles {
                count: 0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            };
        }
        Percentiles {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, rel: f64) -> bool {
        (actual - expected).abs() <= expected * rel
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = histogram();
        for us in 1..=10_000u64 {
            h.record(us).expect("in range");
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 10_000);
        // Three significant figures: within 0.1 %.
        assert!(close(p.p50_ms, 5.0, 0.001), "{p:?}");
        assert!(close(p.p90_ms, 9.0, 0.001), "{p:?}");
        assert!(close(p.p99_ms, 9.9, 0.001), "{p:?}");
        assert!(close(p.p999_ms, 9.99, 0.001), "{p:?}");
        assert!(close(p.max_ms, 10.0, 0.001), "{p:?}");
        assert!(close(p.mean_ms, 5.0005, 0.001), "{p:?}");

        // A long tail moves p99.9 and max, not p50.
        let mut tail = histogram();
        for _ in 0..998 {
            tail.record(1_000).expect("in range");
        }
        tail.record(250_000).expect("in range");
        tail.record(2_000_000).expect("in range");
        let p = Percentiles::of(&tail);
        assert!(close(p.p50_ms, 1.0, 0.001), "{p:?}");
        assert!(close(p.p99_ms, 1.0, 0.001), "{p:?}");
        assert!(close(p.p999_ms, 250.0, 0.001), "{p:?}");
        assert!(close(p.max_ms, 2000.0, 0.001), "{p:?}");
        assert_eq!(Percentiles::of(&histogram()).count, 0);
    }

    /// A server that answers one request at a time in 1 ms, and stalls
    /// (answers nothing) from 0.5 s to 1.5 s after the start.
    fn stalling_server(begin: Instant) -> impl Fn(u64) -> BoxFuture<'static, Done> + Send + Sync + 'static {
        let busy = Arc::new(tokio::sync::Mutex::new(()));
        move |_seq| {
            let busy = busy.clone();
            Box::pin(async move {
                let _serial = busy.lock().await;
                let now = Instant::now();
                let (stall_from, stall_to) = (
                    begin + Duration::from_millis(500),
                    begin + Duration::from_millis(1500),
                );
                if now >= stall_from && now < stall_to {
                    tokio::time::sleep_until(stall_to).await;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                Done::ok()
            })
        }
    }

    fn plan(mode: Mode) -> Plan {
        Plan {
            mode,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(2),
            budget: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_latency_includes_the_queueing_behind_a_stall() {
        let begin = Instant::now();
        let open = run(
            &plan(Mode::Open {
                rate: 100.0,
                max_in_flight: 10_000,
            }),
            stalling_server(begin),
            &mut NoWindow,
        )
        .await;
        let p = Percentiles::of(&open.latency);
        // 200 intended sends in 2 s; the ~100 due during the 1 s stall wait
        // for its end: from up to a second down to nothing.
        assert!((195..=201).contains(&open.ok), "{} ok", open.ok);
        assert!(
            p.max_ms >= 990.0,
            "the first request of the stall waited ~1 s: {p:?}"
        );
        assert!(p.p90_ms >= 750.0, "a tenth waited 800 ms or more: {p:?}");
        assert!(p.p50_ms <= 150.0 && p.p50_ms >= 1.0, "{p:?}");
        let waited = open.latency.len() - open.latency.count_between(0, 100_000);
        assert!(
            (95..=105).contains(&waited),
            "{waited} of {} waited over 100 ms",
            open.ok
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_loop_hides_the_stall_in_one_sample() {
        // The contrast that makes the correction matter: one worker waits
        // through the stall once and records one slow request.
        let begin = Instant::now();
        let closed = run(
            &plan(Mode::Closed { concurrency: 1 }),
            stalling_server(begin),
            &mut NoWindow,
        )
        .await;
        let p = Percentiles::of(&closed.latency);
        assert_eq!(
            closed.latency.len() - closed.latency.count_between(0, 100_000),
            1,
            "{p:?}"
        );
        assert!(p.p99_ms < 5.0, "{p:?}");
        assert!(p.max_ms >= 990.0, "{p:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_holds_its_rate_behind_an_in_flight_limit() {
        // One request in flight at a time against a server that takes 20 ms:
        // the client can only send 50/s of the 100/s asked, so each request
        // waits longer than the last; latency from the intended time shows
        // the growing queue, latency from the send would stay at 20 ms.
        let op = |_seq: u64| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Done::ok()
        };
        let out = run(
            &plan(Mode::Open {
                rate: 100.0,
                max_in_flight: 1,
            }),
            op,
            &mut NoWindow,
        )
        .await;
        let p = Percentiles::of(&out.latency);
        assert!((99..=101).contains(&out.ok), "{} ok, {:?}", out.ok, out.errors);
        assert!(p.max_ms >= 950.0, "the last waited ~1 s: {p:?}");
        assert!(p.p50_ms >= 450.0, "{p:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn warm_up_is_not_counted_errors_are_keyed_and_the_budget_ends_the_window() {
        let op = |seq: u64| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if seq.is_multiple_of(4) {
                Done::err("REJECTED:OUT_OF_STOCK")
            } else {
                Done::ok()
            }
        };
        let out = run(
            &Plan {
                mode: Mode::Closed { concurrency: 2 },
                warmup: Duration::from_millis(500),
                duration: Duration::from_secs(1),
                budget: None,
            },
            op,
            &mut NoWindow,
        )
        .await;
        // 2 workers x 100 requests/s x 1 s, a quarter of them errors.
        assert!(
            (199..=201).contains(&(out.ok + out.errors["REJECTED:OUT_OF_STOCK"])),
            "{} ok, {:?}",
            out.ok,
            out.errors
        );
        assert!((148..=152).contains(&out.ok), "{} ok, {:?}", out.ok, out.errors);
        assert!((out.throughput() - 150.0).abs() < 3.0, "{}", out.throughput());

        let limited = run(
            &Plan {
                mode: Mode::Closed { concurrency: 2 },
                warmup: Duration::from_millis(100),
                duration: Duration::from_secs(10),
                budget: Some(60),
            },
            |_seq: u64| async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Done::ok()
            },
            &mut NoWindow,
        )
        .await;
        assert!(limited.budget_exhausted);
        assert_eq!(limited.started, 60);
        assert!(limited.elapsed < Duration::from_secs(1), "{:?}", limited.elapsed);
        assert!((38..=44).contains(&limited.ok), "{} ok", limited.ok);
    }
}
