//! The catalogue: items and their stock buckets, seeding, idempotent stock
//! adjustments, availability checks.

use std::collections::HashMap;

use ordermesh_runtime::{clock, db};

use super::low_stock::Change;
use super::{Item, SeedItem, Store, events, stock};
use crate::error::Error;

/// A stock row as an update left it, with its low-stock state (as it was
/// before: the update does not write it).
#[derive(sqlx::FromRow)]
struct Updated {
    #[sqlx(flatten)]
    item: Item,
    low_alerted: i64,
}

/// What UpdateProduct changes: each field when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductUpdate {
    pub name: Option<String>,
    /// Amount in minor units and its currency (which must be the SKU's).
    pub unit_price: Option<(i64, String)>,
    pub low_stock_threshold: Option<i64>,
}

impl Store {
    /// Creates the catalogue entries that do not exist yet; existing ones keep
    /// their stock, so seeding on every start is harmless.
    pub async fn seed(&self, items: &[SeedItem]) -> Result<(), Error> {
        let now = clock::now_micros();
        for item in items {
            sqlx::query(concat!(
                "INSERT INTO stock_items (",
                item_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $6, $7) ON CONFLICT (sku) DO NOTHING"
            ))
            .bind(&item.sku)
            .bind(&item.name)
            .bind(item.unit_price_minor)
            .bind(&item.currency_code)
            .bind(item.initial_stock)
            .bind(now)
            .bind(item.low_stock_threshold)
            .execute(&self.db.write)
            .await?;
        }
        Ok(())
    }

    pub async fn item(&self, sku: &str) -> Result<Item, Error> {
        sqlx::query_as::<_, Item>(concat!(
            "SELECT ",
            item_columns!(),
            " FROM stock_items WHERE sku = $1"
        ))
        .bind(sku)
        .fetch_optional(&self.db.read)
        .await?
        .ok_or_else(|| Error::UnknownSku { sku: sku.into() })
    }

    /// Items ordered by SKU after `after` (exclusive), at most `limit`.
    pub async fn items_after(&self, after: Option<&str>, limit: i64) -> Result<Vec<Item>, Error> {
        Ok(sqlx::query_as::<_, Item>(concat!(
            "SELECT ",
            item_columns!(),
            " FROM stock_items WHERE sku > $1 ORDER BY sku LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Adds `delta` to a SKU's available stock, once per `request_id`.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "adjust", db.operation.name = "adjust", db.system.name = self.db.backend.system_name()))]
    pub async fn adjust(&self, sku: &str, delta: i64, reason: &str, request_id: &str) -> Result<Item, Error> {
        let now = clock::now_micros();
        let mut tx = self.db.begin().await?;
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
                let (first_sku, first_delta): (String, i64) =
                    sqlx::query_as("SELECT sku, delta FROM stock_adjustments WHERE request_id = $1")
                        .bind(request_id)
                        .fetch_one(&self.db.read)
                        .await?;
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
        let updated = sqlx::query_as::<_, Updated>(concat!(
            "UPDATE stock_items SET available = available + $1, update_time = CASE WHEN update_time > $2 THEN update_time ELSE $2 END
             WHERE sku = $3 AND available + $1 >= 0 RETURNING low_alerted, ",
            item_columns!()
        ))
        .bind(delta)
        .bind(now)
        .bind(sku)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(Updated { item, low_alerted }) = updated else {
            tx.rollback().await?;
            self.item(sku).await?;
            return Err(Error::StockBelowZero {
                sku: sku.into(),
                delta,
            });
        };
        let change = if delta < 0 {
            Change::Taken
        } else {
            Change::Restocked
        };
        let low = stock::low_stock(
            &mut tx,
            sku,
            (low_alerted != 0, item.available, item.low_stock_threshold),
            change,
        )
        .await?;
        events::adjusted(&self.events, &mut tx, &item, (delta, request_id), low).await?;
        tx.commit().await?;
        self.events.committed();
        Ok(item)
    }

    /// Changes a catalogue entry's name, unit price (in its currency) or
    /// low-stock threshold, whichever are given, and publishes
    /// ProductUpdated. Reservations already made keep their price.
    pub async fn update_product(&self, sku: &str, update: &ProductUpdate) -> Result<Item, Error> {
        let mut tx = self.db.begin().await?;
        let updated = sqlx::query_as::<_, Updated>(concat!(
            "UPDATE stock_items SET name = COALESCE($1, name), unit_price_minor = COALESCE($2, unit_price_minor),
                low_stock_threshold = COALESCE($3, low_stock_threshold), update_time = CASE WHEN update_time > $4 THEN update_time ELSE $4 END
             WHERE sku = $5 AND ($6 = '' OR currency_code = $6) RETURNING low_alerted, ",
            item_columns!()
        ))
        .bind(update.name.as_deref())
        .bind(update.unit_price.as_ref().map(|(amount, _)| *amount))
        .bind(update.low_stock_threshold)
        .bind(clock::now_micros())
        .bind(sku)
        .bind(update.unit_price.as_ref().map_or("", |(_, currency)| currency.as_str()))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(Updated { item, low_alerted }) = updated else {
            tx.rollback().await?;
            let current = self.item(sku).await?;
            return Err(Error::CurrencyMismatch {
                sku: sku.into(),
                catalogue: current.currency_code,
                requested: update
                    .unit_price
                    .as_ref()
                    .map(|(_, currency)| currency.clone())
                    .unwrap_or_default(),
            });
        };
        if update.low_stock_threshold.is_some() {
            // A new threshold may re-arm the alert; it never alerts itself.
            stock::low_stock(
                &mut tx,
                sku,
                (low_alerted != 0, item.available, item.low_stock_threshold),
                Change::ThresholdSet,
            )
            .await?;
        }
        events::product_updated(&self.events, &mut tx, &item).await?;
        tx.commit().await?;
        self.events.committed();
        Ok(item)
    }

    /// Current availability of each requested SKU (absent when unknown).
    pub async fn availability(&self, skus: &[&str]) -> Result<HashMap<String, i64>, Error> {
        let mut found = HashMap::new();
        for sku in skus {
            let available: Option<(i64,)> =
                sqlx::query_as("SELECT available FROM stock_items WHERE sku = $1")
                    .bind(*sku)
                    .fetch_optional(&self.db.read)
                    .await?;
            if let Some((available,)) = available {
                found.insert((*sku).to_owned(), available);
            }
        }
        Ok(found)
    }
}
