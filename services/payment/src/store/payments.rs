//! Payments: authorize (a hold), capture, void, refund, and the expiry of
//! holds nobody captured.
//!
//! Idempotency: an authorization is keyed by its request id in
//! `authorize_keys`, written first in its transaction; capture, void and
//! refund by their request ids in `payment_operations`. A void may also name
//! an authorization by its key before the authorization exists (a caller
//! undoing a call whose answer it never got): the key is then recorded as
//! voided in advance, and an authorization arriving later with it holds
//! nothing. Both sides write the key row first, so on PostgreSQL the second
//! waits for the first to commit, and SQLite's single writer serializes them.

use sqlx::AnyConnection;

use ordermesh_runtime::{clock, db};

use super::{
    AccountStatus, DeclineReason, KeyState, MERCHANT_REVENUE, Payment, PaymentCursor, PaymentStatus, Store,
    VoidReason, customer_ledger, holds_ledger, ledger,
};
use crate::error::Error;

/// What happens to an existing payment after its authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
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

/// The answer to an authorization whose request id already has a payment:
/// that payment when the request matches it, else the key was reused.
fn replayed(
    existing: Payment,
    request_id: &str,
    account_id: &str,
    amount_minor: i64,
    currency_code: &str,
) -> Result<Payment, Error> {
    if existing.account_id == account_id
        && existing.amount_minor == amount_minor
        && existing.currency_code == currency_code
    {
        Ok(existing)
    } else {
        Err(Error::RequestIdReused {
            request_id: request_id.into(),
            used_for: "payment",
        })
    }
}

impl Store {
    pub async fn payment(&self, payment_id: &str) -> Result<Payment, Error> {
        sqlx::query_as::<_, Payment>(concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments WHERE payment_id = $1"
        ))
        .bind(payment_id)
        .fetch_optional(&self.db.read)
        .await?
        .ok_or_else(|| Error::PaymentNotFound {
            payment_id: payment_id.into(),
        })
    }

    /// The payment an authorization with this request id created, if any.
    pub async fn payment_by_request(&self, request_id: &str) -> Result<Option<Payment>, Error> {
        Ok(sqlx::query_as::<_, Payment>(concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments WHERE authorize_request_id = $1"
        ))
        .bind(request_id)
        .fetch_optional(&self.db.read)
        .await?)
    }

    /// Payments newest first, strictly after `after` in that order, of one
    /// account when `account_id` is set; at most `limit`.
    pub async fn payments_page(
        &self,
        account_id: Option<&str>,
        after: Option<&PaymentCursor>,
        limit: i64,
    ) -> Result<Vec<Payment>, Error> {
        // The first page starts past every real key rather than using a
        // different statement, so there is one fixed query.
        let (before_time, before_id) = match after {
            Some(cursor) => (cursor.create_time, cursor.payment_id.as_str()),
            None => (i64::MAX, ""),
        };
        Ok(sqlx::query_as::<_, Payment>(concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments WHERE ($1 = '' OR account_id = $1)
                AND (create_time < $2 OR (create_time = $2 AND payment_id < $3))
              ORDER BY create_time DESC, payment_id DESC LIMIT $4"
        ))
        .bind(account_id.unwrap_or(""))
        .bind(before_time)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// How many payments an account made with this reference (e.g. an order
    /// id), for checks that an order was charged at most once.
    pub async fn count_payments(&self, account_id: &str, reference: &str) -> Result<i64, Error> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM payments WHERE account_id = $1 AND reference = $2",
        )
        .bind(account_id)
        .bind(reference)
        .fetch_one(&self.db.read)
        .await?;
        Ok(n)
    }

    /// Holds `amount_minor` on an account, once per `request_id`. A decline
    /// is stored and returned as the payment (status `Declined`), so a retry
    /// returns the same decline instead of deciding again. A key voided in
    /// advance refuses the authorization (nothing held).
    pub async fn authorize(
        &self,
        request_id: &str,
        account_id: &str,
        amount_minor: i64,
        currency_code: &str,
        reference: &str,
    ) -> Result<Payment, Error> {
        let now = clock::now_micros();
        let mut tx = self.db.write.begin().await?;
        let claimed =
            sqlx::query("INSERT INTO authorize_keys (request_id, state, create_time) VALUES ($1, $2, $3)")
                .bind(request_id)
                .bind(KeyState::Authorized.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await;
        match claimed {
            Ok(_) => {}
            Err(e) if db::is_unique_violation(&e) => {
                // A replay, a concurrent duplicate that won, or a key voided
                // in advance: answer from what the key holds.
                tx.rollback().await?;
                return match self.payment_by_request(request_id).await? {
                    Some(existing) => replayed(existing, request_id, account_id, amount_minor, currency_code),
                    None => Err(Error::AuthorizationVoided {
                        request_id: request_id.into(),
                    }),
                };
            }
            Err(e) => return Err(e.into()),
        }
        // The happy path is one conditional UPDATE: the account exists, is
        // active, holds this currency, the amount is within its payment limit
        // and its funds. Only when it matches nothing is the account read to
        // tell which (status and limits are never changed by this service).
        let held = sqlx::query(
            "UPDATE accounts SET balance_minor = balance_minor - $1, update_time = $2
             WHERE account_id = $3 AND status = $4 AND currency_code = $5 AND payment_limit_minor >= $1
               AND balance_minor + credit_limit_minor >= $1",
        )
        .bind(amount_minor)
        .bind(now)
        .bind(account_id)
        .bind(AccountStatus::Active.as_str())
        .bind(currency_code)
        .execute(&mut *tx)
        .await?;
        let decline = if held.rows_affected() == 1 {
            DeclineReason::NotDeclined
        } else {
            let account = sqlx::query_as::<_, super::Account>(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE account_id = $1"
            ))
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(account) = account else {
                // A refused call records nothing: the key stays free.
                tx.rollback().await?;
                return Err(Error::AccountNotFound {
                    account_id: account_id.into(),
                });
            };
            if account.currency_code != currency_code {
                tx.rollback().await?;
                return Err(Error::CurrencyMismatch {
                    account_id: account_id.into(),
                    account_currency: account.currency_code,
                    requested: currency_code.into(),
                });
            }
            if account.status == AccountStatus::Blocked {
                DeclineReason::AccountBlocked
            } else if amount_minor > account.payment_limit_minor {
                DeclineReason::AmountOverLimit
            } else {
                DeclineReason::InsufficientFunds
            }
        };
        let (status, expire_time) = match decline {
            DeclineReason::NotDeclined => (
                PaymentStatus::Authorized,
                now.saturating_add(clock::micros(self.hold)),
            ),
            _ => (PaymentStatus::Declined, 0),
        };
        let payment = Payment {
            payment_id: uuid::Uuid::now_v7().to_string(),
            account_id: account_id.into(),
            amount_minor,
            currency_code: currency_code.into(),
            status,
            decline_reason: decline,
            void_reason: VoidReason::NotVoided,
            reference: reference.into(),
            expire_time,
            create_time: now,
            update_time: now,
        };
        sqlx::query(concat!(
            "INSERT INTO payments (authorize_request_id, ",
            payment_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)"
        ))
        .bind(request_id)
        .bind(&payment.payment_id)
        .bind(account_id)
        .bind(amount_minor)
        .bind(currency_code)
        .bind(status.as_str())
        .bind(decline.as_str())
        .bind(VoidReason::NotVoided.as_str())
        .bind(reference)
        .bind(expire_time)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if status == PaymentStatus::Authorized {
            ledger::post(
                &mut tx,
                Some(&payment.payment_id),
                (&customer_ledger(account_id), &holds_ledger(account_id)),
                amount_minor,
                currency_code,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(payment)
    }

    /// Takes an authorized payment's held amount, before its hold lapses.
    /// Idempotent.
    pub async fn capture(&self, payment_id: &str, request_id: &str) -> Result<Payment, Error> {
        self.apply(Operation::Capture, payment_id, Some(request_id)).await
    }

    /// Releases an authorized payment's hold back to the balance. Idempotent.
    pub async fn void(&self, payment_id: &str, request_id: &str) -> Result<Payment, Error> {
        self.apply(Operation::Void, payment_id, Some(request_id)).await
    }

    /// Gives a captured payment back to the balance in full. Idempotent.
    pub async fn refund(&self, payment_id: &str, request_id: &str) -> Result<Payment, Error> {
        self.apply(Operation::Refund, payment_id, Some(request_id)).await
    }

    /// Makes sure nothing is held under an authorization key: voids the
    /// authorization made with it, or, when none was made, voids the key in
    /// advance so that none can be. Returns the payment as it is afterwards
    /// (VOIDED; DECLINED, CAPTURED or REFUNDED unchanged, as there is nothing
    /// to void), or `None` when no authorization was made under the key.
    pub async fn void_by_authorize_key(
        &self,
        authorize_request_id: &str,
        request_id: &str,
    ) -> Result<Option<Payment>, Error> {
        let now = clock::now_micros();
        let tombstone = sqlx::query(
            "INSERT INTO authorize_keys (request_id, state, create_time) VALUES ($1, $2, $3)
             ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(authorize_request_id)
        .bind(KeyState::VoidedInAdvance.as_str())
        .bind(now)
        .execute(&self.db.write)
        .await?;
        if tombstone.rows_affected() == 1 {
            tracing::info!(authorize_request_id, "authorization key voided in advance");
            return Ok(None);
        }
        // The key was taken first: by an authorization (committed, since the
        // insert above waited for it), or by an earlier void in advance.
        let Some(payment) = self.payment_by_request(authorize_request_id).await? else {
            return Ok(None);
        };
        match payment.status {
            PaymentStatus::Authorized => self
                .apply(Operation::Void, &payment.payment_id, Some(request_id))
                .await
                .map(Some),
            _ => Ok(Some(payment)),
        }
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
    async fn apply(
        &self,
        op: Operation,
        payment_id: &str,
        request_id: Option<&str>,
    ) -> Result<Payment, Error> {
        let (_, to) = op.transition();
        let mut tx = self.db.write.begin().await?;
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
        if let Some(moved) = move_payment(&mut tx, op, payment_id).await? {
            tx.commit().await?;
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

    /// `op`'s transition in a transaction of its own, without an idempotency
    /// key; the payment when it moved.
    async fn transition(&self, op: Operation, payment_id: &str) -> Result<Option<Payment>, Error> {
        let mut tx = self.db.write.begin().await?;
        let moved = move_payment(&mut tx, op, payment_id).await?;
        if moved.is_some() {
            tx.commit().await?;
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
            return Err(Error::Corrupt(format!(
                "no operation for conflicting request_id {request_id:?}"
            )));
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

/// The conditional status change of `op` with its balance change and ledger
/// pair, on an open transaction; the payment as moved. `None` when the
/// payment was not in `op`'s from-status (or outside its hold bounds):
/// nothing was written.
async fn move_payment(
    conn: &mut AnyConnection,
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
    Ok(Some(moved))
}
