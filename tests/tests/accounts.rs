//! Opening and crediting payment accounts over real gRPC, on SQLite and
//! PostgreSQL: an account opened through the API pays for orders through the
//! saga, a credit tops it up, both are idempotent by request id, and bad
//! requests name their fields.

use ordermesh_proto::common::v1::Money;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::payment::v1 as pb;
use ordermesh_tests::{Backend, Mesh, MeshOptions, both_backends};
use tonic::Code;
use tonic_types::StatusExt;

fn open_request(request_id: &str, account_id: &str, opening: i64) -> pb::OpenAccountRequest {
    pb::OpenAccountRequest {
        request_id: request_id.into(),
        account_id: account_id.into(),
        display_name: "Bench Customer".into(),
        opening_balance: Some(Money::new(opening, "USD")),
        credit_limit: None,
        payment_limit: None,
    }
}

fn credit_request(request_id: &str, account_id: &str, amount: i64) -> pb::CreditAccountRequest {
    pb::CreditAccountRequest {
        request_id: request_id.into(),
        account_id: account_id.into(),
        amount: Some(Money::new(amount, "USD")),
    }
}

/// An opened account pays for an order; a credit tops it up so the next
/// order goes through; repeats move no money; the ledger stays balanced.
async fn an_opened_and_credited_account_pays_through_the_saga(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let mut payment = mesh.payment.clone();
    // $300: one monitor ($279) fits, a second does not.
    let opened = payment
        .open_account(open_request("open-kim", "kim", 30_000))
        .await
        .expect("OpenAccount")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(opened.balance.as_ref().map(|m| m.amount_minor), Some(30_000));
    assert_eq!(opened.status(), pb::AccountStatus::Active);
    let replay = payment
        .open_account(open_request("open-kim", "kim", 30_000))
        .await
        .expect("replayed OpenAccount")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(replay.balance.as_ref().map(|m| m.amount_minor), Some(30_000));

    let first = mesh
        .create_order("kim-1", "kim", &[("MN-003", 1)])
        .await
        .expect("created");
    let (_, first) = mesh.wait_terminal(&first.order_id).await;
    assert_eq!(first.status(), order_pb::OrderStatus::Confirmed, "{first:?}");
    let second = mesh
        .create_order("kim-2", "kim", &[("MN-003", 1)])
        .await
        .expect("created");
    let (_, second) = mesh.wait_terminal(&second.order_id).await;
    assert_eq!(second.status(), order_pb::OrderStatus::Rejected);
    assert_eq!(second.reject_reason(), order_pb::RejectReason::InsufficientFunds);

    for _ in 0..2 {
        let credited = payment
            .credit_account(credit_request("credit-kim", "kim", 50_000))
            .await
            .expect("CreditAccount")
            .into_inner()
            .account
            .expect("account");
        assert_eq!(
            credited.balance.as_ref().map(|m| m.amount_minor),
            Some(30_000 - 27_900 + 50_000),
            "credited once"
        );
    }
    let third = mesh
        .create_order("kim-3", "kim", &[("MN-003", 1)])
        .await
        .expect("created");
    let (_, third) = mesh.wait_terminal(&third.order_id).await;
    assert_eq!(third.status(), order_pb::OrderStatus::Confirmed, "{third:?}");
    assert_eq!(mesh.balance("kim").await, 30_000 + 50_000 - 2 * 27_900);
    assert_eq!(
        mesh.payment_store
            .customer_ledger_balance("kim")
            .await
            .expect("ledger"),
        mesh.balance("kim").await
    );
    let check = payment
        .verify_ledger(pb::VerifyLedgerRequest {})
        .await
        .expect("VerifyLedger")
        .into_inner();
    assert!(check.balanced, "{check:?}");
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

/// Key reuse and existing accounts are ALREADY_EXISTS with their reasons;
/// invalid requests are INVALID_ARGUMENT naming the fields; unknown accounts
/// are NOT_FOUND.
async fn account_refusals_name_the_reason_and_the_field(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let mut payment = mesh.payment.clone();
    let exists = payment
        .open_account(open_request("open-alice", "alice", 1))
        .await
        .expect_err("alice exists");
    assert_eq!(exists.code(), Code::AlreadyExists);
    assert_eq!(
        exists.get_details_error_info().expect("ErrorInfo").reason,
        "ACCOUNT_EXISTS"
    );
    payment
        .open_account(open_request("open-lee", "lee", 100))
        .await
        .expect("open lee");
    let reused = payment
        .open_account(open_request("open-lee", "lee", 200))
        .await
        .expect_err("key reused with another balance");
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(
        reused.get_details_error_info().expect("ErrorInfo").reason,
        "REQUEST_ID_REUSED"
    );
    let unknown = payment
        .credit_account(credit_request("credit-x", "nobody", 100))
        .await
        .expect_err("unknown account");
    assert_eq!(unknown.code(), Code::NotFound);

    let invalid = payment
        .credit_account(pb::CreditAccountRequest {
            request_id: String::new(),
            account_id: "lee".into(),
            amount: Some(Money::new(0, "usd")),
        })
        .await
        .expect_err("invalid credit");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let fields: Vec<String> = invalid
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    for field in ["request_id", "amount.amount_minor", "amount.currency_code"] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
    assert_eq!(mesh.balance("lee").await, 100, "nothing credited by refusals");
    mesh.shutdown().await;
}

both_backends!(
    an_opened_and_credited_account_pays_through_the_saga,
    account_refusals_name_the_reason_and_the_field
);
