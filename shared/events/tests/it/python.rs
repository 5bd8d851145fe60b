//! Other languages can consume: nats-py reads an event published through
//! the outbox and relay, with its CloudEvents headers and payload bytes.

use std::path::Path;
use std::time::Duration;

use ordermesh_events::{Bus, Outbox, Relay, RelayConfig};

use crate::harness::{Backend, Db, NatsServer, bus_settings, eventually, in_ci};
use crate::support::{SHORT, commit_created};

fn python() -> Option<std::path::PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin/python");
    let has_nats = python.is_file()
        && std::process::Command::new(&python)
            .args(["-c", "import nats"])
            .status()
            .is_ok_and(|s| s.success());
    if has_nats {
        return Some(python);
    }
    assert!(!in_ci(), "CI needs nats-py in target/tools (bash .ci/tools.sh)");
    eprintln!("\n*** SKIP: no nats-py in target/tools (run bash .ci/tools.sh) ***\n");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_reads_an_event_and_its_cloudevents_headers() {
    let Some(python) = python() else { return };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let Some(db) = Db::new(Backend::Sqlite).await else {
        return;
    };
    let bus = Bus::connect(&nats.url(), bus_settings()).await.expect("connect");
    let relay = Relay::spawn(db.pool.clone(), bus, RelayConfig::default());
    let event = commit_created(&db.pool, &Outbox::new("/ordermesh/order"), "o-py").await;
    relay.notifier().notify();
    eventually(SHORT, "event sent", || async { db.pending().await == 0 }).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/read_event.py");
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(python)
            .arg(script)
            .arg(nats.url())
            .output(),
    )
    .await
    .expect("python finishes within 30 s")
    .expect("python runs");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let hex: String = event.data.iter().map(|b| format!("{b:02x}")).collect();
    for line in &lines {
        assert_eq!(line["subject"], "ordermesh.orders.v1.created");
        let headers = &line["headers"];
        assert_eq!(headers["ce-specversion"], "1.0");
        assert_eq!(headers["ce-id"], event.id.as_str());
        assert_eq!(headers["ce-source"], "/ordermesh/order");
        assert_eq!(headers["ce-type"], "ordermesh.events.v1.OrderCreated");
        assert_eq!(headers["ce-subject"], "o-py");
        assert_eq!(headers["content-type"], "application/protobuf");
        assert_eq!(
            headers["ce-time"],
            ordermesh_events::envelope::rfc3339(event.time_us).as_str()
        );
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(line["data"], hex.as_str(), "payload bytes as published");
    }
    relay.shutdown().await;
}
