//! What the operator sets: the auth mode, the `ORDERMESH_JWT_*` settings (read by the binary's
//! flags, whose variables are the names here) held in an [`AuthConfig`], and [`AuthConfigError`],
//! whose messages name the variable or key at fault so a misconfigured gateway fails at start with
//! a message saying what to fix.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

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

/// Shortest accepted HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS256_SECRET_LEN: usize = 32;

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
}

/// Why the authenticator could not be built. Messages name the variable or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("invalid auth mode `{0}`: expected `production` or `development`")]
    InvalidMode(String),
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
