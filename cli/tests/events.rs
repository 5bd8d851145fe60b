//! `ordermesh events` as a user runs it: the real binary tails events as JSON
//! lines and lists and replays dead letters, both through a process's
//! EventAdminService (`--url`, the in-process broker) and straight from
//! JetStream (`--nats-url`, a real nats-server 2.10+).
//!
//! nats-server comes from `NATS_SERVER`, else `target/tools/bin` (installed
//! by `.ci/tools.sh`); without it the NATS test prints a SKIP line, except
//! under `CI`, where it fails.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ordermesh_events::admin::EventAdmin;
use ordermesh_events::{
    BoundedContext, Bus, BusSettings, ConsumerConfig, Event, Handler, HandlerError, worker,
};
use ordermesh_proto::events::v1 as pb;
use serde_json::Value;

fn ordermesh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .args(args)
        .env_remove("ORDERMESH_NATS_URL")
        .output()
        .expect("ordermesh runs")
}

fn json_lines(output: &std::process::Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "ordermesh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// `ordermesh events tail ...` in the background; its lines arrive on a channel.
struct Tail {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ordermesh"))
            .args(args)
            .env_remove("ORDERMESH_NATS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ordermesh events tail starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn next_json(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a tailed event within 20 s");
        serde_json::from_str(&line).expect("a JSON line")
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Refuse;

impl Handler for Refuse {
    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        Err(HandlerError::poison("refused by the test"))
    }
}

fn created(order_id: &str) -> Event {
    let payload = pb::OrderCreated {
        order_id: order_id.into(),
        customer_id: "alice".into(),
        lines: vec![pb::OrderedLine {
            sku: "KB-001".into(),
            quantity: 2,
        }],
        occur_time: None,
    };
    Event::new("/ordermesh/order", &payload, None)
}

/// Publishes `created(order_id)` until the tail shows it (the tail may
/// subscribe a moment after it started), returning the JSON line.
async fn publish_until_tailed(bus: &Bus, tail: &Tail, order_id: &str) -> Value {
    for _ in 0..50 {
        bus.publish(&created(order_id)).await.expect("publish");
        if let Ok(line) = tail.lines.recv_timeout(Duration::from_millis(200)) {
            return serde_json::from_str(&line).expect("a JSON line");
        }
    }
    tail.next_json()
}

async fn dead_letter_one(bus: &Bus) -> Event {
    let event = created("o-dead");
    bus.publish(&event).await.expect("publish");
    let mut config = ConsumerConfig::new("refuser", BoundedContext::Orders);
    config.filter_subjects = vec!["ordermesh.orders.v1.created".into()];
    let mut consumer = bus.consumer(&config).await.expect("bind");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // The refuser may dead-letter the tailed events first; wait for ours.
    while !bus
        .dead_letters(0, 100)
        .await
        .expect("list")
        .iter()
        .any(|d| d.event.id == event.id)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter within 20 s"
        );
        let deliveries = consumer
            .fetch(10, Duration::from_millis(200))
            .await
            .expect("fetch");
        for settled in worker::process(bus, &config, &Refuse, deliveries).await {
            settled.expect("settled");
        }
    }
    event
}

async fn tail_and_dead_letters(bus: Bus, url_args: &[&str]) {
    let mut tail_args = vec!["events", "tail"];
    tail_args.extend_from_slice(url_args);
    tail_args.push("ordermesh.orders.v1.>");
    let tail = Tail::start(&tail_args);
    let line = publish_until_tailed(&bus, &tail, "o-tail").await;
    assert_eq!(line["type"], "ordermesh.events.v1.OrderCreated");
    assert_eq!(line["topic"], "ordermesh.orders.v1.created");
    assert_eq!(line["subject"], "o-tail");
    assert_eq!(line["source"], "/ordermesh/order");
    assert_eq!(line["data"]["orderId"], "o-tail");
    assert_eq!(line["data"]["lines"][0]["quantity"], "2");
    drop(tail);

    dead_letter_one(&bus).await;
    let mut list_args = vec!["events", "dlq", "list"];
    list_args.extend_from_slice(url_args);
    let listed = json_lines(&ordermesh(&list_args));
    // The tail loop may have published o-tail more than once; the refuser
    // dead-letters each copy it got.
    let ours: Vec<&Value> = listed
        .iter()
        .filter(|d| d["event"]["subject"] == "o-dead")
        .collect();
    assert_eq!(ours.len(), 1, "{listed:?}");
    assert_eq!(ours[0]["consumer"], "refuser");
    assert!(
        ours[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused by the test"))
    );
    assert_eq!(ours[0]["event"]["data"]["orderId"], "o-dead");
    let id = ours[0]["deadLetterId"].as_str().expect("id").to_owned();

    let mut replay_args = vec!["events", "dlq", "replay", id.as_str()];
    replay_args.extend_from_slice(url_args);
    let replayed = json_lines(&ordermesh(&replay_args));
    assert_eq!(replayed[0]["replayed"]["deadLetterId"], id.as_str());
    let after = json_lines(&ordermesh(&list_args));
    assert!(
        after.iter().all(|d| d["deadLetterId"] != id.as_str()),
        "replayed letter removed"
    );

    let mut bad = vec!["events", "dlq", "replay", "not-a-number"];
    bad.extend_from_slice(url_args);
    let output = ordermesh(&bad);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("dead"),
        "names the id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_commands_through_the_admin_api() {
    let bus = Bus::in_process(BusSettings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventAdmin::new(bus.clone()).into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    tail_and_dead_letters(bus, &["--url", &url]).await;
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("NATS_SERVER").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin/nats-server")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs nats-server: run .ci/tools.sh"
        );
        eprintln!("\n*** SKIP: no nats-server (run bash .ci/tools.sh) ***\n");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_commands_straight_from_jetstream() {
    let Some(binary) = nats_server() else { return };
    let store = tempfile::tempdir().expect("store");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let _server = KillOnDrop(
        Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts"),
    );
    let url = format!("nats://127.0.0.1:{port}");
    let bus = Bus::connect(&url, BusSettings::default()).await.expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Err(e) = bus.ensure_streams().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nats-server not ready: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tail_and_dead_letters(bus, &["--nats-url", &url]).await;
}
