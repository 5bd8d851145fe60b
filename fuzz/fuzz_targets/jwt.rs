//! Bearer tokens as the gateway's authenticator checks them, with a
//! development HS256 secret and the test JWKS (RSA, EC P-256, Ed25519)
//! loaded. Input: a mode byte, then
//! - mode 0: the raw `Authorization` header value;
//! - mode 1: a JOSE header JSON, a newline, a claims JSON: signed with the
//!   HS256 secret, so that the claim checks past the signature are reached;
//! - mode 2: a JWKS document, parsed as `ORDERMESH_JWKS_FILE` would be.
//!
//! Any token is accepted or refused without a panic; an accepted token's
//! subject and customer are safe to forward as a header (ASCII, no control character).
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use ordermesh_gateway::auth::{AuthConfig, AuthMode, Authenticator};

const SECRET: &str = "fuzzing-secret-of-at-least-32-bytes!";

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

static AUTH: LazyLock<Authenticator> = LazyLock::new(|| {
    let mut config = AuthConfig::new(AuthMode::Development);
    config.hs256_secret = Some(SECRET.to_owned());
    config.jwks_file =
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/keys/jwks.json"));
    RUNTIME
        .block_on(Authenticator::new(config))
        .expect("the fuzzing keys load")
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let header = match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            let (jose, claims) = match rest.iter().position(|b| *b == b'\n') {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &b"{}"[..]),
            };
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(jose),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("HS256 signs");
            format!("Bearer {message}.{signature}").into_bytes()
        }
        _ => {
            let _ = ordermesh_gateway::auth::jwks::parse_jwks("ORDERMESH_JWKS_FILE", "fuzz", rest);
            return;
        }
    };
    let Ok(value) = http::HeaderValue::from_bytes(&header) else {
        return;
    };
    if let Ok(Some(principal)) = RUNTIME.block_on(AUTH.authenticate(Some(&value))) {
        for forwarded in [&principal.subject, &principal.customer] {
            assert!(
                forwarded.bytes().all(|b| b.is_ascii() && !b.is_ascii_control()),
                "{forwarded:?}"
            );
            assert!(http::HeaderValue::from_str(forwarded).is_ok());
        }
    }
});
