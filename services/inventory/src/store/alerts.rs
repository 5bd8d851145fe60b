//! Restock alerts: the consumer of StockLow events records one per event
//! (its inbox makes a redelivery a no-op; the event id is also the key), and
//! ListRestockAlerts reads them newest first.

use sqlx::AnyConnection;

use ordermesh_proto::events::v1 as pb;
use ordermesh_runtime::clock;

use super::Store;
use crate::error::Error;

/// A recorded alert.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RestockAlert {
    pub event_id: String,
    pub sku: String,
    pub available: i64,
    pub threshold: i64,
    pub order_id: String,
    pub alert_time: i64,
}

/// A keyset position in the newest-first alert listing.
pub type AlertCursor = (i64, String);

/// Records the alert of a StockLow event, on the consumer's transaction.
pub async fn record(
    conn: &mut AnyConnection,
    event_id: &str,
    low: &pb::StockLow,
    now: i64,
) -> Result<(), Error> {
    let alert_time = low.occur_time.as_ref().map_or(now, clock::micros_of);
    sqlx::query(
        "INSERT INTO restock_alerts (event_id, sku, available, threshold, order_id, alert_time)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(&low.sku)
    .bind(low.available)
    .bind(low.threshold)
    .bind(&low.order_id)
    .bind(alert_time)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Alerts newest first, of one SKU when `sku` is set, after `before`.
    pub async fn restock_alerts(
        &self,
        sku: &str,
        before: Option<AlertCursor>,
        limit: i64,
    ) -> Result<Vec<RestockAlert>, Error> {
        let (before_time, before_id) = before.unwrap_or((i64::MAX, String::new()));
        Ok(sqlx::query_as::<_, RestockAlert>(
            "SELECT event_id, sku, available, threshold, order_id, alert_time FROM restock_alerts
             WHERE ($1 = '' OR sku = $1) AND (alert_time < $2 OR (alert_time = $2 AND event_id < $3))
             ORDER BY alert_time DESC, event_id DESC LIMIT $4",
        )
        .bind(sku)
        .bind(before_time)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }
}
