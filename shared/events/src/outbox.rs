//! The transactional outbox: an event is a row written in the same database
//! transaction as the state change that caused it, so either both happen or
//! neither does (no dual write). The [`crate::relay`] publishes the rows
//! afterwards; a crash between commit and publish leaves the row pending, and
//! it is published when the relay runs again.
//!
//! # Ordering
//! Events of one aggregate are published in the order they were committed.
//! Each row gets `aggregate_seq` = the aggregate's highest + 1 and a
//! `created_us` never below the aggregate's previous row, both computed by
//! the insert itself; the relay reads pending rows by (`created_us`,
//! `aggregate_seq`, then `event_id`). This relies on what the services do anyway: writes to
//! one aggregate are serialized (the saga's fenced lease, conditional stock
//! and balance updates). Two unserialized writers of one aggregate would
//! collide on the unique (`aggregate_id`, `aggregate_seq`) key and one
//! transaction fails, rather than the order silently breaking.
//!
//! Why no global sequence: an id counter row would serialize every writing
//! transaction of the service, and `AUTOINCREMENT`/`IDENTITY` differ between
//! SQLite and PostgreSQL (the migrations are one portable set).
//!
//! The payload is stored as base64 TEXT: PostgreSQL has no BLOB and SQLite
//! through `AnyPool` cannot read a column declared BYTEA, so TEXT is the one
//! portable choice (a few hundred bytes per event; encoding is negligible).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sqlx::AnyConnection;

use crate::Error;
use crate::envelope::{Event, now_micros};
use crate::kind::DomainEvent;

/// The outbox table. Add it to each service's migrations (portable SQL for
/// SQLite and PostgreSQL); [`crate::inbox::DDL`] is its counterpart for
/// consumers.
pub const DDL: &str = include_str!("../sql/outbox.sql");

const INSERT: &str = "INSERT INTO outbox (event_id, aggregate_id, aggregate_seq, topic, ce_type, ce_source, \
     ce_subject, traceparent, payload, occur_us, created_us) \
     SELECT $1, $2, COALESCE(MAX(aggregate_seq), 0) + 1, $3, $4, $5, $6, $7, $8, $9, \
     CASE WHEN MAX(created_us) > $10 THEN MAX(created_us) ELSE $10 END \
     FROM outbox WHERE aggregate_id = $2";

/// Writes events of one service (its `ce-source`) into its outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    source: String,
}

impl Outbox {
    /// `source` is the service's CloudEvents source, e.g. `/ordermesh/order`.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
        }
    }

    /// Adds `payload` as an event inside the caller's open transaction and
    /// returns it (with its id). Poke the relay's [`crate::relay::Notifier`]
    /// after the commit.
    pub async fn add<E: DomainEvent>(
        &self,
        conn: &mut AnyConnection,
        payload: &E,
        traceparent: Option<&str>,
    ) -> Result<Event, Error> {
        let event = Event::new(&self.source, payload, traceparent);
        insert(conn, &event).await?;
        Ok(event)
    }
}

/// Inserts an already built event (one statement) on `conn`, normally the
/// caller's open transaction: `insert(&mut *tx, &event)`.
pub async fn insert(conn: &mut AnyConnection, event: &Event) -> Result<(), Error> {
    sqlx::query(INSERT)
        .bind(&event.id)
        .bind(&event.subject)
        .bind(&event.topic)
        .bind(&event.ce_type)
        .bind(&event.source)
        .bind(&event.subject)
        .bind(event.traceparent.as_deref())
        .bind(BASE64.encode(&event.data))
        .bind(event.time_us)
        .bind(now_micros())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Pending rows in publishing order, from the start.
pub(crate) const SELECT_PENDING: &str = "SELECT event_id, topic, ce_type, ce_source, ce_subject, traceparent, \
     payload, occur_us, aggregate_id, aggregate_seq, created_us FROM outbox WHERE sent_us IS NULL \
     ORDER BY created_us, aggregate_seq, event_id LIMIT $1";

/// Pending rows in publishing order after a key (`$2, $3, $4`).
pub(crate) const SELECT_PENDING_AFTER: &str = "SELECT event_id, topic, ce_type, ce_source, ce_subject, traceparent, \
     payload, occur_us, aggregate_id, aggregate_seq, created_us FROM outbox WHERE sent_us IS NULL \
     AND (created_us, aggregate_seq, event_id) > ($2, $3, $4) \
     ORDER BY created_us, aggregate_seq, event_id LIMIT $1";

/// A pending row as the relay reads it.
pub(crate) struct Pending {
    pub event: Event,
    pub aggregate_id: String,
    pub aggregate_seq: i64,
    pub created_us: i64,
}

/// Turns a row of [`SELECT_PENDING`] back into the event and its position.
pub(crate) fn pending_of_row(row: &sqlx::any::AnyRow) -> Result<Pending, Error> {
    use sqlx::Row;
    let payload: String = row.try_get("payload")?;
    let event_id: String = row.try_get("event_id")?;
    let data = BASE64.decode(payload.as_bytes()).map_err(|e| Error::OutboxRow {
        event_id: event_id.clone(),
        reason: format!("payload is not base64: {e}"),
    })?;
    Ok(Pending {
        event: Event {
            id: event_id,
            source: row.try_get("ce_source")?,
            ce_type: row.try_get("ce_type")?,
            subject: row.try_get("ce_subject")?,
            time_us: row.try_get("occur_us")?,
            traceparent: row.try_get("traceparent")?,
            topic: row.try_get("topic")?,
            data: data.into(),
        },
        aggregate_id: row.try_get("aggregate_id")?,
        aggregate_seq: row.try_get("aggregate_seq")?,
        created_us: row.try_get("created_us")?,
    })
}

/// Rows not yet published (for tests and health checks).
pub async fn pending_count(pool: &sqlx::AnyPool) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_us IS NULL")
            .fetch_one(pool)
            .await?,
    )
}
