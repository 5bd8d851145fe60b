//! `ordermesh bench` end to end, as a user runs it: the real binary starts
//! its own mesh, places orders, and writes its JSON report. These tests
//! check that the report has its fields and counted confirmed orders, CPU
//! and (on PostgreSQL) database statements — never how fast anything was.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str], json: &Path) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(json)
        .output()
        .expect("ordermesh bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ordermesh bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one summary line: {stdout}");
    let text = std::fs::read_to_string(json).expect("the JSON report is written");
    serde_json::from_str(&text).expect("the report is JSON")
}

fn number(json: &Value, path: &[&str]) -> f64 {
    let mut v = json;
    for key in path {
        v = &v[*key];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {json:#}", path.join(".")))
}

#[test]
fn create_order_on_up_reports_confirmed_orders_cpu_and_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = bench(
        &[
            "--start",
            "up",
            "--scenario",
            "create-order",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--concurrency",
            "4",
        ],
        &dir.path().join("up.json"),
    );
    assert_eq!(json["scenario"], "create-order");
    assert_eq!(json["target"]["kind"], "up");
    assert_eq!(json["target"]["backend"], "sqlite");
    assert_eq!(json["mode"], "closed");
    assert_eq!(json["concurrency"], 4);
    let ok = number(&json, &["requests", "ok"]);
    assert!(ok > 0.0, "confirmed orders are counted");
    assert_eq!(json["requests"]["error_total"], 0, "{:#}", json["requests"]);
    assert!(
        json["spread"]["opened"].as_bool().expect("opened"),
        "funded accounts per run"
    );
    // Orders spread over the demo catalogue and 32 accounts by default.
    assert_eq!(
        json["spread"]["skus"].as_array().map(Vec::len),
        Some(5),
        "{:#}",
        json["spread"]
    );
    assert_eq!(json["spread"]["ids"].as_array().map(Vec::len), Some(32));
    assert!(number(&json, &["throughput_per_s"]) > 0.0);
    for p in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(number(&json, &["latency_ms", p]) > 0.0, "{p}");
    }
    assert!(number(&json, &["latency_ms", "p50_ms"]) <= number(&json, &["latency_ms", "p99_ms"]));
    assert!(number(&json, &["cpu", "ordermesh_ms_per_request"]) > 0.0);
    assert!(number(&json, &["cpu", "process_ms_per_request", "up"]) > 0.0);
    assert!(number(&json, &["target", "start_to_healthy_ms"]) > 0.0);
    assert!(number(&json, &["target", "idle_rss_kib", "up"]) > 1000.0);
    assert!(number(&json, &["rss_kib", "up", "window_end"]) > 1000.0);
    // The limit, measured in the same run.
    for floor in [
        "rpc_server_ms",
        "rpc_client_ms",
        "commit_client_ms",
        "statement_client_ms",
    ] {
        assert!(number(&json, &["limit", "floor", floor]) > 0.0, "{floor}");
    }
    assert!(number(&json, &["limit", "lower", "orders_per_s"]) > 0.0);
    assert!(number(&json, &["limit", "throughput_share_of_limit"]) > 0.0);
    // The fixed floor: 6 RPCs and 6 commits, whatever this run counted.
    assert_eq!(number(&json, &["limit", "commits_per_order_fixed"]), 6.0);
    assert_eq!(json["limit"]["fixed"]["includes_database"], true);
    assert!(number(&json, &["limit", "fixed", "orders_per_s"]) > 0.0);
    assert!(number(&json, &["limit", "throughput_share_of_fixed_floor"]) > 0.0);
}

#[test]
fn open_loop_and_watchers_on_up_report_their_own_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = bench(
        &[
            "--scenario",
            "watch-order",
            "--rate",
            "20",
            "--watchers",
            "20",
            "--watch-hold",
            "400ms",
            "--duration",
            "1s",
            "--warmup",
            "500ms",
        ],
        &dir.path().join("watch.json"),
    );
    assert_eq!(json["mode"], "open");
    assert_eq!(number(&json, &["rate_per_s"]), 20.0);
    assert!(number(&json, &["requests", "ok"]) > 0.0, "{:#}", json["requests"]);
    // Orders are held 400 ms at CapturePayment and arrive every 50 ms, so a
    // watcher waits on an open order nearly all the time; without the hold
    // (fault injection not armed) orders end within milliseconds and almost
    // none is ever seen open.
    assert!(
        number(&json, &["watch", "average_active_watchers"]) >= 5.0,
        "{:#}\nthe flow's orders: {:#}",
        json["watch"],
        json["requests"]
    );
    assert!(number(&json, &["watch", "subscriptions_per_s"]) > 0.0);
    assert!(number(&json, &["watch", "phase_a_flow_only", "ordermesh_cpu_ms_per_s"]) > 0.0);
    assert_eq!(
        json["watch"]["watcher_errors"],
        serde_json::json!({}),
        "{:#}",
        json["watch"]
    );
}

#[test]
fn create_order_on_postgres_with_two_order_processes_counts_statements_and_commits_per_order() {
    // The bench's own cluster needs PostgreSQL's server binaries (initdb).
    let has_postgres = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|v| v.path().join("bin/initdb").exists())
        })
        .unwrap_or(false);
    if !has_postgres {
        assert!(
            !support::in_ci(),
            "CI needs PostgreSQL's initdb (apt-get install postgresql)"
        );
        eprintln!("\n*** SKIP create_order_on_postgres: no initdb under /usr/lib/postgresql ***\n");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let json = bench(
        &[
            "--start",
            "serve",
            "--order-replicas",
            "2",
            "--concurrency",
            "4",
            "--scenario",
            "create-order",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--no-limit",
        ],
        &dir.path().join("serve.json"),
    );
    assert_eq!(json["target"]["backend"], "postgres");
    assert_eq!(json["target"]["order_replicas"], 2);
    assert!(number(&json, &["requests", "ok"]) > 0.0);
    // The workers alternate between the two order processes, so both
    // drive sagas: neither is an idle bystander.
    let order = number(&json, &["cpu", "process_ms_per_request", "order"]);
    let second = number(&json, &["cpu", "process_ms_per_request", "order-2"]);
    assert!(
        second > order * 0.3 && order > second * 0.3,
        "order {order} ms, order-2 {second} ms per order"
    );
    for process in ["order", "order-2", "inventory", "payment"] {
        assert!(
            number(&json, &["cpu", "process_ms_per_request", process]) > 0.0,
            "{process}"
        );
        let rss = number(&json, &["target", "idle_rss_kib", process]);
        assert!(rss > 1000.0, "{process}");
        // Its own memory is a part of it: the binary's pages are the rest.
        let anon = number(&json, &["target", "idle_rss_anon_kib", process]);
        assert!(anon > 100.0 && anon < rss, "{process}: {anon} of {rss} KiB");
    }
    assert!(
        number(&json, &["cpu", "database_ms_per_request"]) > 0.0,
        "{:#}",
        json["cpu"]
    );
    // Every order writes: at least one commit and statement in each service.
    assert!(
        number(&json, &["database", "commits_per_request"]) >= 3.0,
        "{:#}",
        json["database"]
    );
    assert!(
        number(&json, &["database", "statements_per_request"]) >= 3.0,
        "{:#}",
        json["database"]
    );
    let top = json["database"]["top_statements"]
        .as_array()
        .expect("top statements");
    assert!(!top.is_empty());
    let databases: Vec<&str> = top.iter().filter_map(|t| t["database"].as_str()).collect();
    for service in ["order", "inventory", "payment"] {
        assert!(databases.contains(&service), "{service} in {databases:?}");
    }
}
