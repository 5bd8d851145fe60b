//! `ordermesh events` as a user runs it: the real binary tails events as JSON
//! lines (refusing a filter that matches no stream) and lists and replays
//! dead letters (to the consumer that gave up only; a message that never was
//! an event listed as it came), both through a process's
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

/// Binds `name` on the orders stream (OrderCreated only) and acks all it has.
async fn drained(bus: &Bus, name: &str) -> ordermesh_events::bus::Consumer {
    let mut config = ConsumerConfig::new(name, BoundedContext::Orders);
    config.filter_subjects = vec!["ordermesh.orders.v1.created".into()];
    let mut consumer = bus.consumer(&config).await.expect("bind");
    loop {
        let deliveries = consumer
            .fetch(100, Duration::from_millis(300))
            .await
            .expect("fetch");
        if deliveries.is_empty() {
            return consumer;
        }
        for delivery in deliveries {
            delivery.ack().await.expect("ack");
        }
    }
}

/// Runs `ordermesh args` expecting it to fail within 10 s; its stderr.
fn fails_at_once(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .args(args)
        .env_remove("ORDERMESH_NATS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ordermesh starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`ordermesh {}` still runs after 10 s", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    assert!(!status.success(), "`ordermesh {}` must fail", args.join(" "));
    stderr
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
        .any(|d| d.event.as_ref().is_ok_and(|e| e.id == event.id))
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

    // A filter that matches no stream is refused, not followed in silence.
    let mut nowhere = vec!["events", "tail"];
    nowhere.extend_from_slice(url_args);
    nowhere.push("ordermesh.shipping.>");
    let stderr = fails_at_once(&nowhere);
    assert!(stderr.contains("matches no event stream"), "{stderr}");

    // Another consumer of the stream, which must not see the replay.
    let mut bystander = drained(&bus, "bystander").await;
    dead_letter_one(&bus).await;
    for delivery in bystander.fetch(100, Duration::from_secs(1)).await.expect("fetch") {
        delivery.ack().await.expect("ack");
    }
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
    // Only the consumer that gave up gets it again.
    let _refuser = drained_until(&bus, "refuser", "o-dead").await;
    let others = bystander.fetch(10, Duration::from_secs(1)).await.expect("fetch");
    assert!(others.is_empty(), "the bystander got {} more", others.len());
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

/// Binds `name` (OrderCreated only) and acks what it gets until the event
/// of `order_id` came.
async fn drained_until(bus: &Bus, name: &str, order_id: &str) -> ordermesh_events::bus::Consumer {
    let mut config = ConsumerConfig::new(name, BoundedContext::Orders);
    config.filter_subjects = vec!["ordermesh.orders.v1.created".into()];
    let mut consumer = bus.consumer(&config).await.expect("bind");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} did not get {order_id} within 20 s"
        );
        let mut found = false;
        for delivery in consumer
            .fetch(100, Duration::from_millis(300))
            .await
            .expect("fetch")
        {
            found |= delivery.event.as_ref().is_ok_and(|e| e.subject == order_id);
            delivery.ack().await.expect("ack");
        }
        if found {
            return consumer;
        }
    }
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
    tail_and_dead_letters(bus.clone(), &["--nats-url", &url]).await;

    // A message some other publisher put there without an envelope is
    // listed as it came: no invented attributes, no 1970 time.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.expect("nats"));
    js.publish("ordermesh.orders.v1.created", "not protobuf".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let config = ConsumerConfig::new("strict", BoundedContext::Orders);
    let mut consumer = bus.consumer(&config).await.expect("bind");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !bus
        .dead_letters(0, 100)
        .await
        .expect("list")
        .iter()
        .any(|d| d.consumer == "strict" && d.event.is_err())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter within 20 s"
        );
        let deliveries = consumer
            .fetch(100, Duration::from_millis(200))
            .await
            .expect("fetch");
        for settled in worker::process(&bus, &config, &Refuse, deliveries).await {
            settled.expect("settled");
        }
    }
    let output = ordermesh(&["events", "dlq", "list", "--nats-url", &url]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!text.contains("1970-01-01T00:00:00Z"), "{text}");
    let listed = json_lines(&output);
    let malformed: Vec<&Value> = listed.iter().filter(|d| d["event"].is_null()).collect();
    assert_eq!(malformed.len(), 1, "{listed:?}");
    assert!(
        malformed[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not an ordermesh event")),
        "{:?}",
        malformed[0]
    );
    assert!(
        malformed[0]["envelopeError"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(malformed[0]["message"]["topic"], "ordermesh.orders.v1.created");
    assert_eq!(malformed[0]["message"]["dataBase64"], "bm90IHByb3RvYnVm");
    let id = malformed[0]["deadLetterId"].as_str().expect("id").to_owned();
    let stderr = fails_at_once(&["events", "dlq", "replay", &id, "--nats-url", &url]);
    assert!(stderr.contains("cannot be replayed"), "{stderr}");
}
