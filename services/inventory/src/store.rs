//! The inventory database: catalogue, stock buckets, reservations and
//! adjustments.
//!
//! Every stock movement is a conditional `UPDATE` (`WHERE available >= $n`)
//! inside the transaction that records why it happened, so concurrent
//! reservations can never oversell and no value is read, changed in Rust and
//! written back across an await. Every write transaction begins with a write,
//! so it takes the write lock at once instead of upgrading a read lock.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row};

use crate::error::Error;
use ordermesh_runtime::{clock, db, text_enum};

/// A catalogue entry with its stock buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub sku: String,
    pub name: String,
    pub unit_price_minor: i64,
    pub currency_code: String,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// A catalogue entry to create when it does not exist yet.
#[derive(Debug, Clone)]
pub struct SeedItem {
    pub sku: String,
    pub name: String,
    pub unit_price_minor: i64,
    pub currency_code: String,
    pub initial_stock: i64,
}

/// A requested line: SKU and quantity (already validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub quantity: i64,
}

text_enum!(
    /// A reservation's state, as stored.
    ReservationStatus {
        Active => "ACTIVE",
        Committed => "COMMITTED",
        Released => "RELEASED",
        Expired => "EXPIRED",
        Returned => "RETURNED",
    }
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: String,
    pub status: ReservationStatus,
    pub lines: Vec<ReservedLine>,
    pub total_minor: i64,
    pub currency_code: String,
    pub expire_time: i64,
    pub create_time: i64,
    pub update_time: i64,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    reservation_ttl: Duration,
}

const SELECT_ITEM: &str = "SELECT sku, name, unit_price_minor, currency_code, available, reserved, sold, create_time, update_time FROM stock_items";

/// How a reservation transition moves units between a SKU's buckets. The SQL
/// is a fixed fragment per variant (never input), hence `AssertSqlSafe` below.
#[derive(Debug, Clone, Copy)]
enum Movement {
    ReservedToAvailable,
    ReservedToSold,
    SoldToAvailable,
}

impl Movement {
    fn sql(self) -> &'static str {
        match self {
            Movement::ReservedToAvailable => {
                "UPDATE stock_items SET available = available + $1, reserved = reserved - $1, update_time = $2 WHERE sku = $3"
            }
            Movement::ReservedToSold => {
                "UPDATE stock_items SET reserved = reserved - $1, sold = sold + $1, update_time = $2 WHERE sku = $3"
            }
            Movement::SoldToAvailable => {
                "UPDATE stock_items SET available = available + $1, sold = sold - $1, update_time = $2 WHERE sku = $3"
            }
        }
    }
}

fn item_from_row(row: &AnyRow) -> Result<Item, sqlx::Error> {
    Ok(Item {
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        unit_price_minor: row.try_get("unit_price_minor")?,
        currency_code: row.try_get("currency_code")?,
        available: row.try_get("available")?,
        reserved: row.try_get("reserved")?,
        sold: row.try_get("sold")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
    })
}

/// Deadline bounds that match every reservation.
const ANY_DEADLINE: (i64, i64) = (i64::MIN, i64::MAX);

impl Store {
    pub fn new(pool: AnyPool, reservation_ttl: Duration) -> Self {
        Self {
            pool,
            reservation_ttl,
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Creates the catalogue entries that do not exist yet; existing ones keep
    /// their stock, so seeding on every start is harmless.
    pub async fn seed(&self, items: &[SeedItem]) -> Result<(), Error> {
        let now = clock::now_micros();
        for item in items {
            sqlx::query(
                "INSERT INTO stock_items (sku, name, unit_price_minor, currency_code, available, reserved, sold, create_time, update_time)
                 VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $6) ON CONFLICT (sku) DO NOTHING",
            )
            .bind(&item.sku)
            .bind(&item.name)
            .bind(item.unit_price_minor)
            .bind(&item.currency_code)
            .bind(item.initial_stock)
            .bind(now)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    pub async fn item(&self, sku: &str) -> Result<Item, Error> {
        let row = sqlx::query(AssertSqlSafe(format!("{SELECT_ITEM} WHERE sku = $1")))
            .bind(sku)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(item_from_row(&row)?),
            None => Err(Error::UnknownSku { sku: sku.into() }),
        }
    }

    /// Items ordered by SKU after `after` (exclusive), at most `limit`.
    pub async fn items_after(&self, after: Option<&str>, limit: i64) -> Result<Vec<Item>, Error> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{SELECT_ITEM} WHERE sku > $1 ORDER BY sku LIMIT $2"
        )))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(item_from_row).collect::<Result<_, _>>()?)
    }

    /// Adds `delta` to a SKU's available stock, once per `request_id`.
    pub async fn adjust(&self, sku: &str, delta: i64, reason: &str, request_id: &str) -> Result<Item, Error> {
        let now = clock::now_micros();
        let mut tx = self.pool.begin().await?;
        let recorded = sqlx::query(
            "INSERT INTO stock_adjustments (request_id, sku, delta, reason, create_time) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(request_id)
        .bind(sku)
        .bind(delta)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match recorded {
            Ok(_) => {}
            Err(e) if db::is_unique_violation(&e) => {
                // A replay: the first request already applied the change,
                // unless the key was used for a different change.
                tx.rollback().await?;
                let first = sqlx::query("SELECT sku, delta FROM stock_adjustments WHERE request_id = $1")
                    .bind(request_id)
                    .fetch_one(&self.pool)
                    .await?;
                let first_sku: String = first.try_get("sku")?;
                let first_delta: i64 = first.try_get("delta")?;
                if first_sku != sku || first_delta != delta {
                    return Err(Error::RequestIdReused {
                        request_id: request_id.into(),
                    });
                }
                return self.item(sku).await;
            }
            Err(e) => {
                tx.rollback().await?;
                // The foreign key to stock_items rejects unknown SKUs.
                return match self.item(sku).await {
                    Err(unknown @ Error::UnknownSku { .. }) => Err(unknown),
                    _ => Err(e.into()),
                };
            }
        }
        let updated = sqlx::query(
            "UPDATE stock_items SET available = available + $1, update_time = $2 WHERE sku = $3 AND available + $1 >= 0",
        )
        .bind(delta)
        .bind(now)
        .bind(sku)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            tx.rollback().await?;
            self.item(sku).await?;
            return Err(Error::StockBelowZero {
                sku: sku.into(),
                delta,
            });
        }
        tx.commit().await?;
        self.item(sku).await
    }

    /// Reserves every line for `order_id`, or none. A second call for the
    /// same order returns the first reservation unchanged.
    pub async fn reserve(&self, order_id: &str, lines: &[Line]) -> Result<Reservation, Error> {
        self.expire_due().await?;
        if let Some(existing) = self.reservation(order_id).await? {
            return Ok(existing);
        }
        let now = clock::now_micros();
        let expire_time = now.saturating_add(clock::micros(self.reservation_ttl));
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO reservations (order_id, status, total_minor, currency_code, expire_time, create_time, update_time)
             VALUES ($1, 'ACTIVE', 0, '', $2, $3, $3)",
        )
        .bind(order_id)
        .bind(expire_time)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if db::is_unique_violation(&e) => {
                // A concurrent duplicate won the race; return its result.
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

        let mut total: i64 = 0;
        let mut currency: Option<String> = None;
        // Rows are locked in SKU order, so two orders naming the same SKUs in
        // different orders cannot deadlock each other on PostgreSQL.
        let mut by_sku: Vec<(usize, &Line)> = lines.iter().enumerate().collect();
        by_sku.sort_by(|a, b| a.1.sku.cmp(&b.1.sku));
        for (line_no, line) in by_sku {
            let taken = sqlx::query(
                "UPDATE stock_items SET available = available - $1, reserved = reserved + $1, update_time = $2
                 WHERE sku = $3 AND available >= $1 RETURNING unit_price_minor, currency_code",
            )
            .bind(line.quantity)
            .bind(now)
            .bind(&line.sku)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(taken) = taken else {
                let available: Option<i64> = sqlx::query("SELECT available FROM stock_items WHERE sku = $1")
                    .bind(&line.sku)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| row.try_get("available"))
                    .transpose()?;
                tx.rollback().await?;
                return Err(match available {
                    None => Error::UnknownSku {
                        sku: line.sku.clone(),
                    },
                    Some(available) => Error::InsufficientStock {
                        sku: line.sku.clone(),
                        requested: line.quantity,
                        available,
                    },
                });
            };
            let unit_price: i64 = taken.try_get("unit_price_minor")?;
            let line_currency: String = taken.try_get("currency_code")?;
            match &currency {
                None => currency = Some(line_currency.clone()),
                Some(first) if *first != line_currency => {
                    let first = first.clone();
                    tx.rollback().await?;
                    return Err(Error::MixedCurrencies {
                        first,
                        second: line_currency,
                    });
                }
                Some(_) => {}
            }
            let line_total = unit_price
                .checked_mul(line.quantity)
                .and_then(|t| t.checked_add(total));
            let Some(line_total) = line_total else {
                tx.rollback().await?;
                return Err(Error::Corrupt("order total overflows".into()));
            };
            total = line_total;
            sqlx::query(
                "INSERT INTO reservation_lines (order_id, line_no, sku, quantity, unit_price_minor, currency_code)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(order_id)
            .bind(line_no as i64)
            .bind(&line.sku)
            .bind(line.quantity)
            .bind(unit_price)
            .bind(&line_currency)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE reservations SET total_minor = $1, currency_code = $2 WHERE order_id = $3")
            .bind(total)
            .bind(currency.unwrap_or_default())
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.reservation(order_id)
            .await?
            .ok_or_else(|| Error::ReservationNotFound {
                order_id: order_id.into(),
            })
    }

    pub async fn reservation(&self, order_id: &str) -> Result<Option<Reservation>, Error> {
        let Some(row) = sqlx::query(
            "SELECT order_id, status, total_minor, currency_code, expire_time, create_time, update_time
             FROM reservations WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let lines = sqlx::query(
            "SELECT sku, quantity, unit_price_minor FROM reservation_lines WHERE order_id = $1 ORDER BY line_no",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|line| {
            Ok(ReservedLine {
                sku: line.try_get("sku")?,
                quantity: line.try_get("quantity")?,
                unit_price_minor: line.try_get("unit_price_minor")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let status: String = row.try_get("status")?;
        Ok(Some(Reservation {
            order_id: row.try_get("order_id")?,
            status: ReservationStatus::parse(&status)?,
            lines,
            total_minor: row.try_get("total_minor")?,
            currency_code: row.try_get("currency_code")?,
            expire_time: row.try_get("expire_time")?,
            create_time: row.try_get("create_time")?,
            update_time: row.try_get("update_time")?,
        }))
    }

    /// Moves a reservation from `from` to `to` and its units between buckets,
    /// atomically, if its deadline lies in `expiring_after < deadline <=
    /// expiring_by`. Returns false when the reservation was not in `from` (a
    /// concurrent caller or an earlier attempt already moved it).
    async fn transition(
        &self,
        order_id: &str,
        (from, to): (ReservationStatus, ReservationStatus),
        (expiring_after, expiring_by): (i64, i64),
        movement: Movement,
    ) -> Result<bool, Error> {
        let now = clock::now_micros();
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE reservations SET status = $1, update_time = $2
             WHERE order_id = $3 AND status = $4 AND expire_time > $5 AND expire_time <= $6",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(order_id)
        .bind(from.as_str())
        .bind(expiring_after)
        .bind(expiring_by)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let lines = sqlx::query("SELECT sku, quantity FROM reservation_lines WHERE order_id = $1")
            .bind(order_id)
            .fetch_all(&mut *tx)
            .await?;
        for line in &lines {
            let sku: String = line.try_get("sku")?;
            let quantity: i64 = line.try_get("quantity")?;
            sqlx::query(movement.sql())
                .bind(quantity)
                .bind(now)
                .bind(&sku)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Gives an active reservation's units back, or a committed one's sold
    /// units back to stock. Releasing twice is a no-op; releasing an order
    /// never reserved records it as released.
    pub async fn release(&self, order_id: &str) -> Result<Option<Reservation>, Error> {
        use ReservationStatus::*;
        let released = self
            .transition(
                order_id,
                (Active, Released),
                ANY_DEADLINE,
                Movement::ReservedToAvailable,
            )
            .await?;
        if !released
            && !self
                .transition(
                    order_id,
                    (Committed, Returned),
                    ANY_DEADLINE,
                    Movement::SoldToAvailable,
                )
                .await?
        {
            // Never reserved: record the release, so a ReserveStock that
            // arrives late (a retry that lost the race with compensation)
            // replays this instead of holding stock for a finished order.
            let now = clock::now_micros();
            sqlx::query(
                "INSERT INTO reservations (order_id, status, total_minor, currency_code, expire_time, create_time, update_time)
                 VALUES ($1, 'RELEASED', 0, '', $2, $2, $2) ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(order_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        }
        self.reservation(order_id).await
    }

    /// Sells an active, unexpired reservation's units. Idempotent.
    pub async fn commit(&self, order_id: &str) -> Result<Reservation, Error> {
        use ReservationStatus::*;
        let now = clock::now_micros();
        self.transition(
            order_id,
            (Active, Committed),
            (now, i64::MAX),
            Movement::ReservedToSold,
        )
        .await?;
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
        self.transition(
            order_id,
            (Active, Expired),
            (i64::MIN, now),
            Movement::ReservedToAvailable,
        )
        .await
    }

    /// Expires every active reservation past its deadline; returns how many.
    /// The deadline lives in the database, so whoever looks next (the
    /// sweeper, or the next reserve or commit) enforces it, even after a
    /// restart.
    pub async fn expire_due(&self) -> Result<usize, Error> {
        let now = clock::now_micros();
        let due: Vec<String> = sqlx::query(
            "SELECT order_id FROM reservations WHERE status = 'ACTIVE' AND expire_time <= $1 ORDER BY expire_time LIMIT 100",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| row.try_get("order_id"))
        .collect::<Result<_, _>>()?;
        let mut expired = 0;
        for order_id in due {
            if self.expire(&order_id).await? {
                tracing::info!(%order_id, "reservation expired, stock returned");
                expired += 1;
            }
        }
        Ok(expired)
    }

    /// Current availability of each requested SKU (`None` when unknown).
    pub async fn availability(&self, skus: &[&str]) -> Result<HashMap<String, i64>, Error> {
        let mut found = HashMap::new();
        for sku in skus {
            if let Some(row) = sqlx::query("SELECT available FROM stock_items WHERE sku = $1")
                .bind(*sku)
                .fetch_optional(&self.pool)
                .await?
            {
                found.insert((*sku).to_owned(), row.try_get("available")?);
            }
        }
        Ok(found)
    }
}
