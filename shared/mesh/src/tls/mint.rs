//! A development CA and per-process certificates (`ordermesh certs`, and the
//! tests' fixtures): what an operator would otherwise get from cert-manager
//! or their own PKI. rcgen does the X.509 work.

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::{TARGETS, TlsFiles, identity_name};

/// A certificate authority that signs ordermesh identities.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl Ca {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Ca, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// The CA certificate (what every process trusts), PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for `target` (its identity name as DNS SAN, for both
    /// server and client use) and its private key, both PEM.
    pub fn issue(&self, target: &str) -> Result<(String, String), rcgen::Error> {
        self.issue_for(&identity_name(target))
    }

    /// A certificate for the DNS name `name` (a collector's, a database's
    /// host in tests), for server and client use, and its key, both PEM.
    pub fn issue_for(&self, name: &str) -> Result<(String, String), rcgen::Error> {
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes `ca.crt` and, for each of `targets`, `<target>.crt` and
    /// `<target>.key` (mode 0600) into `dir`; returns the paths written.
    pub fn write(&self, dir: &Path, targets: &[&str]) -> Result<Vec<PathBuf>, MintError> {
        std::fs::create_dir_all(dir)?;
        let mut written = vec![dir.join("ca.crt")];
        std::fs::write(&written[0], &self.cert_pem)?;
        for target in targets {
            let (cert, key) = self.issue(target)?;
            let files = TlsFiles::in_dir(dir, target);
            std::fs::write(&files.cert, cert)?;
            write_private(&files.key, &key)?;
            written.extend([files.cert, files.key]);
        }
        Ok(written)
    }
}

/// Why minting failed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("writing certificates: {0}")]
    Io(#[from] io::Error),
    #[error("making certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A development CA with a certificate for every kind of process
/// ([`TARGETS`]) in `dir`.
pub fn development(dir: &Path) -> Result<Vec<PathBuf>, MintError> {
    Ca::new("ordermesh development CA")?.write(dir, TARGETS)
}

fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}
