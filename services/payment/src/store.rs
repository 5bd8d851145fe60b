//! The payment database: accounts, payments, their idempotency keys and the
//! double-entry ledger.
//!
//! Money moves only through conditional `UPDATE`s (`WHERE balance_minor +
//! credit_limit_minor >= $1`, `WHERE status = <from>`) inside the transaction
//! that also writes the movement's two ledger entries, so concurrent payments
//! cannot overdraw an account, a payment cannot be captured twice and the
//! ledger always sums to zero. No balance is read, changed in Rust and written
//! back. Every write transaction begins with a write of its idempotency key,
//! so a duplicate request fails on the unique key before it moves anything,
//! and SQLite takes the write lock at once instead of upgrading a read lock.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::error::Error;
use ordermesh_runtime::{clock, db, text_enum};

/// Ledger account that captured money is paid into.
pub const MERCHANT_REVENUE: &str = "merchant:revenue";
/// Ledger account that funds opening balances, so they balance too.
pub const EQUITY_OPENING: &str = "equity:opening";

/// The ledger account mirroring an account's `balance_minor`.
pub fn customer_ledger(account_id: &str) -> String {
    format!("customer:{account_id}")
}

/// The ledger account holding an account's authorized, uncaptured amounts.
pub fn holds_ledger(account_id: &str) -> String {
    format!("holds:{account_id}")
}

text_enum!(
    /// Whether an account may pay, as stored.
    AccountStatus { Active => "ACTIVE", Blocked => "BLOCKED" }
);

/// A customer account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub account_id: String,
    pub display_name: String,
    pub status: AccountStatus,
    pub currency_code: String,
    /// May be negative, down to `-credit_limit_minor`.
    pub balance_minor: i64,
    pub credit_limit_minor: i64,
    pub payment_limit_minor: i64,
    pub create_time: i64,
    pub update_time: i64,
}

impl Account {
    /// The most that can be authorized now.
    pub fn available_minor(&self) -> i64 {
        self.balance_minor.saturating_add(self.credit_limit_minor)
    }
}

/// An account to create when it does not exist yet.
#[derive(Debug, Clone)]
pub struct SeedAccount {
    pub account_id: String,
    pub display_name: String,
    pub currency_code: String,
    /// Posted to the ledger against `equity:opening` when the account is
    /// created.
    pub opening_balance_minor: i64,
    pub credit_limit_minor: i64,
    pub payment_limit_minor: i64,
    pub blocked: bool,
}

text_enum!(
    /// A payment's state, as stored.
    PaymentStatus {
        Authorized => "AUTHORIZED",
        Declined => "DECLINED",
        Captured => "CAPTURED",
        Voided => "VOIDED",
        Refunded => "REFUNDED",
    }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineReason {
    InsufficientFunds,
    AccountBlocked,
    AmountOverLimit,
}

impl DeclineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Self::AccountBlocked => "ACCOUNT_BLOCKED",
            Self::AmountOverLimit => "AMOUNT_OVER_LIMIT",
        }
    }

    /// The stored column: empty for a payment that was not declined.
    fn parse(text: &str) -> Result<Option<Self>, Error> {
        Ok(match text {
            "" => None,
            "INSUFFICIENT_FUNDS" => Some(Self::InsufficientFunds),
            "ACCOUNT_BLOCKED" => Some(Self::AccountBlocked),
            "AMOUNT_OVER_LIMIT" => Some(Self::AmountOverLimit),
            other => return Err(Error::Corrupt(format!("decline reason {other:?}"))),
        })
    }
}

/// A payment from a customer account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub payment_id: String,
    pub account_id: String,
    pub amount_minor: i64,
    pub currency_code: String,
    pub status: PaymentStatus,
    /// Set exactly when `status` is `Declined`.
    pub decline_reason: Option<DeclineReason>,
    pub reference: String,
    pub create_time: i64,
    pub update_time: i64,
}

/// A keyset position in the newest-first payment listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentCursor {
    pub create_time: i64,
    pub payment_id: String,
}

/// What happens to an existing payment after its authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Capture,
    Void,
    Refund,
}

impl Operation {
    fn kind(self) -> &'static str {
        match self {
            Self::Capture => "CAPTURE",
            Self::Void => "VOID",
            Self::Refund => "REFUND",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Capture => "capture",
            Self::Void => "void",
            Self::Refund => "refund",
        }
    }

    fn transition(self) -> (PaymentStatus, PaymentStatus) {
        use PaymentStatus::*;
        match self {
            Self::Capture => (Authorized, Captured),
            Self::Void => (Authorized, Voided),
            Self::Refund => (Captured, Refunded),
        }
    }

    /// Ledger accounts the amount moves from and to.
    fn ledger(self, account_id: &str) -> (String, String) {
        match self {
            Self::Capture => (holds_ledger(account_id), MERCHANT_REVENUE.to_owned()),
            Self::Void => (holds_ledger(account_id), customer_ledger(account_id)),
            Self::Refund => (MERCHANT_REVENUE.to_owned(), customer_ledger(account_id)),
        }
    }

    /// Whether the amount goes back to the customer's balance. A capture
    /// leaves the balance alone: the authorization already took it.
    fn restores_balance(self) -> bool {
        matches!(self, Self::Void | Self::Refund)
    }
}

// Column lists are macros so that queries are `concat!`ed at compile time:
// no SQL is ever built at run time.
macro_rules! select_account {
    () => {
        "SELECT account_id, display_name, status, currency_code, balance_minor, credit_limit_minor,
                payment_limit_minor, create_time, update_time FROM accounts"
    };
}

macro_rules! select_payment {
    () => {
        "SELECT payment_id, account_id, amount_minor, currency_code, status, decline_reason, reference,
                create_time, update_time FROM payments"
    };
}

fn account_from_row(row: &AnyRow) -> Result<Account, Error> {
    let status: String = row.try_get("status")?;
    Ok(Account {
        account_id: row.try_get("account_id")?,
        display_name: row.try_get("display_name")?,
        status: AccountStatus::parse(&status)?,
        currency_code: row.try_get("currency_code")?,
        balance_minor: row.try_get("balance_minor")?,
        credit_limit_minor: row.try_get("credit_limit_minor")?,
        payment_limit_minor: row.try_get("payment_limit_minor")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
    })
}

fn payment_from_row(row: &AnyRow) -> Result<Payment, Error> {
    let status: String = row.try_get("status")?;
    let decline_reason: String = row.try_get("decline_reason")?;
    Ok(Payment {
        payment_id: row.try_get("payment_id")?,
        account_id: row.try_get("account_id")?,
        amount_minor: row.try_get("amount_minor")?,
        currency_code: row.try_get("currency_code")?,
        status: PaymentStatus::parse(&status)?,
        decline_reason: DeclineReason::parse(&decline_reason)?,
        reference: row.try_get("reference")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
    })
}

/// Writes one movement as its two ledger entries: `from` gives
/// `amount_minor`, `to` receives it.
async fn post(
    conn: &mut AnyConnection,
    payment_id: Option<&str>,
    (from, to): (&str, &str),
    amount_minor: i64,
    currency_code: &str,
    now: i64,
) -> Result<(), Error> {
    let Some(negated) = amount_minor.checked_neg() else {
        return Err(Error::Corrupt(format!(
            "ledger amount {amount_minor} out of range"
        )));
    };
    for (ledger_account, amount) in [(from, negated), (to, amount_minor)] {
        sqlx::query(
            "INSERT INTO ledger_entries (entry_id, payment_id, ledger_account, amount_minor, currency_code, create_time)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(payment_id.map(str::to_owned))
        .bind(ledger_account)
        .bind(amount)
        .bind(currency_code)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
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

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Creates the accounts that do not exist yet, each with its opening
    /// balance posted to the ledger in the same transaction. Existing
    /// accounts keep their balance, so seeding on every start is harmless.
    pub async fn seed(&self, accounts: &[SeedAccount]) -> Result<(), Error> {
        let now = clock::now_micros();
        for account in accounts {
            let status = if account.blocked {
                AccountStatus::Blocked
            } else {
                AccountStatus::Active
            };
            let mut tx = self.pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO accounts (account_id, display_name, status, currency_code, balance_minor,
                                       credit_limit_minor, payment_limit_minor, create_time, update_time)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (account_id) DO NOTHING",
            )
            .bind(&account.account_id)
            .bind(&account.display_name)
            .bind(status.as_str())
            .bind(&account.currency_code)
            .bind(account.opening_balance_minor)
            .bind(account.credit_limit_minor)
            .bind(account.payment_limit_minor)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // Only a fresh row gets the opening entries: posting them for an
            // existing account would put its balance and ledger out of step.
            if inserted.rows_affected() == 1 && account.opening_balance_minor != 0 {
                post(
                    &mut tx,
                    None,
                    (EQUITY_OPENING, &customer_ledger(&account.account_id)),
                    account.opening_balance_minor,
                    &account.currency_code,
                    now,
                )
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    pub async fn account(&self, account_id: &str) -> Result<Account, Error> {
        let row = sqlx::query(concat!(select_account!(), " WHERE account_id = $1"))
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => account_from_row(&row),
            None => Err(Error::AccountNotFound {
                account_id: account_id.into(),
            }),
        }
    }

    /// Accounts ordered by id after `after` (exclusive), at most `limit`.
    pub async fn accounts_after(&self, after: Option<&str>, limit: i64) -> Result<Vec<Account>, Error> {
        sqlx::query(concat!(
            select_account!(),
            " WHERE account_id > $1 ORDER BY account_id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(account_from_row)
        .collect()
    }

    pub async fn payment(&self, payment_id: &str) -> Result<Payment, Error> {
        let row = sqlx::query(concat!(select_payment!(), " WHERE payment_id = $1"))
            .bind(payment_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => payment_from_row(&row),
            None => Err(Error::PaymentNotFound {
                payment_id: payment_id.into(),
            }),
        }
    }

    /// The payment an authorization with this request id created, if any.
    pub async fn payment_by_request(&self, request_id: &str) -> Result<Option<Payment>, Error> {
        sqlx::query(concat!(select_payment!(), " WHERE authorize_request_id = $1"))
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(payment_from_row)
            .transpose()
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
        sqlx::query(concat!(
            select_payment!(),
            " WHERE ($1 = '' OR account_id = $1)
                AND (create_time < $2 OR (create_time = $2 AND payment_id < $3))
              ORDER BY create_time DESC, payment_id DESC LIMIT $4"
        ))
        .bind(account_id.unwrap_or(""))
        .bind(before_time)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(payment_from_row)
        .collect()
    }

    /// How many payments an account made with this reference (e.g. an order
    /// id), for checks that an order was charged at most once.
    pub async fn count_payments(&self, account_id: &str, reference: &str) -> Result<i64, Error> {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM payments WHERE account_id = $1 AND reference = $2",
        )
        .bind(account_id)
        .bind(reference)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// The sum of every ledger entry; zero unless an entry lost its pair.
    pub async fn ledger_sum(&self) -> Result<i64, Error> {
        let row =
            sqlx::query("SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS s FROM ledger_entries")
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get("s")?)
    }

    /// The balance of one ledger account, e.g. [`MERCHANT_REVENUE`].
    pub async fn ledger_balance(&self, ledger_account: &str) -> Result<i64, Error> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS s FROM ledger_entries WHERE ledger_account = $1",
        )
        .bind(ledger_account)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("s")?)
    }

    /// The ledger's view of an account's balance; always equal to the
    /// account's `balance_minor`.
    pub async fn customer_ledger_balance(&self, account_id: &str) -> Result<i64, Error> {
        self.ledger_balance(&customer_ledger(account_id)).await
    }

    /// Holds `amount_minor` on an account, once per `request_id`. A decline
    /// is stored and returned as the payment (status `Declined`), so a retry
    /// returns the same decline instead of deciding again.
    pub async fn authorize(
        &self,
        request_id: &str,
        account_id: &str,
        amount_minor: i64,
        currency_code: &str,
        reference: &str,
    ) -> Result<Payment, Error> {
        if let Some(existing) = self.payment_by_request(request_id).await? {
            return replayed(existing, request_id, account_id, amount_minor, currency_code);
        }
        // Status and limits are never changed by this service, so the
        // values read here still hold inside the transaction; the
        // conditional UPDATE re-checks the status all the same.
        let account = self.account(account_id).await?;
        if account.currency_code != currency_code {
            return Err(Error::CurrencyMismatch {
                account_id: account_id.into(),
                account_currency: account.currency_code,
                requested: currency_code.into(),
            });
        }

        let now = clock::now_micros();
        let payment_id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO payments (payment_id, authorize_request_id, account_id, amount_minor, currency_code,
                                   status, decline_reason, reference, create_time, update_time)
             VALUES ($1, $2, $3, $4, $5, 'AUTHORIZED', '', $6, $7, $7)",
        )
        .bind(&payment_id)
        .bind(request_id)
        .bind(account_id)
        .bind(amount_minor)
        .bind(currency_code)
        .bind(reference)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if db::is_unique_violation(&e) => {
                // A concurrent duplicate won the race; answer as its replay.
                tx.rollback().await?;
                let winner = self.payment_by_request(request_id).await?.ok_or_else(|| {
                    Error::Corrupt(format!("no payment for conflicting request_id {request_id:?}"))
                })?;
                return replayed(winner, request_id, account_id, amount_minor, currency_code);
            }
            Err(e) => return Err(e.into()),
        }

        let decline = if account.status == AccountStatus::Blocked {
            Some(DeclineReason::AccountBlocked)
        } else if amount_minor > account.payment_limit_minor {
            Some(DeclineReason::AmountOverLimit)
        } else {
            let held = sqlx::query(
                "UPDATE accounts SET balance_minor = balance_minor - $1, update_time = $2
                 WHERE account_id = $3 AND status = 'ACTIVE' AND balance_minor + credit_limit_minor >= $1",
            )
            .bind(amount_minor)
            .bind(now)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
            if held.rows_affected() == 1 {
                post(
                    &mut tx,
                    Some(&payment_id),
                    (&customer_ledger(account_id), &holds_ledger(account_id)),
                    amount_minor,
                    currency_code,
                    now,
                )
                .await?;
                None
            } else {
                Some(DeclineReason::InsufficientFunds)
            }
        };
        let status = match decline {
            Some(reason) => {
                sqlx::query(
                    "UPDATE payments SET status = 'DECLINED', decline_reason = $1 WHERE payment_id = $2",
                )
                .bind(reason.as_str())
                .bind(&payment_id)
                .execute(&mut *tx)
                .await?;
                PaymentStatus::Declined
            }
            None => PaymentStatus::Authorized,
        };
        tx.commit().await?;
        Ok(Payment {
            payment_id,
            account_id: account_id.into(),
            amount_minor,
            currency_code: currency_code.into(),
            status,
            decline_reason: decline,
            reference: reference.into(),
            create_time: now,
            update_time: now,
        })
    }

    /// Takes an authorized payment's held amount. Idempotent.
    pub async fn capture(&self, payment_id: &str, request_id: &str) -> Result<Payment, Error> {
        self.apply(Operation::Capture, payment_id, request_id).await
    }

    /// Releases an authorized payment's hold back to the balance. Idempotent.
    pub async fn void(&self, payment_id: &str, request_id: &str) -> Result<Payment, Error> {
        self.apply(Operation::Void, payment_id, request_id).await
    }

    /// Gives a captured payment back to the balance in full. Idempotent.
    pub async fn refund(&self, payment_id: &str, request_id: &str) -> Result<Payment, Error> {
        self.apply(Operation::Refund, payment_id, request_id).await
    }

    /// Moves a payment through `op`'s transition with its balance change and
    /// ledger pair, once per `request_id`. A payment already in the target
    /// status is returned as it is, so a retry under a new request id is
    /// harmless too.
    async fn apply(&self, op: Operation, payment_id: &str, request_id: &str) -> Result<Payment, Error> {
        let (from, to) = op.transition();
        let now = clock::now_micros();
        let mut tx = self.pool.begin().await?;
        let recorded = sqlx::query(
            "INSERT INTO payment_operations (request_id, payment_id, kind, create_time) VALUES ($1, $2, $3, $4)",
        )
        .bind(request_id)
        .bind(payment_id)
        .bind(op.kind())
        .bind(now)
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
        let moved = sqlx::query(
            "UPDATE payments SET status = $1, update_time = $2 WHERE payment_id = $3 AND status = $4
             RETURNING account_id, amount_minor, currency_code",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(payment_id)
        .bind(from.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(moved) = moved else {
            tx.rollback().await?;
            let current = self.payment(payment_id).await?;
            if current.status == to {
                return Ok(current);
            }
            return Err(Error::InvalidPaymentState {
                payment_id: payment_id.into(),
                status: current.status.as_str(),
                action: op.verb(),
            });
        };
        let account_id: String = moved.try_get("account_id")?;
        let amount_minor: i64 = moved.try_get("amount_minor")?;
        let currency_code: String = moved.try_get("currency_code")?;
        if op.restores_balance() {
            sqlx::query(
                "UPDATE accounts SET balance_minor = balance_minor + $1, update_time = $2 WHERE account_id = $3",
            )
            .bind(amount_minor)
            .bind(now)
            .bind(&account_id)
            .execute(&mut *tx)
            .await?;
        }
        let (debit, credit) = op.ledger(&account_id);
        post(
            &mut tx,
            Some(payment_id),
            (&debit, &credit),
            amount_minor,
            &currency_code,
            now,
        )
        .await?;
        tx.commit().await?;
        self.payment(payment_id).await
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
        let row = sqlx::query("SELECT payment_id, kind FROM payment_operations WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                Error::Corrupt(format!("no operation for conflicting request_id {request_id:?}"))
            })?;
        let recorded_payment: String = row.try_get("payment_id")?;
        let recorded_kind: String = row.try_get("kind")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const USD: &str = "USD";

    /// A store on a fresh SQLite file, seeded with the demo customers plus
    /// "erin", who has $10 and a $50 credit line.
    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = ordermesh_runtime::db::sqlite_url(dir.path(), "payment").expect("sqlite url");
        let mut config = crate::Config::new(url);
        config.seed = crate::demo::accounts();
        config.seed.push(SeedAccount {
            account_id: "erin".into(),
            display_name: "Erin".into(),
            currency_code: USD.into(),
            opening_balance_minor: 1_000,
            credit_limit_minor: 5_000,
            payment_limit_minor: 1_000_000,
            blocked: false,
        });
        let service = crate::build(config).await.expect("payment service builds");
        (dir, service.store().clone())
    }

    async fn balance(store: &Store, account_id: &str) -> i64 {
        store.account(account_id).await.expect("account").balance_minor
    }

    /// The ledger sums to zero and every seeded balance equals its ledger
    /// account.
    async fn assert_ledger_consistent(store: &Store) {
        assert_eq!(store.ledger_sum().await.expect("ledger sum"), 0);
        for account in store.accounts_after(None, 100).await.expect("accounts") {
            let ledger = store
                .customer_ledger_balance(&account.account_id)
                .await
                .expect("ledger balance");
            assert_eq!(account.balance_minor, ledger, "{account:?}");
        }
    }

    fn code(error: Error) -> Code {
        tonic::Status::from(error).code()
    }

    #[tokio::test]
    async fn seeding_posts_opening_balances_once() {
        let (_dir, store) = store().await;
        assert_eq!(balance(&store, "alice").await, 500_000);
        assert_eq!(
            store.ledger_balance(EQUITY_OPENING).await.expect("equity"),
            -(500_000 + 2_000 + 100_000 + 100_000 + 1_000)
        );
        // A restart seeds again; nothing may be posted twice.
        store.seed(&crate::demo::accounts()).await.expect("reseed");
        assert_eq!(balance(&store, "alice").await, 500_000);
        assert_eq!(
            store.customer_ledger_balance("alice").await.expect("ledger"),
            500_000
        );
        assert_ledger_consistent(&store).await;
    }

    #[tokio::test]
    async fn authorize_then_capture_moves_money_and_the_ledger_balances() {
        let (_dir, store) = store().await;
        let payment = store
            .authorize("r1", "alice", 12_345, USD, "order-1")
            .await
            .expect("authorize");
        assert_eq!(payment.status, PaymentStatus::Authorized);
        assert_eq!(payment.decline_reason, None);
        assert_eq!(balance(&store, "alice").await, 500_000 - 12_345);
        assert_eq!(
            store.ledger_balance(&holds_ledger("alice")).await.expect("holds"),
            12_345
        );
        assert_ledger_consistent(&store).await;

        let captured = store.capture(&payment.payment_id, "c1").await.expect("capture");
        assert_eq!(captured.status, PaymentStatus::Captured);
        assert_eq!(balance(&store, "alice").await, 500_000 - 12_345);
        assert_eq!(
            store.ledger_balance(&holds_ledger("alice")).await.expect("holds"),
            0
        );
        assert_eq!(
            store.ledger_balance(MERCHANT_REVENUE).await.expect("revenue"),
            12_345
        );

        // A retry under the same key, and a second capture under a new one,
        // both answer CAPTURED without taking the money again.
        let again = store.capture(&payment.payment_id, "c1").await.expect("replay");
        assert_eq!(again.status, PaymentStatus::Captured);
        let other = store.capture(&payment.payment_id, "c2").await.expect("by state");
        assert_eq!(other.status, PaymentStatus::Captured);
        assert_eq!(
            store.ledger_balance(MERCHANT_REVENUE).await.expect("revenue"),
            12_345
        );
        assert_ledger_consistent(&store).await;
    }

    #[tokio::test]
    async fn authorize_replay_returns_the_first_payment_and_charges_once() {
        let (_dir, store) = store().await;
        let first = store
            .authorize("r1", "alice", 1_000, USD, "order-1")
            .await
            .expect("authorize");
        let second = store
            .authorize("r1", "alice", 1_000, USD, "order-1")
            .await
            .expect("replay");
        assert_eq!(second.payment_id, first.payment_id);
        assert_eq!(balance(&store, "alice").await, 499_000);
        assert_eq!(store.count_payments("alice", "order-1").await.expect("count"), 1);

        let reused = store
            .authorize("r1", "alice", 2_000, USD, "order-2")
            .await
            .expect_err("a different amount under the same key");
        assert!(reused.to_string().contains("different payment"), "{reused}");
        assert_eq!(code(reused), Code::AlreadyExists);
        assert_eq!(balance(&store, "alice").await, 499_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_duplicates_make_one_payment_and_one_debit() {
        let (_dir, store) = store().await;
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.authorize("same-key", "alice", 7_000, USD, "order-9").await })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            let payment = task.await.expect("task").expect("authorize");
            assert_eq!(payment.status, PaymentStatus::Authorized);
            ids.push(payment.payment_id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "every duplicate returns the first payment");
        assert_eq!(store.count_payments("alice", "order-9").await.expect("count"), 1);
        assert_eq!(balance(&store, "alice").await, 500_000 - 7_000);
        assert_ledger_consistent(&store).await;
    }

    #[tokio::test]
    async fn declines_are_stored_results_with_their_reason() {
        let (_dir, store) = store().await;
        let cases = [
            ("bob", 2_001, DeclineReason::InsufficientFunds),
            ("carol", 100, DeclineReason::AccountBlocked),
            ("dave", 10_001, DeclineReason::AmountOverLimit),
        ];
        for (account_id, amount, reason) in cases {
            let before = balance(&store, account_id).await;
            let payment = store
                .authorize(&format!("{account_id}-1"), account_id, amount, USD, "")
                .await
                .expect("a decline is not an error");
            assert_eq!(payment.status, PaymentStatus::Declined, "{account_id}");
            assert_eq!(payment.decline_reason, Some(reason), "{account_id}");
            assert_eq!(store.payment(&payment.payment_id).await.expect("stored"), payment);
            assert_eq!(balance(&store, account_id).await, before, "{account_id}");
        }
        // Exactly at the limits is allowed.
        let bob = store
            .authorize("bob-2", "bob", 2_000, USD, "")
            .await
            .expect("bob");
        assert_eq!(bob.status, PaymentStatus::Authorized);
        let dave = store
            .authorize("dave-2", "dave", 10_000, USD, "")
            .await
            .expect("dave");
        assert_eq!(dave.status, PaymentStatus::Authorized);
        assert_ledger_consistent(&store).await;
    }

    #[tokio::test]
    async fn credit_lets_the_balance_go_negative_down_to_the_limit() {
        let (_dir, store) = store().await;
        let payment = store.authorize("e1", "erin", 6_000, USD, "").await.expect("erin");
        assert_eq!(payment.status, PaymentStatus::Authorized);
        assert_eq!(balance(&store, "erin").await, -5_000);
        let over = store.authorize("e2", "erin", 1, USD, "").await.expect("erin");
        assert_eq!(over.decline_reason, Some(DeclineReason::InsufficientFunds));
        assert_eq!(store.account("erin").await.expect("erin").available_minor(), 0);
        assert_ledger_consistent(&store).await;
    }

    #[tokio::test]
    async fn a_declined_replay_returns_the_decline_even_when_funds_returned() {
        let (_dir, store) = store().await;
        let held = store.authorize("b1", "bob", 1_500, USD, "").await.expect("hold");
        let declined = store
            .authorize("b2", "bob", 1_000, USD, "")
            .await
            .expect("decline");
        assert_eq!(declined.decline_reason, Some(DeclineReason::InsufficientFunds));
        store.void(&held.payment_id, "v1").await.expect("void");
        assert_eq!(balance(&store, "bob").await, 2_000);

        let replay = store
            .authorize("b2", "bob", 1_000, USD, "")
            .await
            .expect("replay");
        assert_eq!(replay.payment_id, declined.payment_id);
        assert_eq!(replay.status, PaymentStatus::Declined);
        assert_eq!(balance(&store, "bob").await, 2_000);
    }

    #[tokio::test]
    async fn void_restores_the_balance_and_a_voided_payment_cannot_be_captured() {
        let (_dir, store) = store().await;
        let payment = store
            .authorize("r1", "alice", 50_000, USD, "")
            .await
            .expect("authorize");
        let voided = store.void(&payment.payment_id, "v1").await.expect("void");
        assert_eq!(voided.status, PaymentStatus::Voided);
        assert_eq!(balance(&store, "alice").await, 500_000);
        assert_eq!(
            store.ledger_balance(&holds_ledger("alice")).await.expect("holds"),
            0
        );
        // The void's key replays; reused for a capture it is refused.
        let replay = store.void(&payment.payment_id, "v1").await.expect("replay");
        assert_eq!(replay.status, PaymentStatus::Voided);
        assert_eq!(balance(&store, "alice").await, 500_000);
        let reused = store
            .capture(&payment.payment_id, "v1")
            .await
            .expect_err("reused key");
        assert_eq!(code(reused), Code::AlreadyExists);

        let refused = store
            .capture(&payment.payment_id, "c1")
            .await
            .expect_err("voided");
        assert!(
            refused.to_string().contains("is VOIDED, cannot capture"),
            "{refused}"
        );
        assert_eq!(code(refused), Code::FailedPrecondition);
        assert_eq!(store.ledger_balance(MERCHANT_REVENUE).await.expect("revenue"), 0);
        assert_ledger_consistent(&store).await;
    }

    #[tokio::test]
    async fn refund_restores_the_balance_and_needs_a_capture() {
        let (_dir, store) = store().await;
        let payment = store
            .authorize("r1", "alice", 30_000, USD, "")
            .await
            .expect("authorize");
        let early = store
            .refund(&payment.payment_id, "f0")
            .await
            .expect_err("not captured");
        assert_eq!(code(early), Code::FailedPrecondition);

        store.capture(&payment.payment_id, "c1").await.expect("capture");
        let refunded = store.refund(&payment.payment_id, "f1").await.expect("refund");
        assert_eq!(refunded.status, PaymentStatus::Refunded);
        assert_eq!(balance(&store, "alice").await, 500_000);
        assert_eq!(store.ledger_balance(MERCHANT_REVENUE).await.expect("revenue"), 0);
        let again = store.refund(&payment.payment_id, "f2").await.expect("by state");
        assert_eq!(again.status, PaymentStatus::Refunded);
        assert_eq!(balance(&store, "alice").await, 500_000);
        assert_ledger_consistent(&store).await;
    }

    #[tokio::test]
    async fn unknown_ids_and_foreign_currencies_are_refused() {
        let (_dir, store) = store().await;
        let unknown = store
            .authorize("r1", "nobody", 100, USD, "")
            .await
            .expect_err("unknown");
        assert_eq!(code(unknown), Code::NotFound);
        let euros = store
            .authorize("r2", "alice", 100, "EUR", "")
            .await
            .expect_err("EUR");
        assert!(euros.to_string().contains("USD") && euros.to_string().contains("EUR"));
        assert_eq!(code(euros), Code::FailedPrecondition);
        let missing = store.capture("no-such-payment", "c1").await.expect_err("missing");
        assert_eq!(code(missing), Code::NotFound);
        // A refused call records nothing: the key stays free.
        assert!(store.payment_by_request("r2").await.expect("lookup").is_none());
    }

    #[tokio::test]
    async fn payments_page_newest_first_and_filters_by_account() {
        let (_dir, store) = store().await;
        let mut made = Vec::new();
        for i in 0..3 {
            let p = store
                .authorize(&format!("a{i}"), "alice", 100, USD, "")
                .await
                .expect("alice");
            made.push(p.payment_id);
        }
        store.authorize("b0", "bob", 100, USD, "").await.expect("bob");

        let first = store.payments_page(Some("alice"), None, 2).await.expect("page 1");
        let ids: Vec<_> = first.iter().map(|p| p.payment_id.clone()).collect();
        assert_eq!(ids, [made[2].clone(), made[1].clone()]);
        let last = first.last().expect("a payment");
        let cursor = PaymentCursor {
            create_time: last.create_time,
            payment_id: last.payment_id.clone(),
        };
        let second = store
            .payments_page(Some("alice"), Some(&cursor), 2)
            .await
            .expect("page 2");
        let ids: Vec<_> = second.iter().map(|p| p.payment_id.clone()).collect();
        assert_eq!(ids, [made[0].clone()]);
        assert_eq!(store.payments_page(None, None, 10).await.expect("all").len(), 4);
    }
}
