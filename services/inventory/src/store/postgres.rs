//! What inventory writes in one statement on PostgreSQL: data-modifying
//! `WITH` parts instead of a transaction of several statements, for the
//! common case of a change (SQLite has no data-modifying `WITH`; there a
//! statement is a call into the library, not a network round trip, and the
//! transaction stays). Anything outside the common case takes the
//! transaction, which answers every case.

use ordermesh_events::outbox;
use ordermesh_runtime::db;

use super::stock::Movement;
use super::{Reservation, ReservationStatus, Store, events};
use crate::error::Error;

impl Store {
    /// PostgreSQL's common case of [`Store::commit`], a reservation of one
    /// line: the reservation read, then one statement of data-modifying
    /// `WITH` parts: its status change, conditional on the status and update
    /// time read, and only when that matched, the line's units moved from
    /// reserved to sold and the StockCommitted outbox row. Two round trips
    /// and no BEGIN/COMMIT instead of six statements; the event is built
    /// from the read (a reservation's lines never change). `None` when the
    /// reservation is not active and unexpired as read, moved meanwhile, or
    /// has several lines (their stock rows must be locked in SKU order,
    /// which one statement does not promise): nothing was written, and the
    /// transaction path answers.
    pub(super) async fn commit_in_one_statement(
        &self,
        order_id: &str,
        now: i64,
    ) -> Result<Option<Reservation>, Error> {
        use ReservationStatus::*;
        let Some(read) = self.reservation(order_id).await? else {
            return Ok(None);
        };
        let [line] = read.lines.as_slice() else {
            return Ok(None);
        };
        if read.status != Active || read.expire_time <= now {
            return Ok(None);
        }
        let (quantity, sku) = (line.quantity, line.sku.clone());
        let moved = Reservation {
            status: Committed,
            update_time: read.update_time.max(now),
            ..read.clone()
        };
        const MOVED: &str = "EXISTS (SELECT 1 FROM moved)";
        let sql = format!(
            "WITH moved AS (UPDATE reservations SET status = $1, update_time = $2
                 WHERE order_id = $3 AND status = $4 AND update_time = $5 AND expire_time > $6 RETURNING 1),
             sold AS ({sold} AND {MOVED}),
             published AS ({outbox})
             SELECT COUNT(*) FROM moved",
            sold = db::renumbered(Movement::ReservedToSold.sql(), 7),
            outbox = outbox::insert_part(10, Some(MOVED)),
        );
        let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .bind(Committed.as_str())
            .bind(moved.update_time)
            .bind(order_id.to_owned())
            .bind(Active.as_str())
            .bind(read.update_time)
            .bind(now)
            .bind(quantity)
            .bind(now)
            .bind(sku);
        // An event its type refuses: the transaction path reports it.
        let Ok(query) = outbox::bind_insert(query, &events::reservation_event(&self.events, &moved)) else {
            return Ok(None);
        };
        if query.fetch_one(&self.db.write).await? == 0 {
            return Ok(None);
        }
        self.events.committed();
        Ok(Some(moved))
    }
}
