//! Payments: reading them, and authorizing one (a hold). What happens to a
//! payment after its authorization (capture, void, refund, the expiry of
//! holds nobody captured) is `operations`; this file is the creation side,
//! with its own idempotency key.
//!
//! Idempotency: an authorization is keyed by its request id in
//! `authorize_keys`, written first in its transaction. A void may also name
//! an authorization by its key before the authorization exists (a caller
//! undoing a call whose answer it never got): the key is then recorded as
//! voided in advance, and an authorization arriving later with it holds
//! nothing. Both sides write the key row first, so on PostgreSQL the second
//! waits for the first to commit, and SQLite's single writer serializes them.

use ordermesh_runtime::{clock, db};

use super::operations::{Happened, Operation, event_of};
use super::{
    AccountStatus, DeclineReason, KeyState, Payment, PaymentCursor, PaymentStatus, Store, VoidReason,
    customer_ledger, holds_ledger, ledger,
};
use crate::error::Error;

/// An authorization's request: its key, account, amount, currency and
/// reference.
type Attempt<'a> = (&'a str, &'a str, i64, &'a str, &'a str);

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
    #[tracing::instrument(name = "db.transaction", skip_all, fields(otel.name = "authorize", db.operation.name = "authorize", db.system.name = self.db.backend.system_name()))]
    pub async fn authorize(
        &self,
        request_id: &str,
        account_id: &str,
        amount_minor: i64,
        currency_code: &str,
        reference: &str,
    ) -> Result<Payment, Error> {
        let now = clock::now_micros();
        let attempt = (request_id, account_id, amount_minor, currency_code, reference);
        if self.db.backend == db::Backend::Postgres {
            match self.authorize_in_one_statement(attempt, now).await {
                Ok(Some(payment)) => return Ok(payment),
                // Not held: the transaction below tells why and records it.
                Ok(None) => {}
                Err(e) if db::is_unique_violation(&e) => {
                    return self.replay_authorization(attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut tx = self.db.begin().await?;
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
                return self.replay_authorization(attempt).await;
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
            let event = event_of(&self.events, Happened::Authorized, &payment);
            self.events.insert(&mut tx, &event).await?;
        }
        tx.commit().await?;
        self.events.committed();
        Ok(payment)
    }

    /// The answer to an authorization whose key is taken: the payment made
    /// under it, or, when none was, the key was voided in advance.
    async fn replay_authorization(
        &self,
        (request_id, account_id, amount_minor, currency_code, _): Attempt<'_>,
    ) -> Result<Payment, Error> {
        match self.payment_by_request(request_id).await? {
            Some(existing) => replayed(existing, request_id, account_id, amount_minor, currency_code),
            None => Err(Error::AuthorizationVoided {
                request_id: request_id.into(),
            }),
        }
    }

    /// PostgreSQL's happy path of [`Store::authorize`] as one statement of
    /// data-modifying `WITH` parts: the hold (the account's conditional
    /// UPDATE), and, only when it matched, the key, the payment, its two
    /// ledger entries and the PaymentAuthorized outbox row. One round trip
    /// and no BEGIN/COMMIT instead of seven statements. `None` when the hold
    /// matched nothing: then nothing was written (the key included) and the
    /// transaction path finds out why and records the decline. A taken key
    /// fails the whole statement on its unique key, the hold included.
    async fn authorize_in_one_statement(
        &self,
        (request_id, account_id, amount_minor, currency_code, reference): Attempt<'_>,
        now: i64,
    ) -> Result<Option<Payment>, sqlx::Error> {
        use ordermesh_events::outbox;
        let Some(negated) = amount_minor.checked_neg() else {
            return Ok(None); // the transaction path reports it
        };
        const HELD: &str = "EXISTS (SELECT 1 FROM held)";
        let sql = format!(
            "WITH held AS (UPDATE accounts SET balance_minor = balance_minor - $4, update_time = $3
                 WHERE account_id = $5 AND status = $6 AND currency_code = $7 AND payment_limit_minor >= $4
                   AND balance_minor + credit_limit_minor >= $4 RETURNING 1),
             claimed AS (INSERT INTO authorize_keys (request_id, state, create_time) SELECT $1, $2, $3 WHERE {HELD}),
             paid AS (INSERT INTO payments (authorize_request_id, {columns})
                 SELECT $1, $8, $5, $4, $7, $9, $10, $11, $12, $13, $3, $3 WHERE {HELD}),
             posted AS (INSERT INTO ledger_entries (entry_id, payment_id, ledger_account, amount_minor, currency_code, create_time)
                 SELECT * FROM (VALUES ($14, $8, $15, $16, $7, $3), ($17, $8, $18, $4, $7, $3)) AS entries WHERE {HELD}),
             published AS ({outbox})
             SELECT COUNT(*) FROM held",
            columns = payment_columns!(),
            outbox = outbox::insert_part(19, Some(HELD)),
        );
        let payment = Payment {
            payment_id: uuid::Uuid::now_v7().to_string(),
            account_id: account_id.into(),
            amount_minor,
            currency_code: currency_code.into(),
            status: PaymentStatus::Authorized,
            decline_reason: DeclineReason::NotDeclined,
            void_reason: VoidReason::NotVoided,
            reference: reference.into(),
            expire_time: now.saturating_add(clock::micros(self.hold)),
            create_time: now,
            update_time: now,
        };
        let event = event_of(&self.events, Happened::Authorized, &payment);
        let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .bind(request_id.to_owned())
            .bind(KeyState::Authorized.as_str())
            .bind(now)
            .bind(amount_minor)
            .bind(account_id.to_owned())
            .bind(AccountStatus::Active.as_str())
            .bind(currency_code.to_owned())
            .bind(payment.payment_id.clone())
            .bind(PaymentStatus::Authorized.as_str())
            .bind(DeclineReason::NotDeclined.as_str())
            .bind(VoidReason::NotVoided.as_str())
            .bind(reference.to_owned())
            .bind(payment.expire_time)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(customer_ledger(account_id))
            .bind(negated)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(holds_ledger(account_id));
        // An event its type refuses: the transaction path reports it.
        let Ok(query) = outbox::bind_insert(query, &event) else {
            return Ok(None);
        };
        let held = self.events.run_guarded(query, &self.db.write).await?;
        Ok(held.then_some(payment))
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
}
