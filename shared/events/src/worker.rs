//! Running a consumer: fetch, handle, settle, and dead-letter what keeps
//! failing. The same loop runs on both buses.
//!
//! Per delivery, in stream order:
//! - handled: ack;
//! - a transient failure before the last attempt: NAK with the back-off
//!   delay for that attempt (`ConsumerConfig::backoff`);
//! - a permanent failure (undecodable, not an ordermesh event), or a
//!   failure in attempt `max_deliver`: publish to the dead letters with the
//!   error, then terminate the delivery;
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

use crate::bus::{Bus, Delivery};
use crate::config::ConsumerConfig;
use crate::envelope::Event;
use crate::error::Error;
use crate::inbox::{Claim, claim, claim_in};

/// Why a handler did not process an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub message: String,
    /// No retry can help (bad payload): dead-letter at once.
    pub permanent: bool,
}

impl HandlerError {
    /// Worth another attempt (database busy, a peer down).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }

    /// Will fail every time.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
        }
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for HandlerError {
    fn from(error: Error) -> Self {
        let permanent = matches!(
            error,
            Error::Decode { .. } | Error::Envelope { .. } | Error::UnknownType(_)
        );
        Self {
            message: error.to_string(),
            permanent,
        }
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        Self::transient(format!("database: {error}"))
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
    /// (begin, claim, commit), every event gets that error: one by one would
    /// only fail the same way, each after its own wait for a connection.
    async fn handle_batch(&self, events: &[&Event]) -> Vec<Result<(), HandlerError>> {
        if events.len() > 1 {
            match self.handle_together(events).await {
                Ok(()) => return events.iter().map(|_| Ok(())).collect(),
                Err(Together::Database(e)) => return events.iter().map(|_| Err(e.clone())).collect(),
                Err(Together::Handler) => {}
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
    /// An event's handler failed: handle the events one by one.
    Handler,
    /// The database failed outside any handler.
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
                    .map_err(|_| Together::Handler)?;
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

/// Runs `handler` on `config`'s durable consumer until `shutdown`.
/// Binding is retried while the bus is unreachable.
pub async fn run<H: Handler>(
    bus: Bus,
    config: ConsumerConfig,
    handler: H,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    config.validate()?;
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(50);
    let mut consumer = loop {
        match bus.consumer(&config).await {
            Ok(consumer) => break consumer,
            Err(e) => {
                tracing::warn!(consumer = %config.name, error = %e, "cannot bind consumer; retrying");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                // The streams may not exist yet (first start, fresh NATS).
                let _ = bus.ensure_streams().await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    loop {
        let batch = tokio::select! {
            () = &mut shutdown => return Ok(()),
            batch = consumer.fetch(config.batch, Duration::from_secs(1)) => batch,
        };
        let deliveries = match batch {
            Ok(deliveries) => deliveries,
            Err(e) => {
                tracing::warn!(consumer = %config.name, error = %e, "fetch failed; retrying");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        for outcome in process(&bus, &config, &handler, deliveries).await {
            match outcome {
                Ok(Outcome::DeadLettered { error }) => {
                    tracing::error!(consumer = %config.name, %error, "event dead-lettered");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(consumer = %config.name, error = %e, "cannot settle delivery"),
            }
        }
    }
}

/// Why a delivery is not handed to the handler at all, if it is not.
fn refused(config: &ConsumerConfig, delivery: &Delivery) -> Option<HandlerError> {
    let attempt = delivery.delivered;
    match &delivery.event {
        Err(reason) => Some(HandlerError::permanent(format!(
            "not an ordermesh event: {reason}"
        ))),
        Ok(_) if attempt > config.max_deliver => Some(HandlerError::permanent(format!(
            "attempt {} did not finish within ack_wait {:?} (worker crashed or hung)",
            attempt - 1,
            config.ack_wait
        ))),
        Ok(_) => None,
    }
}

/// Handles a fetched batch (one [`Handler::handle_batch`] call for the
/// events that may run) and settles every delivery, in order.
pub async fn process<H: Handler>(
    bus: &Bus,
    config: &ConsumerConfig,
    handler: &H,
    deliveries: Vec<Delivery>,
) -> Vec<Result<Outcome, Error>> {
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
    let mut outcomes = Vec::with_capacity(deliveries.len());
    for (delivery, verdict) in deliveries.into_iter().zip(verdicts) {
        let result = match verdict {
            Some(refusal) => Err(refusal),
            None => handled
                .next()
                .unwrap_or_else(|| Err(HandlerError::transient("the handler returned too few results"))),
        };
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
    if failure.permanent || attempt >= config.max_deliver {
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
