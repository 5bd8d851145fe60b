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
//! - **JWKS URLs follow key rotation without hammering the issuer.** The set is fetched at start
//!   (failure is fatal: no keys, no service), refreshed periodically (default 5 min), and
//!   re-fetched when a token names an unknown `kid` — at most once per minimum interval
//!   (default 30 s), so a flood of tokens with random `kid`s cannot turn the gateway into a
//!   traffic amplifier against the identity provider. A failed or invalid refresh keeps the
//!   previous keys.
//! - **Claims:** `exp` and `sub` are required, `nbf` is checked when present, `iss`/`aud` are
//!   required and checked when configured, with a leeway (default 30 s) for clock skew. Scopes
//!   come from the OAuth2 `scope` string (space-separated) and/or the `scp` array.
//! - **Errors never echo the token.** [`AuthError`] variants carry no token-derived text, so
//!   [`AuthError::to_status`] and logs cannot leak credentials or reflect attacker input.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

#[cfg(test)]
mod tests;

/// Expected `iss` claim (checked when set).
pub const ENV_ISSUER: &str = "ORDERMESH_JWT_ISSUER";
/// Expected `aud` claim (checked when set).
pub const ENV_AUDIENCE: &str = "ORDERMESH_JWT_AUDIENCE";
/// Path of a JWKS JSON document with the verification keys.
pub const ENV_JWKS_FILE: &str = "ORDERMESH_JWT_JWKS_FILE";
/// URL of a JWKS JSON document, fetched at start and refreshed.
pub const ENV_JWKS_URL: &str = "ORDERMESH_JWT_JWKS_URL";
/// HS256 shared secret (development mode only).
pub const ENV_HS256_SECRET: &str = "ORDERMESH_JWT_HS256_SECRET";
/// File name of the generated development key inside `dev_key_dir`.
pub const DEV_KEY_FILE: &str = "gateway-dev-key";

/// Shortest accepted HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS256_SECRET_LEN: usize = 32;
/// Longest accepted bearer token; anything longer is refused before parsing.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Largest accepted JWKS document.
const MAX_JWKS_LEN: usize = 1024 * 1024;
/// Smallest accepted RSA modulus.
const MIN_RSA_BITS: usize = 2048;

/// How strict the gateway is about keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Public keys (JWKS) only; refuses to start without them.
    Production,
    /// Also accepts an HS256 secret, or generates a local dev key.
    Development,
}

impl FromStr for AuthMode {
    type Err = AuthConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "production" => Ok(Self::Production),
            "development" => Ok(Self::Development),
            _ => Err(AuthConfigError::InvalidMode(s.to_owned())),
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Production => "production",
            Self::Development => "development",
        })
    }
}

/// Where the keys come from and what the claims must say.
#[derive(Clone)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// `ORDERMESH_JWT_ISSUER`: when set, `iss` is required and must match.
    pub issuer: Option<String>,
    /// `ORDERMESH_JWT_AUDIENCE`: when set, `aud` is required and must contain it.
    pub audience: Option<String>,
    /// `ORDERMESH_JWT_JWKS_FILE`: a JWKS JSON document, read once at start.
    pub jwks_file: Option<PathBuf>,
    /// `ORDERMESH_JWT_JWKS_URL`: fetched at start, then refreshed.
    pub jwks_url: Option<String>,
    /// `ORDERMESH_JWT_HS256_SECRET`: development only; production refuses it.
    pub hs256_secret: Option<String>,
    /// Development mode with no key configured: where `gateway-dev-key` is loaded or created.
    pub dev_key_dir: Option<PathBuf>,
    /// Clock-skew allowance for `exp`/`nbf` (whole seconds are used). Default 30 s.
    pub leeway: Duration,
    /// Periodic JWKS URL refresh. Default 5 min.
    pub jwks_refresh_interval: Duration,
    /// Minimum time between JWKS URL fetches triggered by an unknown `kid`. Default 30 s.
    pub jwks_min_refresh_interval: Duration,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_file", &self.jwks_file)
            .field("jwks_url", &self.jwks_url)
            .field("hs256_secret", &self.hs256_secret.as_ref().map(|_| "[redacted]"))
            .field("dev_key_dir", &self.dev_key_dir)
            .field("leeway", &self.leeway)
            .field("jwks_refresh_interval", &self.jwks_refresh_interval)
            .field("jwks_min_refresh_interval", &self.jwks_min_refresh_interval)
            .finish()
    }
}

impl AuthConfig {
    /// No keys, no claim checks, default leeway and refresh intervals.
    pub fn new(mode: AuthMode) -> Self {
        Self {
            mode,
            issuer: None,
            audience: None,
            jwks_file: None,
            jwks_url: None,
            hs256_secret: None,
            dev_key_dir: None,
            leeway: Duration::from_secs(30),
            jwks_refresh_interval: Duration::from_secs(5 * 60),
            jwks_min_refresh_interval: Duration::from_secs(30),
        }
    }

    /// [`AuthConfig::new`] plus the `ORDERMESH_JWT_*` environment variables (empty = unset).
    /// `dev_key_dir` is left unset.
    pub fn from_env(mode: AuthMode) -> Result<Self, AuthConfigError> {
        let mut not_unicode = None;
        let config = Self::from_lookup(mode, |var| match std::env::var(var) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                not_unicode.get_or_insert(var_name(var));
                None
            }
        });
        match not_unicode {
            Some(var) => Err(AuthConfigError::NotUnicode(var)),
            None => Ok(config),
        }
    }

    /// [`AuthConfig::from_env`] with an explicit variable lookup (for tests and embedding).
    pub fn from_lookup(mode: AuthMode, mut lookup: impl FnMut(&str) -> Option<String>) -> Self {
        let mut get = |var: &str| lookup(var).filter(|value| !value.trim().is_empty());
        let mut config = Self::new(mode);
        config.issuer = get(ENV_ISSUER);
        config.audience = get(ENV_AUDIENCE);
        config.jwks_file = get(ENV_JWKS_FILE).map(PathBuf::from);
        config.jwks_url = get(ENV_JWKS_URL).map(|url| url.trim().to_owned());
        config.hs256_secret = get(ENV_HS256_SECRET);
        config
    }
}

fn var_name(var: &str) -> &'static str {
    [
        ENV_ISSUER,
        ENV_AUDIENCE,
        ENV_JWKS_FILE,
        ENV_JWKS_URL,
        ENV_HS256_SECRET,
    ]
    .into_iter()
    .find(|known| *known == var)
    .unwrap_or("ORDERMESH_JWT_*")
}

/// Why the authenticator could not be built. Messages name the variable or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("invalid auth mode `{0}`: expected `production` or `development`")]
    InvalidMode(String),
    #[error("{0} is not valid UTF-8")]
    NotUnicode(&'static str),
    #[error(
        "production mode needs verification keys: set {ENV_JWKS_FILE} or {ENV_JWKS_URL} \
         (a JWKS document with the issuer's public keys)"
    )]
    NoKeys,
    #[error(
        "{ENV_HS256_SECRET} is refused in production mode: whoever holds a shared secret can \
         mint any token; publish public keys via {ENV_JWKS_FILE} or {ENV_JWKS_URL} instead"
    )]
    SecretInProduction,
    #[error(
        "development mode needs a key: set {ENV_HS256_SECRET}, {ENV_JWKS_FILE} or \
         {ENV_JWKS_URL}, or give a directory for the generated dev key"
    )]
    NoDevKey,
    #[error("{ENV_HS256_SECRET} must be at least {MIN_HS256_SECRET_LEN} bytes (it has {0})")]
    WeakSecret(usize),
    #[error("{var} ({location}): {reason}")]
    Jwks {
        var: &'static str,
        location: String,
        reason: String,
    },
    #[error("{var} ({location}): key {key}: {reason}")]
    JwksKey {
        var: &'static str,
        location: String,
        /// The key's `kid` in quotes, or `#<index> (no kid)`.
        key: String,
        reason: String,
    },
    #[error("conflicting keys: {0}")]
    Conflict(String),
    #[error("dev key {}: {source}", path.display())]
    DevKey {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: String,
    /// Union of the `scope` (space-separated) and `scp` (array) claims.
    pub scopes: BTreeSet<String>,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
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

/// One verification key with its pinned algorithm.
struct VerifyKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    /// Combines key sources, refusing duplicate `kid`s and several keys without one.
    fn combine(sources: impl IntoIterator<Item = Arc<VerifyKey>>) -> Result<Self, AuthConfigError> {
        let keys: Vec<Arc<VerifyKey>> = sources.into_iter().collect();
        let mut seen = BTreeSet::new();
        for kid in keys.iter().filter_map(|key| key.kid.as_deref()) {
            if !seen.insert(kid) {
                return Err(AuthConfigError::Conflict(format!(
                    "two keys share the kid \"{kid}\""
                )));
            }
        }
        if keys.len() > 1 && keys.iter().filter(|key| key.kid.is_none()).count() > 1 {
            return Err(AuthConfigError::Conflict(
                "more than one key has no kid, so a token without a kid would be ambiguous \
                 (the HS256 secret counts as a key without a kid)"
                    .to_owned(),
            ));
        }
        Ok(Self { keys })
    }

    fn select(&self, kid: Option<&str>) -> Option<&Arc<VerifyKey>> {
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

    fn describe(&self) -> Vec<String> {
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
        let remote = match &config.jwks_url {
            Some(url) => {
                check_jwks_url(url, config.mode)?;
                let client = http_client().map_err(|reason| AuthConfigError::Jwks {
                    var: ENV_JWKS_URL,
                    location: url.clone(),
                    reason,
                })?;
                let started = Instant::now();
                remote_keys = fetch_jwks(&client, url).await?;
                Some(Remote {
                    url: url.clone(),
                    client,
                    last_fetch: tokio::sync::Mutex::new(started),
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
            remote,
            validation: base_validation(&config),
            refresher: OnceLock::new(),
        });
        if inner.remote.is_some() {
            let handle = tokio::spawn(periodic_refresh(
                Arc::downgrade(&inner),
                config.jwks_refresh_interval,
            ));
            let _ = inner.refresher.set(handle.abort_handle());
        }
        Ok(Self { inner })
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
        *last_fetch = Instant::now();
        let fetched = fetch_jwks(&remote.client, &remote.url)
            .await
            .and_then(|remote_keys| KeySet::combine(self.static_keys.iter().cloned().chain(remote_keys)));
        match fetched {
            Ok(keys) => {
                tracing::debug!(keys = ?keys.describe(), "JWKS refreshed");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
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
        Ok(Principal { subject, scopes })
    }
}

async fn periodic_refresh(inner: Weak<Inner>, every: Duration) {
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

fn alg_name(alg: Algorithm) -> &'static str {
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

fn hs256_key(secret: &str) -> Result<Arc<VerifyKey>, AuthConfigError> {
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
fn parse_jwks(
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
fn check_jwks_url(url: &str, mode: AuthMode) -> Result<(), AuthConfigError> {
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

fn http_client() -> Result<reqwest::Client, String> {
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

async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<Vec<Arc<VerifyKey>>, AuthConfigError> {
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

/// Loads the development HS256 secret from `dir/gateway-dev-key`, creating it (256 random bits,
/// base64url, mode 0600) if missing. The secret is the file's text, so the same value also works
/// as `ORDERMESH_JWT_HS256_SECRET`. A key file readable by group or others is refused.
pub fn dev_key(dir: &Path) -> io::Result<String> {
    let path = dir.join(DEV_KEY_FILE);
    match read_dev_key(&path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    create_private_dir(dir)?;
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|err| io::Error::other(format!("no randomness: {err}")))?;
    let secret = URL_SAFE_NO_PAD.encode(random);

    // Write a private temporary file, then link it into place: the key appears atomically and
    // complete, and if another process won the race, its key is kept and used.
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|err| io::Error::other(format!("no randomness: {err}")))?;
    let tmp = dir.join(format!(".{DEV_KEY_FILE}.{}.tmp", URL_SAFE_NO_PAD.encode(suffix)));
    let written = write_private_file(&tmp, secret.as_bytes());
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(secret),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => read_dev_key(&path),
        Err(err) => Err(err),
    }
}

fn read_dev_key(path: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is accessible by group or others (mode {:o}); run `chmod 600` on it or \
                     delete it to have a new one generated",
                    path.display(),
                    mode & 0o777
                ),
            ));
        }
    }
    let secret = text.trim();
    if secret.len() < MIN_HS256_SECRET_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} holds fewer than {MIN_HS256_SECRET_LEN} bytes; delete it to have a new one \
                 generated",
                path.display()
            ),
        ));
    }
    Ok(secret.to_owned())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Mints an HS256 development token signed with the dev key in `dir` (created if missing), as
/// `ordermesh token` does. `scopes` become the space-separated `scope` claim.
pub fn mint_dev_token(
    dir: &Path,
    subject: &str,
    scopes: &[String],
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> anyhow::Result<String> {
    anyhow::ensure!(!subject.is_empty(), "the subject must not be empty");
    if let Some(bad) = scopes
        .iter()
        .find(|scope| scope.is_empty() || scope.chars().any(char::is_whitespace))
    {
        anyhow::bail!("scope {bad:?} must be non-empty and contain no whitespace");
    }
    let secret =
        dev_key(dir).map_err(|err| anyhow::anyhow!("dev key {}: {err}", dir.join(DEV_KEY_FILE).display()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), subject.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(ttl.as_secs()).into());
    if !scopes.is_empty() {
        claims.insert("scope".into(), scopes.join(" ").into());
    }
    if let Some(issuer) = issuer {
        claims.insert("iss".into(), issuer.into());
    }
    if let Some(audience) = audience {
        claims.insert("aud".into(), audience.into());
    }
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?;
    Ok(token)
}
