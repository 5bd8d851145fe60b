//! A Python client generated from `proto/` by grpcio-tools places, reads and
//! watches an order through the real `ordermesh up`, over native gRPC to the
//! order service: on SQLite, and on PostgreSQL through `up`'s per-service
//! database URLs (what the Helm chart's SingleBinary mode passes).
//!
//! Python comes from `ORDERMESH_PYTHON`, else `target/tools/bin/python`
//! (`.ci/tools.sh` installs grpcio-tools and grpcio-status there). Without it
//! the test prints a SKIP line, except under `CI`, where it fails.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{Up, generate_python, python, repo};

fn order_client(python: &Path, generated: &Path, args: &[&str]) -> Output {
    Command::new(python)
        .arg(repo().join("clients/python/order_client.py"))
        .args(args)
        .env("PYTHONPATH", generated)
        .output()
        .expect("order_client.py runs")
}

/// The JSON lines of one step (`"step": "watched"`), as text.
fn steps<'a>(stdout: &'a str, step: &str) -> Vec<&'a str> {
    let tag = format!(r#""step": "{step}""#);
    stdout.lines().filter(|line| line.contains(&tag)).collect()
}

/// Where `up` keeps each service's data: its SQLite file under the data
/// directory, or the PostgreSQL database named on the command line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Storage {
    Sqlite,
    Postgres,
}

fn create_get_watch(test: &str, storage: Storage, extra_up_args: Vec<String>) {
    let Some(python) = python(test) else { return };
    let generated = tempfile::Builder::new()
        .prefix("python-client-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir under target/");
    generate_python(&python, generated.path());
    let up = Up::start(&extra_up_args);
    let target = format!("127.0.0.1:{}", up.order);
    for service in ["order", "inventory", "payment"] {
        let sqlite = up.data_dir().join(format!("{service}.db"));
        assert_eq!(
            sqlite.exists(),
            storage == Storage::Sqlite,
            "{service}: SQLite file {} only without a database URL",
            sqlite.display()
        );
    }

    let output = order_client(
        &python,
        generated.path(),
        &[
            "--target",
            &target,
            "--request-id",
            "python-1",
            "--expect",
            "ORDER_STATUS_CONFIRMED",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "order_client.py failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created = steps(&stdout, "created");
    assert_eq!(created.len(), 1, "{stdout}");
    assert!(
        created[0].contains(r#""status": "ORDER_STATUS_PENDING""#),
        "{stdout}"
    );
    let order_id = created[0]
        .split(r#""order_id": ""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("order_id in the created line");
    assert!(!order_id.is_empty());
    let got = steps(&stdout, "got");
    assert!(
        got.len() == 1 && got[0].contains(order_id),
        "GetOrder returns the order: {stdout}"
    );
    let watched = steps(&stdout, "watched");
    assert!(!watched.is_empty(), "WatchOrder streams: {stdout}");
    assert!(watched.iter().all(|line| line.contains(order_id)), "{stdout}");
    assert!(
        watched
            .last()
            .is_some_and(|line| line.contains("ORDER_STATUS_CONFIRMED")),
        "the stream ends at CONFIRMED: {stdout}"
    );
    let done = steps(&stdout, "done");
    assert!(
        done.len() == 1 && done[0].contains(r#""total": {"amount_minor": 8999, "currency_code": "USD"}"#),
        "priced from the catalogue (KB-001, $89.99): {stdout}"
    );

    // The same request id again: the same order (idempotent create), still confirmed.
    let again = order_client(
        &python,
        generated.path(),
        &[
            "--target",
            &target,
            "--request-id",
            "python-1",
            "--expect",
            "ORDER_STATUS_CONFIRMED",
        ],
    );
    let again_stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again_stdout}");
    assert!(
        steps(&again_stdout, "created")[0].contains(order_id),
        "{again_stdout}"
    );

    // Bad input: INVALID_ARGUMENT with the field violation, read by the
    // Python client from the google.rpc.BadRequest detail.
    let invalid = order_client(
        &python,
        generated.path(),
        &["--target", &target, "--quantity", "0"],
    );
    let invalid_stdout = String::from_utf8_lossy(&invalid.stdout);
    assert_eq!(invalid.status.code(), Some(1), "{invalid_stdout}");
    let error = steps(&invalid_stdout, "error");
    assert!(
        error.len() == 1
            && error[0].contains(r#""code": "INVALID_ARGUMENT""#)
            && error[0].contains(r#""field": "lines[0].quantity""#),
        "{invalid_stdout}"
    );
}

#[test]
fn python_client_creates_gets_and_watches_an_order_on_sqlite() {
    create_get_watch("python client on SQLite", Storage::Sqlite, Vec::new());
}

#[test]
fn python_client_creates_gets_and_watches_an_order_on_postgres() {
    let test = "python client on PostgreSQL";
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut args = Vec::new();
    for service in ["order", "inventory", "payment"] {
        let Some(url) = runtime.block_on(ordermesh_tests::postgres_database(test)) else {
            return;
        };
        args.push(format!("--{service}-database-url"));
        args.push(url);
    }
    create_get_watch(test, Storage::Postgres, args);
}
