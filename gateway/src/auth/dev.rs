//! The development key: a random HS256 secret kept in a private file (`gateway-dev-key`) that the
//! gateway loads or creates and `ordermesh token` signs with, so development needs no key setup
//! and two processes starting together agree on one key.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::config::MIN_HS256_SECRET_LEN;

/// File name of the generated development key inside `dev_key_dir`.
pub const DEV_KEY_FILE: &str = "gateway-dev-key";

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
    let installed = written.and_then(|()| install_key(&tmp, &path, secret));
    let _ = std::fs::remove_file(&tmp);
    installed
}

/// Links the new key written to `tmp` into place at `path` and returns the key in use: `secret`,
/// or, when another process created the key file first, that process's key. Any other failure
/// (e.g. a filesystem without hard links) is reported as is.
pub(super) fn install_key(tmp: &Path, path: &Path, secret: String) -> io::Result<String> {
    match std::fs::hard_link(tmp, path) {
        Ok(()) => Ok(secret),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => read_dev_key(path),
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

pub(super) fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
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

/// Why a development token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("the subject must not be empty")]
    EmptySubject,
    #[error("the subject must be printable ASCII (gateways refuse any other)")]
    SubjectNotHeaderSafe,
    #[error("scope {0:?} must be non-empty and contain no whitespace")]
    BadScope(String),
    #[error("the signing secret must be at least {min} bytes (it has {0})", min = super::MIN_HS256_SECRET_LEN)]
    ShortSecret(usize),
    #[error("dev key {}: {source}", path.display())]
    DevKey {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signing the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
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
) -> Result<String, MintError> {
    check_claims(subject, scopes)?;
    let secret = dev_key(dir).map_err(|source| MintError::DevKey {
        path: dir.join(DEV_KEY_FILE),
        source,
    })?;
    mint_with_secret(&secret, subject, scopes, ttl, issuer, audience)
}

/// Mints an HS256 token signed with `secret`: what a development gateway
/// configured with `ORDERMESH_JWT_HS256_SECRET` (the chart's
/// `auth.hs256Secret`) verifies, instead of its own key file.
pub fn mint_with_secret(
    secret: &str,
    subject: &str,
    scopes: &[String],
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, MintError> {
    check_claims(subject, scopes)?;
    if secret.len() < super::MIN_HS256_SECRET_LEN {
        return Err(MintError::ShortSecret(secret.len()));
    }
    sign(secret, subject, scopes, ttl, (issuer, audience))
}

fn check_claims(subject: &str, scopes: &[String]) -> Result<(), MintError> {
    if subject.is_empty() {
        return Err(MintError::EmptySubject);
    }
    if super::header_safe("sub", subject).is_err() {
        return Err(MintError::SubjectNotHeaderSafe);
    }
    if let Some(bad) = scopes
        .iter()
        .find(|scope| scope.is_empty() || scope.chars().any(char::is_whitespace))
    {
        return Err(MintError::BadScope(bad.clone()));
    }
    Ok(())
}

fn sign(
    secret: &str,
    subject: &str,
    scopes: &[String],
    ttl: Duration,
    (issuer, audience): (Option<&str>, Option<&str>),
) -> Result<String, MintError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
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
