//! Accounts: seeded on start or opened through the API (each with its
//! opening balance posted to the ledger), credited, and read.
//!
//! Opening and crediting are idempotent by request id, like every movement
//! of money here: the key goes into `account_operations` first in the
//! transaction, so a repeat or a concurrent duplicate collides on it before
//! anything moves, and is answered from what the key recorded (the same
//! operation: the account as it is now; anything else: the key was reused).
//! Both post against `equity:opening`, so the ledger still sums to zero.

use sqlx::AnyConnection;

use ordermesh_runtime::{clock, db};

use super::{
    Account, AccountOperationKind, AccountStatus, EQUITY_OPENING, NewAccount, SeedAccount, Store,
    customer_ledger, ledger,
};
use crate::error::Error;

/// What an account idempotency key recorded.
#[derive(sqlx::FromRow)]
struct AccountOperation {
    #[sqlx(try_from = "String")]
    kind: AccountOperationKind,
    account_id: String,
    amount_minor: i64,
    currency_code: String,
}

/// Inserts an account row unless its id exists; true when it was created.
async fn insert_account(
    conn: &mut AnyConnection,
    account: &NewAccount,
    status: AccountStatus,
    now: i64,
) -> Result<bool, Error> {
    let inserted = sqlx::query(concat!(
        "INSERT INTO accounts (",
        account_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (account_id) DO NOTHING"
    ))
    .bind(&account.account_id)
    .bind(&account.display_name)
    .bind(status.as_str())
    .bind(&account.currency_code)
    .bind(account.opening_balance_minor)
    .bind(account.credit_limit_minor)
    .bind(account.payment_limit_minor)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Records an account idempotency key; false when the key is taken.
async fn claim_key(
    conn: &mut AnyConnection,
    request_id: &str,
    kind: AccountOperationKind,
    account_id: &str,
    amount_minor: i64,
    currency_code: &str,
    now: i64,
) -> Result<bool, Error> {
    let claimed = sqlx::query(
        "INSERT INTO account_operations (request_id, kind, account_id, amount_minor, currency_code, create_time)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(request_id)
    .bind(kind.as_str())
    .bind(account_id)
    .bind(amount_minor)
    .bind(currency_code)
    .bind(now)
    .execute(&mut *conn)
    .await;
    match claimed {
        Ok(_) => Ok(true),
        Err(e) if db::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl Store {
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
            let new = NewAccount {
                account_id: account.account_id.clone(),
                display_name: account.display_name.clone(),
                currency_code: account.currency_code.clone(),
                opening_balance_minor: account.opening_balance_minor,
                credit_limit_minor: account.credit_limit_minor,
                payment_limit_minor: account.payment_limit_minor,
            };
            let mut tx = self.db.begin().await?;
            // Only a fresh row gets the opening entries: posting them for an
            // existing account would put its balance and ledger out of step.
            if insert_account(&mut tx, &new, status, now).await? && account.opening_balance_minor != 0 {
                ledger::post(
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

    /// Opens an account (active) with its opening balance, once per
    /// `request_id`. A repeat returns the account; a new request for an
    /// existing account id is [`Error::AccountExists`].
    pub async fn open_account(&self, request_id: &str, account: &NewAccount) -> Result<Account, Error> {
        let now = clock::now_micros();
        let mut tx = self.db.begin().await?;
        let claimed = claim_key(
            &mut tx,
            request_id,
            AccountOperationKind::Open,
            &account.account_id,
            account.opening_balance_minor,
            &account.currency_code,
            now,
        )
        .await?;
        if !claimed {
            tx.rollback().await?;
            return self
                .replayed_account_operation(
                    request_id,
                    AccountOperationKind::Open,
                    &account.account_id,
                    account.opening_balance_minor,
                    &account.currency_code,
                )
                .await;
        }
        if !insert_account(&mut tx, account, AccountStatus::Active, now).await? {
            // Refused: the key stays free.
            tx.rollback().await?;
            return Err(Error::AccountExists {
                account_id: account.account_id.clone(),
            });
        }
        if account.opening_balance_minor != 0 {
            ledger::post(
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
        tracing::info!(account_id = %account.account_id, opening_balance_minor = account.opening_balance_minor, "account opened");
        self.account(&account.account_id).await
    }

    /// Adds `amount_minor` (positive) to an account's balance, once per
    /// `request_id`; returns the account afterwards.
    pub async fn credit_account(
        &self,
        request_id: &str,
        account_id: &str,
        amount_minor: i64,
        currency_code: &str,
    ) -> Result<Account, Error> {
        let now = clock::now_micros();
        let mut tx = self.db.begin().await?;
        let claimed = claim_key(
            &mut tx,
            request_id,
            AccountOperationKind::Credit,
            account_id,
            amount_minor,
            currency_code,
            now,
        )
        .await?;
        if !claimed {
            tx.rollback().await?;
            return self
                .replayed_account_operation(
                    request_id,
                    AccountOperationKind::Credit,
                    account_id,
                    amount_minor,
                    currency_code,
                )
                .await;
        }
        let credited = sqlx::query(
            "UPDATE accounts SET balance_minor = balance_minor + $1, update_time = $2
             WHERE account_id = $3 AND currency_code = $4",
        )
        .bind(amount_minor)
        .bind(now)
        .bind(account_id)
        .bind(currency_code)
        .execute(&mut *tx)
        .await?;
        if credited.rows_affected() != 1 {
            tx.rollback().await?;
            // Unknown account (NOT_FOUND), or one in another currency.
            let account = self.account(account_id).await?;
            return Err(Error::CurrencyMismatch {
                account_id: account_id.into(),
                account_currency: account.currency_code,
                requested: currency_code.into(),
            });
        }
        ledger::post(
            &mut tx,
            None,
            (EQUITY_OPENING, &customer_ledger(account_id)),
            amount_minor,
            currency_code,
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(account_id, amount_minor, "account credited");
        self.account(account_id).await
    }

    /// The answer to an account operation whose request id is taken: the
    /// account when the key recorded this very operation, else the key was
    /// reused.
    async fn replayed_account_operation(
        &self,
        request_id: &str,
        kind: AccountOperationKind,
        account_id: &str,
        amount_minor: i64,
        currency_code: &str,
    ) -> Result<Account, Error> {
        let recorded = sqlx::query_as::<_, AccountOperation>(
            "SELECT kind, account_id, amount_minor, currency_code FROM account_operations WHERE request_id = $1",
        )
        .bind(request_id)
        .fetch_optional(&self.db.read)
        .await?;
        let Some(recorded) = recorded else {
            return Err(Error::from(ordermesh_runtime::Infra::Corrupt(format!(
                "no account operation for conflicting request_id {request_id:?}"
            ))));
        };
        if recorded.kind == kind
            && recorded.account_id == account_id
            && recorded.amount_minor == amount_minor
            && recorded.currency_code == currency_code
        {
            self.account(account_id).await
        } else {
            Err(Error::RequestIdReused {
                request_id: request_id.into(),
                used_for: "account operation",
            })
        }
    }

    pub async fn account(&self, account_id: &str) -> Result<Account, Error> {
        sqlx::query_as::<_, Account>(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE account_id = $1"
        ))
        .bind(account_id)
        .fetch_optional(&self.db.read)
        .await?
        .ok_or_else(|| Error::AccountNotFound {
            account_id: account_id.into(),
        })
    }

    /// Accounts ordered by id after `after` (exclusive), at most `limit`.
    pub async fn accounts_after(&self, after: Option<&str>, limit: i64) -> Result<Vec<Account>, Error> {
        Ok(sqlx::query_as::<_, Account>(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE account_id > $1 ORDER BY account_id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }
}
