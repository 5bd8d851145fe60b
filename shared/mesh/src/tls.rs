//! Mutual TLS between ordermesh processes (rustls): each process holds a
//! certificate from the mesh's CA, presents it as a server and as a client,
//! and accepts a peer only with a certificate from the same CA.
//!
//! Why it is built this way:
//! - **Identity is a name in the certificate, not an address.** A process's
//!   certificate carries the DNS name `<target>.ordermesh` (`gateway`,
//!   `order`, `inventory`, `payment`, or `admin` for an operator's tools).
//!   A client checks that the server it reached is the target it meant,
//!   whatever address it dialled (a pod IP, a Service name, 127.0.0.1), the
//!   way Linkerd separates identity from address; a server learns which
//!   target called it ([`PeerTarget`]), and the services decide from that
//!   whom to believe about who a call acts for.
//! - **Certificates rotate without a restart.** The files (certificate,
//!   key, CA) are checked at most every [`RELOAD_CHECK`] when a connection
//!   is made or accepted, and read again when one changed; a set that does
//!   not load (a half-written file) keeps the previous one and logs why.
//!   Connections already open keep the identity they were made with.
//! - **Handshakes never hold up the accept loop**: each runs in its own task
//!   with a timeout, so a client that connects and sends nothing costs one
//!   task for [`HANDSHAKE_TIMEOUT`].
//!
//! rustls does the cryptography; this module only loads the files, names
//! peers and plugs the streams into tonic's server and client.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The names a certificate may carry, one per kind of process; any other
/// name from the CA is a peer nobody trusts with anything.
pub const TARGETS: &[&str] = &["gateway", "order", "inventory", "payment", "admin"];
/// The domain of the identity names (`payment.ordermesh`).
pub const IDENTITY_DOMAIN: &str = "ordermesh";
/// How often, at most, the files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);
/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The identity name of `target`: the DNS name its certificate carries.
pub fn identity_name(target: &str) -> String {
    format!("{target}.{IDENTITY_DOMAIN}")
}

/// The ordermesh process at the other end of a mutually authenticated
/// connection, by its certificate's name (one of [`TARGETS`], or
/// `"unknown"` for a certificate from the CA naming none of them): a
/// request extension that the server's TLS acceptor sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTarget(pub String);

/// Where the process's certificate, key and CA are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The process's certificate chain.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA that signs every ordermesh certificate.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The layout `ordermesh certs` writes: `<dir>/<target>.crt`,
    /// `<dir>/<target>.key` and `<dir>/ca.crt`.
    pub fn in_dir(dir: &Path, target: &str) -> TlsFiles {
        TlsFiles {
            cert: dir.join(format!("{target}.crt")),
            key: dir.join(format!("{target}.key")),
            ca: dir.join("ca.crt"),
        }
    }
}

/// Why the files did not make a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: no {what} in the PEM file", path.display())]
    Empty { path: PathBuf, what: &'static str },
    #[error("{}: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The loaded configurations, and the files' stamps they were loaded from.
struct Loaded {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    stamps: Vec<Option<(SystemTime, u64)>>,
    checked: Instant,
}

/// A process's TLS identity and trust, reloaded when its files change.
pub struct MeshTls {
    files: TlsFiles,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl MeshTls {
    /// Loads the files; an error names the file at fault.
    pub fn load(files: TlsFiles) -> Result<Arc<MeshTls>, TlsError> {
        let loaded = load(&files)?;
        Ok(Arc::new(MeshTls {
            files,
            loaded: Mutex::new(loaded),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The current configurations, read again first when a file changed
    /// (checked at most every [`RELOAD_CHECK`]).
    fn current(&self) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded.checked.elapsed() >= RELOAD_CHECK {
            loaded.checked = Instant::now();
            let now = stamps(&self.files);
            if now != loaded.stamps {
                match load(&self.files) {
                    Ok(fresh) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded");
                        *loaded = fresh;
                    }
                    Err(error) => {
                        // Keep serving with the previous set; try again
                        // at the next check.
                        loaded.stamps = now;
                        tracing::warn!(%error, "TLS certificates changed but do not load; keeping the previous ones");
                    }
                }
            }
        }
        (loaded.server.clone(), loaded.client.clone())
    }

    /// A connector for tonic channels to `target` (its certificate must
    /// name it).
    pub fn connector(self: &Arc<Self>, target: &str) -> Result<Connector, TlsError> {
        let name = identity_name(target);
        let server_name = ServerName::try_from(name.clone()).map_err(|_| TlsError::Pem {
            path: PathBuf::from(target),
            message: format!("{name:?} is not a valid DNS name"),
        })?;
        Ok(Connector {
            tls: self.clone(),
            server_name,
        })
    }

    /// Accepts TLS connections on `listener`: each handshake in its own
    /// task, bounded by [`HANDSHAKE_TIMEOUT`]; a client without a valid
    /// certificate from the CA is refused (and logged with its address).
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConn>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, remote) = tokio::select! {
                    accepted = crate::server::accept(&listener) => accepted,
                    () = tx.closed() => return,
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().0);
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let target = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|certs| certs.first())
                                .map_or_else(|| "unknown".to_owned(), |cert| target_of(cert).to_owned());
                            let _ = tx
                                .send(Ok(TlsConn {
                                    inner: stream,
                                    peer: PeerTarget(target),
                                    remote,
                                }))
                                .await;
                        }
                        Ok(Err(error)) => tracing::warn!(%remote, %error, "TLS handshake refused"),
                        Err(_) => tracing::warn!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// Which of [`TARGETS`] the (already verified) certificate names, or
/// `"unknown"`.
pub fn target_of(cert: &CertificateDer<'_>) -> &'static str {
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(cert) else {
        return "unknown";
    };
    TARGETS
        .iter()
        .find(|target| {
            ServerName::try_from(identity_name(target))
                .is_ok_and(|name| rustls::client::verify_server_name(&parsed, &name).is_ok())
        })
        .copied()
        .unwrap_or("unknown")
}

fn stamps(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    [&files.cert, &files.key, &files.ca]
        .iter()
        .map(|path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    // Stamps first: a file replaced while loading is seen as changed at the
    // next check rather than missed.
    let stamps = stamps(files);
    let chain = certs(&files.cert)?;
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: files.key.clone(),
        message: format!("no private key: {e}"),
    })?;
    let mut roots = RootCertStore::empty();
    for ca in certs(&files.ca)? {
        roots.add(ca)?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        server: Arc::new(server),
        client: Arc::new(client),
        stamps,
        checked: Instant::now(),
    })
}

/// An accepted, mutually authenticated connection: what tonic's server
/// reads and writes, and the peer it makes known to every request on it.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerTarget,
    remote: SocketAddr,
}

impl TlsConn {
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerTarget;

    fn connect_info(&self) -> PeerTarget {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Connects tonic channels over mutual TLS to one target: TCP to the
/// address in the URI, then a handshake that requires the server's
/// certificate to name the target.
#[derive(Clone)]
pub struct Connector {
    tls: Arc<MeshTls>,
    server_name: ServerName<'static>,
}

type Connecting = Pin<
    Box<
        dyn std::future::Future<
                Output = io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>,
            > + Send,
    >,
>;

impl tower::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Connecting {
        let connector = tokio_rustls::TlsConnector::from(self.tls.current().1);
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(80);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let stream = connector.connect(server_name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

#[cfg(feature = "mint")]
pub mod mint;
