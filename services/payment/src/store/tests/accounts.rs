//! Opening and crediting accounts through the store: idempotency by request
//! id, refusals, and the ledger staying balanced (on the fixture of
//! [`super`]).

use super::*;

fn new_account(id: &str, opening: i64) -> NewAccount {
    NewAccount {
        account_id: id.into(),
        display_name: format!("{id} display"),
        currency_code: USD.into(),
        opening_balance_minor: opening,
        credit_limit_minor: 0,
        payment_limit_minor: 1_000_000_000,
    }
}

async fn assert_balanced(store: &Store) {
    let check = store.verify_ledger().await.expect("verify");
    assert!(check.balanced(), "{check:?}");
}

#[tokio::test]
async fn open_account_posts_the_opening_balance_once_per_request_id() {
    let (_dir, store) = store().await;
    let equity_before = store.ledger_balance(EQUITY_OPENING).await.expect("equity");
    let opened = store
        .open_account("open-1", &new_account("zoe", 250_000))
        .await
        .expect("open");
    assert_eq!(opened.balance_minor, 250_000);
    assert_eq!(opened.status, AccountStatus::Active);
    assert_eq!(opened.display_name, "zoe display");
    assert_eq!(opened.payment_limit_minor, 1_000_000_000);

    // A repeat answers with the account and posts nothing.
    let again = store
        .open_account("open-1", &new_account("zoe", 250_000))
        .await
        .expect("replay");
    assert_eq!(again.account_id, "zoe");
    assert_eq!(again.balance_minor, 250_000);
    assert_eq!(
        store.ledger_balance(EQUITY_OPENING).await.expect("equity"),
        equity_before - 250_000
    );
    assert_eq!(
        store.customer_ledger_balance("zoe").await.expect("ledger"),
        250_000
    );

    // The key reused for different values; a new key for an existing account.
    let reused = store
        .open_account("open-1", &new_account("zoe", 1))
        .await
        .expect_err("reused");
    assert!(matches!(reused, Error::RequestIdReused { .. }), "{reused:?}");
    assert_eq!(code(reused), Code::AlreadyExists);
    let exists = store
        .open_account("open-2", &new_account("alice", 5))
        .await
        .expect_err("exists");
    assert!(matches!(exists, Error::AccountExists { .. }), "{exists:?}");
    assert_eq!(code(exists), Code::AlreadyExists);
    assert_eq!(
        store.account("alice").await.expect("alice").balance_minor,
        500_000
    );
    // The refused key stayed free: it can open another account.
    store
        .open_account("open-2", &new_account("yan", 0))
        .await
        .expect("the refused key is free");
    assert_eq!(store.customer_ledger_balance("yan").await.expect("ledger"), 0);
    assert_balanced(&store).await;
}

#[tokio::test]
async fn credit_adds_funds_once_per_request_id_and_an_opened_account_can_pay() {
    let (_dir, store) = store().await;
    store
        .open_account("open-w", &new_account("wes", 1_000))
        .await
        .expect("open");
    let credited = store
        .credit_account("credit-1", "wes", 9_000, USD)
        .await
        .expect("credit");
    assert_eq!(credited.balance_minor, 10_000);
    let replay = store
        .credit_account("credit-1", "wes", 9_000, USD)
        .await
        .expect("replay");
    assert_eq!(replay.balance_minor, 10_000, "credited once");
    let reused = store
        .credit_account("credit-1", "wes", 8_000, USD)
        .await
        .expect_err("reused for another amount");
    assert_eq!(code(reused), Code::AlreadyExists);
    let reused_kind = store
        .open_account("credit-1", &new_account("wes2", 9_000))
        .await
        .expect_err("a credit's key reused to open");
    assert_eq!(code(reused_kind), Code::AlreadyExists);

    // The credited money pays.
    let payment = store
        .authorize("pay-1", "wes", 9_500, USD, "order")
        .await
        .expect("authorize");
    assert_eq!(payment.status, PaymentStatus::Authorized);
    store
        .capture(&payment.payment_id, "pay-1c")
        .await
        .expect("capture");
    assert_eq!(store.account("wes").await.expect("wes").balance_minor, 500);
    assert_balanced(&store).await;
}

#[tokio::test]
async fn credits_to_unknown_accounts_or_in_another_currency_are_refused_and_keep_the_key_free() {
    let (_dir, store) = store().await;
    let unknown = store
        .credit_account("c-x", "nobody", 100, USD)
        .await
        .expect_err("unknown");
    assert_eq!(code(unknown), Code::NotFound);
    let foreign = store
        .credit_account("c-x", "alice", 100, "EUR")
        .await
        .expect_err("currency");
    assert_eq!(code(foreign), Code::FailedPrecondition);
    // Nothing recorded: the same key now credits alice in dollars.
    let alice = store
        .credit_account("c-x", "alice", 100, USD)
        .await
        .expect("credit");
    assert_eq!(alice.balance_minor, 500_100);
    assert_balanced(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicate_credits_credit_once() {
    let (_dir, store) = store().await;
    let credits = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.credit_account("dup", "bob", 700, USD).await })
    });
    for credit in futures::future::join_all(credits).await {
        let account = credit.expect("task").expect("every duplicate answers");
        assert_eq!(account.account_id, "bob");
    }
    assert_eq!(
        store.account("bob").await.expect("bob").balance_minor,
        2_000 + 700
    );
    assert_balanced(&store).await;
}
