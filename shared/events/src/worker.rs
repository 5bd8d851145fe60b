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

use sqlx::{AnyConnection, AnyPool};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::bus::{Bus, Delivery};
use crate::config::ConsumerConfig;
use crate::envelope::Event;
use crate::error::Error;
use crate::inbox::{Claim, claim, claim_in};

/// What kind of failure a handler met; it decides what the worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The environment failed (database or broker unreachable, busy,
    /// a serialization conflict): the message is fine and will succeed
    /// later. The worker holds it and retries without spending attempts.
    Transient,
    /// The message itself is bad (undecodable, invalid, refused by a
    /// constraint): no retry can help; dead-letter at once.
    Poison,
    /// Not classified: retried with back-off, dead-lettered after
    /// `max_deliver` attempts.
    Failed,
}

/// Why a handler did not process an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub message: String,
    pub failure: Failure,
}

impl HandlerError {
    /// The environment failed; wait for it (see [`Failure::Transient`]).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            failure: Failure::Transient,
        }
    }

    /// The message will fail every time (see [`Failure::Poison`]).
    pub fn poison(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            failure: Failure::Poison,
        }
    }

    /// Unclassified: worth a few more attempts (see [`Failure::Failed`]).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            failure: Failure::Failed,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.failure == Failure::Transient
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for HandlerError {
    fn from(error: Error) -> Self {
        let failure = match &error {
            Error::Db(db) => classify_db(db),
            Error::Connect { .. }
            | Error::JetStream { .. }
            | Error::Publish { .. }
            | Error::ConsumerGone { .. } => Failure::Transient,
            Error::Decode { .. }
            | Error::Envelope { .. }
            | Error::UnknownType(_)
            | Error::InvalidEvent { .. } => Failure::Poison,
            Error::OutboxRow { .. }
            | Error::DeadLetterNotFound(_)
            | Error::NotReplayable { .. }
            | Error::Invalid { .. } => Failure::Failed,
        };
        Self {
            message: error.to_string(),
            failure,
        }
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        Self {
            failure: classify_db(&error),
            message: format!("database: {error}"),
        }
    }
}

/// A service's infrastructure error under a handler: the database's by the
/// database's rules, the events crate's by its own, corrupt data unclassified.
impl From<ordermesh_runtime::Infra> for HandlerError {
    fn from(error: ordermesh_runtime::Infra) -> Self {
        match error {
            ordermesh_runtime::Infra::Db(db) => db.into(),
            ordermesh_runtime::Infra::Events(events) => match events.downcast::<Error>() {
                Ok(events) => (*events).into(),
                Err(other) => Self::failed(other.to_string()),
            },
            corrupt @ ordermesh_runtime::Infra::Corrupt(_) => Self::failed(corrupt.to_string()),
        }
    }
}

/// Which database failures are the environment's (wait), which the
/// message's (a constraint refuses its data: poison), and which unknown.
fn classify_db(error: &sqlx::Error) -> Failure {
    use sqlx::error::ErrorKind;
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Failure::Transient,
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation
            | ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation
            | ErrorKind::ExclusionViolation => Failure::Poison,
            _ => {
                if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    postgres_failure(pg.code())
                } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    sqlite_failure(db.code().as_deref())
                } else {
                    Failure::Failed
                }
            }
        },
        _ => Failure::Failed,
    }
}

/// SQLSTATE classes of an unavailable or contended server: connection
/// exceptions (08), insufficient resources (53), operator intervention
/// (57P01-57P05: shutdown, crash, cannot connect now), serialization and
/// deadlock (40001, 40P01), lock not available (55P03).
fn postgres_failure(sqlstate: &str) -> Failure {
    let transient = sqlstate.starts_with("08")
        || sqlstate.starts_with("53")
        || sqlstate.starts_with("57P0")
        || matches!(sqlstate, "40001" | "40P01" | "55P03");
    if transient {
        Failure::Transient
    } else {
        Failure::Failed
    }
}

/// SQLite primary result codes of a busy or failing file: BUSY (5), LOCKED
/// (6), IOERR (10), FULL (13), CANTOPEN (14). Extended codes carry the
/// primary one in their low byte.
fn sqlite_failure(code: Option<&str>) -> Failure {
    let primary = code.and_then(|c| c.parse::<i64>().ok()).map(|c| c & 0xff);
    if matches!(primary, Some(5 | 6 | 10 | 13 | 14)) {
        Failure::Transient
    } else {
        Failure::Failed
    }
}

/// Processes one event (at least once).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, event: &Event) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Processes events fetched together, in stream order; one result per
    /// event, in the same order. The default handles them one by one; a
    /// handler that writes per event overrides it to write the batch at once.
    fn handle_batch(&self, events: &[&Event]) -> impl Future<Output = Vec<Result<(), HandlerError>>> + Send {
        async move {
            let mut results = Vec::with_capacity(events.len());
            for event in events {
                results.push(self.handle(event).await);
            }
            results
        }
    }
}

/// Processes one event inside a transaction that [`Inboxed`] opens and
/// commits together with the inbox record.
pub trait TxHandler: Send + Sync + 'static {
    fn handle(
        &self,
        conn: &mut AnyConnection,
        event: &Event,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A [`TxHandler`] made exactly-once by the inbox of `consumer` in `pool`.
pub struct Inboxed<H> {
    pool: AnyPool,
    consumer: String,
    handler: H,
}

impl<H: TxHandler> Inboxed<H> {
    /// `consumer` is the inbox key, normally the durable consumer name.
    pub fn new(pool: AnyPool, consumer: impl Into<String>, handler: H) -> Self {
        Self {
            pool,
            consumer: consumer.into(),
            handler,
        }
    }
}

impl<H: TxHandler> Handler for Inboxed<H> {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        match claim(&self.pool, &self.consumer, &event.id).await? {
            Claim::Done => Ok(()),
            Claim::New(mut tx) => {
                // On error the transaction drops and rolls back: no effect,
                // no inbox record, so the redelivery tries again.
                self.handler.handle(&mut tx, event).await?;
                tx.commit().await?;
                Ok(())
            }
        }
    }

    /// The whole batch in one transaction (one commit). If an event's
    /// handler fails, that transaction rolls back with no effect and the
    /// events are handled one by one, so each gets its own result and one bad
    /// event does not hold back the others. If the database itself fails
    /// transiently (begin, claim, commit; or a handler meets an outage), every
    /// event gets that error and the worker holds the batch: one by one would
    /// only fail the same way, each after its own wait for a connection.
    async fn handle_batch(&self, events: &[&Event]) -> Vec<Result<(), HandlerError>> {
        if events.len() > 1 {
            match self.handle_together(events).await {
                Ok(()) => return events.iter().map(|_| Ok(())).collect(),
                Err(Together::Database(e)) if e.is_transient() => {
                    return events.iter().map(|_| Err(e.clone())).collect();
                }
                Err(Together::Database(_) | Together::Handler) => {}
            }
        }
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            results.push(self.handle(event).await);
        }
        results
    }
}

/// Why a batch transaction of [`Inboxed`] did not commit.
enum Together {
    /// An event's handler failed for that event: handle them one by one.
    Handler,
    /// The database failed (outside any handler, or transiently inside one).
    Database(HandlerError),
}

impl<H: TxHandler> Inboxed<H> {
    async fn handle_together(&self, events: &[&Event]) -> Result<(), Together> {
        let database = |e: Error| Together::Database(e.into());
        let mut tx = self.pool.begin().await.map_err(|e| database(e.into()))?;
        for event in events {
            if claim_in(&mut tx, &self.consumer, &event.id)
                .await
                .map_err(database)?
            {
                self.handler
                    .handle(&mut tx, event)
                    .await
                    .map_err(|e| match e.failure {
                        Failure::Transient => Together::Database(e),
                        Failure::Poison | Failure::Failed => Together::Handler,
                    })?;
            }
        }
        tx.commit().await.map_err(|e| database(e.into()))
    }
}

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
            Ok(deliveries) if !deliveries.is_empty() => Ok(deliveries),
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
        handler.handle_batch(&runnable).await
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
    let failure = match result {
        Ok(()) => {
            delivery.ack().await?;
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
        return Ok(Outcome::DeadLettered { error });
    }
    let delay = config.delay_after(attempt);
    tracing::debug!(consumer = %config.name, attempt, ?delay, error = %failure, "handler failed; retrying");
    delivery.nak(delay).await?;
    Ok(Outcome::Retried { attempt, delay })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_transient_and_refused_data_is_poison() {
        assert_eq!(
            HandlerError::from(sqlx::Error::PoolTimedOut).failure,
            Failure::Transient
        );
        assert_eq!(
            HandlerError::from(sqlx::Error::RowNotFound).failure,
            Failure::Failed
        );
        for sqlstate in ["08006", "53300", "57P01", "40001", "40P01", "55P03"] {
            assert_eq!(postgres_failure(sqlstate), Failure::Transient, "{sqlstate}");
        }
        assert_eq!(postgres_failure("42P01"), Failure::Failed);
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT (517), SQLITE_IOERR_WRITE (778).
        for code in ["5", "517", "778"] {
            assert_eq!(sqlite_failure(Some(code)), Failure::Transient, "{code}");
        }
        assert_eq!(sqlite_failure(Some("1")), Failure::Failed);
        let undecodable = Error::Decode {
            ce_type: "t".into(),
            reason: "r".into(),
        };
        assert_eq!(HandlerError::from(undecodable).failure, Failure::Poison);
        let broker = Error::jetstream("fetch", "no responders");
        assert_eq!(HandlerError::from(broker).failure, Failure::Transient);
    }
}
