//! TLS towards an `https://` collector, from the OpenTelemetry exporter
//! variables: `OTEL_EXPORTER_OTLP_CERTIFICATE` (the CA that signed the
//! collector's certificate, PEM; unset, the web PKI's roots), and
//! `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` with
//! `OTEL_EXPORTER_OTLP_CLIENT_KEY` (a certificate chain and key, PEM, for a
//! collector that requires mutual TLS).
//!
//! The files are read and parsed once, at start: a missing or broken one
//! stops the process with the variable's name, rather than every export
//! failing later, out of sight. Naming a CA or a client certificate for a
//! plaintext `http://` endpoint is refused the same way: whoever set them
//! meant the telemetry to be encrypted.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TelemetryError;

pub(super) const CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
pub(super) const CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";
pub(super) const CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";

/// What the exporter trusts and presents, PEM.
#[derive(Debug, Clone)]
pub(super) struct CollectorTls {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

fn refused(variable: &'static str, reason: impl std::fmt::Display) -> TelemetryError {
    TelemetryError::Tls {
        variable,
        reason: reason.to_string(),
    }
}

impl CollectorTls {
    /// The TLS settings for `endpoint`, from `var` (the environment, in
    /// production): `None` for a plaintext endpoint.
    pub(super) fn for_endpoint(
        endpoint: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<CollectorTls>, TelemetryError> {
        let named = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let (ca, cert, key) = (named(CERTIFICATE), named(CLIENT_CERTIFICATE), named(CLIENT_KEY));
        let https = endpoint.trim_start().to_ascii_lowercase().starts_with("https://");
        if !https {
            let set = [
                (CERTIFICATE, &ca),
                (CLIENT_CERTIFICATE, &cert),
                (CLIENT_KEY, &key),
            ]
            .into_iter()
            .find(|(_, value)| value.is_some());
            return match set {
                Some((variable, _)) => Err(refused(
                    variable,
                    format!("set, but the collector endpoint {endpoint:?} is not https://"),
                )),
                None => Ok(None),
            };
        }
        let read = |variable: &'static str, path: &str| {
            std::fs::read(path).map_err(|e| refused(variable, format!("{path}: {e}")))
        };
        let ca_pem = ca.as_deref().map(|path| read(CERTIFICATE, path)).transpose()?;
        let identity = match (cert.as_deref(), key.as_deref()) {
            (Some(cert), Some(key)) => Some((read(CLIENT_CERTIFICATE, cert)?, read(CLIENT_KEY, key)?)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(refused(
                    CLIENT_KEY,
                    format!("unset, but {CLIENT_CERTIFICATE} is set: a client certificate needs its key"),
                ));
            }
            (None, Some(_)) => {
                return Err(refused(
                    CLIENT_CERTIFICATE,
                    format!("unset, but {CLIENT_KEY} is set: a key needs its certificate"),
                ));
            }
        };
        let tls = CollectorTls { ca_pem, identity };
        // Parsed now, so that a broken file stops the start.
        tls.rustls()?;
        Ok(Some(tls))
    }

    /// For the gRPC exporter.
    pub(super) fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut config = match &self.ca_pem {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        config
    }

    /// What a plaintext endpoint's HTTP client carries (never used to
    /// connect): the web PKI, no client certificate.
    pub(super) fn web_pki() -> CollectorTls {
        CollectorTls {
            ca_pem: None,
            identity: None,
        }
    }

    /// For the HTTP exporter, whatever the scheme: a blocking reqwest
    /// client on rustls with ring (reqwest is built without a provider of
    /// its own, so the exporter's default client would have none), timing
    /// out after `OTEL_EXPORTER_OTLP_TIMEOUT` ms (10 s unset), as the
    /// exporter's own does. Built on a thread of its own, because reqwest's
    /// blocking client starts a runtime of its own, which tokio forbids
    /// inside one.
    pub(super) fn blocking_client(&self) -> Result<reqwest::blocking::Client, TelemetryError> {
        let config = self.rustls()?;
        let timeout = std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
            .ok()
            .and_then(|ms| ms.trim().parse().ok())
            .map_or(
                std::time::Duration::from_secs(10),
                std::time::Duration::from_millis,
            );
        std::thread::spawn(move || {
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .tls_backend_preconfigured(config)
                .build()
        })
        .join()
        .map_err(|_| refused(CERTIFICATE, "building the HTTP client panicked"))?
        .map_err(|e| refused(CERTIFICATE, format!("building the HTTP client: {e}")))
    }

    fn rustls(&self) -> Result<rustls::ClientConfig, TelemetryError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_pem {
            Some(pem) => {
                let certs = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| refused(CERTIFICATE, format!("not PEM certificates: {e}")))?;
                if certs.is_empty() {
                    return Err(refused(CERTIFICATE, "holds no certificate"));
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| refused(CERTIFICATE, format!("not a CA certificate: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| refused(CERTIFICATE, e))?
                .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| refused(CLIENT_CERTIFICATE, format!("not PEM certificates: {e}")))?;
                if chain.is_empty() {
                    return Err(refused(CLIENT_CERTIFICATE, "holds no certificate"));
                }
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| refused(CLIENT_KEY, format!("not a PEM private key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| refused(CLIENT_KEY, format!("does not go with the certificate: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn files() -> (tempfile::TempDir, String, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ordermesh_mesh::tls::mint::Ca::new("test collector CA").expect("ca");
        let (cert, key) = ca.issue("order").expect("issue");
        let path = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).expect("write");
            path.display().to_string()
        };
        let (ca, cert, key) = (
            path("ca.crt", ca.cert_pem()),
            path("c.crt", &cert),
            path("c.key", &key),
        );
        (dir, ca, cert, key)
    }

    #[test]
    fn plaintext_needs_nothing_and_refuses_tls_files() {
        assert!(
            CollectorTls::for_endpoint("http://collector:4317", vars(&[]))
                .expect("plaintext")
                .is_none()
        );
        let refused = CollectorTls::for_endpoint("http://collector:4317", vars(&[(CERTIFICATE, "/ca.crt")]))
            .expect_err("a CA for a plaintext endpoint");
        assert!(refused.to_string().contains(CERTIFICATE), "{refused}");
        assert!(refused.to_string().contains("not https://"), "{refused}");
    }

    #[test]
    fn https_takes_the_web_roots_a_ca_and_a_client_certificate() {
        let (_dir, ca, cert, key) = files();
        let public = CollectorTls::for_endpoint("https://collector:4317", vars(&[]))
            .expect("web roots")
            .expect("tls");
        assert!(public.ca_pem.is_none() && public.identity.is_none());
        let mutual = CollectorTls::for_endpoint(
            "HTTPS://collector:4317",
            vars(&[
                (CERTIFICATE, &ca),
                (CLIENT_CERTIFICATE, &cert),
                (CLIENT_KEY, &key),
            ]),
        )
        .expect("mutual TLS")
        .expect("tls");
        assert!(mutual.ca_pem.is_some() && mutual.identity.is_some());
        mutual.blocking_client().expect("an HTTP client");
    }

    #[test]
    fn missing_or_broken_files_name_their_variable() {
        let (dir, ca, cert, key) = files();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let junk = junk.display().to_string();
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![(CERTIFICATE, "/nonexistent/ca.crt")], CERTIFICATE),
            (vec![(CERTIFICATE, &junk)], CERTIFICATE),
            (vec![(CLIENT_CERTIFICATE, &cert)], CLIENT_KEY),
            (vec![(CLIENT_KEY, &key)], CLIENT_CERTIFICATE),
            (
                vec![
                    (CERTIFICATE, &ca),
                    (CLIENT_CERTIFICATE, &cert),
                    (CLIENT_KEY, &junk),
                ],
                CLIENT_KEY,
            ),
            (
                vec![
                    (CERTIFICATE, &ca),
                    (CLIENT_CERTIFICATE, &junk),
                    (CLIENT_KEY, &key),
                ],
                CLIENT_CERTIFICATE,
            ),
            // A key of another certificate.
            (
                vec![(CERTIFICATE, &ca), (CLIENT_CERTIFICATE, &ca), (CLIENT_KEY, &key)],
                CLIENT_KEY,
            ),
        ];
        for (set, variable) in cases {
            let refused = CollectorTls::for_endpoint("https://collector:4317", vars(&set))
                .expect_err(&format!("{set:?}"));
            assert!(refused.to_string().starts_with(variable), "{set:?}: {refused}");
        }
    }
}
