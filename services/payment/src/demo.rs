//! The demo customers `ordermesh up` seeds on first start, one per way an
//! order's payment can go, so the grpcurl walkthrough of docs/services.md can show each.

use crate::store::SeedAccount;

/// Demo accounts, in USD cents. None has credit, so each balance is also the
/// most it can spend.
pub fn accounts() -> Vec<SeedAccount> {
    [
        // alice: $5,000.00 and a $10,000.00 payment limit; every demo order
        // goes through.
        ("alice", "Alice Example", 500_000, 1_000_000, false),
        // bob: $20.00 and no credit; most orders are declined with
        // INSUFFICIENT_FUNDS.
        ("bob", "Bob Example", 2_000, 1_000_000, false),
        // carol: $1,000.00 but blocked; every order is declined with
        // ACCOUNT_BLOCKED.
        ("carol", "Carol Example", 100_000, 1_000_000, true),
        // dave: $1,000.00 but at most $100.00 per payment; larger orders are
        // declined with AMOUNT_OVER_LIMIT although the funds are there.
        ("dave", "Dave Example", 100_000, 10_000, false),
    ]
    .into_iter()
    .map(|(id, name, balance, payment_limit, blocked)| SeedAccount {
        account_id: id.into(),
        display_name: name.into(),
        currency_code: "USD".into(),
        opening_balance_minor: balance,
        credit_limit_minor: 0,
        payment_limit_minor: payment_limit,
        blocked,
    })
    .collect()
}
