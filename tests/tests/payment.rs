//! Payment under concurrency, over real gRPC, on SQLite and PostgreSQL:
//! capture, void and refund of one payment racing each other; an
//! authorization racing the void of its key; lapsed holds; the ledger audit
//! over the API.

use std::time::Duration;

use ordermesh_proto::common::v1::Money;
use ordermesh_proto::payment::v1 as pb;
use ordermesh_tests::{Backend, Mesh, MeshOptions, both_backends};
use tonic::Code;
use tonic_types::StatusExt;

async fn authorize(mesh: &Mesh, request_id: &str, amount: i64) -> Result<pb::Payment, tonic::Status> {
    let mut client = mesh.payment.clone();
    Ok(client
        .authorize_payment(pb::AuthorizePaymentRequest {
            request_id: request_id.into(),
            account_id: "alice".into(),
            amount: Some(Money::new(amount, "USD")),
            reference: request_id.into(),
        })
        .await?
        .into_inner()
        .payment
        .expect("payment"))
}

async fn ledger_entries(mesh: &Mesh, payment_id: &str) -> usize {
    let mut client = mesh.payment.clone();
    client
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            payment_id: payment_id.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("entries")
        .into_inner()
        .entries
        .len()
}

/// Capture and void of one payment at once: exactly one wins, the other is
/// refused, and the money moved once. Then refunds under different request
/// ids at once: one refund.
async fn capture_void_and_refund_race_on_one_payment(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let before = mesh.balance("alice").await;
    let mut captured = 0;
    for round in 0..12 {
        let payment = authorize(&mesh, &format!("race-{round}"), 1_000)
            .await
            .expect("authorize");
        let mut a = mesh.payment.clone();
        let mut b = mesh.payment.clone();
        let (capture, void) = tokio::join!(
            a.capture_payment(pb::CapturePaymentRequest {
                payment_id: payment.payment_id.clone(),
                request_id: format!("race-{round}:capture"),
            }),
            b.void_authorization(pb::VoidAuthorizationRequest {
                payment_id: payment.payment_id.clone(),
                request_id: format!("race-{round}:void"),
                authorize_request_id: String::new(),
            })
        );
        match (capture, void) {
            (Ok(_), Err(refused)) => {
                assert_eq!(refused.code(), Code::FailedPrecondition);
                captured += 1;
                // Refunds under three keys at once: one refund.
                let refunds = (0..3).map(|i| {
                    let mut client = mesh.payment.clone();
                    let payment_id = payment.payment_id.clone();
                    async move {
                        client
                            .refund_payment(pb::RefundPaymentRequest {
                                payment_id,
                                request_id: format!("race-{round}:refund-{i}"),
                            })
                            .await
                    }
                });
                for refunded in futures::future::join_all(refunds).await {
                    let refunded = refunded.expect("a refund of a refunded payment answers REFUNDED");
                    assert_eq!(
                        refunded.into_inner().payment.expect("payment").status(),
                        pb::PaymentStatus::Refunded
                    );
                }
                assert_eq!(
                    ledger_entries(&mesh, &payment.payment_id).await,
                    6,
                    "hold, capture, one refund"
                );
            }
            (Err(refused), Ok(voided)) => {
                assert_eq!(refused.code(), Code::FailedPrecondition);
                assert_eq!(
                    voided.into_inner().payment.expect("payment").status(),
                    pb::PaymentStatus::Voided
                );
                assert_eq!(ledger_entries(&mesh, &payment.payment_id).await, 4, "hold, void");
            }
            other => panic!("round {round}: exactly one of capture and void wins: {other:?}"),
        }
    }
    eprintln!("capture won {captured} of 12 races");
    assert_eq!(mesh.balance("alice").await, before, "every payment undone once");
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

/// An authorization racing the void of its key (compensation that runs
/// while the authorization is still in flight): whichever comes first,
/// nothing stays held once both answered, and a late authorization after
/// the void is refused.
async fn an_authorization_racing_the_void_of_its_key_holds_nothing(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let before = mesh.balance("alice").await;
    for round in 0..30 {
        let key = format!("order-{round}:authorize");
        let mut voider = mesh.payment.clone();
        let void = async {
            tokio::time::sleep(Duration::from_micros((round % 6) * 300)).await;
            voider
                .void_authorization(pb::VoidAuthorizationRequest {
                    payment_id: String::new(),
                    request_id: format!("order-{round}:void"),
                    authorize_request_id: key.clone(),
                })
                .await
                .expect("void by key")
                .into_inner()
                .payment
        };
        let (authorized, voided) = tokio::join!(authorize(&mesh, &key, 2_500), void);
        match (authorized, voided) {
            // The void came first: the key is voided in advance.
            (Err(late), None) => {
                assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
                let info = late.get_details_error_info().expect("ErrorInfo");
                assert_eq!(info.reason, "AUTHORIZATION_VOIDED");
            }
            // The authorization came first: the void found and voided it.
            (Ok(_), Some(payment)) => {
                assert_eq!(payment.status(), pb::PaymentStatus::Voided, "round {round}");
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(mesh.balance("alice").await, before, "nothing held");
    // And a retry of a voided authorization later is still refused.
    let again = authorize(&mesh, "order-0:authorize", 2_500).await;
    assert!(again.is_err() || again.is_ok_and(|p| p.status() == pb::PaymentStatus::Voided));
    assert_eq!(mesh.balance("alice").await, before);
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

/// Holds lapse on their own (the background sweep) and the ledger audit
/// over the API sees every entry.
async fn lapsed_holds_are_released_and_the_ledger_is_auditable(backend: Backend) {
    let mut options = MeshOptions::new(backend);
    options.authorization_hold = Duration::from_millis(300);
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let before = mesh.balance("alice").await;
    let held = authorize(&mesh, "held-1", 4_200).await.expect("authorize");
    assert!(held.expire_time.is_some(), "an authorization says when it lapses");
    assert_eq!(mesh.balance("alice").await, before - 4_200);
    let mut client = mesh.payment.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lapsed = loop {
        let payment = client
            .get_payment(pb::GetPaymentRequest {
                payment_id: held.payment_id.clone(),
            })
            .await
            .expect("payment")
            .into_inner()
            .payment
            .expect("payment");
        if payment.status() == pb::PaymentStatus::Voided {
            break payment;
        }
        assert!(tokio::time::Instant::now() < deadline, "the hold never lapsed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lapsed.void_reason(), pb::VoidReason::HoldExpired);
    assert_eq!(mesh.balance("alice").await, before, "the funds are back");

    let first = client
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            ledger_account: "holds:alice".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("entries")
        .into_inner();
    assert_eq!(first.entries.len(), 1);
    assert_eq!(
        first.entries[0].amount.as_ref().map(|m| m.amount_minor),
        Some(4_200)
    );
    let rest = client
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            ledger_account: "holds:alice".into(),
            page_size: 10,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .expect("entries")
        .into_inner();
    assert_eq!(
        rest.entries
            .iter()
            .map(|e| e.amount.as_ref().map(|m| m.amount_minor))
            .collect::<Vec<_>>(),
        [Some(-4_200)],
        "the hold, then its release"
    );
    let verified = client
        .verify_ledger(pb::VerifyLedgerRequest {})
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.balanced, "{verified:?}");
    assert_eq!(
        verified.totals.iter().map(|m| m.amount_minor).collect::<Vec<_>>(),
        [0]
    );
    assert!(verified.mismatched_account_ids.is_empty());
    mesh.shutdown().await;
}

/// An authorization and its replays: a hold answers its replay with the
/// same payment and two ledger entries, a reused key for another amount is
/// refused, and a decline (over alice's payment limit) is recorded under its key
/// and replayed as the same decline, nothing held. On PostgreSQL the hold
/// is one statement and the decline the transaction behind it, so this pins
/// that a hold that does not match leaves its key free for the decline;
/// and keyed operations (capture, void) likewise, below.
async fn holds_and_declines_are_recorded_once_per_key(backend: Backend) {
    let Some(mesh) = Mesh::start(MeshOptions::new(backend)).await else {
        return;
    };
    let before = mesh.balance("alice").await;
    let held = authorize(&mesh, "hold-once", 1_000).await.expect("held");
    assert_eq!(held.status(), pb::PaymentStatus::Authorized);
    let again = authorize(&mesh, "hold-once", 1_000).await.expect("replayed");
    assert_eq!(again.payment_id, held.payment_id);
    assert_eq!(ledger_entries(&mesh, &held.payment_id).await, 2);
    assert_eq!(mesh.balance("alice").await, before - 1_000, "held once");
    let reused = authorize(&mesh, "hold-once", 2_000)
        .await
        .expect_err("reused key");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");

    let declined = authorize(&mesh, "too-much", 1_000_000_000)
        .await
        .expect("declined");
    assert_eq!(declined.status(), pb::PaymentStatus::Declined);
    assert_eq!(declined.decline_reason(), pb::DeclineReason::AmountOverLimit);
    let replayed = authorize(&mesh, "too-much", 1_000_000_000)
        .await
        .expect("replayed");
    assert_eq!(
        (replayed.payment_id.as_str(), replayed.status()),
        (declined.payment_id.as_str(), pb::PaymentStatus::Declined)
    );
    assert_eq!(ledger_entries(&mesh, &declined.payment_id).await, 0);
    assert_eq!(mesh.balance("alice").await, before - 1_000, "nothing more held");

    // Keyed operations: a capture and its replay move the money once; its
    // key reused for a void of another, authorized payment is refused and
    // writes nothing (on PostgreSQL the void's status change and the key
    // are one statement: the key's conflict undoes the change).
    let capture = |payment_id: String| {
        let mut client = mesh.payment.clone();
        async move {
            client
                .capture_payment(pb::CapturePaymentRequest {
                    payment_id,
                    request_id: "capture-once".into(),
                })
                .await
                .map(|r| r.into_inner().payment.expect("payment"))
        }
    };
    let captured = capture(held.payment_id.clone()).await.expect("captured");
    assert_eq!(captured.status(), pb::PaymentStatus::Captured);
    let again = capture(held.payment_id.clone()).await.expect("replayed");
    assert_eq!(again.status(), pb::PaymentStatus::Captured);
    assert_eq!(ledger_entries(&mesh, &held.payment_id).await, 4, "hold, capture");
    let other = authorize(&mesh, "hold-other", 500).await.expect("held");
    let reused = mesh
        .payment
        .clone()
        .void_authorization(pb::VoidAuthorizationRequest {
            payment_id: other.payment_id.clone(),
            request_id: "capture-once".into(),
            authorize_request_id: String::new(),
        })
        .await
        .expect_err("the capture's key");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    let still = authorize(&mesh, "hold-other", 500).await.expect("replayed");
    assert_eq!(still.status(), pb::PaymentStatus::Authorized, "not voided");
    assert_eq!(ledger_entries(&mesh, &other.payment_id).await, 2, "the hold only");
    assert_eq!(mesh.balance("alice").await, before - 1_500);
    let voided = mesh
        .payment
        .clone()
        .void_authorization(pb::VoidAuthorizationRequest {
            payment_id: other.payment_id.clone(),
            request_id: "void-other".into(),
            authorize_request_id: String::new(),
        })
        .await
        .expect("voided under a key of its own");
    assert_eq!(
        voided.into_inner().payment.map(|p| p.status()),
        Some(pb::PaymentStatus::Voided)
    );
    assert_eq!(
        mesh.balance("alice").await,
        before - 1_000,
        "only the capture stays"
    );
    mesh.assert_invariants().await;
    mesh.shutdown().await;
}

both_backends!(
    holds_and_declines_are_recorded_once_per_key,
    capture_void_and_refund_race_on_one_payment,
    an_authorization_racing_the_void_of_its_key_holds_nothing,
    lapsed_holds_are_released_and_the_ledger_is_auditable,
);
