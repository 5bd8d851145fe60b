//! Orders: created with their saga's state in the same row (so an
//! acknowledged order always has a saga to drive it), read, and listed.

use ordermesh_events::outbox::{self, BindValues};
use ordermesh_runtime::{clock, db};

use super::{
    NewLine, NewOrder, Order, OrderLine, OrderRow, OrderStatus, RejectReason, Saga, SagaKind, SagaState,
    Step, Store,
};
use crate::error::Error;

/// The outcome of CreateOrder at the database.
#[derive(Debug)]
pub enum Created {
    /// A new order and its saga, leased to the caller.
    New(Order, Saga),
    /// The order an earlier request with the same request id created.
    Replay(Order),
}

/// A line with its order, for reading the lines of a page of orders at once.
#[derive(sqlx::FromRow)]
struct PageLine {
    order_id: String,
    sku: String,
    quantity: i64,
    unit_price_minor: Option<i64>,
    name: String,
}

/// A new order's row with its saga's start (`$1`-`$13`, [`bind_place`]).
const PLACE: &str = concat!(
    "INSERT INTO orders (",
    order_columns!(),
    ", saga_kind, saga_state, saga_step, step_since, lease_owner, lease_until)
     VALUES ($1, $2, $3, $4, $5, NULL, '', $6, '', '', $7, $7, 0, $13, $8, $9, $10, $7, $11, $12)"
);

/// One of its lines ([`bind_line`] after `$1`, the order id).
const PLACE_LINE: &str =
    "INSERT INTO order_lines (order_id, line_no, sku, quantity, name) VALUES ($1, $2, $3, $4, $5)";

/// PostgreSQL's CreateOrder: [`PLACE`], the `lines` lines (four
/// placeholders each from `$14`, the order id `$1`) and the OrderCreated
/// outbox row as one statement of data-modifying `WITH` parts: one round
/// trip and no BEGIN/COMMIT instead of three statements more than the
/// lines. Atomic like the transaction SQLite keeps: a replayed request id
/// fails the whole statement on the unique key, lines and event included.
/// (The lines' foreign key is checked at the statement's end, when the
/// order's row is there.)
fn one_statement_place(lines: usize) -> String {
    use std::fmt::Write;
    let mut sql = format!("WITH placed AS ({PLACE} RETURNING order_id)");
    let mut next = 14;
    if lines > 0 {
        sql.push_str(", lined AS (INSERT INTO order_lines (order_id, line_no, sku, quantity, name) VALUES ");
        for n in 0..lines {
            let sep = if n == 0 { "" } else { ", " };
            let _ = write!(
                sql,
                "{sep}($1, ${}, ${}, ${}, ${})",
                next,
                next + 1,
                next + 2,
                next + 3
            );
            next += 4;
        }
        sql.push(')');
    }
    let _ = write!(
        sql,
        ", published AS ({}) SELECT 1",
        outbox::insert_part(next, None)
    );
    sql
}

/// Binds [`PLACE`]'s values.
fn bind_place<'q, Q: BindValues<'q>>(
    query: Q,
    new: &NewOrder,
    fingerprint: &str,
    saga: &Saga,
    now: i64,
) -> Q {
    query
        .bind_value(new.order_id.clone())
        .bind_value(new.request_id.clone())
        .bind_value(fingerprint.to_owned())
        .bind_value(new.customer_id.clone())
        .bind_value(OrderStatus::Pending.as_str())
        .bind_value(RejectReason::NotRejected.as_str())
        .bind_value(now)
        .bind_value(saga.kind.as_str())
        .bind_value(saga.state.as_str())
        .bind_value(saga.step.as_str())
        .bind_value(saga.lease_owner.clone())
        .bind_value(saga.lease_until)
        .bind_value(new.traceparent.clone())
}

/// Binds a line's values after its order id: [`PLACE_LINE`]'s `$2`-`$5`, or
/// a part of [`one_statement_place`].
fn bind_line<'q, Q: BindValues<'q>>(query: Q, line_no: usize, line: &NewLine) -> Q {
    query
        .bind_value(line_no as i64)
        .bind_value(line.sku.clone())
        .bind_value(line.quantity)
        .bind_value(line.name.clone())
}

impl Store {
    /// Records a new order with its saga (leased to `owner` until
    /// `lease_until`), or returns the order an earlier request with the same
    /// request_id created.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "create_order", db.operation.name = "create_order", db.system.name = self.db.backend.system_name()))]
    pub async fn create_order(
        &self,
        new: &NewOrder,
        owner: &str,
        lease_until: i64,
    ) -> Result<Created, Error> {
        let now = clock::now_micros();
        let fingerprint = new.fingerprint();
        let saga = Saga {
            traceparent: new.traceparent.clone(),
            ..Saga::starting(
                &new.order_id,
                (SagaKind::Place, SagaState::Running, Step::Reserve),
                owner,
                lease_until,
                now,
            )
        };
        let event = self.events.event(&ordermesh_proto::events::v1::OrderCreated {
            order_id: new.order_id.clone(),
            customer_id: new.customer_id.clone(),
            lines: new
                .lines
                .iter()
                .map(|line| ordermesh_proto::events::v1::OrderedLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                })
                .collect(),
            occur_time: Some(clock::timestamp(now)),
        });
        let place = |query| bind_place(query, new, &fingerprint, &saga, now);
        let inserted = if self.db.backend == db::Backend::Postgres {
            // One statement: the order, its lines and its event (see
            // [`one_statement_place`]).
            let mut query = place(sqlx::query(sqlx::AssertSqlSafe(one_statement_place(
                new.lines.len(),
            ))));
            for (line_no, line) in new.lines.iter().enumerate() {
                query = bind_line(query, line_no, line);
            }
            let query = outbox::bind_insert(query, &event).map_err(Error::from)?;
            query.execute(&self.db.write).await.map(|_| ())
        } else {
            let mut tx = self.db.begin().await?;
            let placed = async {
                place(sqlx::query(PLACE)).execute(&mut *tx).await?;
                for (line_no, line) in new.lines.iter().enumerate() {
                    bind_line(sqlx::query(PLACE_LINE).bind(&new.order_id), line_no, line)
                        .execute(&mut *tx)
                        .await?;
                }
                Ok::<_, sqlx::Error>(())
            }
            .await;
            match placed {
                Ok(()) => {
                    self.events.insert(&mut tx, &event).await.map_err(Error::from)?;
                    tx.commit().await
                }
                Err(e) => {
                    tx.rollback().await?;
                    Err(e)
                }
            }
        };
        match inserted {
            Ok(()) => {}
            Err(e) if db::is_unique_violation(&e) => {
                return self.replay(new).await.map(Created::Replay);
            }
            Err(e) => return Err(e.into()),
        }
        self.events.committed();
        let order = Order {
            order_id: new.order_id.clone(),
            request_id: new.request_id.clone(),
            customer_id: new.customer_id.clone(),
            status: OrderStatus::Pending,
            lines: new
                .lines
                .iter()
                .map(|line| OrderLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    unit_price_minor: None,
                    name: line.name.clone(),
                })
                .collect(),
            total_minor: None,
            currency_code: String::new(),
            reject_reason: RejectReason::NotRejected,
            reject_detail: String::new(),
            payment_id: String::new(),
            create_time: now,
            update_time: now,
            version: 0,
            traceparent: new.traceparent.clone(),
        };
        Ok(Created::New(order, saga))
    }

    /// The order an earlier CreateOrder with this request created: `None`
    /// when the request id is new, an error when it was used for a
    /// different order.
    pub async fn replay_of(&self, new: &NewOrder) -> Result<Option<Order>, Error> {
        let row = sqlx::query_as::<_, OrderRow>(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE request_id = $1"
        ))
        .bind(&new.request_id)
        .fetch_optional(&self.db.read)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if row.request_fingerprint != new.fingerprint() {
            return Err(Error::RequestIdReused {
                request_id: new.request_id.clone(),
                order_id: row.order_id,
            });
        }
        let lines = self.lines(&row.order_id).await?;
        Ok(Some(row.with_lines(lines)))
    }

    async fn replay(&self, new: &NewOrder) -> Result<Order, Error> {
        self.replay_of(new).await?.ok_or_else(|| {
            Error::from(ordermesh_runtime::Infra::Corrupt(format!(
                "request_id {} conflicted but is missing",
                new.request_id
            )))
        })
    }

    pub(super) async fn lines(&self, order_id: &str) -> Result<Vec<OrderLine>, Error> {
        Ok(sqlx::query_as::<_, OrderLine>(
            "SELECT sku, quantity, unit_price_minor, name FROM order_lines WHERE order_id = $1 ORDER BY line_no",
        )
        .bind(order_id)
        .fetch_all(&self.db.read)
        .await?)
    }

    pub async fn order(&self, order_id: &str) -> Result<Option<Order>, Error> {
        let row = sqlx::query_as::<_, OrderRow>(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_optional(&self.db.read)
        .await?;
        match row {
            Some(row) => {
                let lines = self.lines(order_id).await?;
                Ok(Some(row.with_lines(lines)))
            }
            None => Ok(None),
        }
    }

    /// Orders newest first, optionally of one customer, strictly after the
    /// keyset position `before` = (create_time, order_id). Two queries per
    /// page: the orders, then all their lines.
    pub async fn list_orders(
        &self,
        customer_id: &str,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<Order>, Error> {
        let (before_time, before_id) = before.unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query_as::<_, OrderRow>(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE ($1 = '' OR customer_id = $1)
               AND (create_time < $2 OR (create_time = $2 AND order_id < $3))
             ORDER BY create_time DESC, order_id DESC LIMIT $4"
        ))
        .bind(customer_id)
        .bind(before_time)
        .bind(&before_id)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // The same page, as a subquery: one fixed statement for any page size.
        let lines = sqlx::query_as::<_, PageLine>(
            "SELECT order_id, sku, quantity, unit_price_minor, name FROM order_lines WHERE order_id IN (
                SELECT order_id FROM orders WHERE ($1 = '' OR customer_id = $1)
                  AND (create_time < $2 OR (create_time = $2 AND order_id < $3))
                ORDER BY create_time DESC, order_id DESC LIMIT $4)
             ORDER BY order_id, line_no",
        )
        .bind(customer_id)
        .bind(before_time)
        .bind(&before_id)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?;
        let mut by_order: std::collections::HashMap<String, Vec<OrderLine>> =
            std::collections::HashMap::new();
        for line in lines {
            by_order.entry(line.order_id).or_default().push(OrderLine {
                sku: line.sku,
                quantity: line.quantity,
                unit_price_minor: line.unit_price_minor,
                name: line.name,
            });
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let lines = by_order.remove(&row.order_id).unwrap_or_default();
                row.with_lines(lines)
            })
            .collect())
    }

    /// The current version of each of these orders (those that exist): how
    /// a process learns of changes other replicas made to orders someone
    /// watches here. By version, not by time: a write stamps its time before
    /// it waits for a connection or a lock, so commits land out of time
    /// order, and a time window would miss a late one for good.
    pub async fn versions_of(&self, order_ids: &[String]) -> Result<Vec<(String, i64)>, Error> {
        let mut versions = Vec::with_capacity(order_ids.len());
        for chunk in order_ids.chunks(VERSIONS_CHUNK) {
            // One statement text whatever the chunk's length (kept prepared):
            // a short chunk repeats its first id.
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(&**VERSIONS_OF));
            for i in 0..VERSIONS_CHUNK {
                query = query.bind(chunk.get(i).unwrap_or(&chunk[0]));
            }
            versions.extend(query.fetch_all(&self.db.read).await?);
        }
        Ok(versions)
    }
}

/// Ids per `versions_of` statement.
const VERSIONS_CHUNK: usize = 64;

/// `SELECT order_id, version FROM orders WHERE order_id IN ($1, ..., $64)`.
static VERSIONS_OF: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let params: Vec<String> = (1..=VERSIONS_CHUNK).map(|i| format!("${i}")).collect();
    format!(
        "SELECT order_id, version FROM orders WHERE order_id IN ({})",
        params.join(", ")
    )
});
