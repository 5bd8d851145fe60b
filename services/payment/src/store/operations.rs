//! What happens to an existing payment after its authorization: capture,
//! void, refund, and the expiry of holds nobody captured. Each is one
//! [`Operation`] applied through the same conditional status change, with
//! its balance change, ledger pair and event in one transaction, so the four
//! cannot drift apart in how they move money.
//!
//! Idempotency: capture, void and refund are keyed by their request ids in
//! `payment_operations`, written first in their transaction; the expiry
//! sweep needs no key (the status change itself happens at most once).

use sqlx::AnyConnection;

use ordermesh_events::{Event, Publisher};
use ordermesh_proto::events::v1 as pb;
use ordermesh_runtime::{clock, db};

use super::{
    MERCHANT_REVENUE, Payment, PaymentStatus, Store, VoidReason, customer_ledger, holds_ledger, ledger,
};
use crate::error::Error;

/// What happens to an existing payment after its authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    Capture,
    Void,
    Refund,
    /// The hold lapsed (the sweeper, or a capture that found it lapsed).
    Expire,
}

impl Operation {
    /// The `payment_operations.kind` of a requested operation.
    fn kind(self) -> &'static str {
        match self {
            Self::Capture => "CAPTURE",
            Self::Void | Self::Expire => "VOID",
            Self::Refund => "REFUND",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Capture => "capture",
            Self::Void | Self::Expire => "void",
            Self::Refund => "refund",
        }
    }

    fn transition(self) -> (PaymentStatus, PaymentStatus) {
        use PaymentStatus::*;
        match self {
            Self::Capture => (Authorized, Captured),
            Self::Void | Self::Expire => (Authorized, Voided),
            Self::Refund => (Captured, Refunded),
        }
    }

    fn void_reason(self) -> VoidReason {
        match self {
            Self::Void => VoidReason::Requested,
            Self::Expire => VoidReason::HoldExpired,
            Self::Capture | Self::Refund => VoidReason::NotVoided,
        }
    }

    /// The hold deadlines (`after < expire_time <= by`) an operation applies
    /// to: a capture only before the hold lapsed, an expiry only after.
    fn deadline_bounds(self, now: i64) -> (i64, i64) {
        match self {
            Self::Capture => (now, i64::MAX),
            Self::Expire => (i64::MIN, now),
            Self::Void | Self::Refund => (i64::MIN, i64::MAX),
        }
    }

    /// Ledger accounts the amount moves from and to.
    fn ledger(self, account_id: &str) -> (String, String) {
        match self {
            Self::Capture => (holds_ledger(account_id), MERCHANT_REVENUE.to_owned()),
            Self::Void | Self::Expire => (holds_ledger(account_id), customer_ledger(account_id)),
            Self::Refund => (MERCHANT_REVENUE.to_owned(), customer_ledger(account_id)),
        }
    }

    /// Whether the amount goes back to the customer's balance. A capture
    /// leaves the balance alone: the authorization already took it.
    fn restores_balance(self) -> bool {
        !matches!(self, Self::Capture)
    }
}

impl Store {
    /// Takes an authorized payment's held amount, before its hold lapses.
    /// Idempotent.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "capture", db.operation.name = "capture", db.system.name = self.db.backend.system_name()))]
    pub async fn capture(&self, payment_id: &str, request_id: &str) -> Result<Payment, Error> {
        self.apply(Operation::Capture, payment_id, Some(request_id)).await
    }

    /// Releases an authorized payment's hold back to the balance. Idempotent.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "void", db.operation.name = "void", db.system.name = self.db.backend.system_name()))]
    pub async fn void(&self, payment_id: &str, request_id: &str) -> Result<Payment, Error> {
        self.apply(Operation::Void, payment_id, Some(request_id)).await
    }

    /// Gives a captured payment back to the balance in full. Idempotent.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "refund", db.operation.name = "refund", db.system.name = self.db.backend.system_name()))]
    pub async fn refund(&self, payment_id: &str, request_id: &str) -> Result<Payment, Error> {
        self.apply(Operation::Refund, payment_id, Some(request_id)).await
    }

    /// Voids every authorization whose hold lapsed; returns how many. Runs in
    /// the background sweep, never on a request's path.
    pub async fn expire_due(&self) -> Result<usize, Error> {
        let due: Vec<(String,)> = sqlx::query_as(
            "SELECT payment_id FROM payments WHERE status = $1 AND expire_time <= $2
             ORDER BY expire_time LIMIT 100",
        )
        .bind(PaymentStatus::Authorized.as_str())
        .bind(clock::now_micros())
        .fetch_all(&self.db.read)
        .await?;
        let mut expired = 0;
        for (payment_id,) in due {
            if self.transition(Operation::Expire, &payment_id).await?.is_some() {
                tracing::info!(%payment_id, "authorization hold expired, funds released");
                expired += 1;
            }
        }
        Ok(expired)
    }

    /// Moves a payment through `op`'s transition with its balance change and
    /// ledger pair, once per `request_id`. A payment already in the target
    /// status is returned as it is, so a retry under a new request id is
    /// harmless too.
    pub(super) async fn apply(
        &self,
        op: Operation,
        payment_id: &str,
        request_id: Option<&str>,
    ) -> Result<Payment, Error> {
        let (_, to) = op.transition();
        if let Some(request_id) = request_id
            && self.db.backend == db::Backend::Postgres
            && let Some(moved) = self.apply_in_one_statement(op, payment_id, request_id).await?
        {
            return Ok(moved);
        }
        let mut tx = self.db.begin().await?;
        if let Some(request_id) = request_id {
            let recorded = sqlx::query(
                "INSERT INTO payment_operations (request_id, payment_id, kind, create_time) VALUES ($1, $2, $3, $4)",
            )
            .bind(request_id)
            .bind(payment_id)
            .bind(op.kind())
            .bind(clock::now_micros())
            .execute(&mut *tx)
            .await;
            match recorded {
                Ok(_) => {}
                Err(e) if db::is_unique_violation(&e) => {
                    tx.rollback().await?;
                    return self.replayed_operation(op, payment_id, request_id).await;
                }
                Err(e) => {
                    tx.rollback().await?;
                    // The foreign key to payments rejects unknown payment ids.
                    self.payment(payment_id).await?;
                    return Err(e.into());
                }
            }
        }
        if let Some(moved) = move_payment(&mut tx, &self.events, op, payment_id).await? {
            tx.commit().await?;
            self.events.committed();
            return Ok(moved);
        }
        tx.rollback().await?;
        let current = self.payment(payment_id).await?;
        if current.status == to {
            return Ok(current);
        }
        if op == Operation::Capture
            && current.status == PaymentStatus::Authorized
            && current.expire_time <= clock::now_micros()
        {
            // Past its hold but not swept yet: release it now.
            self.transition(Operation::Expire, payment_id).await?;
            return Err(Error::AuthorizationExpired {
                payment_id: payment_id.into(),
            });
        }
        if op == Operation::Capture && current.void_reason == VoidReason::HoldExpired {
            return Err(Error::AuthorizationExpired {
                payment_id: payment_id.into(),
            });
        }
        Err(Error::InvalidPaymentState {
            payment_id: payment_id.into(),
            status: current.status.as_str(),
            action: op.verb(),
        })
    }

    /// PostgreSQL's common case of [`Store::apply`]: the payment read, then
    /// one statement of data-modifying `WITH` parts: the conditional status
    /// change, and only when it matched, the operation's key, the balance
    /// change, the ledger pair and the outbox row. Two round trips and no
    /// BEGIN/COMMIT instead of six statements. The event and the ledger are
    /// built from the read: what they carry of the payment (account, amount,
    /// currency, reference) never changes after its authorization, and the
    /// status change is conditional on the status read. `None` when the
    /// payment is not in `op`'s from-status, moved meanwhile, or the key is
    /// taken: nothing was written, and the transaction path answers (a
    /// replay, an expired hold, a refusal).
    async fn apply_in_one_statement(
        &self,
        op: Operation,
        payment_id: &str,
        request_id: &str,
    ) -> Result<Option<Payment>, Error> {
        use ordermesh_events::outbox;
        let (from, to) = op.transition();
        let Ok(read) = self.payment(payment_id).await else {
            return Ok(None);
        };
        let now = clock::now_micros();
        let (after, by) = op.deadline_bounds(now);
        let Some(negated) = read.amount_minor.checked_neg() else {
            return Ok(None);
        };
        if read.status != from || read.expire_time <= after || read.expire_time > by {
            return Ok(None);
        }
        let moved = Payment {
            status: to,
            void_reason: op.void_reason(),
            update_time: now,
            ..read
        };
        const MOVED: &str = "EXISTS (SELECT 1 FROM moved)";
        let restored = if op.restores_balance() {
            format!(
                "restored AS (UPDATE accounts SET balance_minor = balance_minor + $10, update_time = $3
                 WHERE account_id = $11 AND {MOVED}),"
            )
        } else {
            // Keeps $11 bound and used: PostgreSQL refuses a parameter it
            // cannot type.
            format!("restored AS (SELECT CAST($11 AS TEXT) AS account_id WHERE {MOVED}),")
        };
        let sql = format!(
            "WITH moved AS (UPDATE payments SET status = $1, void_reason = $2, update_time = $3
                 WHERE payment_id = $4 AND status = $5 AND expire_time > $6 AND expire_time <= $7 RETURNING 1),
             keyed AS (INSERT INTO payment_operations (request_id, payment_id, kind, create_time)
                 SELECT $8, $4, $9, $3 WHERE {MOVED}),
             {restored}
             posted AS (INSERT INTO ledger_entries (entry_id, payment_id, ledger_account, amount_minor, currency_code, create_time)
                 SELECT * FROM (VALUES ($12, $4, $13, $14, $15, $3), ($16, $4, $17, $10, $15, $3)) AS entries WHERE {MOVED}),
             published AS ({outbox})
             SELECT COUNT(*) FROM moved",
            outbox = outbox::insert_part(18, Some(MOVED)),
        );
        let (debit, credit) = op.ledger(&moved.account_id);
        let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(op.void_reason().as_str())
            .bind(now)
            .bind(payment_id.to_owned())
            .bind(from.as_str())
            .bind(after)
            .bind(by)
            .bind(request_id.to_owned())
            .bind(op.kind())
            .bind(moved.amount_minor)
            .bind(moved.account_id.clone())
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(debit)
            .bind(negated)
            .bind(moved.currency_code.clone())
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(credit);
        // An event its type refuses: the transaction path reports it.
        let Ok(query) = outbox::bind_insert(query, &event_of(&self.events, op.into(), &moved)) else {
            return Ok(None);
        };
        match self.events.run_guarded(query, &self.db.write).await {
            Ok(changed) => Ok(changed.then_some(moved)),
            Err(e) if db::is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `op`'s transition in a transaction of its own, without an idempotency
    /// key; the payment when it moved.
    async fn transition(&self, op: Operation, payment_id: &str) -> Result<Option<Payment>, Error> {
        let mut tx = self.db.begin().await?;
        let moved = move_payment(&mut tx, &self.events, op, payment_id).await?;
        if moved.is_some() {
            tx.commit().await?;
            self.events.committed();
        } else {
            tx.rollback().await?;
        }
        Ok(moved)
    }

    /// The answer to an operation whose request id is already recorded: the
    /// payment's current state when it is the same operation on the same
    /// payment, else the key was reused.
    async fn replayed_operation(
        &self,
        op: Operation,
        payment_id: &str,
        request_id: &str,
    ) -> Result<Payment, Error> {
        let recorded: Option<(String, String)> =
            sqlx::query_as("SELECT payment_id, kind FROM payment_operations WHERE request_id = $1")
                .bind(request_id)
                .fetch_optional(&self.db.read)
                .await?;
        let Some((recorded_payment, recorded_kind)) = recorded else {
            return Err(Error::from(ordermesh_runtime::Infra::Corrupt(format!(
                "no operation for conflicting request_id {request_id:?}"
            ))));
        };
        if recorded_payment == payment_id && recorded_kind == op.kind() {
            self.payment(payment_id).await
        } else {
            Err(Error::RequestIdReused {
                request_id: request_id.into(),
                used_for: "operation",
            })
        }
    }
}

/// The conditional status change of `op` with its balance change, ledger
/// pair and event, on an open transaction; the payment as moved. `None` when
/// the payment was not in `op`'s from-status (or outside its hold bounds):
/// nothing was written.
async fn move_payment(
    conn: &mut AnyConnection,
    events: &Publisher,
    op: Operation,
    payment_id: &str,
) -> Result<Option<Payment>, Error> {
    let (from, to) = op.transition();
    let now = clock::now_micros();
    let (after, by) = op.deadline_bounds(now);
    let moved = sqlx::query_as::<_, Payment>(concat!(
        "UPDATE payments SET status = $1, void_reason = $2, update_time = $3
         WHERE payment_id = $4 AND status = $5 AND expire_time > $6 AND expire_time <= $7
         RETURNING ",
        payment_columns!()
    ))
    .bind(to.as_str())
    .bind(op.void_reason().as_str())
    .bind(now)
    .bind(payment_id)
    .bind(from.as_str())
    .bind(after)
    .bind(by)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(moved) = moved else {
        return Ok(None);
    };
    if op.restores_balance() {
        sqlx::query(
            "UPDATE accounts SET balance_minor = balance_minor + $1, update_time = $2 WHERE account_id = $3",
        )
        .bind(moved.amount_minor)
        .bind(now)
        .bind(&moved.account_id)
        .execute(&mut *conn)
        .await?;
    }
    let (debit, credit) = op.ledger(&moved.account_id);
    ledger::post(
        conn,
        Some(payment_id),
        (&debit, &credit),
        moved.amount_minor,
        &moved.currency_code,
        now,
    )
    .await?;
    events.insert(conn, &event_of(events, op.into(), &moved)).await?;
    Ok(Some(moved))
}

/// What happened to a payment, for its event.
#[derive(Debug, Clone, Copy)]
pub(super) enum Happened {
    Authorized,
    Captured,
    Voided,
    Refunded,
}

impl From<Operation> for Happened {
    fn from(op: Operation) -> Self {
        match op {
            Operation::Capture => Happened::Captured,
            Operation::Void | Operation::Expire => Happened::Voided,
            Operation::Refund => Happened::Refunded,
        }
    }
}

/// The event of a payment's movement (the order it pays is its reference).
pub(super) fn event_of(events: &Publisher, happened: Happened, payment: &Payment) -> Event {
    let payment_id = payment.payment_id.clone();
    let order_id = payment.reference.clone();
    let account_id = payment.account_id.clone();
    let amount = Some(ordermesh_proto::common::v1::Money::new(
        payment.amount_minor,
        &payment.currency_code,
    ));
    let occur_time = Some(clock::timestamp(payment.update_time));
    match happened {
        Happened::Authorized => events.event(&pb::PaymentAuthorized {
            payment_id,
            order_id,
            account_id,
            amount,
            occur_time,
        }),
        Happened::Captured => events.event(&pb::PaymentCaptured {
            payment_id,
            order_id,
            account_id,
            amount,
            occur_time,
        }),
        Happened::Voided => events.event(&pb::PaymentVoided {
            payment_id,
            order_id,
            account_id,
            amount,
            occur_time,
        }),
        Happened::Refunded => events.event(&pb::PaymentRefunded {
            payment_id,
            order_id,
            account_id,
            amount,
            occur_time,
        }),
    }
}
