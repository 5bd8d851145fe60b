//! Reservations: stock held for an order, all lines or none, keyed (and
//! idempotent) by the order id; committed (sold), released, or expired by a
//! deadline stored with it.
//!
//! A release that arrives before the reservation (a compensation racing a
//! reserve still in flight, or a late retry) records a RELEASED placeholder
//! under the order id, so the late reserve collides with it, rolls back and
//! replays it: it holds nothing. Reserve and release both insert that key
//! inside their transactions: on PostgreSQL the second waits for the first
//! to commit, and SQLite's single writer serializes them, so a release always
//! sees the reservation it must undo.

use sqlx::AnyConnection;

use ordermesh_runtime::{clock, db};

use ordermesh_events::Publisher;

use super::low_stock::Change;
use super::stock::{self, Movement, lock_order};
use super::{Line, Reservation, ReservationRow, ReservationStatus, ReservedLine, Store, events};
use crate::error::Error;

/// Deadline bounds that match every reservation.
const ANY_DEADLINE: (i64, i64) = (i64::MIN, i64::MAX);

/// What the stock row says after a line was taken.
#[derive(Clone, sqlx::FromRow)]
struct Taken {
    unit_price_minor: i64,
    currency_code: String,
    available: i64,
    low_stock_threshold: i64,
    low_alerted: i64,
    /// The row's time after the take (never before its previous one).
    update_time: i64,
}

impl Store {
    /// Reserves every line for `order_id`, or none. A second call for the
    /// same order returns the first reservation unchanged (also a RELEASED
    /// placeholder left by a release that came first).
    ///
    /// One transaction: take each line's units (conditional updates, in SKU
    /// order), then record the reservation under the order id and its lines.
    /// A duplicate's record collides on the order id and the whole
    /// transaction rolls back, units included, so the stock moves once.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "reserve", db.operation.name = "reserve", db.system.name = self.db.backend.system_name()))]
    pub async fn reserve(
        &self,
        order_id: &str,
        customer_id: &str,
        lines: &[Line],
    ) -> Result<Reservation, Error> {
        let now = clock::now_micros();
        let expire_time = now.saturating_add(clock::micros(self.reservation_ttl));
        if self.db.backend == db::Backend::Postgres
            && let Some(reserved) = self
                .reserve_in_one_statement(order_id, customer_id, lines, (now, expire_time))
                .await?
        {
            return Ok(reserved);
        }
        let mut tx = self.db.begin().await?;
        let mut total: i64 = 0;
        let mut currency: Option<String> = None;
        let mut reserved = vec![None; lines.len()];
        let mut lows: Vec<(&Line, Taken)> = Vec::new();
        // Stock rows in SKU order, as every path takes them (`stock`).
        for line_no in lock_order(lines) {
            let line = &lines[line_no];
            let taken = sqlx::query_as::<_, Taken>(
                "UPDATE stock_items SET available = available - $1, reserved = reserved + $1, update_time = CASE WHEN update_time > $2 THEN update_time ELSE $2 END
                 WHERE sku = $3 AND available >= $1
                 RETURNING unit_price_minor, currency_code, available, low_stock_threshold, low_alerted, update_time",
            )
            .bind(line.quantity)
            .bind(now)
            .bind(&line.sku)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(taken) = taken else {
                // Lines taken so far are given back by the rollback.
                let available: Option<(i64,)> =
                    sqlx::query_as("SELECT available FROM stock_items WHERE sku = $1")
                        .bind(&line.sku)
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.rollback().await?;
                // A replay answers with the first result, even when the
                // stock it took is gone now.
                if let Some(existing) = self.reservation(order_id).await? {
                    return Ok(existing);
                }
                return Err(match available {
                    None => Error::UnknownSku {
                        sku: line.sku.clone(),
                    },
                    Some((available,)) => Error::InsufficientStock {
                        sku: line.sku.clone(),
                        requested: line.quantity,
                        available,
                    },
                });
            };
            match &currency {
                None => currency = Some(taken.currency_code.clone()),
                Some(first) if *first != taken.currency_code => {
                    let first = first.clone();
                    tx.rollback().await?;
                    if let Some(existing) = self.reservation(order_id).await? {
                        return Ok(existing);
                    }
                    return Err(Error::MixedCurrencies {
                        first,
                        second: taken.currency_code,
                    });
                }
                Some(_) => {}
            }
            let Some(line_total) = taken
                .unit_price_minor
                .checked_mul(line.quantity)
                .and_then(|t| t.checked_add(total))
            else {
                tx.rollback().await?;
                return Err(Error::from(ordermesh_runtime::Infra::Corrupt(
                    "order total overflows".into(),
                )));
            };
            total = line_total;
            // On the row just locked (a failing later line rolls this back).
            let low = stock::low_stock(
                &mut tx,
                &line.sku,
                (taken.low_alerted != 0, taken.available, taken.low_stock_threshold),
                Change::Taken,
            )
            .await?;
            if low {
                lows.push((line, taken.clone()));
            }
            reserved[line_no] = Some((line, taken));
        }
        let currency = currency.unwrap_or_default();
        let recorded = sqlx::query(concat!(
            "INSERT INTO reservations (",
            reservation_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $6, $7)"
        ))
        .bind(order_id)
        .bind(ReservationStatus::Active.as_str())
        .bind(total)
        .bind(&currency)
        .bind(expire_time)
        .bind(now)
        .bind(customer_id)
        .execute(&mut *tx)
        .await;
        match recorded {
            Ok(_) => {}
            Err(e) if db::is_unique_violation(&e) => {
                // A replay, a concurrent duplicate that won, or a release
                // that came first: its record is the answer; nothing moved.
                tx.rollback().await?;
                return self
                    .reservation(order_id)
                    .await?
                    .ok_or_else(|| Error::ReservationNotFound {
                        order_id: order_id.into(),
                    });
            }
            Err(e) => return Err(e.into()),
        }
        let mut reserved_lines = Vec::with_capacity(lines.len());
        for (line_no, (line, taken)) in reserved.into_iter().flatten().enumerate() {
            sqlx::query(
                "INSERT INTO reservation_lines (order_id, line_no, sku, quantity, unit_price_minor, currency_code)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(order_id)
            .bind(line_no as i64)
            .bind(&line.sku)
            .bind(line.quantity)
            .bind(taken.unit_price_minor)
            .bind(&taken.currency_code)
            .execute(&mut *tx)
            .await?;
            reserved_lines.push(ReservedLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price_minor: taken.unit_price_minor,
            });
        }
        let reservation = Reservation {
            order_id: order_id.into(),
            status: ReservationStatus::Active,
            lines: reserved_lines,
            total_minor: total,
            currency_code: currency,
            expire_time,
            create_time: now,
            update_time: now,
            customer_id: customer_id.into(),
        };
        events::reservation_changed(&self.events, &mut tx, &reservation).await?;
        for (line, taken) in &lows {
            events::stock_low(
                &self.events,
                &mut tx,
                (&line.sku, taken.available, taken.low_stock_threshold),
                order_id,
                taken.update_time,
            )
            .await?;
        }
        tx.commit().await?;
        self.events.committed();
        Ok(reservation)
    }

    /// A reservation with its lines, in one statement (a row per line; one
    /// row without a line for a placeholder, which has none).
    pub async fn reservation(&self, order_id: &str) -> Result<Option<Reservation>, Error> {
        let rows = sqlx::query_as::<_, ReservationLineRow>(concat!(
            "SELECT ",
            reservation_columns!(),
            ", sku, quantity, unit_price_minor FROM reservations
             LEFT JOIN (SELECT order_id AS line_order, line_no, sku, quantity, unit_price_minor FROM reservation_lines) l
               ON l.line_order = reservations.order_id
             WHERE order_id = $1 ORDER BY line_no"
        ))
        .bind(order_id)
        .fetch_all(&self.db.read)
        .await?;
        let mut rows = rows.into_iter().peekable();
        let Some(first) = rows.peek() else {
            return Ok(None);
        };
        let row = first.reservation.clone();
        let lines = rows
            .filter_map(|r| {
                Some(ReservedLine {
                    sku: r.sku?,
                    quantity: r.quantity?,
                    unit_price_minor: r.unit_price_minor?,
                })
            })
            .collect();
        Ok(Some(row.with_lines(lines)))
    }

    /// [`transition_in`] in a transaction of its own.
    async fn transition(
        &self,
        order_id: &str,
        fromto: (ReservationStatus, ReservationStatus),
        deadline: (i64, i64),
        movement: Movement,
    ) -> Result<Option<Reservation>, Error> {
        let mut tx = self.db.begin().await?;
        let moved = transition_in(&mut tx, &self.events, order_id, fromto, deadline, movement).await?;
        if moved.is_some() {
            tx.commit().await?;
            self.events.committed();
        } else {
            tx.rollback().await?;
        }
        Ok(moved)
    }

    /// Gives an active reservation's units back, or a committed one's sold
    /// units back to stock, and returns the reservation as it is afterwards
    /// (RELEASED, RETURNED, or EXPIRED when its deadline came first).
    /// Releasing twice is a no-op; releasing an order never reserved records
    /// a RELEASED placeholder.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "release", db.operation.name = "release", db.system.name = self.db.backend.system_name()))]
    pub async fn release(&self, order_id: &str) -> Result<Reservation, Error> {
        use ReservationStatus::*;
        let now = clock::now_micros();
        let mut tx = self.db.begin().await?;
        // First the key: this waits for a reserve of the same order that is
        // still in flight, so the updates below see what it did.
        let placeholder = sqlx::query(concat!(
            "INSERT INTO reservations (",
            reservation_columns!(),
            ") VALUES ($1, $2, 0, '', $3, $3, $3, '') ON CONFLICT (order_id) DO NOTHING"
        ))
        .bind(order_id)
        .bind(Released.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let moved = if placeholder.rows_affected() == 1 {
            None
        } else {
            match transition_in(
                &mut tx,
                &self.events,
                order_id,
                (Active, Released),
                ANY_DEADLINE,
                Movement::ReservedToAvailable,
            )
            .await?
            {
                Some(released) => Some(released),
                None => {
                    transition_in(
                        &mut tx,
                        &self.events,
                        order_id,
                        (Committed, Returned),
                        ANY_DEADLINE,
                        Movement::SoldToAvailable,
                    )
                    .await?
                }
            }
        };
        tx.commit().await?;
        if let Some(moved) = moved {
            self.events.committed();
            return Ok(moved);
        }
        self.reservation(order_id)
            .await?
            .ok_or_else(|| Error::ReservationNotFound {
                order_id: order_id.into(),
            })
    }

    /// Sells an active, unexpired reservation's units. Idempotent.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "commit", db.operation.name = "commit", db.system.name = self.db.backend.system_name()))]
    pub async fn commit(&self, order_id: &str) -> Result<Reservation, Error> {
        use ReservationStatus::*;
        let now = clock::now_micros();
        if self.db.backend == db::Backend::Postgres
            && let Some(committed) = self.commit_in_one_statement(order_id, now).await?
        {
            return Ok(committed);
        }
        if let Some(committed) = self
            .transition(
                order_id,
                (Active, Committed),
                (now, i64::MAX),
                Movement::ReservedToSold,
            )
            .await?
        {
            return Ok(committed);
        }
        let reservation = self
            .reservation(order_id)
            .await?
            .ok_or_else(|| Error::ReservationNotFound {
                order_id: order_id.into(),
            })?;
        match reservation.status {
            Committed => Ok(reservation),
            Active => {
                // Past its deadline but not swept yet: expire it now.
                self.expire(order_id).await?;
                Err(Error::ReservationExpired {
                    order_id: order_id.into(),
                })
            }
            Expired => Err(Error::ReservationExpired {
                order_id: order_id.into(),
            }),
            other => Err(Error::ReservationNotActive {
                order_id: order_id.into(),
                status: other.as_str().into(),
            }),
        }
    }

    /// Expires one reservation if it is active and past its deadline.
    pub async fn expire(&self, order_id: &str) -> Result<bool, Error> {
        use ReservationStatus::*;
        let now = clock::now_micros();
        Ok(self
            .transition(
                order_id,
                (Active, Expired),
                (i64::MIN, now),
                Movement::ReservedToAvailable,
            )
            .await?
            .is_some())
    }

    /// Expires every active reservation past its deadline; returns how many.
    /// The deadline lives in the database, so whoever looks next (this
    /// background sweep, or a commit) enforces it, even after a restart.
    pub async fn expire_due(&self) -> Result<usize, Error> {
        let due: Vec<(String,)> = sqlx::query_as(
            "SELECT order_id FROM reservations WHERE status = $1 AND expire_time <= $2 ORDER BY expire_time LIMIT 100",
        )
        .bind(ReservationStatus::Active.as_str())
        .bind(clock::now_micros())
        .fetch_all(&self.db.read)
        .await?;
        let mut expired = 0;
        for (order_id,) in due {
            if self.expire(&order_id).await? {
                tracing::info!(%order_id, "reservation expired, stock returned");
                expired += 1;
            }
        }
        Ok(expired)
    }
}

/// A reservation's row joined with one of its lines (none for a placeholder).
#[derive(sqlx::FromRow)]
struct ReservationLineRow {
    #[sqlx(flatten)]
    reservation: ReservationRow,
    sku: Option<String>,
    quantity: Option<i64>,
    unit_price_minor: Option<i64>,
}

/// Moves a reservation from `from` to `to` and its units between buckets,
/// on an open transaction, if its deadline lies in `expiring_after <
/// deadline <= expiring_by`; returns it as moved. `None` when the reservation
/// was not in `from` (a concurrent caller or an earlier attempt already moved
/// it): nothing written.
async fn transition_in(
    conn: &mut AnyConnection,
    events: &Publisher,
    order_id: &str,
    (from, to): (ReservationStatus, ReservationStatus),
    (expiring_after, expiring_by): (i64, i64),
    movement: Movement,
) -> Result<Option<Reservation>, Error> {
    let now = clock::now_micros();
    let moved = sqlx::query_as::<_, ReservationRow>(concat!(
        "UPDATE reservations SET status = $1, update_time = CASE WHEN update_time > $2 THEN update_time ELSE $2 END
         WHERE order_id = $3 AND status = $4 AND expire_time > $5 AND expire_time <= $6 RETURNING ",
        reservation_columns!()
    ))
    .bind(to.as_str())
    .bind(now)
    .bind(order_id)
    .bind(from.as_str())
    .bind(expiring_after)
    .bind(expiring_by)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(moved) = moved else {
        return Ok(None);
    };
    let lines = sqlx::query_as::<_, ReservedLine>(
        "SELECT sku, quantity, unit_price_minor FROM reservation_lines WHERE order_id = $1 ORDER BY line_no",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    // Stock rows in SKU order, as every path takes them (`stock`); the
    // reservation keeps its lines in line order.
    for line in lock_order(&lines).into_iter().map(|i| &lines[i]) {
        sqlx::query(movement.sql())
            .bind(line.quantity)
            .bind(now)
            .bind(&line.sku)
            .execute(&mut *conn)
            .await?;
    }
    let moved = moved.with_lines(lines);
    events::reservation_changed(events, conn, &moved).await?;
    Ok(Some(moved))
}
