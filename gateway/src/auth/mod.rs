//! JWT validation at the edge.
//!
//! The gateway is the only component that sees raw credentials: it turns an `Authorization:
//! Bearer <jwt>` header into a [`Principal`] (subject + scopes), or refuses the call with
//! `UNAUTHENTICATED`, before anything is routed. Why it is built this way:
//!
//! - **The algorithm is pinned per key, never taken from the token.** Each key carries exactly
//!   one algorithm: a JWKS key's comes from its required `alg` (a key without one is refused at
//!   load, naming its `kid`), the HS256 secret's is HS256. The token's header `alg` must equal the
//!   selected key's algorithm exactly, so `alg: none`, and the classic HS/RS confusion (an HS256
//!   token "signed" with the RSA public key as the HMAC secret) are refused before any crypto
//!   runs; `jsonwebtoken` is additionally given only that one algorithm.
//! - **Key selection by `kid` only.** The header's `kid` picks the key; an unknown `kid` is
//!   refused. A token without `kid` is accepted only when the choice is unambiguous (a single
//!   key, or a single key without a `kid`). Keys are validated when loaded (algorithm matches
//!   `kty`/`crv`, sizes, no private material, unique ids), so a broken JWKS fails at start with a
//!   message naming the variable and key at fault rather than as mysterious 401s later.
//! - **Production accepts public keys only.** Production refuses to start without a JWKS (file or
//!   URL) and refuses `ORDERMESH_JWT_HS256_SECRET`: whoever holds a shared secret can mint any
//!   token, so it has no place on an internet-facing edge. A JWKS URL must be `https` unless it
//!   points at loopback (keys fetched in clear text could be swapped in transit).
//! - **Development just works, safely.** With no key configured, development mode creates a
//!   random 256-bit HS256 secret in `gateway-dev-key` (mode 0600, created atomically so two
//!   processes starting together agree on one key) and `ordermesh token` mints tokens with the
//!   same file via [`mint_dev_token`]. A key file readable by group/others is refused.
//! - **JWKS URLs follow key rotation without hammering the issuer.** The set is fetched at start;
//!   when the issuer cannot answer then (down, unreachable, a broken document), the gateway
//!   starts anyway, refuses every token, reports NOT_SERVING ([`Authenticator::keys_loaded`])
//!   and fetches again with a growing back-off (1 s doubling to 30 s) until keys load: exiting
//!   would only crash-loop a pod until the issuer returns. It is refreshed periodically
//!   (default 5 min), and
//!   re-fetched when a token names an unknown `kid` — at most once per minimum interval
//!   (default 30 s), so a flood of tokens with random `kid`s cannot turn the gateway into a
//!   traffic amplifier against the identity provider. A failed or invalid refresh keeps the
//!   previous keys.
//! - **Claims:** `exp` and `sub` are required, `nbf` is checked when present, `iss`/`aud` are
//!   required and checked when configured, with a leeway (default 30 s) for clock skew. Scopes
//!   come from the OAuth2 `scope` string (space-separated) and/or the `scp` array.
//! - **Errors never echo the token.** [`AuthError`] variants carry no token-derived text, so
//!   [`AuthError::to_status`] and logs cannot leak credentials or reflect attacker input.
//!
//! The module is split by job: `config` is what the operator sets (mode, variables, the errors
//! that name them); `jwks` turns key material (a JWKS document or URL, the HS256 secret) into
//! verification keys with pinned algorithms; `dev` creates and uses the local development key;
//! this file holds the [`Authenticator`] itself, which reads the bearer token, picks a key and
//! checks the claims.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

mod config;
mod dev;
pub mod jwks;
#[cfg(test)]
mod tests;

pub use config::{
    AuthConfig, AuthConfigError, AuthMode, ENV_AUDIENCE, ENV_HS256_SECRET, ENV_ISSUER, ENV_JWKS_FILE,
    ENV_JWKS_URL, MIN_HS256_SECRET_LEN,
};
pub use dev::{DEV_KEY_FILE, dev_key, mint_dev_token, mint_with_secret};
use jwks::{KeySet, VerifyKey, alg_name, check_jwks_url, fetch_jwks, hs256_key, http_client, parse_jwks};

/// Longest accepted bearer token; anything longer is refused before parsing.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: String,
    /// The customer the token acts for: its `customer_id` claim, else its
    /// subject. Services confine a customer's token to this customer's data.
    pub customer: String,
    /// Union of the `scope` (space-separated) and `scp` (array) claims.
    pub scopes: BTreeSet<String>,
}

impl Principal {
    /// Whether the token grants `scope`: listed in it, or implied by the
    /// operator's scope (`admin`), which services also take as acting for
    /// anyone ([`ordermesh_runtime::actor::OPERATOR_SCOPE`]).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope) || self.scopes.contains(ordermesh_runtime::actor::OPERATOR_SCOPE)
    }
}

/// Why a presented credential was refused. Carries no token-derived text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issuer not accepted")]
    WrongIssuer,
    #[error("token audience not accepted")]
    WrongAudience,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("token algorithm not allowed for its key")]
    AlgorithmNotAllowed,
    #[error("token lacks the required `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the token's `{0}` claim is not printable ASCII (it travels as gRPC metadata)")]
    NotHeaderSafe(&'static str),
}

impl AuthError {
    /// `UNAUTHENTICATED` with a message naming the reason (never the token).
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::unauthenticated(format!("authentication failed: {self}"))
    }
}

impl From<jsonwebtoken::errors::Error> for AuthError {
    fn from(err: jsonwebtoken::errors::Error) -> Self {
        match err.kind() {
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => Self::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
                Self::AlgorithmNotAllowed
            }
            ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                "exp" => Self::MissingClaim("exp"),
                "sub" => Self::MissingClaim("sub"),
                "iss" => Self::WrongIssuer,
                "aud" => Self::WrongAudience,
                _ => Self::Malformed("a required claim is missing"),
            },
            ErrorKind::InvalidClaimFormat(_) => Self::Malformed("a claim has the wrong type"),
            _ => Self::Malformed("not a valid JWT"),
        }
    }
}

struct Remote {
    url: String,
    client: reqwest::Client,
    /// When the last fetch started; held across a fetch so concurrent refreshes coalesce.
    last_fetch: tokio::sync::Mutex<Instant>,
    min_interval: Duration,
}

struct Inner {
    static_keys: Vec<Arc<VerifyKey>>,
    keys: RwLock<Arc<KeySet>>,
    /// False while a JWKS URL has not answered with keys since start.
    loaded: tokio::sync::watch::Sender<bool>,
    remote: Option<Remote>,
    validation: Validation,
    refresher: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(handle) = self.refresher.get() {
            handle.abort();
        }
    }
}

/// Validates bearer tokens. Cheap to clone (an `Arc` inside); `Send + Sync`.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("keys", &self.inner.current().describe())
            .field("jwks_url", &self.inner.remote.as_ref().map(|r| &r.url))
            .finish()
    }
}

impl Authenticator {
    /// Loads (and for a JWKS URL, fetches) the keys. Must run inside a Tokio runtime when a JWKS
    /// URL is configured (the periodic refresh is a spawned task, ended when the last clone is
    /// dropped).
    pub async fn new(config: AuthConfig) -> Result<Self, AuthConfigError> {
        let mut static_keys = Vec::new();
        match config.mode {
            AuthMode::Production => {
                if config.hs256_secret.is_some() {
                    return Err(AuthConfigError::SecretInProduction);
                }
                if config.jwks_file.is_none() && config.jwks_url.is_none() {
                    return Err(AuthConfigError::NoKeys);
                }
            }
            AuthMode::Development => {
                if let Some(secret) = &config.hs256_secret {
                    static_keys.push(hs256_key(secret)?);
                } else if config.jwks_file.is_none() && config.jwks_url.is_none() {
                    let dir = config.dev_key_dir.as_ref().ok_or(AuthConfigError::NoDevKey)?;
                    let secret = dev_key(dir).map_err(|source| AuthConfigError::DevKey {
                        path: dir.join(DEV_KEY_FILE),
                        source,
                    })?;
                    static_keys.push(hs256_key(&secret)?);
                }
            }
        }
        if let Some(path) = &config.jwks_file {
            let location = path.display().to_string();
            let body = std::fs::read(path).map_err(|err| AuthConfigError::Jwks {
                var: ENV_JWKS_FILE,
                location: location.clone(),
                reason: format!("cannot read: {err}"),
            })?;
            static_keys.extend(parse_jwks(ENV_JWKS_FILE, &location, &body)?);
        }

        let mut remote_keys = Vec::new();
        let mut fetched = config.jwks_url.is_none();
        let remote = match &config.jwks_url {
            Some(url) => {
                check_jwks_url(url, config.mode)?;
                let client = http_client().map_err(|reason| AuthConfigError::Jwks {
                    var: ENV_JWKS_URL,
                    location: url.clone(),
                    reason,
                })?;
                match fetch_jwks(&client, url).await {
                    Ok(keys) => {
                        remote_keys = keys;
                        fetched = true;
                    }
                    Err(error) => tracing::warn!(
                        %error,
                        url = %url,
                        "no keys from the JWKS URL yet: every token is refused and the gateway \
                         reports NOT_SERVING until a later fetch loads them"
                    ),
                }
                Some(Remote {
                    url: url.clone(),
                    client,
                    // Measured from the end of a fetch, so a slow issuer
                    // cannot make back-to-back fetches look spaced out.
                    last_fetch: tokio::sync::Mutex::new(Instant::now()),
                    min_interval: config.jwks_min_refresh_interval,
                })
            }
            None => None,
        };

        let keys = KeySet::combine(static_keys.iter().cloned().chain(remote_keys))?;
        tracing::info!(mode = %config.mode, keys = ?keys.describe(), "JWT verification keys loaded");

        let inner = Arc::new(Inner {
            static_keys,
            keys: RwLock::new(Arc::new(keys)),
            loaded: tokio::sync::watch::Sender::new(fetched),
            remote,
            validation: base_validation(&config),
            refresher: OnceLock::new(),
        });
        if inner.remote.is_some() {
            let handle = tokio::spawn(periodic_refresh(
                Arc::downgrade(&inner),
                config.jwks_refresh_interval,
                fetched,
            ));
            let _ = inner.refresher.set(handle.abort_handle());
        }
        Ok(Self { inner })
    }

    /// Whether verification keys are loaded: always with a secret or a JWKS
    /// file; with a JWKS URL, once it has answered with keys (a later failed
    /// refresh keeps them). The gateway reports NOT_SERVING until then.
    pub fn keys_loaded(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.loaded.subscribe()
    }

    /// `authorization` is the raw `Authorization` header value, if any. `Ok(None)` means
    /// anonymous (no header); a header that is present but not a valid bearer token is an error.
    pub async fn authenticate(
        &self,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<Option<Principal>, AuthError> {
        let Some(value) = authorization else {
            return Ok(None);
        };
        let token = bearer_token(value)?;
        let header = peek_header(token)?;

        let mut keys = self.inner.current();
        let key = match keys.select(header.kid.as_deref()) {
            Some(key) => Arc::clone(key),
            None => {
                if header.kid.is_none() || self.inner.remote.is_none() {
                    return Err(AuthError::UnknownKey);
                }
                // Possibly a rotated key: re-fetch (rate-limited), then look again.
                self.inner.refresh(false).await;
                keys = self.inner.current();
                match keys.select(header.kid.as_deref()) {
                    Some(key) => Arc::clone(key),
                    None => return Err(AuthError::UnknownKey),
                }
            }
        };
        self.inner.verify(token, &header, &key).map(Some)
    }
}

impl Inner {
    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-fetches the JWKS URL. Unless `periodic`, only when the last fetch is at least the
    /// minimum interval old. A failed fetch keeps the current keys.
    async fn refresh(&self, periodic: bool) {
        let Some(remote) = &self.remote else { return };
        let mut last_fetch = remote.last_fetch.lock().await;
        if !periodic && last_fetch.elapsed() < remote.min_interval {
            return;
        }
        let fetched = fetch_jwks(&remote.client, &remote.url)
            .await
            .and_then(|remote_keys| KeySet::combine(self.static_keys.iter().cloned().chain(remote_keys)));
        // Callers that waited on the lock during this fetch now see it as
        // fresh and return without fetching again.
        *last_fetch = Instant::now();
        match fetched {
            Ok(keys) => {
                tracing::debug!(keys = ?keys.describe(), "JWKS refreshed");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                self.loaded.send_replace(true);
            }
            Err(err) => tracing::warn!(error = %err, "JWKS refresh failed; keeping the previous keys"),
        }
    }

    fn verify(&self, token: &str, header: &PeekedHeader, key: &VerifyKey) -> Result<Principal, AuthError> {
        if header.alg != alg_name(key.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![key.alg];
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)?;
        let claims = data.claims;
        let subject = claims
            .sub
            .filter(|sub| !sub.is_empty())
            .ok_or(AuthError::MissingClaim("sub"))?;
        header_safe("sub", &subject)?;
        let customer = match claims.customer_id {
            Some(customer) if !customer.is_empty() => {
                header_safe("customer_id", &customer)?;
                customer
            }
            _ => subject.clone(),
        };
        let mut scopes = BTreeSet::new();
        for claim in [claims.scope, claims.scp].into_iter().flatten() {
            match claim {
                ScopeClaim::Spaced(list) => {
                    scopes.extend(list.split_whitespace().map(str::to_owned));
                }
                ScopeClaim::List(items) => {
                    scopes.extend(
                        items
                            .iter()
                            .flat_map(|item| item.split_whitespace())
                            .map(str::to_owned),
                    );
                }
            }
        }
        Ok(Principal {
            subject,
            customer,
            scopes,
        })
    }
}

/// Refuses an identity claim that could not travel as gRPC metadata
/// unchanged: only printable ASCII (no CR, LF, NUL or other controls, no
/// bytes above 0x7e), so a service sees exactly the subject the token names.
pub fn header_safe(claim: &'static str, value: &str) -> Result<(), AuthError> {
    if value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err(AuthError::NotHeaderSafe(claim))
    }
}

/// The wait before the `attempt`th (from 0) retry of a JWKS URL that has
/// not answered since start: 1 s, doubling, at most 30 s.
fn first_load_retry(attempt: u32) -> Duration {
    const FIRST: Duration = Duration::from_secs(1);
    const CEILING: Duration = Duration::from_secs(30);
    FIRST.saturating_mul(2u32.saturating_pow(attempt)).min(CEILING)
}

async fn periodic_refresh(inner: Weak<Inner>, every: Duration, loaded: bool) {
    if !loaded {
        let mut attempt = 0;
        loop {
            tokio::time::sleep(first_load_retry(attempt)).await;
            let Some(inner) = inner.upgrade() else { return };
            inner.refresh(true).await;
            if *inner.loaded.borrow() {
                tracing::info!(attempts = attempt + 1, "keys loaded from the JWKS URL");
                break;
            }
            attempt += 1;
        }
    }
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.refresh(true).await;
    }
}

fn base_validation(config: &AuthConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = config.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    match &config.issuer {
        Some(issuer) => {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match &config.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

#[derive(serde::Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    customer_id: Option<String>,
    #[serde(default)]
    scope: Option<ScopeClaim>,
    #[serde(default)]
    scp: Option<ScopeClaim>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Spaced(String),
    List(Vec<String>),
}

struct PeekedHeader {
    alg: String,
    kid: Option<String>,
}

/// Extracts the token from `Bearer <token>` (scheme case-insensitive, RFC 6750 token charset).
fn bearer_token(value: &http::HeaderValue) -> Result<&str, AuthError> {
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("the Authorization header is not visible ASCII"))?
        .trim();
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or(AuthError::Malformed("expected `Authorization: Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("expected `Authorization: Bearer <token>`"));
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(AuthError::Malformed("the bearer token is empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed("the bearer token is too long"));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(AuthError::Malformed("the bearer token is not a compact JWT"));
    }
    Ok(token)
}

/// Reads `alg` and `kid` from the (unverified) header, only to choose the key and pin the
/// algorithm; nothing else in it is trusted.
fn peek_header(token: &str) -> Result<PeekedHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("a JWT has three dot-separated parts"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed("the JWT header is not base64url"))?;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("the JWT header is not a JSON object"))?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(AuthError::Malformed("the JWT header has no `alg`")),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::Malformed("the JWT header `kid` is not a string")),
    };
    if header.contains_key("crit") {
        // RFC 7515 §4.1.11: critical extensions we do not understand must be refused.
        return Err(AuthError::Malformed(
            "the JWT header has critical extensions (`crit`), none are supported",
        ));
    }
    Ok(PeekedHeader { alg, kid })
}
