//! Running a consumer: fetch, handle, settle, and dead-letter what cannot
//! succeed. The same loop runs on both buses.
//!
//! A handler's failure is classified ([`Failure`]), because what to do
//! depends on whose fault it is:
//! - handled: ack;
//! - transient (the database or broker is down or busy): the message is
//!   fine, so no attempt is spent on it. The worker holds the batch
//!   unsettled, resets its ack-wait clock with in-progress acks and retries
//!   with back-off for as long as the outage lasts, fetching nothing else
//!   meanwhile. An outage must never turn healthy events into dead letters;
//! - poison (undecodable, not an ordermesh event, invalid by its type's
//!   contract, refused by a constraint): publish to the dead letters with
//!   the reason at once, then terminate the delivery. The contract
//!   ([`crate::DomainEvent::validate`]) is checked before the handler runs;
//!   an invalid event never reaches it;
//! - unclassified: NAK with the back-off delay for that attempt
//!   (`ConsumerConfig::backoff`); in attempt `max_deliver`, dead-letter;
//! - delivery `max_deliver + 1` (the bus allows one more than the attempts):
//!   the last attempt never settled (the worker crashed or hung past
//!   `ack_wait`), so it is dead-lettered without running the handler again.
//!
//! Handlers are at-least-once; wrap one in [`Inboxed`] to make its database
//! effects exactly-once.
//!
//! A fetch returns what is waiting (up to `ConsumerConfig::batch`), and the
//! whole batch goes to [`Handler::handle_batch`] before any of it is
//! settled: a handler whose effect is a database write does the batch's
//! writes in one statement or one transaction ([`Inboxed`] does), so under
//! load a consumer costs a commit per batch instead of one per event. Each
//! event still gets its own result and its own settlement (a failure of one
//! retries or dead-letters that one only).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::bus::{Bus, Delivery};
use crate::config::ConsumerConfig;
use crate::envelope::Event;
use crate::error::Error;

mod failure;
mod handler;

pub use failure::{Failure, HandlerError};
pub use handler::{Handler, Inboxed, TxHandler};

/// What one settled delivery came to (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Acked,
    Retried { attempt: u32, delay: Duration },
    DeadLettered { error: String },
}

/// First and longest wait between attempts at a batch held by a transient
/// failure.
const HOLD_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));

/// What a running consumer is doing, for health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerHealth {
    /// Not bound to its durable yet.
    Starting,
    /// Fetching and handling.
    Running,
    /// Holding a batch through a transient failure (of its database, say)
    /// since `since`.
    Stalled { since: Instant, reason: String },
    /// Cannot bind or fetch (the broker is unreachable, its durable or
    /// stream is gone and not yet re-created) since `since`.
    CannotFetch { since: Instant, error: String },
}

/// How often an idle consumer checks that its durable still answers (an
/// empty fetch alone does not tell a quiet stream from a lost one).
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Fetch failures in a row after which the durable is bound again even
/// though nothing said it was gone.
const REBIND_AFTER: u32 = 3;

/// Runs `handler` on `config`'s durable consumer until `shutdown`.
/// Binding is retried while the bus is unreachable.
pub async fn run<H: Handler>(
    bus: Bus,
    config: ConsumerConfig,
    handler: H,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (health, _) = watch::channel(ConsumerHealth::Starting);
    run_reporting(bus, config, handler, shutdown, health).await
}

/// [`run`], reporting the consumer's [`ConsumerHealth`] on `health`.
///
/// A consumer recovers by itself from losing its durable or its stream
/// (NATS restarted with an empty store, an operator deleted it): when the
/// durable does not answer it is created again (with the streams, if they
/// are gone too), and consumes from the start of what the stream holds; the
/// inbox makes that harmless.
pub async fn run_reporting<H: Handler>(
    bus: Bus,
    config: ConsumerConfig,
    handler: H,
    shutdown: impl Future<Output = ()> + Send,
    health: watch::Sender<ConsumerHealth>,
) -> Result<(), Error> {
    config.validate()?;
    tokio::pin!(shutdown);
    let report = Report {
        health: &health,
        name: &config.name,
    };
    let mut backoff = Duration::from_millis(50);
    let mut consumer = loop {
        match bind(&bus, &config).await {
            Ok(consumer) => break consumer,
            Err(e) => {
                report.cannot_fetch(&e);
                tracing::warn!(consumer = %config.name, error = %e, "cannot bind consumer; retrying");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    report.running();
    let mut last_ok = Instant::now();
    let mut failures = 0u32;
    loop {
        let batch = tokio::select! {
            () = &mut shutdown => return Ok(()),
            batch = consumer.fetch(config.batch, Duration::from_secs(1)) => batch,
        };
        let fetched = match batch {
            Ok(deliveries) if !deliveries.is_empty() => {
                if let Some(last) = deliveries.last() {
                    crate::measure::lag(&config.name, last.pending);
                }
                Ok(deliveries)
            }
            Ok(none) if last_ok.elapsed() < PROBE_EVERY => Ok(none),
            // Quiet: make sure the durable is still there.
            Ok(none) => consumer.check().await.map(|()| none),
            // Tell a lost durable from a broker that is away.
            Err(e) => Err(consumer
                .check()
                .await
                .err()
                .filter(Error::is_consumer_gone)
                .unwrap_or(e)),
        };
        match fetched {
            Ok(deliveries) => {
                last_ok = Instant::now();
                failures = 0;
                backoff = Duration::from_millis(50);
                report.running();
                if !deliveries.is_empty()
                    && !work_through(
                        &bus,
                        &config,
                        &handler,
                        &mut consumer,
                        deliveries,
                        &mut shutdown,
                        &report,
                    )
                    .await
                {
                    return Ok(());
                }
            }
            Err(e) => {
                failures += 1;
                report.cannot_fetch(&e);
                if failures == 1 {
                    tracing::warn!(consumer = %config.name, error = %e, "fetch failed; retrying");
                } else {
                    tracing::debug!(consumer = %config.name, error = %e, failures, "fetch failed again");
                }
                if e.is_consumer_gone() || failures.is_multiple_of(REBIND_AFTER) {
                    match bind(&bus, &config).await {
                        Ok(bound) => {
                            consumer = bound;
                            if e.is_consumer_gone() {
                                tracing::warn!(consumer = %config.name, error = %e, "durable consumer was missing; recreated");
                            } else {
                                tracing::info!(consumer = %config.name, "durable consumer bound again");
                            }
                        }
                        Err(bind_error) => {
                            tracing::debug!(consumer = %config.name, error = %bind_error, "cannot bind the durable again yet");
                        }
                    }
                }
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Binds (creating or updating) the durable; when its stream is missing
/// (first start, or NATS lost its store), creates the streams first.
async fn bind(bus: &Bus, config: &ConsumerConfig) -> Result<crate::bus::Consumer, Error> {
    match bus.consumer(config).await {
        Ok(consumer) => Ok(consumer),
        Err(invalid @ Error::Invalid { .. }) => Err(invalid),
        Err(_) => {
            bus.ensure_streams().await?;
            bus.consumer(config).await
        }
    }
}

/// Publishes a consumer's health, logging when it changes for the better.
struct Report<'a> {
    health: &'a watch::Sender<ConsumerHealth>,
    name: &'a str,
}

impl Report<'_> {
    fn running(&self) {
        let was = self.health.send_replace(ConsumerHealth::Running);
        if let ConsumerHealth::CannotFetch { since, .. } = was {
            tracing::warn!(consumer = %self.name, after = ?since.elapsed(), "fetching again");
        }
    }

    fn cannot_fetch(&self, error: &Error) {
        self.health.send_modify(|health| {
            let since = match health {
                ConsumerHealth::CannotFetch { since, .. } => *since,
                _ => Instant::now(),
            };
            *health = ConsumerHealth::CannotFetch {
                since,
                error: error.to_string(),
            };
        });
    }

    fn stalled(&self, reason: &HandlerError) {
        self.health.send_replace(ConsumerHealth::Stalled {
            since: Instant::now(),
            reason: reason.to_string(),
        });
    }
}

/// Handles a fetched batch until every delivery is settled. Deliveries that
/// failed transiently are held (kept unsettled, their ack-wait clock reset
/// with in-progress acks, so the broker neither redelivers them nor counts
/// attempts) and retried with back-off for as long as the outage lasts; the
/// consumer fetches nothing meanwhile, which also keeps each aggregate's
/// events in order. `false` when shutdown came first (held deliveries are
/// then released for immediate redelivery).
async fn work_through<H: Handler>(
    bus: &Bus,
    config: &ConsumerConfig,
    handler: &H,
    consumer: &mut crate::bus::Consumer,
    mut deliveries: Vec<Delivery>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    report: &Report<'_>,
) -> bool {
    let mut stalled: Option<tokio::time::Instant> = None;
    let mut delay = HOLD_BACKOFF.0;
    loop {
        let results = keep_alive(&deliveries, config.ack_wait, handle(config, handler, &deliveries)).await;
        let (held, cause) = settle_all(bus, config, deliveries, results).await;
        let Some(cause) = cause else {
            if let Some(since) = stalled {
                tracing::warn!(consumer = %config.name, held_for = ?since.elapsed(), "transient failure over; consuming again");
                report.running();
            }
            return true;
        };
        if stalled.is_none() {
            tracing::warn!(
                consumer = %config.name,
                error = %cause,
                held = held.len(),
                "transient failure: holding the batch and retrying until it succeeds (nothing is dead-lettered for it)"
            );
            stalled = Some(Instant::now());
            report.stalled(&cause);
            // Messages the bus prefetched would wait out their ack_wait
            // unseen and come back with a higher delivery count.
            consumer.pause();
        }
        let wait = keep_alive(&held, config.ack_wait, tokio::time::sleep(delay));
        let stopped = tokio::select! {
            () = shutdown.as_mut() => true,
            () = wait => false,
        };
        if stopped {
            for delivery in held {
                if let Err(e) = delivery.nak(Duration::ZERO).await {
                    tracing::warn!(consumer = %config.name, error = %e, "cannot release a held delivery");
                }
            }
            return false;
        }
        delay = (delay * 2).min(HOLD_BACKOFF.1);
        deliveries = held;
    }
}

/// Runs `work`, meanwhile telling the bus every `ack_wait / 2` that
/// `deliveries` are still being worked on.
async fn keep_alive<T>(deliveries: &[Delivery], ack_wait: Duration, work: impl Future<Output = T>) -> T {
    let period = (ack_wait / 2).max(Duration::from_millis(10));
    let ticking = async {
        loop {
            tokio::time::sleep(period).await;
            for delivery in deliveries {
                if let Err(e) = delivery.in_progress().await {
                    tracing::debug!(error = %e, "cannot extend a delivery's ack wait");
                }
            }
        }
    };
    tokio::select! {
        result = work => result,
        () = ticking => unreachable!("the ticker never ends"),
    }
}

/// Why a delivery is not handed to the handler at all, if it is not.
fn refused(config: &ConsumerConfig, delivery: &Delivery) -> Option<HandlerError> {
    let attempt = delivery.delivered;
    match &delivery.event {
        Err(reason) => Some(HandlerError::poison(format!("not an ordermesh event: {reason}"))),
        Ok(_) if attempt > config.max_deliver => Some(HandlerError::poison(format!(
            "attempt {} did not finish within ack_wait {:?} (worker crashed or hung)",
            attempt - 1,
            config.ack_wait
        ))),
        // Checked here for every consumer, whether or not its handler would.
        Ok(event) => event.validate().err().map(HandlerError::from),
    }
}

/// One [`Handler::handle_batch`] call for the deliveries that may run; one
/// result per delivery, in order (refusals included).
async fn handle<H: Handler>(
    config: &ConsumerConfig,
    handler: &H,
    deliveries: &[Delivery],
) -> Vec<Result<(), HandlerError>> {
    let verdicts: Vec<Option<HandlerError>> = deliveries.iter().map(|d| refused(config, d)).collect();
    let runnable: Vec<&Event> = deliveries
        .iter()
        .zip(&verdicts)
        .filter_map(|(d, verdict)| match (&d.event, verdict) {
            (Ok(event), None) => Some(event),
            _ => None,
        })
        .collect();
    let mut handled = if runnable.is_empty() {
        Vec::new()
    } else {
        use tracing::Instrument;
        let span = crate::trace::consumer(&config.name, &runnable);
        handler.handle_batch(&runnable).instrument(span).await
    }
    .into_iter();
    verdicts
        .into_iter()
        .map(|verdict| match verdict {
            Some(refusal) => Err(refusal),
            None => handled
                .next()
                .unwrap_or_else(|| Err(HandlerError::failed("the handler returned too few results"))),
        })
        .collect()
}

/// Settles every delivery whose result is final, in order, and logs what
/// it came to; returns the ones that failed transiently (unsettled) with the
/// first such failure.
async fn settle_all(
    bus: &Bus,
    config: &ConsumerConfig,
    deliveries: Vec<Delivery>,
    results: Vec<Result<(), HandlerError>>,
) -> (Vec<Delivery>, Option<HandlerError>) {
    let mut held = Vec::new();
    let mut cause = None;
    for (delivery, result) in deliveries.into_iter().zip(results) {
        match result {
            Err(e) if e.is_transient() => {
                held.push(delivery);
                cause.get_or_insert(e);
            }
            result => match settle(bus, config, delivery, result).await {
                Ok(Outcome::DeadLettered { error }) => {
                    tracing::error!(consumer = %config.name, %error, "event dead-lettered");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(consumer = %config.name, error = %e, "cannot settle delivery"),
            },
        }
    }
    (held, cause)
}

/// Handles a fetched batch (one [`Handler::handle_batch`] call for the
/// events that may run) and settles every delivery, in order, at once: a
/// transient failure is NAKed with the back-off of its attempt (the worker's
/// own loop holds such deliveries instead).
pub async fn process<H: Handler>(
    bus: &Bus,
    config: &ConsumerConfig,
    handler: &H,
    deliveries: Vec<Delivery>,
) -> Vec<Result<Outcome, Error>> {
    let results = handle(config, handler, &deliveries).await;
    let mut outcomes = Vec::with_capacity(deliveries.len());
    for (delivery, result) in deliveries.into_iter().zip(results) {
        outcomes.push(settle(bus, config, delivery, result).await);
    }
    outcomes
}

/// Settles one delivery by what handling it came to.
async fn settle(
    bus: &Bus,
    config: &ConsumerConfig,
    delivery: Delivery,
    result: Result<(), HandlerError>,
) -> Result<Outcome, Error> {
    let attempt = delivery.delivered;
    if attempt > 1 {
        crate::measure::redelivered(&config.name);
    }
    let failure = match result {
        Ok(()) => {
            delivery.ack().await?;
            crate::measure::handled(&config.name);
            return Ok(Outcome::Acked);
        }
        Err(e) => e,
    };
    let poison = failure.failure == Failure::Poison;
    if poison || (failure.failure == Failure::Failed && attempt >= config.max_deliver) {
        let error = format!("attempt {attempt}: {}", failure.message);
        if let Err(e) = bus.dead_letter(&delivery, &config.name, &error).await {
            // Keep the message: it comes back and is dead-lettered then.
            delivery.nak(config.delay_after(attempt)).await?;
            return Err(e);
        }
        delivery.term().await?;
        crate::measure::dead_lettered(&config.name);
        return Ok(Outcome::DeadLettered { error });
    }
    let delay = config.delay_after(attempt);
    tracing::debug!(consumer = %config.name, attempt, ?delay, error = %failure, "handler failed; retrying");
    delivery.nak(delay).await?;
    Ok(Outcome::Retried { attempt, delay })
}
