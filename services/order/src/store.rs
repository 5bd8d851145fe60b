//! The order database: orders, their lines, and one durable saga row each.
//!
//! Every saga step's outcome is written in one transaction together with the
//! order's own status change, and only by the worker holding the saga's lease
//! (the saga update is fenced on `lease_owner`, and it is the transaction's
//! first write, so a worker whose lease was taken over cannot write).

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::error::Error;
use ordermesh_runtime::{clock, db, text_enum};

text_enum!(
    /// An order's status, as stored.
    OrderStatus {
        Pending => "PENDING",
        StockReserved => "STOCK_RESERVED",
        PaymentAuthorized => "PAYMENT_AUTHORIZED",
        PaymentCaptured => "PAYMENT_CAPTURED",
        Confirmed => "CONFIRMED",
        Compensating => "COMPENSATING",
        Rejected => "REJECTED",
        Cancelling => "CANCELLING",
        Cancelled => "CANCELLED",
    }
);

impl OrderStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Confirmed | Self::Rejected | Self::Cancelled)
    }
}

text_enum!(
    /// Which saga a row drives: placing the order or cancelling it.
    SagaKind { Place => "PLACE", Cancel => "CANCEL" }
);

text_enum!(
    /// Whether a saga goes forward, undoes, or is finished.
    SagaState { Running => "RUNNING", Compensating => "COMPENSATING", Done => "DONE" }
);

text_enum!(
    /// The next step a saga runs.
    Step {
        Reserve => "RESERVE",
        Authorize => "AUTHORIZE",
        Capture => "CAPTURE",
        Commit => "COMMIT",
        Confirm => "CONFIRM",
        UndoPayment => "UNDO_PAYMENT",
        Release => "RELEASE",
        Finish => "FINISH",
    }
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub order_id: String,
    pub request_id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total_minor: Option<i64>,
    pub currency_code: String,
    /// A `RejectReason` name without prefix (e.g. `OUT_OF_STOCK`), or empty.
    pub reject_reason: String,
    pub reject_detail: String,
    pub payment_id: String,
    pub create_time: i64,
    pub update_time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    pub order_id: String,
    pub kind: SagaKind,
    pub state: SagaState,
    pub step: Step,
    pub stock_maybe_reserved: bool,
    pub payment_maybe_made: bool,
}

/// A validated CreateOrder request.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order_id: String,
    pub request_id: String,
    pub customer_id: String,
    pub lines: Vec<(String, i64)>,
}

impl NewOrder {
    /// What makes two requests "the same order" for idempotency. Every
    /// value is length-prefixed, so no SKU text can make two different
    /// requests look alike.
    pub fn fingerprint(&self) -> String {
        let mut out = format!("{}:{}", self.customer_id.len(), self.customer_id);
        for (sku, quantity) in &self.lines {
            out.push_str(&format!("|{}:{}*{quantity}", sku.len(), sku));
        }
        out
    }
}

/// The outcome of CreateOrder at the database.
#[derive(Debug)]
pub enum Created {
    New(Order),
    Replay(Order),
}

/// A saga step's recorded outcome; `None` fields stay as they are.
#[derive(Debug, Default)]
pub struct Advance {
    pub state: Option<SagaState>,
    pub step: Option<Step>,
    pub order_status: Option<OrderStatus>,
    pub stock_maybe_reserved: Option<bool>,
    pub payment_maybe_made: Option<bool>,
    pub payment_id: Option<String>,
    /// Unit prices per line (in line order), total and currency.
    pub pricing: Option<(Vec<i64>, i64, String)>,
    /// Reject reason name and detail.
    pub reject: Option<(String, String)>,
}

/// A saga write was refused because another worker holds the lease now.
#[derive(Debug, thiserror::Error)]
#[error("lease on saga {order_id} lost")]
pub struct LeaseLost {
    pub order_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AdvanceError {
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<sqlx::Error> for AdvanceError {
    fn from(e: sqlx::Error) -> Self {
        AdvanceError::Store(Error::Db(e))
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

const SELECT_ORDER: &str =
    "SELECT order_id, request_id, customer_id, status, total_minor, currency_code, reject_reason,
    reject_detail, payment_id, create_time, update_time, request_fingerprint FROM orders";

impl Store {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Records a new order with its saga (leased to `owner`), or returns the
    /// order an earlier request with the same request_id created.
    pub async fn create_order(
        &self,
        new: &NewOrder,
        owner: &str,
        lease_until: i64,
    ) -> Result<Created, Error> {
        let now = clock::now_micros();
        let fingerprint = new.fingerprint();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO orders (order_id, request_id, request_fingerprint, customer_id, status, create_time, update_time)
             VALUES ($1, $2, $3, $4, 'PENDING', $5, $5)",
        )
        .bind(&new.order_id)
        .bind(&new.request_id)
        .bind(&fingerprint)
        .bind(&new.customer_id)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if db::is_unique_violation(&e) => {
                tx.rollback().await?;
                return self.replay(new, &fingerprint).await;
            }
            Err(e) => return Err(e.into()),
        }
        for (line_no, (sku, quantity)) in new.lines.iter().enumerate() {
            sqlx::query("INSERT INTO order_lines (order_id, line_no, sku, quantity) VALUES ($1, $2, $3, $4)")
                .bind(&new.order_id)
                .bind(line_no as i64)
                .bind(sku)
                .bind(*quantity)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO sagas (order_id, kind, state, step, lease_owner, lease_until, create_time, update_time)
             VALUES ($1, 'PLACE', 'RUNNING', 'RESERVE', $2, $3, $4, $4)",
        )
        .bind(&new.order_id)
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let order = self.order(&new.order_id).await?.ok_or_else(|| Error::NotFound {
            order_id: new.order_id.clone(),
        })?;
        Ok(Created::New(order))
    }

    async fn replay(&self, new: &NewOrder, fingerprint: &str) -> Result<Created, Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_ORDER} WHERE request_id = $1"
        )))
        .bind(&new.request_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::Corrupt(format!("request_id {} conflicted but is missing", new.request_id)))?;
        let stored: String = row.try_get("request_fingerprint")?;
        let order = self.order_from_row(&row).await?;
        if stored == fingerprint {
            Ok(Created::Replay(order))
        } else {
            Err(Error::RequestIdReused {
                request_id: new.request_id.clone(),
                order_id: order.order_id,
            })
        }
    }

    async fn order_from_row(&self, row: &AnyRow) -> Result<Order, Error> {
        self.orders_from_rows(std::slice::from_ref(row))
            .await?
            .pop()
            .ok_or_else(|| Error::Corrupt("an order row produced no order".into()))
    }

    /// Orders from their rows, with the lines of all of them read in one
    /// query (a page of orders costs two queries, not one per order).
    async fn orders_from_rows(&self, rows: &[AnyRow]) -> Result<Vec<Order>, Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get("order_id"))
            .collect::<Result<_, _>>()?;
        // Only generated placeholders ($1, $2, ...) go into the text.
        let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT order_id, sku, quantity, unit_price_minor FROM order_lines
             WHERE order_id IN ({}) ORDER BY order_id, line_no",
            placeholders.join(", ")
        )));
        for id in &ids {
            query = query.bind(id);
        }
        let mut lines: std::collections::HashMap<String, Vec<OrderLine>> = std::collections::HashMap::new();
        for line in query.fetch_all(&self.pool).await? {
            lines
                .entry(line.try_get("order_id")?)
                .or_default()
                .push(OrderLine {
                    sku: line.try_get("sku")?,
                    quantity: line.try_get("quantity")?,
                    unit_price_minor: line.try_get("unit_price_minor")?,
                });
        }
        rows.iter()
            .zip(ids)
            .map(|(row, order_id)| {
                let status: String = row.try_get("status")?;
                Ok(Order {
                    lines: lines.remove(&order_id).unwrap_or_default(),
                    order_id,
                    request_id: row.try_get("request_id")?,
                    customer_id: row.try_get("customer_id")?,
                    status: OrderStatus::parse(&status)?,
                    total_minor: row.try_get("total_minor")?,
                    currency_code: row.try_get("currency_code")?,
                    reject_reason: row.try_get("reject_reason")?,
                    reject_detail: row.try_get("reject_detail")?,
                    payment_id: row.try_get("payment_id")?,
                    create_time: row.try_get("create_time")?,
                    update_time: row.try_get("update_time")?,
                })
            })
            .collect()
    }

    pub async fn order(&self, order_id: &str) -> Result<Option<Order>, Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT_ORDER} WHERE order_id = $1")))
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some(self.order_from_row(&row).await?)),
            None => Ok(None),
        }
    }

    /// Orders newest first, optionally of one customer, strictly after the
    /// keyset position `before` = (create_time, order_id).
    pub async fn list_orders(
        &self,
        customer_id: &str,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<Order>, Error> {
        let (before_time, before_id) = before.unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_ORDER} WHERE ($1 = '' OR customer_id = $1)
               AND (create_time < $2 OR (create_time = $2 AND order_id < $3))
             ORDER BY create_time DESC, order_id DESC LIMIT $4"
        )))
        .bind(customer_id)
        .bind(before_time)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        self.orders_from_rows(&rows).await
    }

    pub async fn saga(&self, order_id: &str) -> Result<Option<Saga>, Error> {
        let Some(row) = sqlx::query(
            "SELECT order_id, kind, state, step, stock_maybe_reserved, payment_maybe_made
             FROM sagas WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let kind: String = row.try_get("kind")?;
        let state: String = row.try_get("state")?;
        let step: String = row.try_get("step")?;
        Ok(Some(Saga {
            order_id: row.try_get("order_id")?,
            kind: SagaKind::parse(&kind)?,
            state: SagaState::parse(&state)?,
            step: Step::parse(&step)?,
            stock_maybe_reserved: row.try_get::<i64, _>("stock_maybe_reserved")? != 0,
            payment_maybe_made: row.try_get::<i64, _>("payment_maybe_made")? != 0,
        }))
    }

    /// Takes (or renews) the lease on an unfinished saga. False when another
    /// worker holds an unexpired lease or the saga is done.
    pub async fn acquire_lease(&self, order_id: &str, owner: &str, until: i64) -> Result<bool, Error> {
        let now = clock::now_micros();
        let taken = sqlx::query(
            "UPDATE sagas SET lease_owner = $1, lease_until = $2
             WHERE order_id = $3 AND state <> 'DONE' AND (lease_owner = $1 OR lease_until < $4)",
        )
        .bind(owner)
        .bind(until)
        .bind(order_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Gives a lease back so any worker may pick the saga up at once.
    pub async fn release_lease(&self, order_id: &str, owner: &str) -> Result<(), Error> {
        sqlx::query("UPDATE sagas SET lease_until = 0 WHERE order_id = $1 AND lease_owner = $2")
            .bind(order_id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a failed attempt of the current step.
    pub async fn record_failure(
        &self,
        order_id: &str,
        owner: &str,
        error: &str,
    ) -> Result<i64, AdvanceError> {
        let row = sqlx::query(
            "UPDATE sagas SET attempts = attempts + 1, last_error = $1, update_time = $2
             WHERE order_id = $3 AND lease_owner = $4 RETURNING attempts",
        )
        .bind(error)
        .bind(clock::now_micros())
        .bind(order_id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(row.try_get("attempts")?),
            None => Err(LeaseLost {
                order_id: order_id.into(),
            }
            .into()),
        }
    }

    /// Records a step's outcome and the next step, atomically with the
    /// order's change, and renews the lease.
    pub async fn advance(
        &self,
        order_id: &str,
        owner: &str,
        lease_until: i64,
        advance: Advance,
    ) -> Result<(), AdvanceError> {
        let now = clock::now_micros();
        let mut tx = self.pool.begin().await?;
        let fenced = sqlx::query(
            "UPDATE sagas SET
                state = COALESCE($1, state),
                step = COALESCE($2, step),
                stock_maybe_reserved = COALESCE($3, stock_maybe_reserved),
                payment_maybe_made = COALESCE($4, payment_maybe_made),
                attempts = 0, last_error = '', update_time = $5, lease_until = $6
             WHERE order_id = $7 AND lease_owner = $8",
        )
        .bind(advance.state.map(SagaState::as_str))
        .bind(advance.step.map(Step::as_str))
        .bind(advance.stock_maybe_reserved.map(i64::from))
        .bind(advance.payment_maybe_made.map(i64::from))
        .bind(now)
        .bind(lease_until)
        .bind(order_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if fenced.rows_affected() != 1 {
            tx.rollback().await?;
            return Err(LeaseLost {
                order_id: order_id.into(),
            }
            .into());
        }
        let (reject_reason, reject_detail) = advance.reject.unzip();
        sqlx::query(
            "UPDATE orders SET
                status = COALESCE($1, status),
                payment_id = COALESCE($2, payment_id),
                reject_reason = COALESCE($3, reject_reason),
                reject_detail = COALESCE($4, reject_detail),
                update_time = $5
             WHERE order_id = $6",
        )
        .bind(advance.order_status.map(OrderStatus::as_str))
        .bind(advance.payment_id)
        .bind(reject_reason)
        .bind(reject_detail)
        .bind(now)
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
        if let Some((unit_prices, total, currency)) = advance.pricing {
            sqlx::query("UPDATE orders SET total_minor = $1, currency_code = $2 WHERE order_id = $3")
                .bind(total)
                .bind(currency)
                .bind(order_id)
                .execute(&mut *tx)
                .await?;
            for (line_no, price) in unit_prices.into_iter().enumerate() {
                sqlx::query(
                    "UPDATE order_lines SET unit_price_minor = $1 WHERE order_id = $2 AND line_no = $3",
                )
                .bind(price)
                .bind(order_id)
                .bind(line_no as i64)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Turns a CONFIRMED order into CANCELLING and re-arms its saga to undo
    /// payment and stock; leased to `owner`. Returns the order; an order
    /// already cancelling or cancelled comes back unchanged.
    pub async fn start_cancel(&self, order_id: &str, owner: &str, lease_until: i64) -> Result<Order, Error> {
        let now = clock::now_micros();
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE orders SET status = 'CANCELLING', update_time = $1 WHERE order_id = $2 AND status = 'CONFIRMED'",
        )
        .bind(now)
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 1 {
            sqlx::query(
                "UPDATE sagas SET kind = 'CANCEL', state = 'COMPENSATING', step = 'UNDO_PAYMENT',
                    stock_maybe_reserved = 1, payment_maybe_made = 1, attempts = 0, last_error = '',
                    lease_owner = $1, lease_until = $2, update_time = $3
                 WHERE order_id = $4",
            )
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        let order = self.order(order_id).await?.ok_or_else(|| Error::NotFound {
            order_id: order_id.into(),
        })?;
        match order.status {
            OrderStatus::Cancelling | OrderStatus::Cancelled => Ok(order),
            other => Err(Error::NotCancellable {
                order_id: order_id.into(),
                status: other.as_str().into(),
            }),
        }
    }

    /// Unfinished sagas nobody holds a live lease on: the recovery worker's
    /// work list after a crash.
    pub async fn orphaned_sagas(&self, limit: i64) -> Result<Vec<String>, Error> {
        let rows = sqlx::query(
            "SELECT order_id FROM sagas WHERE state <> 'DONE' AND lease_until < $1 ORDER BY update_time LIMIT $2",
        )
        .bind(clock::now_micros())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("order_id"))
            .collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod fingerprint_tests {
    use super::NewOrder;

    fn order(customer: &str, lines: &[(&str, i64)]) -> NewOrder {
        NewOrder {
            order_id: String::new(),
            request_id: String::new(),
            customer_id: customer.into(),
            lines: lines.iter().map(|(s, q)| ((*s).into(), *q)).collect(),
        }
    }

    #[test]
    fn crafted_skus_cannot_collide() {
        assert_ne!(
            order("c", &[("x*1|y", 2)]).fingerprint(),
            order("c", &[("x", 1), ("y", 2)]).fingerprint()
        );
        assert_ne!(
            order("a|b", &[("x", 1)]).fingerprint(),
            order("a", &[("b|x", 1)]).fingerprint()
        );
        assert_eq!(
            order("c", &[("x", 1)]).fingerprint(),
            order("c", &[("x", 1)]).fingerprint()
        );
    }
}
