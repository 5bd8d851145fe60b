//! The relay's side of the outbox table: which pending rows it reads, in
//! which order, and how a row becomes an event again. The writing side (the
//! insert inside a service's transaction) is [`crate::outbox`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::envelope::Event;
use crate::error::Error;

/// Pending rows in publishing order, from the start. Complete for every
/// aggregate it returns: a row visible to the read has its predecessors
/// visible too (a row's insert reads its aggregate's rows, so it cannot
/// commit before them), and their keys are smaller (`created_us` never
/// decreases within an aggregate).
pub(super) const SELECT_PENDING: &str = "SELECT event_id, topic, ce_type, ce_source, ce_subject, traceparent, \
     payload, occur_us, aggregate_id, aggregate_seq, created_us, attempted_us FROM outbox WHERE sent_us IS NULL \
     ORDER BY created_us, aggregate_seq, event_id LIMIT $1";

/// Pending rows in publishing order after a key (`$2, $3, $4`), without
/// those whose aggregate still has an unsent row at or before the key.
///
/// Why: `created_us` is taken when a row is inserted, not when it commits.
/// A transaction that commits late makes its row visible behind a key the
/// cursor has already passed; the next row of the same aggregate, committed
/// after it, lies after the key. Published from the cursor, that next row
/// would overtake its predecessor. Held back here, it goes out in the next
/// read from the start, after the predecessor (both are pending then, in
/// order). A predecessor this relay published but has not marked sent yet
/// holds a row back too, until that read from the start: later, never out
/// of order. `outbox_pending_aggregate` serves the look-up.
pub(super) const SELECT_PENDING_AFTER: &str = "SELECT event_id, topic, ce_type, ce_source, ce_subject, traceparent, \
     payload, occur_us, aggregate_id, aggregate_seq, created_us, attempted_us FROM outbox o WHERE sent_us IS NULL \
     AND (created_us, aggregate_seq, event_id) > ($2, $3, $4) \
     AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.aggregate_id = o.aggregate_id AND p.sent_us IS NULL \
     AND p.aggregate_seq < o.aggregate_seq AND (p.created_us, p.aggregate_seq, p.event_id) <= ($2, $3, $4)) \
     ORDER BY created_us, aggregate_seq, event_id LIMIT $1";

/// A pending row as the relay reads it.
pub(super) struct Pending {
    pub event: Event,
    pub aggregate_id: String,
    pub aggregate_seq: i64,
    pub created_us: i64,
    /// When a relay first tried to publish it (`None`: never).
    pub attempted_us: Option<i64>,
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
        attempted_us: row.try_get("attempted_us")?,
    })
}
