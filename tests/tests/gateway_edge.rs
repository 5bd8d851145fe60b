//! The gateway's edge, proved against a recording stand-in upstream (so what
//! is forwarded, and what is not, is observable): JWT refusals that never
//! reach a service, spoofed identity replaced by the verified one, per-route
//! scopes, rate limits per principal on REST (429 + Retry-After) and gRPC
//! (RESOURCE_EXHAUSTED), request ids, CORS, gzip and the body limit.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ordermesh_proto::payment::v1::GetAccountRequest;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh_tests::gateway::{Gateway, Recorder, http_client};
use serde_json::{Value, json};

const ACCOUNT: &str = "/v1/accounts/alice";
const GET_ACCOUNT: &str = "/ordermesh.payment.v1.PaymentService/GetAccount";

/// `GetAccountRequest { account_id }` in one uncompressed gRPC frame (flag,
/// big-endian length, message), as grpc-web and gRPC carry it.
fn get_account_frame(account_id: String) -> Vec<u8> {
    let message = prost::Message::encode_to_vec(&GetAccountRequest { account_id });
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).expect("fits").to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

async fn setup(file: Option<&str>) -> (Recorder, Gateway) {
    let recorder = Recorder::start().await;
    let gateway = Gateway::start([recorder.url(), recorder.url(), recorder.url()], file).await;
    (recorder, gateway)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn claims(overrides: Value) -> Value {
    let mut claims = json!({"sub": "alice", "scope": "payments:read", "iss": "ordermesh-test",
        "aud": "ordermesh", "exp": now() + 600});
    for (key, value) in overrides.as_object().expect("object") {
        claims[key] = value.clone();
    }
    claims
}

fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

async fn get(gateway: &Gateway, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = http_client().get(gateway.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("send")
}

/// GetAccount over native gRPC through the gateway, with a bearer token and
/// extra metadata; the recorder (or the gateway) always refuses it.
async fn grpc_get_account(
    gateway: &Gateway,
    token: Option<&str>,
    extra: &[(&'static str, &str)],
) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(gateway.url(""))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut request = tonic::Request::new(GetAccountRequest {
        account_id: "alice".to_owned(),
    });
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    for (key, value) in extra {
        request
            .metadata_mut()
            .insert(*key, value.parse().expect("header"));
    }
    PaymentServiceClient::new(channel)
        .get_account(request)
        .await
        .expect_err("refused by the gateway or the recorder")
}

#[tokio::test]
async fn bad_tokens_are_refused_and_never_forwarded() {
    let (recorder, gateway) = setup(None).await;
    let secret = gateway.secret();
    let rsa = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gateway/tests/keys/rsa-private.pem"
    ))
    .expect("test key");
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
    );
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("no token", None, 401),
        ("garbage", Some("not.a.jwt".to_owned()), 401),
        (
            "expired",
            Some(hs256(&secret, &claims(json!({"exp": now() - 3600})))),
            401,
        ),
        (
            "not yet valid",
            Some(hs256(&secret, &claims(json!({"nbf": now() + 3600})))),
            401,
        ),
        (
            "wrong audience",
            Some(hs256(&secret, &claims(json!({"aud": "someone-else"})))),
            401,
        ),
        (
            "wrong issuer",
            Some(hs256(&secret, &claims(json!({"iss": "evil"})))),
            401,
        ),
        (
            "bad signature",
            Some(hs256("another-secret-of-at-least-32-bytes!!", &claims(json!({})))),
            401,
        ),
        ("alg none", Some(alg_none), 401),
        (
            "RS256 where the key is HS256",
            Some(
                jsonwebtoken::encode(
                    &Header::new(Algorithm::RS256),
                    &claims(json!({})),
                    &EncodingKey::from_rsa_pem(&rsa).expect("rsa key"),
                )
                .expect("sign"),
            ),
            401,
        ),
        (
            "missing scope",
            Some(hs256(&secret, &claims(json!({"scope": "orders:read"})))),
            403,
        ),
        (
            "a subject with CR LF (header injection)",
            Some(hs256(
                &secret,
                &claims(json!({"sub": "bob\r\nx-ordermesh-scopes: admin"})),
            )),
            401,
        ),
        (
            "a subject with NUL",
            Some(hs256(&secret, &claims(json!({"sub": "bob\u{0}"})))),
            401,
        ),
        (
            "a non-ASCII subject",
            Some(hs256(&secret, &claims(json!({"sub": "bøb"})))),
            401,
        ),
        (
            "a customer_id with LF",
            Some(hs256(&secret, &claims(json!({"customer_id": "alice\nbob"})))),
            401,
        ),
    ];
    for (case, token, want) in cases {
        let response = get(&gateway, ACCOUNT, token.as_deref()).await;
        assert_eq!(response.status().as_u16(), want, "{case}");
        if want == 401 {
            // RFC 6750: the bare challenge without credentials, the error
            // code only for a token that was refused.
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(
                challenge.starts_with("Bearer realm=\"ordermesh\""),
                "{case}: {challenge}"
            );
            assert_eq!(
                challenge.contains("error=\"invalid_token\""),
                token.is_some(),
                "{case}: {challenge}"
            );
        }
        let body: Value = response.json().await.expect("status JSON");
        assert_eq!(body["code"], if want == 401 { 16 } else { 7 }, "{case}: {body}");
    }
    assert!(
        recorder.seen().is_empty(),
        "a refused call never reaches a service: {:?}",
        recorder.seen()
    );

    // gRPC callers are refused the same way.
    let refused = grpc_get_account(&gateway, None, &[]).await;
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(recorder.seen().is_empty());
}

#[tokio::test]
async fn the_verified_identity_replaces_a_spoofed_one() {
    let (recorder, gateway) = setup(Some(
        "[[routes]]\nrpc = \"/ordermesh.payment.v1.PaymentService/GetPayment\"\npublic = true\n",
    ))
    .await;
    let token = gateway.token("alice", &["payments:read"]);
    let response = http_client()
        .get(gateway.url(ACCOUNT))
        .bearer_auth(&token)
        .header("x-ordermesh-subject", "mallory")
        .header("x-ordermesh-scopes", "admin")
        .header("x-request-id", "req-42")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 404, "the recorder answers NOT_FOUND");
    assert_eq!(response.headers()["x-request-id"], "req-42", "propagated back");
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, GET_ACCOUNT);
    assert_eq!(seen[0].headers["x-ordermesh-subject"], "alice");
    assert_eq!(
        seen[0].headers["x-ordermesh-customer"], "alice",
        "the subject, without a customer_id claim"
    );
    assert_eq!(seen[0].headers["x-ordermesh-scopes"], "payments:read");
    assert_eq!(seen[0].headers["x-request-id"], "req-42");
    assert!(
        seen[0].headers.contains_key("grpc-timeout"),
        "the deadline travels"
    );

    // Over native gRPC too, with a generated request id when none is sent.
    let status = grpc_get_account(
        &gateway,
        Some(&token),
        &[
            ("x-ordermesh-subject", "mallory"),
            ("x-ordermesh-scopes", "admin"),
        ],
    )
    .await;
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(
        status.message(),
        "recorded",
        "the upstream's own status passes through"
    );
    let seen = recorder.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["x-ordermesh-subject"], "alice");
    assert_eq!(seen[1].headers["x-ordermesh-scopes"], "payments:read");
    assert!(
        seen.iter().all(|s| !s.headers.contains_key("authorization")),
        "the bearer token stays at the edge"
    );
    assert!(!seen[1].headers["x-request-id"].is_empty());

    // A customer_id claim names the customer; a spoofed one is replaced.
    let claimed = gateway.token_with("u-1", &["payments:read"], Some("carol"));
    let response = http_client()
        .get(gateway.url(ACCOUNT))
        .bearer_auth(&claimed)
        .header("x-ordermesh-customer", "alice")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 404);
    let seen = recorder.seen();
    assert_eq!(seen[2].headers["x-ordermesh-subject"], "u-1");
    assert_eq!(seen[2].headers["x-ordermesh-customer"], "carol");

    // An anonymous call to a public route: the spoofed identity is dropped,
    // not passed on.
    let response = http_client()
        .get(gateway.url("/v1/payments/p-1"))
        .header("x-ordermesh-subject", "mallory")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 404);
    let seen = recorder.seen();
    assert_eq!(seen.len(), 4);
    assert!(
        seen[3].headers.get("x-ordermesh-subject").is_none(),
        "{:?}",
        seen[3].headers
    );
}

#[tokio::test]
async fn rate_limits_are_per_principal_and_per_route() {
    let (recorder, gateway) = setup(Some(
        r#"
[[routes]]
rpc = "/ordermesh.payment.v1.PaymentService/GetAccount"
rate_limit = { per_second = 1, burst = 3 }
"#,
    ))
    .await;
    let alice = gateway.token("alice", &["payments:read"]);
    let bob = gateway.token("bob", &["payments:read"]);
    for call in 0..3 {
        let response = get(&gateway, ACCOUNT, Some(&alice)).await;
        assert_eq!(response.status(), 404, "call {call} is within the burst");
    }
    let limited = get(&gateway, ACCOUNT, Some(&alice)).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["code"], 8);
    assert_eq!(
        body["details"][0]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    assert_eq!(recorder.seen().len(), 3, "the limited call was not forwarded");

    // Another principal, and another route of the same principal: untouched.
    assert_eq!(get(&gateway, ACCOUNT, Some(&bob)).await.status(), 404);
    assert_eq!(
        get(&gateway, "/v1/payments/p-1", Some(&alice)).await.status(),
        404
    );

    // gRPC callers share the bucket: alice is still over her limit.
    let status = grpc_get_account(&gateway, Some(&alice), &[]).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
}

#[tokio::test]
async fn cors_gzip_request_ids_and_the_body_limit() {
    let (_recorder, gateway) = setup(Some("[cors]\norigins = [\"http://shop.example\"]\n")).await;
    let client = http_client();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, gateway.url("/v1/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let allowed = preflight("http://shop.example").await.expect("preflight");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://shop.example"
    );
    let other = preflight("http://evil.example").await.expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // gzip when asked for (reqwest is built without automatic decompression here).
    let plain = reqwest::Client::builder().no_gzip().build().expect("client");
    let zipped = plain
        .get(gateway.url("/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("openapi");
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let response = client
        .get(gateway.url("/openapi.json"))
        .send()
        .await
        .expect("openapi");
    assert!(
        !response.headers()["x-request-id"].is_empty(),
        "generated when not sent"
    );
    let document: Value = response.json().await.expect("json");
    assert_eq!(document["openapi"], "3.1.0");

    let token = gateway.token("alice", &["orders:write"]);
    let huge = json!({"customer_id": "x".repeat(100 * 1024)});
    let response = client
        .post(gateway.url("/v1/orders"))
        .bearer_auth(&token)
        .json(&huge)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn grpc_web_text_reaches_the_service_as_grpc() {
    let (recorder, gateway) = setup(None).await;
    let token = gateway.token("alice", &["payments:read"]);
    // GetAccountRequest { account_id: "alice" }, base64-encoded as
    // grpc-web-text carries it.
    let frame = get_account_frame("alice".into());
    let response = http_client()
        .post(gateway.url(GET_ACCOUNT))
        .bearer_auth(&token)
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .body(base64::engine::general_purpose::STANDARD.encode(&frame))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("application/grpc-web-text"),
        "{content_type}"
    );
    // The upstream answered trailers-only: its status arrives in the headers
    // (a response with messages carries it in a base64 trailer frame).
    let header_status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = response.text().await.expect("body");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .expect("a base64 body");
    let trailers = String::from_utf8_lossy(&decoded);
    assert!(
        header_status.as_deref() == Some("5") || trailers.contains("grpc-status:5"),
        "the upstream's NOT_FOUND reaches the browser: headers {header_status:?}, trailers {trailers:?}"
    );
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, GET_ACCOUNT);
    assert_eq!(
        seen[0].headers["content-type"], "application/grpc",
        "translated to gRPC"
    );
    assert_eq!(seen[0].headers["x-ordermesh-subject"], "alice");
}

/// grpc-web-text whose base64 is broken is the caller's error
/// (INVALID_ARGUMENT, which clients do not retry), not an outage, and no
/// broken message reaches the service.
#[tokio::test]
async fn grpc_web_text_with_broken_base64_is_invalid_argument() {
    let (recorder, gateway) = setup(None).await;
    let token = gateway.token("alice", &["payments:read"]);
    let frame = get_account_frame("alice".into());
    let good = base64::engine::general_purpose::STANDARD.encode(&frame);
    for body in [
        "!!!!".to_owned(),
        "AAAA*AAA".to_owned(),
        "AAAAA".to_owned(),
        format!("{}%%%%", &good[..8]),
    ] {
        let response = http_client()
            .post(gateway.url(GET_ACCOUNT))
            .bearer_auth(&token)
            .header("content-type", "application/grpc-web-text")
            .header("accept", "application/grpc-web-text")
            .header("x-grpc-web", "1")
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200, "{body}");
        let header_status = response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let text = response.text().await.expect("body");
        let trailers = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        assert!(
            header_status.as_deref() == Some("3") || trailers.contains("grpc-status:3"),
            "{body}: INVALID_ARGUMENT, got headers {header_status:?}, trailers {trailers:?}"
        );
    }
    assert!(
        recorder.seen().is_empty(),
        "refused before anything was forwarded: {:?}",
        recorder.seen()
    );
}

/// The body limit holds for gRPC and grpc-web as for REST: a message larger
/// than it is refused RESOURCE_EXHAUSTED by the gateway, and never reaches
/// a service.
#[tokio::test]
async fn grpc_and_grpc_web_messages_over_the_body_limit_are_refused() {
    let (recorder, gateway) = setup(None).await;
    let token = gateway.token("alice", &["payments:read"]);
    // GetAccountRequest with a 6 MiB account id (the gateway's limit here is 64 KiB).
    let frame = get_account_frame("a".repeat(6 << 20));

    let response = http_client()
        .post(gateway.url(GET_ACCOUNT))
        .bearer_auth(&token)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(frame.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200, "grpc-web carries the status in-band");
    let status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = response.bytes().await.expect("body");
    let trailers = String::from_utf8_lossy(&body);
    assert!(
        status.as_deref() == Some("8") || trailers.contains("grpc-status:8"),
        "RESOURCE_EXHAUSTED: headers {status:?}, body {trailers:?}"
    );

    // Native gRPC, through a generated client.
    let channel = tonic::transport::Endpoint::from_shared(gateway.url(""))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = PaymentServiceClient::new(channel).max_encoding_message_size(16 << 20);
    let mut request = tonic::Request::new(GetAccountRequest {
        account_id: "a".repeat(6 << 20),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    let refused = client.get_account(request).await.expect_err("too large");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("limit"), "{}", refused.message());
    assert!(
        recorder.seen().is_empty(),
        "nothing reached the service: {:?}",
        recorder.seen()
    );
}

/// Writes `request` on a new connection and returns the status line.
async fn raw_status_line(gateway: &Gateway, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_http_1_1_request_without_host_is_a_400() {
    let (_recorder, gateway) = setup(None).await;
    let missing = raw_status_line(
        &gateway,
        "GET /openapi.json HTTP/1.1\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(missing.starts_with("HTTP/1.1 400"), "{missing}");
    let named = raw_status_line(
        &gateway,
        "GET /openapi.json HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(named.starts_with("HTTP/1.1 200"), "{named}");
    // HTTP/1.0 may leave it out.
    let old = raw_status_line(&gateway, "GET /openapi.json HTTP/1.0\r\n\r\n").await;
    assert!(old.contains(" 200"), "{old}");
}
