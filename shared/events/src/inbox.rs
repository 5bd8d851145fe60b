//! The inbox: exactly-once effects on top of at-least-once delivery.
//!
//! A consumer records the id of every event it processed in the same
//! transaction as the effects of processing it. A redelivery (a crash before
//! the ack, a replayed dead letter, a duplicate from a second publisher)
//! finds the id and has no second effect.
//!
//! The record is inserted first (`ON CONFLICT DO NOTHING`): on PostgreSQL a
//! concurrent duplicate then waits on the unique key until the first
//! transaction ends, and sees it as done; no read-then-write race.

use std::time::Duration;

use sqlx::{Any, AnyConnection, AnyPool, Transaction};

use crate::envelope::now_micros;
use crate::error::Error;

/// The inbox table, for the consumer's own database migrations.
pub const DDL: &str = include_str!("../sql/inbox.sql");

/// What [`claim`] found.
pub enum Claim {
    /// First time: apply the effects in this transaction, then commit it.
    New(Transaction<'static, Any>),
    /// Already processed (and committed) by `consumer`: just ack.
    Done,
}

/// Opens a transaction recording `event_id` as processed by `consumer`.
pub async fn claim(pool: &AnyPool, consumer: &str, event_id: &str) -> Result<Claim, Error> {
    let mut tx = pool.begin().await?;
    if claim_in(&mut tx, consumer, event_id).await? {
        Ok(Claim::New(tx))
    } else {
        tx.rollback().await?;
        Ok(Claim::Done)
    }
}

/// Records `event_id` as processed by `consumer` inside the caller's open
/// transaction; `false` if it already was (then apply nothing for it).
pub async fn claim_in(conn: &mut AnyConnection, consumer: &str, event_id: &str) -> Result<bool, Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, event_id, processed_us) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Deletes inbox records older than `older_than_us` (microseconds since the
/// epoch), `chunk` rows per statement until none is left; the number deleted.
/// Keep records longer than any redelivery or replay can come late (see
/// [`Pruner`]).
pub async fn prune(pool: &AnyPool, older_than_us: i64, chunk: u32) -> Result<u64, Error> {
    let mut total = 0;
    loop {
        // Bounded by the index on processed_us, so a round never holds long
        // locks (or SQLite's one writer) however much has piled up.
        let deleted = sqlx::query(
            "DELETE FROM inbox WHERE (consumer, event_id) IN \
             (SELECT consumer, event_id FROM inbox WHERE processed_us < $1 LIMIT $2)",
        )
        .bind(older_than_us)
        .bind(i64::from(chunk.max(1)))
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < u64::from(chunk.max(1)) {
            return Ok(total);
        }
    }
}

/// Prunes a service's inbox every `interval` until stopped.
///
/// Why pruning is safe at the retention: a record only matters while its
/// event can come back to the consumer. Redeliveries come within minutes
/// (`ack_wait` times `max_deliver` plus back-offs, or the length of an
/// outage the worker holds a batch through); a durable consumer re-created
/// on a surviving stream replays at most the stream's `max_age`; a replayed
/// dead letter goes only to the consumer that never committed the event.
/// So the default retention is the streams' `max_age` plus a day, and with
/// streams that keep messages forever nothing is pruned.
pub struct Pruner;

impl Pruner {
    /// Spawns the pruning task on `pool` (deleting what is older than
    /// `retention`), which ends when `stop` completes.
    pub fn spawn(
        pool: AnyPool,
        retention: Duration,
        interval: Duration,
        chunk: u32,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::pin!(stop);
            let retention_us = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    _ = ticker.tick() => {}
                }
                let horizon = now_micros().saturating_sub(retention_us);
                match prune(&pool, horizon, chunk).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::debug!(deleted, "inbox pruned"),
                    Err(e) => tracing::warn!(error = %e, "cannot prune the inbox; retried next round"),
                }
            }
        })
    }
}
