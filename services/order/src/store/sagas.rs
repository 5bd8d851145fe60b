//! The saga's part of an order's row: leases, step outcomes and failed
//! attempts, parking for an operator, re-arming for a cancel, and the reads
//! of recovery and admin.
//!
//! Fencing: every write a worker makes is conditional on `lease_owner` being
//! its process *and* on `version` being the version the worker last read or
//! wrote. The lease owner alone is one id per process, so it cannot tell a
//! stale worker from the one that should drive now (a worker asleep on an old
//! view while a cancel re-armed the saga in the same process, or a worker
//! whose write committed although its reply was lost). Every change of what
//! the saga is or who drives it bumps `version`: a recorded step, a cancel, an
//! operator's retry, and every acquisition of the lease. A fenced write that
//! finds another version writes nothing and reports [`LeaseLost`].
//!
//! Whether a worker may *call downstream* is its own check against the lease
//! it last wrote (see the saga runner); the database enforces only writes.

use std::borrow::Cow;

use ordermesh_runtime::clock;
use ordermesh_runtime::db::Backend;

use ordermesh_events::{Event, outbox};
use sqlx::FromRow;

use super::{Order, OrderRow, OrderStatus, RejectReason, Saga, SagaKind, SagaRow, SagaState, Step, Store};
use crate::error::Error;

/// A saga write was refused: another worker holds the lease now, or the
/// saga changed since this worker's view of it (a newer `version`).
#[derive(Debug, thiserror::Error)]
#[error("lease on saga {order_id} lost")]
pub struct LeaseLost {
    pub order_id: String,
}

/// Unit prices (in line order), total and currency of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    pub unit_prices: Vec<i64>,
    pub total_minor: i64,
    pub currency_code: String,
}

/// What a recorded step changes; `None` fields stay as they are. The saga's
/// plan decides it; [`Store::advance`](super::Store) writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advance {
    pub state: Option<SagaState>,
    pub step: Option<Step>,
    pub order_status: Option<OrderStatus>,
    pub stock_maybe_reserved: Option<bool>,
    pub payment_maybe_made: Option<bool>,
    pub payment_captured: Option<bool>,
    pub payment_id: Option<String>,
    pub pricing: Option<Pricing>,
    /// Reject reason and detail (`NotRejected` and empty to clear them).
    pub reject: Option<(RejectReason, String)>,
    /// The order event this record publishes (in the same transaction).
    pub event: Option<OrderEvent>,
}

/// The order events a saga record publishes: the terminal ones (the order's
/// creation is published by CreateOrder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    Confirmed,
    Rejected,
    Cancelled,
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
        AdvanceError::Store(Error::from(e))
    }
}

/// What a recorded step wrote that the worker did not choose itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Applied {
    pub version: i64,
    pub update_time: i64,
}

/// A keyset position in the saga listing: (update_time, order_id).
pub type SagaCursor = (i64, String);

/// Who writes: the process's lease identity and the `version` of the row
/// its worker last read or wrote. Every write of a worker is fenced on both.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub owner: &'a str,
    pub version: i64,
}

/// A recorded step: the order's row, fenced on the worker's view, as
/// [`Store::advance`] binds it (`$1`-`$16`).
const ADVANCE: &str = "UPDATE orders SET
    saga_state = COALESCE($1, saga_state),
    saga_step = COALESCE($2, saga_step),
    stock_maybe_reserved = COALESCE($3, stock_maybe_reserved),
    payment_maybe_made = COALESCE($4, payment_maybe_made),
    payment_captured = COALESCE($5, payment_captured),
    status = COALESCE($6, status),
    payment_id = COALESCE($7, payment_id),
    reject_reason = COALESCE($8, reject_reason),
    reject_detail = COALESCE($9, reject_detail),
    total_minor = COALESCE($10, total_minor),
    currency_code = COALESCE($11, currency_code),
    attempts = 0, last_error = '', step_maybe_sent = 0, step_since = $12, update_time = $12,
    lease_until = $13, version = version + 1
 WHERE order_id = $14 AND lease_owner = $15 AND version = $16
 RETURNING version, update_time";

/// PostgreSQL's record of a step that prices `lines` lines and/or publishes
/// an event: [`ADVANCE`], the lines' prices (`$17`, ... in line order) and
/// the outbox row (the placeholders after them) as one statement of
/// data-modifying `WITH` parts. One round trip and no BEGIN/COMMIT instead
/// of four statements; atomic as the transaction was, and fenced the same
/// way: the prices and the event are written only when the record's UPDATE
/// matched (`EXISTS (SELECT 1 FROM changed)`), so a stale worker writes
/// nothing. SQLite has no data-modifying `WITH` and keeps the transaction
/// (its statements are calls into the library, not round trips).
fn one_statement_advance(lines: usize, event: bool) -> String {
    use std::fmt::Write;
    const RECORDED: &str = "EXISTS (SELECT 1 FROM changed)";
    let mut sql = format!("WITH changed AS ({ADVANCE})");
    let mut next = 17;
    if lines > 0 {
        sql.push_str(", priced AS (UPDATE order_lines SET unit_price_minor = CASE line_no");
        for line_no in 0..lines {
            let _ = write!(sql, " WHEN {line_no} THEN ${next}");
            next += 1;
        }
        let _ = write!(
            sql,
            " END WHERE order_id = $14 AND line_no < {lines} AND {RECORDED})"
        );
    }
    if event {
        let _ = write!(
            sql,
            ", published AS ({})",
            outbox::insert_part(next, Some(RECORDED))
        );
    }
    sql.push_str(" SELECT version, update_time FROM changed");
    sql
}

impl Store {
    /// Takes the lease on an unfinished saga that no operator holds back,
    /// and bumps its version, so any other worker's view of it (this
    /// process's included) is stale from now on. False when another process
    /// holds an unexpired lease, or the saga is done or needs attention.
    pub async fn acquire_lease(&self, order_id: &str, owner: &str, until: i64) -> Result<bool, Error> {
        let taken = sqlx::query(
            "UPDATE orders SET lease_owner = $1, lease_until = $2, version = version + 1
             WHERE order_id = $3 AND saga_state <> $4 AND needs_attention = 0
               AND (lease_owner = $1 OR lease_until < $5)",
        )
        .bind(owner)
        .bind(until)
        .bind(order_id)
        .bind(SagaState::Done.as_str())
        .bind(clock::now_micros())
        .execute(&self.db.write)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Extends a lease this worker holds. False when another worker took the
    /// saga over, or the saga changed since the worker's view (or finished):
    /// the caller must stop.
    pub async fn renew_lease(&self, order_id: &str, fence: Fence<'_>, until: i64) -> Result<bool, Error> {
        let renewed = sqlx::query(
            "UPDATE orders SET lease_until = $1
             WHERE order_id = $2 AND lease_owner = $3 AND version = $4 AND saga_state <> $5",
        )
        .bind(until)
        .bind(order_id)
        .bind(fence.owner)
        .bind(fence.version)
        .bind(SagaState::Done.as_str())
        .execute(&self.db.write)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Gives this process's lease back so any worker may pick the saga up at
    /// once (at shutdown: whatever view its worker had, the next process
    /// reads the saga afresh).
    pub async fn release_lease(&self, order_id: &str, owner: &str) -> Result<(), Error> {
        sqlx::query("UPDATE orders SET lease_until = 0 WHERE order_id = $1 AND lease_owner = $2")
            .bind(order_id)
            .bind(owner)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    /// Who holds the saga and at which version, with its last update time:
    /// how a worker whose write's reply was lost learns whether it landed.
    pub async fn fence_of(&self, order_id: &str) -> Result<Option<(String, i64, i64)>, Error> {
        Ok(
            sqlx::query_as("SELECT lease_owner, version, update_time FROM orders WHERE order_id = $1")
                .bind(order_id)
                .fetch_optional(&self.db.write)
                .await?,
        )
    }

    /// The saga and its order, read once when a worker starts driving it:
    /// one row, and the order's lines.
    pub async fn load(&self, order_id: &str) -> Result<Option<(Saga, Order)>, Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            order_columns!(),
            ", ",
            saga_columns!(),
            " FROM orders WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_optional(&self.db.read)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let saga = Saga::from(SagaRow::from_row(&row)?);
        let lines = self.lines(order_id).await?;
        Ok(Some((saga, OrderRow::from_row(&row)?.with_lines(lines))))
    }

    pub async fn saga(&self, order_id: &str) -> Result<Option<Saga>, Error> {
        Ok(sqlx::query_as::<_, SagaRow>(concat!(
            "SELECT ",
            saga_columns!(),
            " FROM orders WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_optional(&self.db.read)
        .await?
        .map(Saga::from))
    }

    /// Records a failed attempt of the current step, and whether some
    /// attempt of it may have reached its service (once set, it stays set
    /// until the step is recorded); returns the attempts.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "record_failure", db.operation.name = "record_failure", db.system.name = self.db.backend.system_name()))]
    pub async fn record_failure(
        &self,
        order_id: &str,
        fence: Fence<'_>,
        error: &str,
        maybe_sent: bool,
    ) -> Result<i64, AdvanceError> {
        let attempts: Option<(i64,)> = sqlx::query_as(
            "UPDATE orders SET attempts = attempts + 1, last_error = $1, update_time = $2,
                step_maybe_sent = COALESCE($5, step_maybe_sent)
             WHERE order_id = $3 AND lease_owner = $4 AND version = $6 RETURNING attempts",
        )
        .bind(error)
        .bind(clock::now_micros())
        .bind(order_id)
        .bind(fence.owner)
        .bind(maybe_sent.then_some(1_i64))
        .bind(fence.version)
        .fetch_optional(&self.db.write)
        .await?;
        match attempts {
            Some((attempts,)) => Ok(attempts),
            None => Err(LeaseLost {
                order_id: order_id.into(),
            }
            .into()),
        }
    }

    /// Stops a saga for an operator: flagged, with its last error, lease
    /// given back; the recovery worker leaves it alone until `retry`.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "park", db.operation.name = "park", db.system.name = self.db.backend.system_name()))]
    pub async fn park(&self, order_id: &str, fence: Fence<'_>, error: &str) -> Result<(), AdvanceError> {
        let parked = sqlx::query(
            "UPDATE orders SET needs_attention = 1, attempts = attempts + 1, last_error = $1, update_time = $2,
                lease_until = 0
             WHERE order_id = $3 AND lease_owner = $4 AND version = $5",
        )
        .bind(error)
        .bind(clock::now_micros())
        .bind(order_id)
        .bind(fence.owner)
        .bind(fence.version)
        .execute(&self.db.write)
        .await?;
        if parked.rows_affected() == 1 {
            Ok(())
        } else {
            Err(LeaseLost {
                order_id: order_id.into(),
            }
            .into())
        }
    }

    /// Records a step's outcome and starts the next step, atomically with
    /// the order's change, and renews the lease: one UPDATE of the order's
    /// row, fenced on the worker's view (plus, in the same transaction, the
    /// lines' prices when a reservation priced them and the order's event when
    /// the record publishes one). The new version is `fence.version + 1`.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "advance", db.operation.name = "advance", db.system.name = self.db.backend.system_name()))]
    pub async fn advance(
        &self,
        order_id: &str,
        fence: Fence<'_>,
        lease_until: i64,
        advance: &Advance,
        event: Option<&Event>,
    ) -> Result<Applied, AdvanceError> {
        let now = clock::now_micros();
        let (reject_reason, reject_detail) = match &advance.reject {
            Some((reason, detail)) => (Some(reason.as_str()), Some(detail.as_str())),
            None => (None, None),
        };
        let pricing = advance.pricing.as_ref();
        let prices = pricing.map_or(&[][..], |p| p.unit_prices.as_slice());
        // On PostgreSQL a record that prices lines or publishes an event is
        // one statement (see [`one_statement_advance`]); elsewhere it is a
        // transaction, and a bare record one UPDATE.
        let in_one_statement = self.db.backend == Backend::Postgres && (pricing.is_some() || event.is_some());
        let sql = if in_one_statement {
            Cow::Owned(one_statement_advance(prices.len(), event.is_some()))
        } else {
            Cow::Borrowed(ADVANCE)
        };
        let record = sqlx::query_as::<_, Applied>(sqlx::AssertSqlSafe(sql))
            .bind(advance.state.map(SagaState::as_str))
            .bind(advance.step.map(Step::as_str))
            .bind(advance.stock_maybe_reserved.map(i64::from))
            .bind(advance.payment_maybe_made.map(i64::from))
            .bind(advance.payment_captured.map(i64::from))
            .bind(advance.order_status.map(OrderStatus::as_str))
            .bind(advance.payment_id.as_deref())
            .bind(reject_reason)
            .bind(reject_detail)
            .bind(pricing.map(|p| p.total_minor))
            .bind(pricing.map(|p| p.currency_code.as_str()))
            .bind(now)
            .bind(lease_until)
            .bind(order_id)
            .bind(fence.owner)
            .bind(fence.version);
        let fenced = |applied: Option<Applied>| {
            applied.ok_or_else(|| {
                AdvanceError::from(LeaseLost {
                    order_id: order_id.into(),
                })
            })
        };
        if in_one_statement {
            let mut record = record;
            for price in prices {
                record = record.bind(*price);
            }
            if let Some(event) = event {
                record = outbox::bind_insert(record, event).map_err(Error::from)?;
            }
            let applied = fenced(record.fetch_optional(&self.db.write).await?)?;
            if event.is_some() {
                self.events.committed();
            }
            return Ok(applied);
        }
        if pricing.is_none() && event.is_none() {
            return fenced(record.fetch_optional(&self.db.write).await?);
        }
        let mut tx = self.db.begin().await?;
        let applied = match fenced(record.fetch_optional(&mut *tx).await?) {
            Ok(applied) => applied,
            Err(lost) => {
                tx.rollback().await?;
                return Err(lost);
            }
        };
        for (line_no, price) in pricing.iter().flat_map(|p| p.unit_prices.iter()).enumerate() {
            sqlx::query("UPDATE order_lines SET unit_price_minor = $1 WHERE order_id = $2 AND line_no = $3")
                .bind(*price)
                .bind(order_id)
                .bind(line_no as i64)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(event) = event {
            self.events.insert(&mut tx, event).await.map_err(Error::from)?;
        }
        tx.commit().await?;
        if event.is_some() {
            self.events.committed();
        }
        Ok(applied)
    }

    /// Turns a CONFIRMED order into CANCELLING and re-arms its saga to undo
    /// payment and stock, leased to `owner` (one UPDATE). Returns the order
    /// and, when this call re-armed it, the saga; an order already cancelling
    /// or cancelled comes back unchanged.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "start_cancel", db.operation.name = "start_cancel", db.system.name = self.db.backend.system_name()))]
    pub async fn start_cancel(
        &self,
        order_id: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<(Order, Option<Saga>), Error> {
        let now = clock::now_micros();
        let saga = Saga::starting(
            order_id,
            (SagaKind::Cancel, SagaState::Compensating, Step::UndoPayment),
            owner,
            lease_until,
            now,
        );
        let moved = sqlx::query(
            "UPDATE orders SET status = $1, saga_kind = $2, saga_state = $3, saga_step = $4,
                stock_maybe_reserved = 1, payment_maybe_made = 1, payment_captured = 1, attempts = 0,
                last_error = '', step_maybe_sent = 0, step_since = $5, needs_attention = 0, lease_owner = $6,
                lease_until = $7, update_time = $5, version = version + 1
             WHERE order_id = $8 AND status = $9",
        )
        .bind(OrderStatus::Cancelling.as_str())
        .bind(saga.kind.as_str())
        .bind(saga.state.as_str())
        .bind(saga.step.as_str())
        .bind(now)
        .bind(owner)
        .bind(lease_until)
        .bind(order_id)
        .bind(OrderStatus::Confirmed.as_str())
        .execute(&self.db.write)
        .await?;
        let order = self.order(order_id).await?.ok_or_else(|| Error::NotFound {
            order_id: order_id.into(),
        })?;
        let armed = (moved.rows_affected() == 1).then(|| Saga {
            traceparent: order.traceparent.clone(),
            ..saga
        });
        match order.status {
            OrderStatus::Cancelling | OrderStatus::Cancelled => Ok((order, armed)),
            other => Err(Error::NotCancellable {
                order_id: order_id.into(),
                status: other.as_str().into(),
            }),
        }
    }

    /// Unfinished sagas nobody holds a live lease on and no operator holds
    /// back: the recovery worker's work list after a crash.
    /// Each with the trace context of the request that placed its order.
    pub async fn orphaned_sagas(&self, limit: i64) -> Result<Vec<(String, String)>, Error> {
        Ok(sqlx::query_as(
            "SELECT order_id, traceparent FROM orders WHERE saga_state IN ($1, $2) AND needs_attention = 0 AND lease_until < $3
             ORDER BY update_time LIMIT $4",
        )
        .bind(SagaState::Running.as_str())
        .bind(SagaState::Compensating.as_str())
        .bind(clock::now_micros())
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// How many unfinished sagas wait for an operator (on the index of
    /// saga states: only unfinished sagas are read).
    pub async fn count_needing_attention(&self) -> Result<i64, Error> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM orders WHERE saga_state IN ($1, $2) AND needs_attention = 1",
        )
        .bind(SagaState::Running.as_str())
        .bind(SagaState::Compensating.as_str())
        .fetch_one(&self.db.read)
        .await?)
    }

    /// Unfinished sagas, least recently updated first, after `after`; only
    /// those needing an operator when `needs_attention_only`.
    pub async fn list_sagas(
        &self,
        needs_attention_only: bool,
        after: Option<SagaCursor>,
        limit: i64,
    ) -> Result<Vec<Saga>, Error> {
        let (after_time, after_id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query_as::<_, SagaRow>(concat!(
            "SELECT ",
            saga_columns!(),
            " FROM orders WHERE saga_state IN ($1, $2) AND ($3 = 0 OR needs_attention = 1)
                AND (update_time > $4 OR (update_time = $4 AND order_id > $5))
              ORDER BY update_time, order_id LIMIT $6"
        ))
        .bind(SagaState::Running.as_str())
        .bind(SagaState::Compensating.as_str())
        .bind(i64::from(needs_attention_only))
        .bind(after_time)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?;
        Ok(rows.into_iter().map(Saga::from).collect())
    }

    /// Clears a saga's attention flag and attempts, restarts its step's
    /// clock, and leases it to `owner` with a new version (a worker of this
    /// process still driving it stops at its next write and the saga is
    /// driven afresh), unless it is finished or a live worker elsewhere
    /// drives it (then nothing changes). Returns the saga when this call took
    /// it.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "retry", db.operation.name = "retry", db.system.name = self.db.backend.system_name()))]
    pub async fn retry(&self, order_id: &str, owner: &str, lease_until: i64) -> Result<Option<Saga>, Error> {
        let now = clock::now_micros();
        let taken = sqlx::query(
            "UPDATE orders SET needs_attention = 0, attempts = 0, last_error = '', step_since = $1, update_time = $1,
                lease_owner = $2, lease_until = $3, version = version + 1
             WHERE order_id = $4 AND saga_state <> $5
               AND (needs_attention = 1 OR lease_until < $1 OR lease_owner = $2)",
        )
        .bind(now)
        .bind(owner)
        .bind(lease_until)
        .bind(order_id)
        .bind(SagaState::Done.as_str())
        .execute(&self.db.write)
        .await?;
        if taken.rows_affected() == 1 {
            self.saga(order_id).await
        } else {
            Ok(None)
        }
    }
}
