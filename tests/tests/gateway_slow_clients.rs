//! Slow and greedy clients at the gateway's port, over raw TCP: a connection
//! that sends nothing, trickles its headers, sits idle after a response or
//! trickles its body is closed (or answered 408) within the configured
//! timeouts, and one address cannot hold more than its share of
//! connections.

use std::time::{Duration, Instant};

use ordermesh_gateway::listen::ConnectionLimits;
use ordermesh_tests::gateway::{Gateway, Recorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_millis(500);

async fn setup(max_connections_per_address: usize) -> (Recorder, Gateway) {
    let recorder = Recorder::start().await;
    let limits = ConnectionLimits {
        header_read_timeout: TIMEOUT,
        body_read_timeout: TIMEOUT,
        max_connections_per_address,
    };
    let gateway = Gateway::start_with(
        [recorder.url(), recorder.url(), recorder.url()],
        None,
        None,
        limits,
    )
    .await;
    (recorder, gateway)
}

/// Reads until the peer closes; what it sent, and how long that took.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {within:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), started.elapsed())
}

#[tokio::test]
async fn a_silent_connection_is_closed() {
    let (_recorder, gateway) = setup(64).await;
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    let (_, took) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(took >= TIMEOUT / 2, "closed after {took:?}, not at once");
}

#[tokio::test]
async fn trickled_headers_and_an_idle_keep_alive_are_closed() {
    let (_recorder, gateway) = setup(64).await;
    let token = gateway.token("alice", &["payments:read"]);
    // One header byte every 100 ms: the head never completes in time.
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    stream
        .write_all(b"GET /v1/accounts/alice HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut closed = false;
    for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 256];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a trickled head kept the connection for {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A whole request, answered; then silence: the keep-alive ends.
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    let request =
        format!("GET /v1/accounts/alice HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let (answered, took) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answered.starts_with("HTTP/1.1 404"), "{answered}");
    assert!(
        took >= TIMEOUT / 2,
        "the connection stayed for keep-alive first ({took:?})"
    );
}

#[tokio::test]
async fn a_trickled_body_gets_408() {
    let (recorder, gateway) = setup(64).await;
    let token = gateway.token("alice", &["orders:write"]);
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    let head = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"customerId\""
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("answered in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(recorder.seen().is_empty(), "nothing was forwarded");
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let (_recorder, gateway) = setup(3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
        stream.write_all(b"G").await.expect("a first byte");
        held.push(stream);
    }
    let mut fourth = TcpStream::connect(gateway.addr).await.expect("connect");
    let (_, took) = until_closed(&mut fourth, Duration::from_secs(2)).await;
    assert!(
        took < TIMEOUT / 2,
        "the fourth is closed at once, not by a timeout ({took:?})"
    );
    // A closed one frees its slot.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut again = TcpStream::connect(gateway.addr).await.expect("connect");
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), again.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    assert!(
        n > 0 && buf.starts_with(b"HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}
