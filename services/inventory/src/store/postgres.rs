//! What inventory writes in one statement on PostgreSQL: data-modifying
//! `WITH` parts instead of a transaction of several statements, for the
//! common case of a change (SQLite has no data-modifying `WITH`; there a
//! statement is a call into the library, not a network round trip, and the
//! transaction stays). Anything outside the common case takes the
//! transaction, which answers every case.

use ordermesh_events::outbox;
use ordermesh_runtime::db;

use super::stock::Movement;
use super::{Line, Reservation, ReservationStatus, ReservedLine, Store, events};
use crate::error::Error;

/// Where a take of `$1` units from a stock row leaves the low-stock rule
/// ([`super::low_stock::decide`]) quiet and the row's alert state as it is:
/// the units are there and what stays is not below a positive threshold,
/// or alerts are off and the row is not marked alerted. Under this guard
/// a reservation needs neither a StockLow nor a write of `low_alerted`.
const QUIET_TAKE: &str =
    "available >= $1 AND ((low_stock_threshold > 0 AND available - $1 >= low_stock_threshold)
     OR (low_stock_threshold <= 0 AND low_alerted = 0))";

impl Store {
    /// PostgreSQL's common case of [`Store::reserve`], one line that leaves
    /// the SKU's low-stock rule quiet: the SKU read (its price), then one
    /// statement of data-modifying `WITH` parts: the units taken,
    /// conditional on the price and currency read and on [`QUIET_TAKE`],
    /// and only when that matched, the reservation, its line and the
    /// StockReserved outbox row. Two round trips and no BEGIN/COMMIT
    /// instead of six statements. `None` when the take does not match (out
    /// of stock, a take that alerts, a price changed since the read) or the
    /// order is already reserved (its key fails the whole statement):
    /// nothing was written, and the transaction path answers.
    pub(super) async fn reserve_in_one_statement(
        &self,
        order_id: &str,
        customer_id: &str,
        lines: &[Line],
        (now, expire_time): (i64, i64),
    ) -> Result<Option<Reservation>, Error> {
        use ReservationStatus::*;
        let [line] = lines else {
            return Ok(None);
        };
        let Ok(item) = self.item(&line.sku).await else {
            return Ok(None);
        };
        let Some(total) = item.unit_price_minor.checked_mul(line.quantity) else {
            return Ok(None);
        };
        let reservation = Reservation {
            order_id: order_id.into(),
            status: Active,
            lines: vec![ReservedLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price_minor: item.unit_price_minor,
            }],
            total_minor: total,
            currency_code: item.currency_code.clone(),
            expire_time,
            create_time: now,
            update_time: now,
            customer_id: customer_id.into(),
        };
        const TAKEN: &str = "EXISTS (SELECT 1 FROM taken)";
        let sql = format!(
            "WITH taken AS (UPDATE stock_items SET available = available - $1, reserved = reserved + $1,
                 update_time = CASE WHEN update_time > $2 THEN update_time ELSE $2 END
                 WHERE sku = $3 AND unit_price_minor = $4 AND currency_code = $5 AND {QUIET_TAKE} RETURNING 1),
             recorded AS (INSERT INTO reservations ({columns}) SELECT $6, $7, $8, $5, $9, $2, $2, $10 WHERE {TAKEN}),
             lined AS (INSERT INTO reservation_lines (order_id, line_no, sku, quantity, unit_price_minor, currency_code)
                 SELECT $6, 0, $3, $1, $4, $5 WHERE {TAKEN}),
             published AS ({outbox})
             SELECT COUNT(*) FROM taken",
            columns = reservation_columns!(),
            outbox = outbox::insert_part(11, Some(TAKEN)),
        );
        let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .bind(line.quantity)
            .bind(now)
            .bind(line.sku.clone())
            .bind(item.unit_price_minor)
            .bind(item.currency_code)
            .bind(order_id.to_owned())
            .bind(Active.as_str())
            .bind(total)
            .bind(expire_time)
            .bind(customer_id.to_owned());
        // An event its type refuses: the transaction path reports it.
        let Ok(query) = outbox::bind_insert(query, &events::reservation_event(&self.events, &reservation))
        else {
            return Ok(None);
        };
        match self.events.run_guarded(query, &self.db.write).await {
            Ok(changed) => Ok(changed.then_some(reservation)),
            Err(e) if db::is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

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
        let changed = self.events.run_guarded(query, &self.db.write).await?;
        Ok(changed.then_some(moved))
    }
}

#[cfg(test)]
mod tests {
    use super::super::low_stock::{Change, Decision, decide};

    /// [`super::QUIET_TAKE`] read as Rust: the row's state before the take.
    fn quiet_take(available: i64, threshold: i64, alerted: bool, taken: i64) -> bool {
        available >= taken
            && ((threshold > 0 && available - taken >= threshold) || (threshold <= 0 && !alerted))
    }

    #[test]
    fn a_take_under_the_guard_leaves_the_low_stock_rule_quiet() {
        let mut guarded = 0;
        for alerted in [false, true] {
            for threshold in -1..=6 {
                for available in 0..=12 {
                    for taken in 1..=4 {
                        if !quiet_take(available, threshold, alerted, taken) {
                            continue;
                        }
                        guarded += 1;
                        assert_eq!(
                            decide(alerted, available - taken, threshold, Change::Taken),
                            Decision {
                                alert: false,
                                alerted
                            },
                            "alerted {alerted}, threshold {threshold}, {available} - {taken}"
                        );
                    }
                }
            }
        }
        assert!(guarded > 100, "the grid exercises the guard");
        assert!(super::QUIET_TAKE.contains("available - $1 >= low_stock_threshold"));
    }
}
