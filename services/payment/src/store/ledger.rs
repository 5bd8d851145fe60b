//! The double-entry ledger: every movement is posted as two entries that sum
//! to zero, inside the transaction that moves the money; and the audit that
//! proves it (all entries sum to zero per currency, every account's balance
//! equals its ledger account) without database access, over the API.

use std::collections::BTreeMap;

use sqlx::AnyConnection;

use super::{LedgerEntry, Store, customer_ledger};
use crate::error::Error;

/// A keyset position in the ledger listing (entries in write order: their
/// ids are time-ordered UUIDv7).
pub type LedgerCursor = String;

/// The outcome of a ledger audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerCheck {
    /// Sum of all entries per currency; every value is zero in a sound ledger.
    pub totals: BTreeMap<String, i64>,
    /// Accounts whose `balance_minor` differs from their ledger account.
    pub mismatched_account_ids: Vec<String>,
    pub entry_count: i64,
}

impl LedgerCheck {
    pub fn balanced(&self) -> bool {
        self.totals.values().all(|total| *total == 0) && self.mismatched_account_ids.is_empty()
    }
}

#[derive(sqlx::FromRow)]
struct CurrencyTotal {
    currency_code: String,
    total: i64,
    entries: i64,
}

#[derive(sqlx::FromRow)]
struct AccountBalance {
    account_id: String,
    balance_minor: i64,
    ledger_minor: i64,
}

/// Writes one movement as its two ledger entries: `from` gives
/// `amount_minor`, `to` receives it.
pub(super) async fn post(
    conn: &mut AnyConnection,
    payment_id: Option<&str>,
    (from, to): (&str, &str),
    amount_minor: i64,
    currency_code: &str,
    now: i64,
) -> Result<(), Error> {
    let Some(negated) = amount_minor.checked_neg() else {
        return Err(Error::from(ordermesh_runtime::Infra::Corrupt(format!(
            "ledger amount {amount_minor} out of range"
        ))));
    };
    // Both halves in one statement: one round trip per movement.
    sqlx::query(
        "INSERT INTO ledger_entries (entry_id, payment_id, ledger_account, amount_minor, currency_code, create_time)
         VALUES ($1, $2, $3, $4, $5, $6), ($7, $2, $8, $9, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(payment_id.map(str::to_owned))
    .bind(from)
    .bind(negated)
    .bind(currency_code)
    .bind(now)
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(to)
    .bind(amount_minor)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// The sum of every ledger entry; zero unless an entry lost its pair.
    pub async fn ledger_sum(&self) -> Result<i64, Error> {
        let (sum,): (i64,) =
            sqlx::query_as("SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM ledger_entries")
                .fetch_one(&self.db.read)
                .await?;
        Ok(sum)
    }

    /// The balance of one ledger account, e.g. [`super::MERCHANT_REVENUE`].
    pub async fn ledger_balance(&self, ledger_account: &str) -> Result<i64, Error> {
        let (sum,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM ledger_entries WHERE ledger_account = $1",
        )
        .bind(ledger_account)
        .fetch_one(&self.db.read)
        .await?;
        Ok(sum)
    }

    /// The ledger's view of an account's balance; always equal to the
    /// account's `balance_minor`.
    pub async fn customer_ledger_balance(&self, account_id: &str) -> Result<i64, Error> {
        self.ledger_balance(&customer_ledger(account_id)).await
    }

    /// Entries in write order after `after`, optionally of one ledger account
    /// and/or one payment (empty filters match all), at most `limit`.
    pub async fn ledger_entries(
        &self,
        ledger_account: &str,
        payment_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<LedgerEntry>, Error> {
        Ok(sqlx::query_as::<_, LedgerEntry>(
            "SELECT entry_id, payment_id, ledger_account, amount_minor, currency_code, create_time
             FROM ledger_entries
             WHERE ($1 = '' OR ledger_account = $1) AND ($2 = '' OR payment_id = $2) AND entry_id > $3
             ORDER BY entry_id LIMIT $4",
        )
        .bind(ledger_account)
        .bind(payment_id)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Audits the ledger (see [`LedgerCheck`]). Reads run on one snapshot
    /// only on PostgreSQL's repeatable read; run it when no money is moving
    /// for an exact answer, as any audit of a live ledger must.
    pub async fn verify_ledger(&self) -> Result<LedgerCheck, Error> {
        let totals: Vec<CurrencyTotal> = sqlx::query_as(
            "SELECT currency_code, CAST(SUM(amount_minor) AS BIGINT) AS total, CAST(COUNT(*) AS BIGINT) AS entries
             FROM ledger_entries GROUP BY currency_code ORDER BY currency_code",
        )
        .fetch_all(&self.db.read)
        .await?;
        let balances: Vec<AccountBalance> = sqlx::query_as(
            "SELECT a.account_id, a.balance_minor,
                    CAST(COALESCE((SELECT SUM(e.amount_minor) FROM ledger_entries e
                                   WHERE e.ledger_account = $1 || a.account_id), 0) AS BIGINT)
                        AS ledger_minor
             FROM accounts a ORDER BY a.account_id",
        )
        // The customer ledger accounts' common prefix, from its one definition.
        .bind(customer_ledger(""))
        .fetch_all(&self.db.read)
        .await?;
        Ok(LedgerCheck {
            entry_count: totals.iter().map(|t| t.entries).sum(),
            totals: totals.into_iter().map(|t| (t.currency_code, t.total)).collect(),
            mismatched_account_ids: balances
                .into_iter()
                .filter(|b| b.balance_minor != b.ledger_minor)
                .map(|b| b.account_id)
                .collect(),
        })
    }
}
