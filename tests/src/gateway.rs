//! The gateway in-process for the gateway tests: in development mode with
//! its signing key in a temporary directory (so tests mint tokens as
//! `ordermesh token` does), optionally with a per-route config file, in
//! front of real services or of a [`Recorder`].
//!
//! The [`Recorder`] is a stand-in upstream that records what reaches it (path
//! and headers) and answers every call NOT_FOUND: the one way to prove what
//! the gateway forwards, and that a refused call is never forwarded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordermesh_gateway::auth::{AuthConfig, AuthMode, mint_dev_token};
use ordermesh_gateway::{GatewayConfig, build};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    keys: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Gateway {
    /// A gateway before `order`, `inventory` and `payment` (URLs), with the
    /// per-route config `file` (TOML) when given.
    pub async fn start(urls: [String; 3], file: Option<&str>) -> Gateway {
        Self::start_with(
            urls,
            file,
            None,
            ordermesh_gateway::listen::ConnectionLimits::DEFAULT,
        )
        .await
    }

    /// [`Gateway::start`], connecting to the services over mutual TLS with
    /// `tls` when given, and holding clients to `connections`.
    pub async fn start_with(
        urls: [String; 3],
        file: Option<&str>,
        tls: Option<std::sync::Arc<ordermesh_mesh::tls::MeshTls>>,
        connections: ordermesh_gateway::listen::ConnectionLimits,
    ) -> Gateway {
        let keys = tempfile::tempdir().expect("tempdir");
        let file = file.map(|text| {
            let path = keys.path().join("gateway.toml");
            std::fs::write(&path, text).expect("write gateway.toml");
            path
        });
        let [order_url, inventory_url, payment_url] = urls;
        let mut auth = AuthConfig::new(AuthMode::Development);
        auth.dev_key_dir = Some(keys.path().to_owned());
        auth.issuer = Some("ordermesh-test".to_owned());
        auth.audience = Some("ordermesh".to_owned());
        let config = GatewayConfig {
            order_url,
            inventory_url,
            payment_url,
            auth,
            file,
            default_timeout: Duration::from_secs(5),
            max_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            allow_unknown_fields: false,
            connections,
            mesh: ordermesh_runtime::server::MeshSettings {
                policy: crate::test_policy(),
                tls,
                ..Default::default()
            },
        };
        let gateway = build(config).await.expect("gateway builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(gateway.serve(listener, async move {
            let _ = stopped.await;
        }));
        Gateway {
            addr,
            keys,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A valid token for `subject` with `scopes`, as `ordermesh token` mints.
    pub fn token(&self, subject: &str, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        mint_dev_token(
            self.keys.path(),
            subject,
            &scopes,
            Duration::from_secs(600),
            Some("ordermesh-test"),
            Some("ordermesh"),
        )
        .expect("mint")
    }

    /// A valid token for `subject` with `scopes` and, when given, a
    /// `customer_id` claim (the customer it acts for, as an identity
    /// provider may set for a user whose id is not the customer's).
    pub fn token_with(&self, subject: &str, scopes: &[&str], customer: Option<&str>) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let mut claims = serde_json::json!({"sub": subject, "scope": scopes.join(" "),
            "iss": "ordermesh-test", "aud": "ordermesh", "iat": now, "exp": now + 600});
        if let Some(customer) = customer {
            claims["customer_id"] = customer.into();
        }
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.secret().as_bytes()),
        )
        .expect("sign")
    }

    /// The development signing secret (to forge tokens that differ in one claim).
    pub fn secret(&self) -> String {
        ordermesh_gateway::auth::dev_key(self.keys.path()).expect("dev key")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What reached the recorder.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: http::HeaderMap,
}

/// A stand-in upstream (HTTP/2 cleartext) recording every request.
#[derive(Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |request: http::Request<axum::body::Body>| {
            let record = record.clone();
            async move {
                record.lock().expect("lock").push(Seen {
                    path: request.uri().path().to_owned(),
                    headers: request.headers().clone(),
                });
                // A trailers-only gRPC answer.
                http::Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", "5")
                    .header("grpc-message", "recorded")
                    .body(axum::body::Body::empty())
                    .expect("response")
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Recorder { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

/// An HTTP client for the tests. reqwest is built (for the gateway's JWKS
/// fetches) with rustls and no default crypto provider: install ring first.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
