//! The relay's side of the outbox table: which pending rows it reads, in
//! which order, and how a row becomes an event again. The writing side (the
//! insert inside a service's transaction) is [`crate::outbox`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::envelope::Event;
use crate::error::Error;

/// Pending rows in publishing order, from the start.
pub(super) const SELECT_PENDING: &str = "SELECT event_id, topic, ce_type, ce_source, ce_subject, traceparent, \
     payload, occur_us, aggregate_id, aggregate_seq, created_us FROM outbox WHERE sent_us IS NULL \
     ORDER BY created_us, aggregate_seq, event_id LIMIT $1";

/// Pending rows in publishing order after a key (`$2, $3, $4`).
pub(super) const SELECT_PENDING_AFTER: &str = "SELECT event_id, topic, ce_type, ce_source, ce_subject, traceparent, \
     payload, occur_us, aggregate_id, aggregate_seq, created_us FROM outbox WHERE sent_us IS NULL \
     AND (created_us, aggregate_seq, event_id) > ($2, $3, $4) \
     ORDER BY created_us, aggregate_seq, event_id LIMIT $1";

/// A pending row as the relay reads it.
pub(super) struct Pending {
    pub event: Event,
    pub aggregate_id: String,
    pub aggregate_seq: i64,
    pub created_us: i64,
}

/// Turns a row of [`SELECT_PENDING`] back into the event and its position.
pub(super) fn pending_of_row(row: &sqlx::any::AnyRow) -> Result<Pending, Error> {
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
