//! Store tests on a SQLite file (the PostgreSQL variants of the concurrent
//! cases live in the system tests, which run on both backends).

mod accounts;

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
    assert_eq!(payment.decline_reason, DeclineReason::NotDeclined);
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
        assert_eq!(payment.decline_reason, reason, "{account_id}");
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
    assert_eq!(over.decline_reason, DeclineReason::InsufficientFunds);
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
    assert_eq!(declined.decline_reason, DeclineReason::InsufficientFunds);
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

/// A store whose authorizations hold for `hold` only.
async fn store_with_hold(hold: std::time::Duration) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = ordermesh_runtime::db::sqlite_url(dir.path(), "payment").expect("sqlite url");
    let mut config = crate::Config::new(url);
    config.seed = crate::demo::accounts();
    config.authorization_hold = hold;
    let service = crate::build(config).await.expect("payment service builds");
    (dir, service.store().clone())
}

#[tokio::test]
async fn a_void_in_advance_makes_a_late_authorization_hold_nothing() {
    let (_dir, store) = store().await;
    assert_eq!(
        store
            .void_by_authorize_key("order-1:authorize", "order-1:void")
            .await
            .expect("void in advance"),
        None,
        "no authorization existed"
    );
    let late = store
        .authorize("order-1:authorize", "alice", 5_000, USD, "order-1")
        .await
        .expect_err("the key was voided");
    assert!(matches!(late, Error::AuthorizationVoided { .. }), "{late}");
    assert_eq!(code(late), Code::FailedPrecondition);
    assert_eq!(balance(&store, "alice").await, 500_000, "nothing held");
    assert_eq!(store.count_payments("alice", "order-1").await.expect("count"), 0);
    // Voiding again is harmless and still finds nothing.
    assert_eq!(
        store
            .void_by_authorize_key("order-1:authorize", "order-1:void")
            .await
            .expect("repeat"),
        None
    );
    assert_ledger_consistent(&store).await;
}

#[tokio::test]
async fn a_void_by_key_finds_and_voids_the_authorization_and_leaves_a_capture_alone() {
    let (_dir, store) = store().await;
    let held = store
        .authorize("o1:authorize", "alice", 7_000, USD, "o1")
        .await
        .expect("authorize");
    let voided = store
        .void_by_authorize_key("o1:authorize", "o1:void")
        .await
        .expect("void")
        .expect("the payment");
    assert_eq!(voided.payment_id, held.payment_id);
    assert_eq!(voided.status, PaymentStatus::Voided);
    assert_eq!(voided.void_reason, VoidReason::Requested);
    assert_eq!(balance(&store, "alice").await, 500_000);

    let captured = store
        .authorize("o2:authorize", "alice", 3_000, USD, "o2")
        .await
        .expect("authorize");
    store
        .capture(&captured.payment_id, "o2:capture")
        .await
        .expect("capture");
    let unchanged = store
        .void_by_authorize_key("o2:authorize", "o2:void")
        .await
        .expect("void of a captured payment answers")
        .expect("the payment");
    assert_eq!(
        unchanged.status,
        PaymentStatus::Captured,
        "nothing to void: refund it"
    );
    assert_eq!(balance(&store, "alice").await, 497_000);
    assert_ledger_consistent(&store).await;
}

#[tokio::test]
async fn an_uncaptured_hold_expires_and_releases_the_funds() {
    let (_dir, store) = store_with_hold(std::time::Duration::from_millis(50)).await;
    let swept = store
        .authorize("s1", "alice", 10_000, USD, "o-swept")
        .await
        .expect("authorize");
    let late = store
        .authorize("s2", "alice", 20_000, USD, "o-late")
        .await
        .expect("authorize");
    assert_eq!(swept.status, PaymentStatus::Authorized);
    assert!(swept.expire_time > swept.create_time);
    assert_eq!(balance(&store, "alice").await, 470_000);
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;

    // A capture that finds its hold lapsed is refused and releases it.
    let refused = store
        .capture(&late.payment_id, "c2")
        .await
        .expect_err("the hold lapsed");
    assert!(matches!(refused, Error::AuthorizationExpired { .. }), "{refused}");
    assert_eq!(code(refused), Code::FailedPrecondition);
    assert_eq!(
        store.payment(&late.payment_id).await.expect("late").void_reason,
        VoidReason::HoldExpired
    );
    // The sweep releases the other one.
    assert_eq!(store.expire_due().await.expect("sweep"), 1);
    let expired = store.payment(&swept.payment_id).await.expect("swept");
    assert_eq!(
        (expired.status, expired.void_reason),
        (PaymentStatus::Voided, VoidReason::HoldExpired)
    );
    assert_eq!(store.expire_due().await.expect("sweep again"), 0);
    assert_eq!(balance(&store, "alice").await, 500_000);
    assert_eq!(
        store.ledger_balance(&holds_ledger("alice")).await.expect("holds"),
        0
    );
    assert_ledger_consistent(&store).await;
}

#[tokio::test]
async fn the_ledger_audit_sums_per_currency_and_names_mismatched_accounts() {
    let (_dir, store) = store().await;
    let p = store
        .authorize("l1", "alice", 2_500, USD, "")
        .await
        .expect("authorize");
    store.capture(&p.payment_id, "l1c").await.expect("capture");
    let check = store.verify_ledger().await.expect("verify");
    assert!(check.balanced(), "{check:?}");
    assert_eq!(check.totals.get(USD), Some(&0));
    // Seeds post one pair per funded account (five with erin); the payment two.
    assert_eq!(check.entry_count, 2 * 5 + 4);

    let entries = store
        .ledger_entries(&holds_ledger("alice"), "", None, 10)
        .await
        .expect("entries");
    let amounts: Vec<i64> = entries.iter().map(|e| e.amount_minor).collect();
    assert_eq!(amounts, [2_500, -2_500], "hold then capture, in write order");
    let page = store
        .ledger_entries("", &p.payment_id, None, 3)
        .await
        .expect("page");
    assert_eq!(page.len(), 3);
    let rest = store
        .ledger_entries("", &p.payment_id, Some(&page[2].entry_id), 3)
        .await
        .expect("rest");
    assert_eq!(rest.len(), 1);

    // A balance changed behind the ledger's back is caught.
    sqlx::query("UPDATE accounts SET balance_minor = balance_minor + 1 WHERE account_id = 'bob'")
        .execute(&store.db().write)
        .await
        .expect("tamper");
    let check = store.verify_ledger().await.expect("verify");
    assert!(!check.balanced());
    assert_eq!(check.mismatched_account_ids, ["bob"]);
}
