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
/// epoch). Keep records longer than any redelivery or replay can come late.
pub async fn prune(pool: &AnyPool, older_than_us: i64) -> Result<u64, Error> {
    Ok(sqlx::query("DELETE FROM inbox WHERE processed_us < $1")
        .bind(older_than_us)
        .execute(pool)
        .await?
        .rows_affected())
}
