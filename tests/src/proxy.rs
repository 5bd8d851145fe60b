//! A TCP proxy a test puts between two services to play the network: pass
//! bytes through, or hold the replies (server to client) until told to let
//! them go. Holding the replies makes the classic lost answer: the server
//! did the work and committed, and the client's deadline passes before it
//! hears so.
//!
//! Written here rather than taken from a crate: what a test needs is one
//! switch on one direction of a live connection, a few dozen lines on tokio.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replies {
    Pass,
    Hold,
}

pub struct Proxy {
    pub addr: SocketAddr,
    replies: Arc<watch::Sender<Replies>>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let replies = Arc::new(watch::channel(Replies::Pass).0);
        let mode = replies.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, None));
                tokio::spawn(pump(server_read, client_write, Some(mode.subscribe())));
            }
        });
        Proxy { addr, replies, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_replies(&self, replies: Replies) {
        // send_replace: the value changes even while no connection listens.
        self.replies.send_replace(replies);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes one way; with a mode, waits while it says `Hold` before
/// forwarding what it read.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: Option<watch::Receiver<Replies>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(mode) = &mut mode
            && mode.wait_for(|m| *m == Replies::Pass).await.is_err()
        {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
