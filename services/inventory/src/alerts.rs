//! The low-stock consumer: inventory publishes StockLow when a SKU's
//! available stock crosses below its threshold; this consumer (on the
//! inventory stream, StockLow only) records a restock alert for each, in the
//! same transaction as its inbox record, so a redelivery adds nothing.

use sqlx::AnyConnection;

use ordermesh_events::{Event, HandlerError, TxHandler};
use ordermesh_proto::events::v1::StockLow;
use ordermesh_runtime::clock;

use crate::store::alerts;

/// The durable consumer's name (and inbox key).
pub const CONSUMER: &str = "inventory-restock-alerts";

pub struct RestockAlerts;

impl TxHandler for RestockAlerts {
    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        let low: StockLow = event
            .decode()
            .map_err(|e| HandlerError::poison(format!("not a StockLow: {e}")))?;
        alerts::record(conn, &event.id, &low, clock::now_micros())
            .await
            .map_err(|e| match e {
                // An outage is waited out, a refused row is poison.
                crate::error::Error::Infra(infra) => infra.into(),
                other => HandlerError::failed(other.to_string()),
            })
    }
}
