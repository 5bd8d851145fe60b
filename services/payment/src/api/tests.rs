use super::*;

#[test]
fn payment_cursors_round_trip_and_malformed_tokens_name_page_token() {
    let token = paging::encode_token("1700000000000000:0190-abc");
    let cursor = decode_cursor(&token).expect("valid").expect("a cursor");
    assert_eq!(cursor.create_time, 1_700_000_000_000_000);
    assert_eq!(cursor.payment_id, "0190-abc");
    assert_eq!(decode_cursor("").expect("first page"), None);
    for key in ["no-colon", "soon:0190-abc", "17:"] {
        let err = decode_cursor(&paging::encode_token(key)).expect_err(key);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{key}");
        assert!(err.message().contains("page_token"), "{key}");
    }
}

#[test]
fn open_account_violations_name_every_field_and_defaults_apply() {
    let err = new_account(&pb::OpenAccountRequest {
        request_id: String::new(),
        account_id: "x".repeat(MAX_ID_LEN + 1),
        display_name: "n".repeat(MAX_NAME_LEN + 1),
        opening_balance: money(-1, "USD"),
        credit_limit: money(5, "EUR"),
        payment_limit: money(-3, "USD"),
    })
    .expect_err("invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for field in [
        "request_id",
        "account_id",
        "display_name",
        "opening_balance.amount_minor",
        "credit_limit.currency_code",
        "payment_limit.amount_minor",
    ] {
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    let missing = new_account(&pb::OpenAccountRequest {
        request_id: "r".into(),
        account_id: "a".into(),
        ..Default::default()
    })
    .expect_err("no opening balance");
    assert!(
        missing.message().contains("opening_balance"),
        "{}",
        missing.message()
    );

    let account = new_account(&pb::OpenAccountRequest {
        request_id: "r".into(),
        account_id: "acct".into(),
        display_name: " ".into(),
        opening_balance: money(100, "EUR"),
        credit_limit: None,
        payment_limit: None,
    })
    .expect("valid");
    assert_eq!(account.display_name, "acct");
    assert_eq!(account.currency_code, "EUR");
    assert_eq!(account.credit_limit_minor, 0);
    assert_eq!(account.payment_limit_minor, MAX_AMOUNT_MINOR);
}

#[tokio::test]
async fn every_authorize_violation_is_reported_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = ordermesh_runtime::db::sqlite_url(dir.path(), "payment").expect("url");
    let service = crate::build(crate::Config::new(url)).await.expect("build");
    let api = PaymentApi::new(service.store().clone(), ordermesh_runtime::actor::Trust::Network);
    let err = api
        .authorize_payment(Request::new(pb::AuthorizePaymentRequest {
            request_id: String::new(),
            account_id: "alice".into(),
            amount: money(0, "usd"),
            reference: String::new(),
        }))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for field in ["request_id", "amount.amount_minor", "amount.currency_code"] {
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
}
