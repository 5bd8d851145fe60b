//! Accounts: seeded on start (with their opening balance posted to the
//! ledger) and read.

use ordermesh_runtime::clock;

use super::{Account, AccountStatus, EQUITY_OPENING, SeedAccount, Store, customer_ledger, ledger};
use crate::error::Error;

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
            let mut tx = self.db.write.begin().await?;
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
            .execute(&mut *tx)
            .await?;
            // Only a fresh row gets the opening entries: posting them for an
            // existing account would put its balance and ledger out of step.
            if inserted.rows_affected() == 1 && account.opening_balance_minor != 0 {
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
