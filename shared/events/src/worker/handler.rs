//! What a consumer runs for its events: a [`Handler`] (at least once), or a
//! [`TxHandler`] made exactly-once by the inbox ([`Inboxed`]), which claims
//! and applies a whole batch in one transaction.

use sqlx::{AnyConnection, AnyPool};

use super::failure::{Failure, HandlerError};
use crate::envelope::Event;
use crate::error::Error;
use crate::inbox::{Claim, claim, claim_in};

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
