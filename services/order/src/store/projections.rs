//! What the order service's consumers record from events: each order's
//! timeline (append-only, one row per event, keyed by the event id so a
//! redelivery adds nothing even past the inbox) and the confirmation notices
//! (one per order).

use sqlx::AnyConnection;

use super::Store;
use crate::error::Error;

/// One event in an order's timeline.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TimelineEntry {
    pub order_id: String,
    pub event_id: String,
    pub occur_time: i64,
    pub ce_type: String,
    pub ce_source: String,
    pub summary: String,
    /// The event's protobuf payload, base64.
    pub payload: String,
}

/// A confirmation notice.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Notice {
    pub order_id: String,
    pub event_id: String,
    pub customer_id: String,
    pub message: String,
    pub create_time: i64,
}

/// A keyset position in the newest-first notice listing.
pub type NoticeCursor = (i64, String);

/// Appends events to their orders' timelines in one statement (the
/// consumer's batch: one commit for all of them); an event already there
/// (a redelivery) is skipped.
pub async fn record_timeline(conn: &mut AnyConnection, entries: &[TimelineEntry]) -> Result<(), Error> {
    // Seven parameters a row; PostgreSQL allows 65,535 per statement.
    for chunk in entries.chunks(1000) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = 7 * i;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO order_timeline (order_id, event_id, occur_time, ce_type, ce_source, summary, payload) \
             VALUES {} ON CONFLICT (order_id, event_id) DO NOTHING",
            rows.join(", ")
        );
        // Not kept prepared: each batch size is another statement text, and
        // they would push the saga's statements out of the connection's cache.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for entry in chunk {
            query = query
                .bind(&entry.order_id)
                .bind(&entry.event_id)
                .bind(entry.occur_time)
                .bind(&entry.ce_type)
                .bind(&entry.ce_source)
                .bind(&entry.summary)
                .bind(&entry.payload);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Records the notice of a confirmed order, once, on the consumer's
/// transaction.
pub async fn record_notice(conn: &mut AnyConnection, notice: &Notice) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO confirmation_notices (order_id, event_id, customer_id, message, create_time)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&notice.order_id)
    .bind(&notice.event_id)
    .bind(&notice.customer_id)
    .bind(&notice.message)
    .bind(notice.create_time)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// An order's timeline in occurrence order.
    pub async fn timeline(&self, order_id: &str) -> Result<Vec<TimelineEntry>, Error> {
        Ok(sqlx::query_as::<_, TimelineEntry>(
            "SELECT order_id, event_id, occur_time, ce_type, ce_source, summary, payload FROM order_timeline
             WHERE order_id = $1 ORDER BY occur_time, event_id",
        )
        .bind(order_id)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Notices newest first, of one customer when `customer_id` is set.
    pub async fn notices(
        &self,
        customer_id: &str,
        before: Option<NoticeCursor>,
        limit: i64,
    ) -> Result<Vec<Notice>, Error> {
        let (before_time, before_id) = before.unwrap_or((i64::MAX, String::new()));
        Ok(sqlx::query_as::<_, Notice>(
            "SELECT order_id, event_id, customer_id, message, create_time FROM confirmation_notices
             WHERE ($1 = '' OR customer_id = $1) AND (create_time < $2 OR (create_time = $2 AND order_id < $3))
             ORDER BY create_time DESC, order_id DESC LIMIT $4",
        )
        .bind(customer_id)
        .bind(before_time)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }
}
