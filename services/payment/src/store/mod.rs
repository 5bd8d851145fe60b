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
//!
//! # Layout
//! - this module: the stored types (typed rows, read with `FromRow`; enums
//!   stored as text and bound from their definitions).
//! - [`accounts`]: seeding, opening (`OpenAccount`), crediting and reading
//!   accounts.
//! - [`payments`]: reads, authorize, and void by authorization key (also in
//!   advance).
//! - [`operations`]: capture, void, refund and hold expiry of an authorized
//!   payment.
//! - [`ledger`]: posting movements and auditing the ledger.

// Column lists are macros so that queries are `concat!`ed at compile time
// (one fixed SQL text per query, nothing built at run time); the rows are
// read by name into the `FromRow` types below. Defined before the modules
// that use them.
macro_rules! account_columns {
    () => {
        "account_id, display_name, status, currency_code, balance_minor, credit_limit_minor,
         payment_limit_minor, create_time, update_time"
    };
}

macro_rules! payment_columns {
    () => {
        "payment_id, account_id, amount_minor, currency_code, status, decline_reason, void_reason,
         reference, expire_time, create_time, update_time"
    };
}

mod accounts;
mod ledger;
mod operations;
mod payments;
#[cfg(test)]
mod tests;

use std::time::Duration;

use ordermesh_events::Publisher;
use ordermesh_runtime::db::Db;
use ordermesh_runtime::text_enum;

use crate::error::Error;

pub use ledger::{LedgerCheck, LedgerCursor};

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
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    pub account_id: String,
    pub display_name: String,
    #[sqlx(try_from = "String")]
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

text_enum!(
    /// Why an authorization was declined; `NotDeclined` (stored empty) for
    /// every other payment.
    DeclineReason {
        NotDeclined => "",
        InsufficientFunds => "INSUFFICIENT_FUNDS",
        AccountBlocked => "ACCOUNT_BLOCKED",
        AmountOverLimit => "AMOUNT_OVER_LIMIT",
    }
);

text_enum!(
    /// Why a payment was voided; `NotVoided` (stored empty) unless VOIDED.
    VoidReason {
        NotVoided => "",
        Requested => "REQUESTED",
        HoldExpired => "HOLD_EXPIRED",
    }
);

text_enum!(
    /// What an OpenAccount or CreditAccount idempotency key was used for.
    AccountOperationKind { Open => "OPEN", Credit => "CREDIT" }
);

/// An account to open through the API (`OpenAccount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub account_id: String,
    pub display_name: String,
    pub currency_code: String,
    /// Zero or more; posted against `equity:opening`.
    pub opening_balance_minor: i64,
    pub credit_limit_minor: i64,
    pub payment_limit_minor: i64,
}

text_enum!(
    /// What an AuthorizePayment idempotency key was used for.
    KeyState { Authorized => "AUTHORIZED", VoidedInAdvance => "VOIDED_IN_ADVANCE" }
);

/// A payment from a customer account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Payment {
    pub payment_id: String,
    pub account_id: String,
    pub amount_minor: i64,
    pub currency_code: String,
    #[sqlx(try_from = "String")]
    pub status: PaymentStatus,
    /// Not `NotDeclined` exactly when `status` is `Declined`.
    #[sqlx(try_from = "String")]
    pub decline_reason: DeclineReason,
    #[sqlx(try_from = "String")]
    pub void_reason: VoidReason,
    pub reference: String,
    /// While authorized: when the hold lapses.
    pub expire_time: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// One half of a ledger movement.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LedgerEntry {
    pub entry_id: String,
    /// Empty for opening balances.
    pub payment_id: Option<String>,
    pub ledger_account: String,
    pub amount_minor: i64,
    pub currency_code: String,
    pub create_time: i64,
}

/// A keyset position in the newest-first payment listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentCursor {
    pub create_time: i64,
    pub payment_id: String,
}

#[derive(Clone)]
pub struct Store {
    db: Db,
    /// How long an uncaptured authorization holds its amount.
    hold: Duration,
    /// Writes each movement's event in the movement's transaction.
    events: Publisher,
}

impl Store {
    pub fn new(db: Db, hold: Duration, events: Publisher) -> Self {
        Self { db, hold, events }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}
