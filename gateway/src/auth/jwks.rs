//! Key material into verification keys: the HS256 secret, JWKS documents (file or URL) and the
//! [`KeySet`] they combine into. Every key is validated when loaded and carries exactly one
//! algorithm, so a broken JWKS fails at start (or a refresh keeps the previous keys) instead of
//! surfacing later as 401s, and a token can never choose its own algorithm.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::config::{AuthConfigError, AuthMode, ENV_HS256_SECRET, ENV_JWKS_URL, MIN_HS256_SECRET_LEN};

/// Largest accepted JWKS document.
pub(super) const MAX_JWKS_LEN: usize = 1024 * 1024;
/// Smallest accepted RSA modulus.
const MIN_RSA_BITS: usize = 2048;

/// One verification key with its pinned algorithm.
pub struct VerifyKey {
    pub(super) kid: Option<String>,
    pub(super) alg: Algorithm,
    pub(super) key: DecodingKey,
}

#[derive(Default)]
pub(super) struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    /// Combines key sources, refusing duplicate `kid`s and several keys without one.
    pub(super) fn combine(
        sources: impl IntoIterator<Item = Arc<VerifyKey>>,
    ) -> Result<Self, AuthConfigError> {
        let keys: Vec<Arc<VerifyKey>> = sources.into_iter().collect();
        let mut seen = BTreeSet::new();
        for kid in keys.iter().filter_map(|key| key.kid.as_deref()) {
            if !seen.insert(kid) {
                return Err(AuthConfigError::Conflict(format!(
                    "two keys share the kid \"{kid}\""
                )));
            }
        }
        if keys.iter().filter(|key| key.kid.is_none()).count() > 1 {
            return Err(AuthConfigError::Conflict(
                "more than one key has no kid, so a token without a kid would be ambiguous \
                 (the HS256 secret counts as a key without a kid)"
                    .to_owned(),
            ));
        }
        Ok(Self { keys })
    }

    pub(super) fn select(&self, kid: Option<&str>) -> Option<&Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.keys.iter().find(|key| key.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => {
                let mut without_kid = self.keys.iter().filter(|key| key.kid.is_none());
                match (without_kid.next(), without_kid.next()) {
                    (Some(key), None) => Some(key),
                    _ => None,
                }
            }
        }
    }

    pub(super) fn describe(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|key| {
                format!(
                    "{} {}",
                    key.kid.as_deref().unwrap_or("(no kid)"),
                    alg_name(key.alg)
                )
            })
            .collect()
    }
}

pub(super) fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

pub(super) fn hs256_key(secret: &str) -> Result<Arc<VerifyKey>, AuthConfigError> {
    if secret.len() < MIN_HS256_SECRET_LEN {
        return Err(AuthConfigError::WeakSecret(secret.len()));
    }
    Ok(Arc::new(VerifyKey {
        kid: None,
        alg: Algorithm::HS256,
        key: DecodingKey::from_secret(secret.as_bytes()),
    }))
}

/// Parses a JWKS document into verification keys, each with its pinned algorithm. Keys marked
/// `"use": "enc"` are skipped; any other problem is an error naming the key.
pub fn parse_jwks(
    var: &'static str,
    location: &str,
    body: &[u8],
) -> Result<Vec<Arc<VerifyKey>>, AuthConfigError> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let document: Document = serde_json::from_slice(body).map_err(|err| AuthConfigError::Jwks {
        var,
        location: location.to_owned(),
        reason: format!("not a JWKS document (a JSON object with a `keys` array): {err}"),
    })?;
    let mut keys = Vec::new();
    for (index, jwk) in document.keys.iter().enumerate() {
        let kid = jwk.get("kid").and_then(Value::as_str);
        let label = match kid {
            Some(kid) => format!("\"{kid}\""),
            None => format!("#{index} (no kid)"),
        };
        let fail = |reason: String| AuthConfigError::JwksKey {
            var,
            location: location.to_owned(),
            key: label.clone(),
            reason,
        };
        if let Some(key) = parse_jwk(jwk).map_err(fail)? {
            keys.push(Arc::new(key));
        }
    }
    if keys.is_empty() {
        return Err(AuthConfigError::Jwks {
            var,
            location: location.to_owned(),
            reason: "the JWKS has no signature verification keys".to_owned(),
        });
    }
    Ok(keys)
}

fn parse_jwk(jwk: &Value) -> Result<Option<VerifyKey>, String> {
    let text = |field: &str| -> Result<Option<&str>, String> {
        match jwk.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(_) => Err(format!("`{field}` must be a string")),
        }
    };
    let component = |field: &str| -> Result<Vec<u8>, String> {
        let value = text(field)?.ok_or_else(|| format!("missing `{field}`"))?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| format!("`{field}` is not base64url"))
    };
    if !jwk.is_object() {
        return Err("not a JSON object".to_owned());
    }
    let kid = text("kid")?.map(str::to_owned);
    if text("use")? == Some("enc") {
        return Ok(None);
    }
    if jwk.get("d").is_some() {
        return Err("contains private key material (`d`); a JWKS must hold public keys only".into());
    }
    let alg = text("alg")?.ok_or_else(|| {
        "has no `alg`: every key must name its algorithm (RS256, ES256 or EdDSA) so tokens \
         cannot choose it"
            .to_owned()
    })?;
    let kty = text("kty")?.unwrap_or("");
    let key = match alg {
        "RS256" => {
            require(kty == "RSA", || {
                format!("`alg` RS256 needs `kty` RSA, not `{kty}`")
            })?;
            let n = component("n")?;
            let e = component("e")?;
            let bits = significant_bits(&n);
            require(bits >= MIN_RSA_BITS, || {
                format!("RSA modulus is {bits} bits; at least {MIN_RSA_BITS} are required")
            })?;
            require(!e.is_empty() && e.len() <= 8, || {
                "invalid RSA exponent `e`".to_owned()
            })?;
            DecodingKey::from_rsa_raw_components(&n, &e)
        }
        "ES256" => {
            require(kty == "EC", || format!("`alg` ES256 needs `kty` EC, not `{kty}`"))?;
            let crv = text("crv")?.unwrap_or("");
            require(crv == "P-256", || {
                format!("`alg` ES256 needs `crv` P-256, not `{crv}`")
            })?;
            let (x, y) = (component("x")?, component("y")?);
            require(x.len() == 32 && y.len() == 32, || {
                "P-256 coordinates `x` and `y` must be 32 bytes each".to_owned()
            })?;
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            DecodingKey::from_ec_der(&point)
        }
        "EdDSA" => {
            require(kty == "OKP", || {
                format!("`alg` EdDSA needs `kty` OKP, not `{kty}`")
            })?;
            let crv = text("crv")?.unwrap_or("");
            require(crv == "Ed25519", || {
                format!("`alg` EdDSA needs `crv` Ed25519, not `{crv}`")
            })?;
            let x = component("x")?;
            require(x.len() == 32, || "Ed25519 key `x` must be 32 bytes".to_owned())?;
            DecodingKey::from_ed_der(&x)
        }
        "HS256" | "HS384" | "HS512" => {
            return Err(format!(
                "symmetric `alg` {alg} is not accepted from a JWKS (use {ENV_HS256_SECRET} in \
                 development mode)"
            ));
        }
        other => {
            return Err(format!("`alg` {other} is not supported (RS256, ES256 or EdDSA)"));
        }
    };
    let alg = Algorithm::from_str(alg).map_err(|_| format!("unknown `alg` {alg}"))?;
    Ok(Some(VerifyKey { kid, alg, key }))
}

fn require(ok: bool, reason: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(reason()) }
}

fn significant_bits(bytes: &[u8]) -> usize {
    match bytes.iter().position(|b| *b != 0) {
        Some(first) => (bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize,
        None => 0,
    }
}

/// Production fetches keys over TLS unless the URL is loopback.
pub(super) fn check_jwks_url(url: &str, mode: AuthMode) -> Result<(), AuthConfigError> {
    let fail = |reason: &str| AuthConfigError::Jwks {
        var: ENV_JWKS_URL,
        location: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| fail("not a valid URL"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = parsed.host_str().unwrap_or("");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if mode == AuthMode::Production && !loopback {
                Err(fail(
                    "production mode fetches keys over https only (plain http is allowed for \
                     loopback addresses)",
                ))
            } else {
                Ok(())
            }
        }
        _ => Err(fail("the scheme must be https (or http)")),
    }
}

pub(super) fn http_client() -> Result<reqwest::Client, String> {
    // reqwest is built without a bundled TLS provider; use ring unless the process chose one.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: some provider is then installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("ordermesh-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| format!("cannot build an HTTP client: {err}"))
}

pub(super) async fn fetch_jwks(
    client: &reqwest::Client,
    url: &str,
) -> Result<Vec<Arc<VerifyKey>>, AuthConfigError> {
    let fail = |reason: String| AuthConfigError::Jwks {
        var: ENV_JWKS_URL,
        location: url.to_owned(),
        reason,
    };
    let mut response = client
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|err| fail(format!("fetch failed: {err}")))?;
    if !response.status().is_success() {
        return Err(fail(format!("fetch failed: HTTP {}", response.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| fail(format!("fetch failed: {err}")))?
    {
        if body.len() + chunk.len() > MAX_JWKS_LEN {
            return Err(fail(format!("the JWKS is larger than {MAX_JWKS_LEN} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    parse_jwks(ENV_JWKS_URL, url, &body)
}
