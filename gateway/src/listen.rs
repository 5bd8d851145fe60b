//! Accepting connections on the gateway's public port, with bounds a slow or
//! greedy client cannot stretch: each held connection costs memory and a
//! task, so a client that trickles or holds connections open must not be
//! able to keep them forever.
//!
//! - **A connection that sends nothing** is closed after the header read
//!   timeout (the first byte must arrive within it).
//! - **Request headers** (HTTP/1) must arrive whole within the header read
//!   timeout, and an idle keep-alive connection waiting for its next request
//!   is closed after it too (hyper arms the same timer for every request
//!   head).
//! - **Request bodies** (REST) must arrive whole within the body read
//!   timeout: 408 (`rest.rs`); a gRPC call's body is bounded by its deadline.
//! - **HTTP/2** connections are pinged; a peer that stops answering is
//!   dropped.
//! - **Connections per client address** are capped; one over the cap is
//!   closed at once, so one address cannot take every connection.
//!
//! axum's `serve` offers none of these knobs, so connections are served here
//! with hyper-util's auto (HTTP/1 and HTTP/2) builder, with a graceful drain
//! on shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// The bounds on client connections (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// First byte, each HTTP/1 request head, and keep-alive idleness.
    pub header_read_timeout: Duration,
    /// A REST request's whole body.
    pub body_read_timeout: Duration,
    /// Open connections from one client address; 0: no cap (behind a
    /// proxy or ingress, where every client shares the proxy's address).
    pub max_connections_per_address: usize,
}

impl ConnectionLimits {
    pub const DEFAULT: ConnectionLimits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(30),
        max_connections_per_address: 256,
    };
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How long in-flight requests may finish after shutdown began.
const DRAIN: Duration = Duration::from_secs(10);

/// Open connections per client address.
#[derive(Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One counted connection; uncounted when dropped.
struct Held {
    counts: PerAddress,
    ip: IpAddr,
}

impl PerAddress {
    fn hold(&self, ip: IpAddr, max: usize) -> Option<Held> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if max != 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(Held {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown`, then stops
/// accepting and lets open requests finish (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let counts = PerAddress::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = ordermesh_mesh::server::accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let Some(held) = counts.hold(remote.ip(), limits.max_connections_per_address) else {
            tracing::warn!(
                client = %remote.ip(),
                max = limits.max_connections_per_address,
                "too many connections from one address; closed"
            );
            continue;
        };
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _held = held;
            // A connection must say something within the header timeout
            // (protocol detection would otherwise wait forever).
            let mut first = [0u8; 1];
            match tokio::time::timeout(limits.header_read_timeout, tcp.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let service =
                hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
                    app.clone().oneshot(request.map(axum::body::Body::new))
                });
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%remote, %error, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!(service = "gateway", "drain timeout, cutting remaining requests");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_address_and_released() {
        let counts = PerAddress::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = counts.hold(a, 2).expect("first");
        let second = counts.hold(a, 2).expect("second");
        assert!(counts.hold(a, 2).is_none(), "a third from the same address");
        let other = counts.hold(b, 2).expect("another address is not affected");
        drop(first);
        let again = counts.hold(a, 2).expect("a slot freed by a closed connection");
        drop((second, other, again));
        assert!(
            counts.0.lock().expect("lock").is_empty(),
            "no entry outlives its connections"
        );
        // 0 is no cap, not "refuse everyone".
        let unlimited: Vec<Held> = (0..1000).map(|_| counts.hold(a, 0).expect("no cap")).collect();
        assert_eq!(unlimited.len(), 1000);
    }
}
