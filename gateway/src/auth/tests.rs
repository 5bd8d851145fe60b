use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::dev::{install_key, write_private_file};
use super::jwks::MAX_JWKS_LEN;
use super::*;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/keys/rsa-private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/keys/rsa-public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ec-private.pem");
const ED_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ed-private.pem");
const JWKS: &str = include_str!("../../tests/keys/jwks.json");

const SECRET: &str = "0123456789abcdef0123456789abcdef-dev-secret";

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims valid for ten minutes for subject `alice`.
fn claims() -> Value {
    json!({ "sub": "alice", "iat": now(), "exp": now() + 600 })
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

fn without(mut claims: Value, field: &str) -> Value {
    if let Some(map) = claims.as_object_mut() {
        map.remove(field);
    }
    claims
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn rs256(kid: Option<&str>, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("rsa key");
    sign(Algorithm::RS256, kid, &key, claims)
}

fn es256(kid: Option<&str>, claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE).expect("ec key");
    sign(Algorithm::ES256, kid, &key, claims)
}

fn eddsa(kid: Option<&str>, claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(ED_PRIVATE).expect("ed key");
    sign(Algorithm::EdDSA, kid, &key, claims)
}

/// A token from raw header/claims JSON and raw signature bytes (for forged tokens).
fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn bearer(token: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header value")
}

fn dev_config() -> AuthConfig {
    let mut config = AuthConfig::new(AuthMode::Development);
    config.hs256_secret = Some(SECRET.to_owned());
    config
}

async fn dev_auth() -> Authenticator {
    Authenticator::new(dev_config()).await.expect("dev authenticator")
}

/// The test JWKS with only the keys whose kid is in `kids`.
fn jwks_with(kids: &[&str]) -> String {
    let mut document: Value = serde_json::from_str(JWKS).expect("jwks json");
    if let Some(keys) = document["keys"].as_array_mut() {
        keys.retain(|key| kids.contains(&key["kid"].as_str().unwrap_or("")));
    }
    document.to_string()
}

fn write_jwks(dir: &tempfile::TempDir, body: &str) -> PathBuf {
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, body).expect("write jwks");
    path
}

async fn jwks_file_auth(body: &str) -> Result<Authenticator, AuthConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = AuthConfig::new(AuthMode::Production);
    config.jwks_file = Some(write_jwks(&dir, body));
    Authenticator::new(config).await
}

async fn check(auth: &Authenticator, token: &str) -> Result<Option<Principal>, AuthError> {
    auth.authenticate(Some(&bearer(token))).await
}

async fn subject(auth: &Authenticator, token: &str) -> String {
    match check(auth, token).await {
        Ok(Some(principal)) => principal.subject,
        other => panic!("expected a principal, got {other:?}"),
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------- header parsing

#[tokio::test]
async fn no_header_is_anonymous() {
    assert_eq!(dev_auth().await.authenticate(None).await, Ok(None));
}

#[tokio::test]
async fn valid_hs256_dev_token() {
    let auth = dev_auth().await;
    let principal = check(&auth, &hs256(&claims())).await;
    assert_eq!(
        principal,
        Ok(Some(Principal {
            subject: "alice".into(),
            customer: "alice".into(),
            scopes: BTreeSet::new()
        }))
    );
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let auth = dev_auth().await;
    let token = hs256(&claims());
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let value = http::HeaderValue::from_str(&format!("{scheme} {token}")).expect("value");
        assert!(
            matches!(auth.authenticate(Some(&value)).await, Ok(Some(_))),
            "{scheme}"
        );
    }
    // Extra spaces between scheme and token, and trailing whitespace, are tolerated.
    let value = http::HeaderValue::from_str(&format!("Bearer   {token}  ")).expect("value");
    assert!(matches!(auth.authenticate(Some(&value)).await, Ok(Some(_))));
}

#[tokio::test]
async fn missing_or_garbled_header_is_malformed() {
    let auth = dev_auth().await;
    let token = hs256(&claims());
    let cases = [
        token.clone(),            // no scheme
        format!("Basic {token}"), // wrong scheme
        format!("Bearer{token}"), // no separator
        format!("Token {token}"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        String::new(),
        "Bearer abc".to_owned(), // not three parts
        "Bearer a.b".to_owned(),
        "Bearer a.b.c.d".to_owned(),
        "Bearer !!!.b.c".to_owned(),          // charset
        format!("Bearer {token} extra"),      // two tokens
        "Bearer e30.e30.".to_owned(),         // `{}` header: no alg
        "Bearer bm90IGpzb24.e30.".to_owned(), // header is not JSON
        "Bearer ####".to_owned(),
        format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1)),
    ];
    for case in cases {
        let value = http::HeaderValue::from_str(&case).expect("value");
        let result = auth.authenticate(Some(&value)).await;
        assert!(
            matches!(result, Err(AuthError::Malformed(_))),
            "{case:.60}: {result:?}"
        );
    }
    let not_ascii = http::HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("opaque value");
    assert!(matches!(
        auth.authenticate(Some(&not_ascii)).await,
        Err(AuthError::Malformed(_))
    ));
}

#[tokio::test]
async fn garbled_payload_or_signature_is_refused() {
    let auth = dev_auth().await;
    let token = hs256(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    // Payload that is not base64/JSON: the signature no longer matches either way.
    let bad_payload = format!("{}.{}.{}", parts[0], "bm90IGpzb24", parts[2]);
    assert!(check(&auth, &bad_payload).await.is_err());
    let bad_signature = format!("{}.{}.{}", parts[0], parts[1], "AAAA");
    assert_eq!(check(&auth, &bad_signature).await, Err(AuthError::BadSignature));
    let empty_signature = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(check(&auth, &empty_signature).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn crit_header_is_refused() {
    let auth = dev_auth().await;
    let token = raw_token(
        &json!({ "alg": "HS256", "crit": ["exp"], "exp": 1 }),
        &claims(),
        b"sig",
    );
    assert!(matches!(check(&auth, &token).await, Err(AuthError::Malformed(_))));
}

// ---------------------------------------------------------------- claims

#[tokio::test]
async fn expired_token_is_refused() {
    let auth = dev_auth().await;
    let token = hs256(&with(claims(), "exp", json!(now() - 120)));
    assert_eq!(check(&auth, &token).await, Err(AuthError::Expired));
}

#[tokio::test]
async fn leeway_applies_to_exp_and_nbf() {
    // Default leeway 30 s: just-expired and just-not-yet-valid tokens still pass.
    let auth = dev_auth().await;
    assert!(
        check(&auth, &hs256(&with(claims(), "exp", json!(now() - 10))))
            .await
            .is_ok()
    );
    assert!(
        check(&auth, &hs256(&with(claims(), "nbf", json!(now() + 10))))
            .await
            .is_ok()
    );
    // Without leeway they fail.
    let mut config = dev_config();
    config.leeway = Duration::ZERO;
    let strict = Authenticator::new(config).await.expect("auth");
    assert_eq!(
        check(&strict, &hs256(&with(claims(), "exp", json!(now() - 10)))).await,
        Err(AuthError::Expired)
    );
    assert_eq!(
        check(&strict, &hs256(&with(claims(), "nbf", json!(now() + 10)))).await,
        Err(AuthError::NotYetValid)
    );
}

#[tokio::test]
async fn nbf_in_the_future_is_refused_and_in_the_past_accepted() {
    let auth = dev_auth().await;
    let future = hs256(&with(claims(), "nbf", json!(now() + 300)));
    assert_eq!(check(&auth, &future).await, Err(AuthError::NotYetValid));
    let past = hs256(&with(claims(), "nbf", json!(now() - 300)));
    assert!(check(&auth, &past).await.is_ok());
}

#[test]
fn the_operator_scope_implies_every_other() {
    let principal = |scopes: &[&str]| Principal {
        subject: "s".into(),
        customer: "s".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    };
    assert!(principal(&["orders:read"]).has_scope("orders:read"));
    assert!(!principal(&["orders:read"]).has_scope("orders:write"));
    assert!(!principal(&["administrator"]).has_scope("orders:write"));
    assert!(principal(&["admin"]).has_scope("orders:write"));
    assert!(principal(&["admin"]).has_scope("inventory:admin"));
}

#[tokio::test]
async fn identity_claims_must_be_printable_ascii() {
    let auth = dev_auth().await;
    for bad in ["ali\rce", "ali\nce", "ali\u{0}ce", "alicé", "ali\u{7f}ce", "\t"] {
        assert_eq!(
            check(&auth, &hs256(&with(claims(), "sub", json!(bad)))).await,
            Err(AuthError::NotHeaderSafe("sub")),
            "sub {bad:?}"
        );
        assert_eq!(
            check(&auth, &hs256(&with(claims(), "customer_id", json!(bad)))).await,
            Err(AuthError::NotHeaderSafe("customer_id")),
            "customer_id {bad:?}"
        );
    }
    // The edges of the printable range pass.
    let edge = check(&auth, &hs256(&with(claims(), "sub", json!(" a~")))).await;
    assert_eq!(edge.expect("accepted").expect("principal").subject, " a~");
}

#[tokio::test]
async fn the_customer_is_the_customer_id_claim_else_the_subject() {
    let auth = dev_auth().await;
    let own = check(&auth, &hs256(&claims()))
        .await
        .expect("ok")
        .expect("principal");
    assert_eq!(own.customer, "alice");
    let claimed = check(&auth, &hs256(&with(claims(), "customer_id", json!("carol"))))
        .await
        .expect("ok")
        .expect("principal");
    assert_eq!(
        (claimed.subject.as_str(), claimed.customer.as_str()),
        ("alice", "carol")
    );
    let empty = check(&auth, &hs256(&with(claims(), "customer_id", json!(""))))
        .await
        .expect("ok")
        .expect("principal");
    assert_eq!(empty.customer, "alice", "an empty claim is no claim");
}

#[tokio::test]
async fn exp_and_sub_are_required() {
    let auth = dev_auth().await;
    assert_eq!(
        check(&auth, &hs256(&without(claims(), "exp"))).await,
        Err(AuthError::MissingClaim("exp"))
    );
    assert_eq!(
        check(&auth, &hs256(&without(claims(), "sub"))).await,
        Err(AuthError::MissingClaim("sub"))
    );
    assert_eq!(
        check(&auth, &hs256(&with(claims(), "sub", json!("")))).await,
        Err(AuthError::MissingClaim("sub"))
    );
    // An `exp` that is not a number is no valid `exp` at all.
    assert_eq!(
        check(&auth, &hs256(&with(claims(), "exp", json!("tomorrow")))).await,
        Err(AuthError::MissingClaim("exp"))
    );
}

async fn checked_auth() -> Authenticator {
    let mut config = dev_config();
    config.issuer = Some("https://id.ordermesh.test".into());
    config.audience = Some("ordermesh-gateway".into());
    Authenticator::new(config).await.expect("auth")
}

fn checked_claims() -> Value {
    let claims = with(claims(), "iss", json!("https://id.ordermesh.test"));
    with(claims, "aud", json!("ordermesh-gateway"))
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let auth = checked_auth().await;
    assert!(check(&auth, &hs256(&checked_claims())).await.is_ok());
    // `aud` may be a list containing ours.
    let listed = with(checked_claims(), "aud", json!(["other", "ordermesh-gateway"]));
    assert!(check(&auth, &hs256(&listed)).await.is_ok());
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let auth = checked_auth().await;
    let wrong = with(checked_claims(), "aud", json!("someone-else"));
    assert_eq!(check(&auth, &hs256(&wrong)).await, Err(AuthError::WrongAudience));
    let wrong_list = with(checked_claims(), "aud", json!(["a", "b"]));
    assert_eq!(
        check(&auth, &hs256(&wrong_list)).await,
        Err(AuthError::WrongAudience)
    );
    let missing = without(checked_claims(), "aud");
    assert_eq!(
        check(&auth, &hs256(&missing)).await,
        Err(AuthError::WrongAudience)
    );
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let auth = checked_auth().await;
    let wrong = with(checked_claims(), "iss", json!("https://evil.test"));
    assert_eq!(check(&auth, &hs256(&wrong)).await, Err(AuthError::WrongIssuer));
    let missing = without(checked_claims(), "iss");
    assert_eq!(check(&auth, &hs256(&missing)).await, Err(AuthError::WrongIssuer));
}

#[tokio::test]
async fn issuer_and_audience_are_ignored_when_not_configured() {
    let auth = dev_auth().await;
    assert!(check(&auth, &hs256(&checked_claims())).await.is_ok());
}

#[tokio::test]
async fn scopes_from_scope_string_and_scp_array() {
    let auth = dev_auth().await;
    let scoped = with(claims(), "scope", json!("orders:read  orders:write"));
    let principal = check(&auth, &hs256(&scoped))
        .await
        .expect("ok")
        .expect("principal");
    assert_eq!(principal.scopes, set(&["orders:read", "orders:write"]));
    assert!(principal.has_scope("orders:write"));
    assert!(!principal.has_scope("orders"));

    let scp = with(claims(), "scp", json!(["inventory:read", "payments:refund"]));
    let principal = check(&auth, &hs256(&scp)).await.expect("ok").expect("principal");
    assert_eq!(principal.scopes, set(&["inventory:read", "payments:refund"]));

    let both = with(scoped.clone(), "scp", json!(["orders:read", "admin"]));
    let principal = check(&auth, &hs256(&both)).await.expect("ok").expect("principal");
    assert_eq!(principal.scopes, set(&["admin", "orders:read", "orders:write"]));

    // A space-separated `scp` string (some issuers do this) is accepted too.
    let scp_string = with(claims(), "scp", json!("a b"));
    let principal = check(&auth, &hs256(&scp_string))
        .await
        .expect("ok")
        .expect("principal");
    assert_eq!(principal.scopes, set(&["a", "b"]));

    let wrong_type = with(claims(), "scope", json!(42));
    assert!(matches!(
        check(&auth, &hs256(&wrong_type)).await,
        Err(AuthError::Malformed(_))
    ));
}

// ---------------------------------------------------------------- signatures and algorithms

#[tokio::test]
async fn bad_signature_is_refused() {
    let auth = dev_auth().await;
    let other = EncodingKey::from_secret(b"another-secret-another-secret-another");
    let token = sign(Algorithm::HS256, None, &other, &claims());
    assert_eq!(check(&auth, &token).await, Err(AuthError::BadSignature));

    // A tampered payload under a genuine signature.
    let genuine = hs256(&claims());
    let parts: Vec<&str> = genuine.split('.').collect();
    let forged_claims = with(claims(), "sub", json!("root"));
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged_claims.to_string()),
        parts[2]
    );
    assert_eq!(check(&auth, &tampered).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let dev = dev_auth().await;
    let jwks = jwks_file_auth(JWKS).await.expect("jwks auth");
    for header in [
        json!({ "alg": "none" }),
        json!({ "alg": "none", "typ": "JWT" }),
        json!({ "alg": "None" }),
        json!({ "alg": "none", "kid": "rsa-1" }),
    ] {
        let token = raw_token(&header, &claims(), b"");
        for auth in [&dev, &jwks] {
            let result = check(auth, &token).await;
            assert!(
                matches!(
                    result,
                    Err(AuthError::AlgorithmNotAllowed | AuthError::UnknownKey)
                ),
                "{header}: {result:?}"
            );
        }
        // Where the key is unambiguous, the refusal is specifically about the algorithm.
        if header.get("kid").is_none() {
            assert_eq!(check(&dev, &token).await, Err(AuthError::AlgorithmNotAllowed));
        }
    }
    let with_kid = raw_token(&json!({ "alg": "none", "kid": "rsa-1" }), &claims(), b"");
    assert_eq!(check(&jwks, &with_kid).await, Err(AuthError::AlgorithmNotAllowed));
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: an attacker takes the published RSA public key and uses its bytes
    // as an HMAC secret. A verifier that lets the token choose HS256 would accept it.
    let only_rsa = jwks_with(&["rsa-1"]);
    let auth = jwks_file_auth(&only_rsa).await.expect("jwks auth");
    let der = pem_body(RSA_PUBLIC);
    let n = {
        let document: Value = serde_json::from_str(&only_rsa).expect("json");
        URL_SAFE_NO_PAD
            .decode(document["keys"][0]["n"].as_str().expect("n"))
            .expect("b64")
    };
    let secrets: [&[u8]; 4] = [RSA_PUBLIC, RSA_PUBLIC.trim_ascii_end(), &der, &n];
    for secret in secrets {
        let key = EncodingKey::from_secret(secret);
        for kid in [Some("rsa-1"), None] {
            let token = sign(Algorithm::HS256, kid, &key, &claims());
            assert_eq!(
                check(&auth, &token).await,
                Err(AuthError::AlgorithmNotAllowed),
                "kid {kid:?}"
            );
        }
    }
    // And the genuine RS256 token passes, so the refusal is about the algorithm.
    assert_eq!(subject(&auth, &rs256(Some("rsa-1"), &claims())).await, "alice");
}

fn pem_body(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).expect("utf8");
    let b64: String = text.lines().filter(|line| !line.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("pem base64")
}

#[tokio::test]
async fn token_alg_must_equal_the_keys_alg() {
    let auth = jwks_file_auth(JWKS).await.expect("jwks auth");
    // Signed with the EC key but naming the RSA key's kid: algorithm mismatch.
    assert_eq!(
        check(&auth, &es256(Some("rsa-1"), &claims())).await,
        Err(AuthError::AlgorithmNotAllowed)
    );
    // Case matters: "rs256" is not RS256.
    let token = rs256(Some("rsa-1"), &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let header = URL_SAFE_NO_PAD.encode(json!({ "alg": "rs256", "kid": "rsa-1" }).to_string());
    let relabelled = format!("{header}.{}.{}", parts[1], parts[2]);
    assert_eq!(
        check(&auth, &relabelled).await,
        Err(AuthError::AlgorithmNotAllowed)
    );
    // Same family, other hash: RS384 is not RS256.
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("rsa");
    let rs384 = sign(Algorithm::RS384, Some("rsa-1"), &key, &claims());
    assert_eq!(check(&auth, &rs384).await, Err(AuthError::AlgorithmNotAllowed));
}

#[tokio::test]
async fn rs256_es256_and_eddsa_from_a_jwks_file() {
    let auth = jwks_file_auth(JWKS).await.expect("jwks auth");
    assert_eq!(subject(&auth, &rs256(Some("rsa-1"), &claims())).await, "alice");
    assert_eq!(subject(&auth, &es256(Some("ec-1"), &claims())).await, "alice");
    assert_eq!(subject(&auth, &eddsa(Some("ed-1"), &claims())).await, "alice");
    // Each key verifies only its own signatures: swap the kids around.
    assert_eq!(
        check(&auth, &eddsa(Some("ec-1"), &claims())).await,
        Err(AuthError::AlgorithmNotAllowed)
    );
    // Tampered payload under a genuine RS256/ES256/EdDSA signature.
    for token in [
        rs256(Some("rsa-1"), &claims()),
        es256(Some("ec-1"), &claims()),
        eddsa(Some("ed-1"), &claims()),
    ] {
        let parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!("root")).to_string());
        let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert_eq!(check(&auth, &tampered).await, Err(AuthError::BadSignature));
    }
}

#[tokio::test]
async fn kid_selection() {
    let auth = jwks_file_auth(JWKS).await.expect("jwks auth");
    assert_eq!(
        check(&auth, &rs256(Some("rsa-2"), &claims())).await,
        Err(AuthError::UnknownKey)
    );
    // Several keys and no kid: ambiguous, refused.
    assert_eq!(
        check(&auth, &rs256(None, &claims())).await,
        Err(AuthError::UnknownKey)
    );
    // Exactly one key: a token without kid uses it, one with another kid is still refused.
    let single = jwks_file_auth(&jwks_with(&["ec-1"])).await.expect("jwks auth");
    assert_eq!(subject(&single, &es256(None, &claims())).await, "alice");
    assert_eq!(
        check(&single, &es256(Some("ec-2"), &claims())).await,
        Err(AuthError::UnknownKey)
    );
    // A kid on an HS256 dev token does not match the (kid-less) secret.
    let dev = dev_auth().await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    assert_eq!(
        check(&dev, &sign(Algorithm::HS256, Some("x"), &key, &claims())).await,
        Err(AuthError::UnknownKey)
    );
}

#[tokio::test]
async fn development_accepts_a_secret_and_a_jwks_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = dev_config();
    config.jwks_file = Some(write_jwks(&dir, JWKS));
    let auth = Authenticator::new(config).await.expect("auth");
    // No kid: the only kid-less key, the secret.
    assert_eq!(subject(&auth, &hs256(&claims())).await, "alice");
    assert_eq!(subject(&auth, &rs256(Some("rsa-1"), &claims())).await, "alice");
    // An RS256 token without kid selects the HS256 secret and is refused for its algorithm.
    assert_eq!(
        check(&auth, &rs256(None, &claims())).await,
        Err(AuthError::AlgorithmNotAllowed)
    );
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn to_status_is_unauthenticated_and_never_echoes_the_token() {
    let auth = dev_auth().await;
    let expired = hs256(&with(claims(), "exp", json!(now() - 120)));
    let err = check(&auth, &expired).await.expect_err("expired");
    let status = err.to_status();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{}", status.message());
    for part in expired.split('.') {
        assert!(!status.message().contains(part));
    }
    // Attacker-controlled header fields are not reflected either.
    let hostile = raw_token(
        &json!({ "alg": "<script>", "kid": "<kid-payload>" }),
        &claims(),
        b"",
    );
    let err = check(&auth, &hostile).await.expect_err("refused");
    let message = err.to_status().message().to_owned();
    assert!(
        !message.contains("script") && !message.contains("kid-payload"),
        "{message}"
    );
}

#[test]
fn every_error_maps_to_unauthenticated() {
    for err in [
        AuthError::Malformed("x"),
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::WrongIssuer,
        AuthError::WrongAudience,
        AuthError::BadSignature,
        AuthError::UnknownKey,
        AuthError::AlgorithmNotAllowed,
        AuthError::NotHeaderSafe("sub"),
        AuthError::MissingClaim("sub"),
    ] {
        let status = err.to_status();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().starts_with("authentication failed: "));
    }
}

// ---------------------------------------------------------------- configuration

#[tokio::test]
async fn production_refuses_to_start_without_keys() {
    let err = Authenticator::new(AuthConfig::new(AuthMode::Production))
        .await
        .expect_err("no keys");
    assert!(matches!(err, AuthConfigError::NoKeys));
    let message = err.to_string();
    assert!(
        message.contains(ENV_JWKS_FILE) && message.contains(ENV_JWKS_URL),
        "{message}"
    );
    // Even with a dev key directory.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = AuthConfig::new(AuthMode::Production);
    config.dev_key_dir = Some(dir.path().to_owned());
    assert!(matches!(
        Authenticator::new(config).await,
        Err(AuthConfigError::NoKeys)
    ));
    assert!(
        !dir.path().join(DEV_KEY_FILE).exists(),
        "production never creates a dev key"
    );
}

#[tokio::test]
async fn production_refuses_an_hs256_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = AuthConfig::new(AuthMode::Production);
    config.hs256_secret = Some(SECRET.into());
    config.jwks_file = Some(write_jwks(&dir, JWKS));
    let err = Authenticator::new(config).await.expect_err("secret refused");
    assert!(matches!(err, AuthConfigError::SecretInProduction));
    assert!(err.to_string().contains(ENV_HS256_SECRET));
}

#[tokio::test]
async fn development_needs_some_key() {
    let err = Authenticator::new(AuthConfig::new(AuthMode::Development))
        .await
        .expect_err("no key");
    assert!(matches!(err, AuthConfigError::NoDevKey));
    assert!(err.to_string().contains(ENV_HS256_SECRET));
}

#[tokio::test]
async fn short_secret_is_refused() {
    let mut config = AuthConfig::new(AuthMode::Development);
    config.hs256_secret = Some("secret".into());
    let err = Authenticator::new(config).await.expect_err("weak");
    assert!(matches!(err, AuthConfigError::WeakSecret(6)));
    assert!(err.to_string().contains(ENV_HS256_SECRET));
}

fn jwks_of(keys: Vec<Value>) -> String {
    json!({ "keys": keys }).to_string()
}

fn jwks_key(kid: &str) -> Value {
    let document: Value = serde_json::from_str(JWKS).expect("json");
    document["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|key| key["kid"] == kid))
        .cloned()
        .expect("key in test jwks")
}

async fn jwks_error(body: &str) -> String {
    match jwks_file_auth(body).await {
        Ok(_) => panic!("expected the JWKS to be refused: {body}"),
        Err(err) => err.to_string(),
    }
}

#[tokio::test]
async fn jwks_key_without_alg_is_refused_naming_the_kid() {
    let message = jwks_error(&jwks_of(vec![without(jwks_key("rsa-1"), "alg")])).await;
    assert!(message.contains(ENV_JWKS_FILE), "{message}");
    assert!(message.contains("\"rsa-1\""), "{message}");
    assert!(message.contains("alg"), "{message}");
    // Without a kid, the key is named by its position.
    let message = jwks_error(&jwks_of(vec![
        jwks_key("ec-1"),
        without(without(jwks_key("rsa-1"), "alg"), "kid"),
    ]))
    .await;
    assert!(message.contains("#1 (no kid)"), "{message}");
}

#[tokio::test]
async fn jwks_keys_are_validated() {
    let cases: Vec<(Value, &str)> = vec![
        (with(jwks_key("rsa-1"), "alg", json!("HS256")), "symmetric"),
        (with(jwks_key("rsa-1"), "alg", json!("PS256")), "not supported"),
        (with(jwks_key("rsa-1"), "alg", json!("none")), "not supported"),
        (with(jwks_key("rsa-1"), "alg", json!("ES256")), "kty"),
        (with(jwks_key("ec-1"), "alg", json!("RS256")), "kty"),
        (with(jwks_key("ec-1"), "crv", json!("P-384")), "P-256"),
        (with(jwks_key("ed-1"), "crv", json!("X25519")), "Ed25519"),
        (with(jwks_key("ed-1"), "x", json!("AAAA")), "32 bytes"),
        (with(jwks_key("ec-1"), "y", json!("!!")), "base64url"),
        (without(jwks_key("rsa-1"), "n"), "missing `n`"),
        (
            with(jwks_key("rsa-1"), "n", json!(URL_SAFE_NO_PAD.encode([0xff; 128]))),
            "1024 bits",
        ),
        (with(jwks_key("rsa-1"), "d", json!("AAAA")), "private"),
        (with(jwks_key("rsa-1"), "alg", json!(256)), "string"),
        (json!("not an object"), "object"),
    ];
    for (key, expected) in cases {
        let message = jwks_error(&jwks_of(vec![key.clone()])).await;
        assert!(message.contains(expected), "{key}: {message}");
    }
    for body in ["", "[]", "{}", r#"{"keys": {}}"#] {
        assert!(jwks_error(body).await.contains("not a JWKS document"));
    }
    assert!(
        jwks_error(&jwks_of(vec![]))
            .await
            .contains("no signature verification keys")
    );
}

#[tokio::test]
async fn jwks_conflicts_are_refused() {
    let duplicate = jwks_of(vec![
        jwks_key("rsa-1"),
        with(jwks_key("ec-1"), "kid", json!("rsa-1")),
    ]);
    assert!(jwks_error(&duplicate).await.contains("\"rsa-1\""));
    let two_without_kid = jwks_of(vec![
        without(jwks_key("rsa-1"), "kid"),
        without(jwks_key("ec-1"), "kid"),
    ]);
    assert!(jwks_error(&two_without_kid).await.contains("no kid"));
    // The dev secret counts as a kid-less key.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = dev_config();
    config.jwks_file = Some(write_jwks(
        &dir,
        &jwks_of(vec![without(jwks_key("rsa-1"), "kid"), jwks_key("ec-1")]),
    ));
    assert!(matches!(
        Authenticator::new(config).await,
        Err(AuthConfigError::Conflict(_))
    ));
}

#[tokio::test]
async fn encryption_keys_are_skipped() {
    let enc = with(
        with(jwks_key("rsa-1"), "use", json!("enc")),
        "alg",
        json!("RSA-OAEP"),
    );
    let enc = with(enc, "kid", json!("enc-1"));
    let auth = jwks_file_auth(&jwks_of(vec![enc.clone(), jwks_key("ec-1")]))
        .await
        .expect("enc key skipped");
    assert_eq!(subject(&auth, &es256(Some("ec-1"), &claims())).await, "alice");
    // Only encryption keys: nothing to verify with.
    assert!(
        jwks_error(&jwks_of(vec![enc]))
            .await
            .contains("no signature verification keys")
    );
}

#[tokio::test]
async fn unreadable_jwks_file_names_the_variable() {
    let mut config = AuthConfig::new(AuthMode::Production);
    config.jwks_file = Some(PathBuf::from("/nonexistent/ordermesh/jwks.json"));
    let message = Authenticator::new(config).await.expect_err("missing").to_string();
    assert!(
        message.contains(ENV_JWKS_FILE) && message.contains("/nonexistent/"),
        "{message}"
    );
}

#[tokio::test]
async fn production_requires_https_for_remote_jwks() {
    let mut config = AuthConfig::new(AuthMode::Production);
    config.jwks_url = Some("http://id.example.com/jwks.json".into());
    let message = Authenticator::new(config).await.expect_err("http").to_string();
    assert!(
        message.contains(ENV_JWKS_URL) && message.contains("https"),
        "{message}"
    );
    for bad in ["ftp://id.example.com/jwks", "not a url"] {
        let mut config = AuthConfig::new(AuthMode::Development);
        config.jwks_url = Some(bad.into());
        let message = Authenticator::new(config).await.expect_err("bad url").to_string();
        assert!(message.contains(ENV_JWKS_URL), "{message}");
    }
}

#[test]
fn mode_parses() {
    assert_eq!("production".parse::<AuthMode>().ok(), Some(AuthMode::Production));
    assert_eq!(
        "development".parse::<AuthMode>().ok(),
        Some(AuthMode::Development)
    );
    assert_eq!(
        " Production ".parse::<AuthMode>().ok(),
        Some(AuthMode::Production)
    );
    assert!("prod".parse::<AuthMode>().is_err());
    assert!("".parse::<AuthMode>().is_err());
    assert_eq!(AuthMode::Development.to_string(), "development");
}

#[test]
fn config_debug_redacts_the_secret() {
    let debug = format!("{:?}", dev_config());
    assert!(!debug.contains(SECRET) && debug.contains("[redacted]"), "{debug}");
}

// ---------------------------------------------------------------- dev key

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn dev_key_is_created_private_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_dir = dir.path().join("nested/state");
    let first = dev_key(&key_dir).expect("create");
    let path = key_dir.join(DEV_KEY_FILE);
    assert!(path.is_file());
    #[cfg(unix)]
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(first.len(), 43, "256 bits, base64url");
    assert_eq!(URL_SAFE_NO_PAD.decode(&first).expect("base64url").len(), 32);
    let second = dev_key(&key_dir).expect("load");
    assert_eq!(first, second, "the key is reused");
    // No temporary files left behind.
    let entries: Vec<_> = std::fs::read_dir(&key_dir).expect("dir").collect();
    assert_eq!(entries.len(), 1);
    // Another directory gets another key.
    let other = dev_key(&dir.path().join("other")).expect("create");
    assert_ne!(first, other);
}

#[test]
fn concurrent_dev_key_creation_agrees_on_one_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| dev_key(dir.path()).expect("dev key")))
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert!(keys.windows(2).all(|pair| pair[0] == pair[1]), "{keys:?}");
}

#[cfg(unix)]
#[test]
fn dev_key_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    dev_key(dir.path()).expect("create");
    let path = dir.path().join(DEV_KEY_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = dev_key(dir.path()).expect_err("too open");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[cfg(unix)]
#[test]
fn short_dev_key_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DEV_KEY_FILE);
    write_private_file(&path, b"short").expect("write");
    assert_eq!(
        dev_key(dir.path()).expect_err("short").kind(),
        io::ErrorKind::InvalidData
    );
}

#[tokio::test]
async fn development_without_a_key_uses_the_dev_key_file_and_minted_tokens_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = AuthConfig::new(AuthMode::Development);
    config.dev_key_dir = Some(dir.path().to_owned());
    config.issuer = Some("ordermesh-dev".into());
    config.audience = Some("ordermesh".into());
    let auth = Authenticator::new(config).await.expect("auth");
    assert!(dir.path().join(DEV_KEY_FILE).exists());

    let scopes = vec!["orders:read".to_owned(), "orders:write".to_owned()];
    let token = mint_dev_token(
        dir.path(),
        "bob",
        &scopes,
        Duration::from_secs(3600),
        Some("ordermesh-dev"),
        Some("ordermesh"),
    )
    .expect("mint");
    let principal = check(&auth, &token).await.expect("valid").expect("principal");
    assert_eq!(principal.subject, "bob");
    assert_eq!(principal.scopes, set(&["orders:read", "orders:write"]));

    // Minted without the configured audience: refused.
    let token = mint_dev_token(
        dir.path(),
        "bob",
        &[],
        Duration::from_secs(60),
        Some("ordermesh-dev"),
        None,
    )
    .expect("mint");
    assert_eq!(check(&auth, &token).await, Err(AuthError::WrongAudience));

    // A token minted with another directory's key does not verify.
    let other = tempfile::tempdir().expect("tempdir");
    let foreign = mint_dev_token(
        other.path(),
        "bob",
        &[],
        Duration::from_secs(60),
        Some("ordermesh-dev"),
        Some("ordermesh"),
    )
    .expect("mint");
    assert_eq!(check(&auth, &foreign).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn env_secret_takes_precedence_over_the_dev_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = dev_config();
    config.dev_key_dir = Some(dir.path().to_owned());
    let auth = Authenticator::new(config).await.expect("auth");
    assert!(!dir.path().join(DEV_KEY_FILE).exists(), "no dev key needed");
    assert!(check(&auth, &hs256(&claims())).await.is_ok());
}

#[test]
fn mint_dev_token_validates_its_input_and_sets_claims() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(mint_dev_token(dir.path(), "", &[], Duration::from_secs(60), None, None).is_err());
    for subject in ["bob\r\nx-ordermesh-scopes: admin", "bøb", "b\u{0}b"] {
        assert!(
            matches!(
                mint_dev_token(dir.path(), subject, &[], Duration::from_secs(60), None, None),
                Err(crate::auth::dev::MintError::SubjectNotHeaderSafe)
            ),
            "{subject:?}"
        );
    }
    assert!(
        mint_dev_token(
            dir.path(),
            "a",
            &["two words".into()],
            Duration::from_secs(60),
            None,
            None
        )
        .is_err()
    );
    assert!(
        mint_dev_token(
            dir.path(),
            "a",
            &[String::new()],
            Duration::from_secs(60),
            None,
            None
        )
        .is_err()
    );
    let token = mint_dev_token(dir.path(), "carol", &[], Duration::from_secs(90), None, None).expect("mint");
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, Algorithm::HS256);
    let payload = token.split('.').nth(1).expect("payload");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    assert_eq!(claims["sub"], "carol");
    let exp = claims["exp"].as_i64().expect("exp");
    assert!((exp - now() - 90).abs() <= 2, "exp {exp}");
    assert!(claims.get("scope").is_none() && claims.get("iss").is_none() && claims.get("aud").is_none());
}

// ---------------------------------------------------------------- JWKS URL

struct JwksServer {
    url: String,
    body: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    /// The head of the last request received.
    last_request: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// A tiny HTTP/1.1 server answering every request with the current (status, body).
    async fn start(body: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let body = Arc::new(Mutex::new((200, body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let last_request = Arc::new(Mutex::new(String::new()));
        let (state, counter, seen) = (Arc::clone(&body), Arc::clone(&hits), Arc::clone(&last_request));
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (state, counter, seen) = (Arc::clone(&state), Arc::clone(&counter), Arc::clone(&seen));
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    if let Ok(mut seen) = seen.lock() {
                        *seen = String::from_utf8_lossy(&request).into_owned();
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = state.lock().map(|s| s.clone()).unwrap_or_default();
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            url,
            body,
            hits,
            last_request,
            task,
        }
    }

    fn serve(&self, status: u16, body: String) {
        if let Ok(mut state) = self.body.lock() {
            *state = (status, body);
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn last_request(&self) -> String {
        self.last_request.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn url_config(server: &JwksServer, min_refresh: Duration) -> AuthConfig {
    let mut config = AuthConfig::new(AuthMode::Production);
    config.jwks_url = Some(server.url.clone());
    config.jwks_min_refresh_interval = min_refresh;
    config
}

#[tokio::test]
async fn jwks_url_is_fetched_at_start() {
    let server = JwksServer::start(JWKS.to_owned()).await;
    let auth = Authenticator::new(url_config(&server, Duration::from_secs(3600)))
        .await
        .expect("auth");
    assert_eq!(server.hits(), 1);
    assert_eq!(subject(&auth, &rs256(Some("rsa-1"), &claims())).await, "alice");
    assert_eq!(subject(&auth, &eddsa(Some("ed-1"), &claims())).await, "alice");
    assert_eq!(server.hits(), 1, "known kids need no fetch");
}

#[tokio::test]
async fn unknown_kid_triggers_a_refresh_that_finds_a_rotated_key() {
    let server = JwksServer::start(jwks_with(&["rsa-1"])).await;
    let auth = Authenticator::new(url_config(&server, Duration::ZERO))
        .await
        .expect("auth");
    assert_eq!(server.hits(), 1);
    // The issuer rotates in a new key.
    server.serve(200, jwks_with(&["rsa-1", "ec-1"]));
    assert_eq!(subject(&auth, &es256(Some("ec-1"), &claims())).await, "alice");
    assert_eq!(server.hits(), 2);
    // Now known: no further fetch.
    assert_eq!(subject(&auth, &es256(Some("ec-1"), &claims())).await, "alice");
    assert_eq!(server.hits(), 2);
    // Still unknown after a refresh: refused.
    assert_eq!(
        check(&auth, &eddsa(Some("nope"), &claims())).await,
        Err(AuthError::UnknownKey)
    );
    assert_eq!(server.hits(), 3);
    // A token without kid never triggers a fetch.
    let _ = check(&auth, &rs256(None, &claims())).await;
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn unknown_kid_refresh_is_rate_limited() {
    let server = JwksServer::start(jwks_with(&["rsa-1"])).await;
    // Tokens are signed up front: ES256 signing in a debug build is slow
    // enough to eat into the interval under load.
    let ec1 = es256(Some("ec-1"), &claims());
    let random: Vec<String> = (0..20)
        .map(|i| es256(Some(&format!("random-{i}")), &claims()))
        .collect();
    let auth = Authenticator::new(url_config(&server, Duration::from_secs(2)))
        .await
        .expect("auth");
    server.serve(200, jwks_with(&["rsa-1", "ec-1"]));
    // Within the minimum interval of the start-up fetch: no fetch, refused.
    for _ in 0..20 {
        assert_eq!(check(&auth, &ec1).await, Err(AuthError::UnknownKey));
    }
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(subject(&auth, &ec1).await, "alice");
    assert_eq!(server.hits(), 2);
    // Immediately afterwards a flood of random kids causes no fetch at all.
    for token in &random {
        assert_eq!(check(&auth, token).await, Err(AuthError::UnknownKey));
    }
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_refresh() {
    let server = JwksServer::start(jwks_with(&["rsa-1"])).await;
    let token = es256(Some("ec-1"), &claims());
    // An interval longer than ten debug-build ES256 verifications under load.
    let auth = Authenticator::new(url_config(&server, Duration::from_secs(2)))
        .await
        .expect("auth");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    server.serve(200, jwks_with(&["rsa-1", "ec-1"]));
    let results = futures::future::join_all((0..10).map(|_| check(&auth, &token))).await;
    assert!(results.iter().all(|r| matches!(r, Ok(Some(_)))), "{results:?}");
    assert_eq!(server.hits(), 2, "one refresh served all waiting callers");
}

#[tokio::test]
async fn periodic_refresh_picks_up_new_keys_and_failures_keep_the_old_ones() {
    let server = JwksServer::start(jwks_with(&["rsa-1"])).await;
    let mut config = url_config(&server, Duration::from_secs(3600));
    config.jwks_refresh_interval = Duration::from_millis(100);
    let auth = Authenticator::new(config).await.expect("auth");

    // The issuer fails for a while: the known key keeps working.
    server.serve(500, "oops".into());
    let start = server.hits();
    wait_for(|| server.hits() >= start + 2).await;
    assert_eq!(subject(&auth, &rs256(Some("rsa-1"), &claims())).await, "alice");
    // An invalid document is also ignored.
    server.serve(200, jwks_of(vec![without(jwks_key("rsa-1"), "alg")]));
    let start = server.hits();
    wait_for(|| server.hits() >= start + 2).await;
    assert_eq!(subject(&auth, &rs256(Some("rsa-1"), &claims())).await, "alice");

    // Rotation: rsa-1 retired, ec-1 published. Unknown-kid refresh is throttled for an hour,
    // so only the periodic refresh can make this pass.
    server.serve(200, jwks_with(&["ec-1"]));
    let start = server.hits();
    wait_for(|| server.hits() >= start + 2).await;
    assert_eq!(subject(&auth, &es256(Some("ec-1"), &claims())).await, "alice");
    assert_eq!(
        check(&auth, &rs256(Some("rsa-1"), &claims())).await,
        Err(AuthError::UnknownKey),
        "a key removed from the JWKS is no longer accepted"
    );

    // Dropping the last clone stops the refresh task.
    drop(auth);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let after_drop = server.hits();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(server.hits(), after_drop);
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_jwks_url_that_fails_at_start_refuses_tokens_until_a_retry_loads_its_keys() {
    let server = JwksServer::start(String::new()).await;
    server.serve(503, "unavailable".into());
    // A long minimum interval: only the start-up retries fetch.
    let auth = Authenticator::new(url_config(&server, Duration::from_secs(3600)))
        .await
        .expect("starts without keys");
    let mut loaded = auth.keys_loaded();
    assert!(!*loaded.borrow(), "no keys yet");
    let token = rs256(Some("rsa-1"), &claims());
    assert_eq!(check(&auth, &token).await, Err(AuthError::UnknownKey));

    // A document that is not a JWKS loads nothing either.
    server.serve(200, "<html>".into());
    let hits = server.hits();
    wait_for(|| server.hits() > hits).await;
    assert!(!*loaded.borrow());
    assert_eq!(check(&auth, &token).await, Err(AuthError::UnknownKey));

    // The issuer answers: the next retry (2 s after the last) loads its keys.
    server.serve(200, JWKS.to_owned());
    tokio::time::timeout(Duration::from_secs(10), loaded.wait_for(|loaded| *loaded))
        .await
        .expect("loaded by the back-off's next retry")
        .expect("the authenticator lives");
    assert_eq!(subject(&auth, &token).await, "alice");
    // Loaded once, the periodic refresh takes over: no more start-up retries.
    let hits = server.hits();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.hits(), hits);
}

/// What a failed fetch says (logged at start, and on each failed refresh).
async fn fetch_error(url: &str) -> String {
    let client = http_client().expect("client");
    match fetch_jwks(&client, url).await {
        Ok(_) => panic!("{url} gave keys"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn a_failed_jwks_fetch_names_the_variable_and_the_reason() {
    let server = JwksServer::start(String::new()).await;
    server.serve(503, "unavailable".into());
    let message = fetch_error(&server.url).await;
    assert!(
        message.contains(ENV_JWKS_URL) && message.contains("503"),
        "{message}"
    );
    server.serve(200, "<html>".into());
    let message = fetch_error(&server.url).await;
    assert!(message.contains("not a JWKS document"), "{message}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}/jwks", listener.local_addr().expect("addr"));
    drop(listener);
    let message = fetch_error(&dead).await;
    assert!(
        message.contains(ENV_JWKS_URL) && message.contains("fetch failed"),
        "{message}"
    );
}

#[tokio::test]
async fn a_jwks_url_with_nothing_listening_starts_without_keys() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}/jwks", listener.local_addr().expect("addr"));
    drop(listener);
    let mut config = AuthConfig::new(AuthMode::Production);
    config.jwks_url = Some(dead);
    let auth = Authenticator::new(config).await.expect("starts");
    assert!(!*auth.keys_loaded().borrow());
    assert_eq!(
        check(&auth, &rs256(Some("rsa-1"), &claims())).await,
        Err(AuthError::UnknownKey)
    );
}

#[tokio::test]
async fn keys_from_a_secret_a_file_or_a_url_that_answered_are_loaded_at_once() {
    let secret = Authenticator::new(dev_config()).await.expect("auth");
    assert!(*secret.keys_loaded().borrow());
    let server = JwksServer::start(JWKS.to_owned()).await;
    let url = Authenticator::new(url_config(&server, Duration::from_secs(3600)))
        .await
        .expect("auth");
    assert!(*url.keys_loaded().borrow());
}

#[tokio::test]
async fn a_jwks_url_down_at_start_is_retried_after_1_s_then_3_s() {
    let server = JwksServer::start(String::new()).await;
    server.serve(503, "unavailable".into());
    let started = Instant::now();
    let _auth = Authenticator::new(url_config(&server, Duration::from_secs(3600)))
        .await
        .expect("starts without keys");
    // The fetch at start, then retries 1 s and 2 s apart; the next is 4 s on.
    wait_for(|| server.hits() >= 3).await;
    let third = started.elapsed();
    assert!(third >= Duration::from_millis(2900), "{third:?}");
    tokio::time::sleep(Duration::from_millis(4500).saturating_sub(started.elapsed())).await;
    assert_eq!(server.hits(), 3);
}

#[test]
fn start_up_retries_of_a_jwks_url_double_from_one_second_to_thirty() {
    let waits: Vec<u64> = (0..8)
        .map(|attempt| first_load_retry(attempt).as_secs())
        .collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(first_load_retry(u32::MAX), Duration::from_secs(30));
}

#[tokio::test]
async fn jwks_url_and_file_combine() {
    let server = JwksServer::start(jwks_with(&["ec-1"])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = url_config(&server, Duration::from_secs(3600));
    config.jwks_file = Some(write_jwks(&dir, &jwks_with(&["rsa-1"])));
    let auth = Authenticator::new(config).await.expect("auth");
    assert_eq!(subject(&auth, &rs256(Some("rsa-1"), &claims())).await, "alice");
    assert_eq!(subject(&auth, &es256(Some("ec-1"), &claims())).await, "alice");

    // The same kid in both sources is a conflict.
    let mut config = url_config(&server, Duration::from_secs(3600));
    config.jwks_file = Some(write_jwks(&dir, &jwks_with(&["ec-1"])));
    assert!(matches!(
        Authenticator::new(config).await,
        Err(AuthConfigError::Conflict(_))
    ));
}

#[test]
fn authenticator_is_send_sync_clone() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Authenticator>();
}

// ---------------------------------------------------------------- limits and boundaries

#[tokio::test]
async fn token_length_limit_is_16_kib() {
    let auth = dev_auth().await;
    // Exactly the limit: refused for its shape, not its length.
    assert_eq!(
        check(&auth, &"a".repeat(MAX_TOKEN_LEN)).await,
        Err(AuthError::Malformed("a JWT has three dot-separated parts"))
    );
    assert_eq!(
        check(&auth, &"a".repeat(MAX_TOKEN_LEN + 1)).await,
        Err(AuthError::Malformed("the bearer token is too long"))
    );
    // A genuine token of about 15 KiB (many scopes) passes.
    let scopes: Vec<String> = (0..1100).map(|i| format!("scope:{i:04}")).collect();
    let token = hs256(&with(claims(), "scope", json!(scopes.join(" "))));
    assert!(
        (15 * 1024..MAX_TOKEN_LEN).contains(&token.len()),
        "{}",
        token.len()
    );
    let principal = check(&auth, &token).await.expect("valid").expect("principal");
    assert_eq!(principal.scopes.len(), 1100);
}

#[tokio::test]
async fn hs256_secret_of_32_bytes_is_the_minimum() {
    let mut config = AuthConfig::new(AuthMode::Development);
    config.hs256_secret = Some("s".repeat(MIN_HS256_SECRET_LEN));
    let auth = Authenticator::new(config).await.expect("32 bytes accepted");
    let key = EncodingKey::from_secret("s".repeat(MIN_HS256_SECRET_LEN).as_bytes());
    assert_eq!(
        subject(&auth, &sign(Algorithm::HS256, None, &key, &claims())).await,
        "alice"
    );
    let mut config = AuthConfig::new(AuthMode::Development);
    config.hs256_secret = Some("s".repeat(MIN_HS256_SECRET_LEN - 1));
    assert!(matches!(
        Authenticator::new(config).await,
        Err(AuthConfigError::WeakSecret(31))
    ));
}

#[cfg(unix)]
#[test]
fn dev_key_file_of_32_bytes_is_the_minimum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DEV_KEY_FILE);
    let key = "k".repeat(MIN_HS256_SECRET_LEN);
    write_private_file(&path, key.as_bytes()).expect("write");
    assert_eq!(dev_key(dir.path()).expect("32 bytes accepted"), key);
    std::fs::remove_file(&path).expect("remove");
    write_private_file(&path, &key.as_bytes()[1..]).expect("write");
    assert_eq!(
        dev_key(dir.path()).expect_err("31 bytes").kind(),
        io::ErrorKind::InvalidData
    );
}

#[test]
fn dev_key_reports_a_key_location_it_cannot_read_without_creating_a_key() {
    // The "directory" is a regular file: reading the key fails with something other than
    // "not found", which is reported as is (no attempt to create a key in its place).
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "x").expect("write");
    let err = dev_key(&file).expect_err("not a directory");
    assert_eq!(err.kind(), io::ErrorKind::NotADirectory, "{err}");
}

/// The RS256 test key with the modulus `n` replaced.
fn rsa_key_with_modulus(n: &[u8]) -> Value {
    with(jwks_key("rsa-1"), "n", json!(URL_SAFE_NO_PAD.encode(n)))
}

#[tokio::test]
async fn rsa_modulus_must_have_at_least_2048_significant_bits() {
    // 256 bytes whose top byte is 0x80: exactly 2048 bits.
    let mut n2048 = vec![0x5a; 256];
    n2048[0] = 0x80;
    // 256 bytes whose top byte is 0x7f: 2047 bits.
    let mut n2047 = n2048.clone();
    n2047[0] = 0x7f;
    // Leading zero bytes do not count.
    let padded = |n: &[u8]| [&[0u8, 0][..], n].concat();

    for n in [n2048.clone(), padded(&n2048)] {
        let jwks = jwks_of(vec![rsa_key_with_modulus(&n)]);
        assert!(jwks_file_auth(&jwks).await.is_ok(), "{} bytes", n.len());
    }
    for n in [n2047.clone(), padded(&n2047)] {
        let message = jwks_error(&jwks_of(vec![rsa_key_with_modulus(&n)])).await;
        assert!(
            message.contains("RSA modulus is 2047 bits; at least 2048"),
            "{message}"
        );
    }
    // 255 bytes with the top bit set: 2040 bits, however it is padded.
    let mut n2040 = vec![0xff; 255];
    n2040[1] = 0x00;
    let message = jwks_error(&jwks_of(vec![rsa_key_with_modulus(&padded(&n2040))])).await;
    assert!(message.contains("is 2040 bits"), "{message}");
    let message = jwks_error(&jwks_of(vec![rsa_key_with_modulus(&[0; 300])])).await;
    assert!(message.contains("is 0 bits"), "{message}");
}

#[tokio::test]
async fn rsa_exponent_must_be_1_to_8_bytes() {
    let with_e = |e: &[u8]| with(jwks_key("rsa-1"), "e", json!(URL_SAFE_NO_PAD.encode(e)));
    for e in [&[][..], &[1, 0, 0, 0, 0, 0, 0, 0, 1][..]] {
        let message = jwks_error(&jwks_of(vec![with_e(e)])).await;
        assert!(
            message.contains("invalid RSA exponent"),
            "{} bytes: {message}",
            e.len()
        );
    }
    for e in [&[3][..], &[0, 0, 0, 0, 0, 1, 0, 1][..]] {
        assert!(
            jwks_file_auth(&jwks_of(vec![with_e(e)])).await.is_ok(),
            "{} bytes",
            e.len()
        );
    }
}

#[tokio::test]
async fn es256_coordinates_must_be_32_bytes_each() {
    let ec = jwks_key("ec-1");
    for field in ["x", "y"] {
        for len in [31, 33] {
            let key = with(ec.clone(), field, json!(URL_SAFE_NO_PAD.encode(vec![7u8; len])));
            let message = jwks_error(&jwks_of(vec![key])).await;
            assert!(
                message.contains("`x` and `y` must be 32 bytes each"),
                "{field} of {len} bytes: {message}"
            );
        }
    }
    let auth = jwks_file_auth(&jwks_of(vec![ec])).await.expect("32 + 32 bytes");
    assert_eq!(subject(&auth, &es256(Some("ec-1"), &claims())).await, "alice");
}

#[test]
fn jwks_url_scheme_rules() {
    for mode in [AuthMode::Production, AuthMode::Development] {
        for ok in [
            "https://id.example.com/.well-known/jwks.json",
            "HTTPS://id.example.com/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://LocalHost:9/jwks",
            "http://[::1]:8080/jwks",
        ] {
            assert!(check_jwks_url(ok, mode).is_ok(), "{mode}: {ok}");
        }
        for bad in ["ftp://id.example.com/jwks", "file:///etc/jwks.json", "not a url"] {
            assert!(check_jwks_url(bad, mode).is_err(), "{mode}: {bad}");
        }
    }
    for remote in [
        "http://id.example.com/jwks",
        "http://10.0.0.1/jwks",
        "http://[::2]/jwks",
    ] {
        let err = check_jwks_url(remote, AuthMode::Production).expect_err(remote);
        assert!(err.to_string().contains("https only"), "{err}");
        assert!(check_jwks_url(remote, AuthMode::Development).is_ok(), "{remote}");
    }
}

#[test]
fn jsonwebtoken_errors_map_to_their_reasons() {
    use jsonwebtoken::errors::Error as JwtError;
    let cases: Vec<(ErrorKind, AuthError)> = vec![
        (ErrorKind::ExpiredSignature, AuthError::Expired),
        (ErrorKind::ImmatureSignature, AuthError::NotYetValid),
        (ErrorKind::InvalidIssuer, AuthError::WrongIssuer),
        (ErrorKind::InvalidAudience, AuthError::WrongAudience),
        (ErrorKind::InvalidSignature, AuthError::BadSignature),
        (ErrorKind::InvalidEcdsaKey, AuthError::BadSignature),
        (ErrorKind::InvalidEddsaKey, AuthError::BadSignature),
        (ErrorKind::InvalidRsaKey("n".into()), AuthError::BadSignature),
        (ErrorKind::InvalidKeyFormat, AuthError::BadSignature),
        (ErrorKind::InvalidAlgorithm, AuthError::AlgorithmNotAllowed),
        (ErrorKind::InvalidAlgorithmName, AuthError::AlgorithmNotAllowed),
        (ErrorKind::MissingAlgorithm, AuthError::AlgorithmNotAllowed),
        (
            ErrorKind::MissingRequiredClaim("exp".into()),
            AuthError::MissingClaim("exp"),
        ),
        (
            ErrorKind::MissingRequiredClaim("sub".into()),
            AuthError::MissingClaim("sub"),
        ),
        (
            ErrorKind::MissingRequiredClaim("iss".into()),
            AuthError::WrongIssuer,
        ),
        (
            ErrorKind::MissingRequiredClaim("aud".into()),
            AuthError::WrongAudience,
        ),
        (
            ErrorKind::MissingRequiredClaim("nbf".into()),
            AuthError::Malformed("a required claim is missing"),
        ),
        (
            ErrorKind::InvalidClaimFormat("nbf".into()),
            AuthError::Malformed("a claim has the wrong type"),
        ),
        (ErrorKind::InvalidToken, AuthError::Malformed("not a valid JWT")),
        (ErrorKind::InvalidSubject, AuthError::Malformed("not a valid JWT")),
    ];
    for (kind, expected) in cases {
        let shown = format!("{kind:?}");
        assert_eq!(AuthError::from(JwtError::from(kind)), expected, "{shown}");
    }
}

#[tokio::test]
async fn a_non_numeric_nbf_is_a_claim_of_the_wrong_type() {
    let auth = dev_auth().await;
    assert_eq!(
        check(&auth, &hs256(&with(claims(), "nbf", json!("tomorrow")))).await,
        Err(AuthError::Malformed("a claim has the wrong type"))
    );
}

#[tokio::test]
async fn debug_shows_the_keys_and_the_jwks_url() {
    let debug = format!("{:?}", dev_auth().await);
    assert!(
        debug.contains("Authenticator")
            && debug.contains("(no kid) HS256")
            && debug.contains("jwks_url: None"),
        "{debug}"
    );
    assert!(!debug.contains(SECRET), "{debug}");
    let server = JwksServer::start(jwks_with(&["rsa-1", "ec-1"])).await;
    let auth = Authenticator::new(url_config(&server, Duration::from_secs(3600)))
        .await
        .expect("auth");
    let debug = format!("{auth:?}");
    assert!(
        debug.contains("[\"rsa-1 RS256\", \"ec-1 ES256\"]") && debug.contains(&server.url),
        "{debug}"
    );
}

#[tokio::test]
async fn jwks_fetches_identify_the_gateway() {
    let server = JwksServer::start(JWKS.to_owned()).await;
    Authenticator::new(url_config(&server, Duration::from_secs(3600)))
        .await
        .expect("auth");
    let request = server.last_request().to_ascii_lowercase();
    assert!(
        request.contains(&format!(
            "user-agent: ordermesh-gateway/{}",
            env!("CARGO_PKG_VERSION")
        )) && request.contains("accept: application/json"),
        "{request}"
    );
}

/// The test JWKS (`rsa-1`) padded with an ignored member to exactly `len` bytes.
fn jwks_of_length(len: usize) -> String {
    let mut document: Value = serde_json::from_str(&jwks_with(&["rsa-1"])).expect("json");
    document["padding"] = json!("");
    let base = document.to_string().len();
    document["padding"] = json!("p".repeat(len - base));
    let body = document.to_string();
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn jwks_url_documents_are_limited_to_1_mib() {
    let server = JwksServer::start(jwks_of_length(MAX_JWKS_LEN)).await;
    let auth = Authenticator::new(url_config(&server, Duration::from_secs(3600)))
        .await
        .expect("exactly 1 MiB accepted");
    assert_eq!(subject(&auth, &rs256(Some("rsa-1"), &claims())).await, "alice");
    server.serve(200, jwks_of_length(MAX_JWKS_LEN + 1));
    let client = http_client().expect("client");
    let message = match fetch_jwks(&client, &server.url).await {
        Ok(_) => panic!("over 1 MiB accepted"),
        Err(error) => error.to_string(),
    };
    assert!(
        message.contains(ENV_JWKS_URL) && message.contains("larger than 1048576 bytes"),
        "{message}"
    );
    // An authenticator that meets it at start loads no key from it.
    let auth = Authenticator::new(url_config(&server, Duration::from_secs(3600)))
        .await
        .expect("starts");
    assert!(!*auth.keys_loaded().borrow());
}

#[tokio::test]
async fn dropping_the_authenticator_ends_its_refresh_task_at_once() {
    let server = JwksServer::start(JWKS.to_owned()).await;
    // A refresh interval far longer than the test: only the abort on drop ends the task.
    let mut config = url_config(&server, Duration::from_secs(3600));
    config.jwks_refresh_interval = Duration::from_secs(3600);
    let auth = Authenticator::new(config).await.expect("auth");
    let metrics = tokio::runtime::Handle::current().metrics();
    // Let the fetch's connection tasks finish, so only the server and the refresher remain.
    let settled = metrics.num_alive_tasks();
    wait_for(|| metrics.num_alive_tasks() <= 2).await;
    assert_eq!(
        metrics.num_alive_tasks(),
        2,
        "server and refresher (from {settled})"
    );
    drop(auth);
    wait_for(|| metrics.num_alive_tasks() == 1).await;
}

#[cfg(unix)]
#[test]
fn a_new_dev_key_is_installed_unless_another_process_was_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tmp, path) = (dir.path().join("new.tmp"), dir.path().join(DEV_KEY_FILE));
    let ours = "o".repeat(43);
    write_private_file(&tmp, ours.as_bytes()).expect("write");
    // Nobody was first: ours is linked into place.
    assert_eq!(install_key(&tmp, &path, ours.clone()).expect("installed"), ours);
    assert_eq!(std::fs::read_to_string(&path).expect("read"), ours);
    // Another process was first: its key is kept and used.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let theirs = "t".repeat(43);
    let other_path = other_dir.path().join(DEV_KEY_FILE);
    write_private_file(&other_path, theirs.as_bytes()).expect("write");
    assert_eq!(install_key(&tmp, &other_path, ours).expect("adopted"), theirs);
    assert_eq!(std::fs::read_to_string(&other_path).expect("read"), theirs);
}

#[cfg(target_os = "linux")]
#[test]
fn a_dev_key_that_cannot_be_linked_into_place_is_an_error_saying_why() {
    // Linux refuses to hard-link a directory (EPERM), as a filesystem without hard links
    // would: that is the error reported, not the absence of the key file.
    let dir = tempfile::tempdir().expect("tempdir");
    let (tmp, path) = (dir.path().join("new.tmp"), dir.path().join(DEV_KEY_FILE));
    std::fs::create_dir(&tmp).expect("mkdir");
    let err = install_key(&tmp, &path, "k".repeat(43)).expect_err("cannot link");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    assert!(!path.exists());
}
