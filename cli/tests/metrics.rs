//! `/metrics` of the real binary: after a known sequence of calls the
//! counters and histogram counts move by exactly what was sent, every
//! ordermesh metric exported is one docs/metrics.md lists, the exposition
//! passes `promtool check metrics`, and the outbox backlog gauge rises while
//! NATS is down and falls back once it returns.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use ordermesh_proto::inventory::v1 as inventory_pb;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use support::{Up, repo, tool};

/// One sample: its name and labels.
type Key = (String, BTreeMap<String, String>);

/// Parses Prometheus's text format (the samples; comments skipped). Label
/// values may hold braces and commas (`GET /v1/orders/{order_id}`), so the
/// labels are read quote by quote.
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, rest) = match line.find('{') {
            Some(open) => (&line[..open], &line[open + 1..]),
            None => {
                let (name, value) = line.split_once(' ').expect("name value");
                samples.insert(
                    (name.to_owned(), BTreeMap::new()),
                    value.trim().parse().expect("value"),
                );
                continue;
            }
        };
        let mut labels = BTreeMap::new();
        let mut chars = rest.char_indices().peekable();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next().expect("labels end");
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("value ends").1 {
                            '\\' => value.push(chars.next().expect("escaped").1),
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c => key.push(c),
            }
        };
        let value = rest[end + 1..].trim().parse().expect("value");
        samples.insert((name.to_owned(), labels), value);
    }
    samples
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// What Prometheus sends when it prefers OpenMetrics.
const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The exposition and its content type, for a scraper sending `accept`.
async fn scrape_with(port: u16, accept: Option<&str>) -> (String, String) {
    let mut request = ordermesh_tests::gateway::http_client().get(format!("http://127.0.0.1:{port}/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("scrape");
    assert!(response.status().is_success(), "{}", response.status());
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (content_type, response.text().await.expect("body"))
}

/// The exposition in OpenMetrics, as a scraper asking for it gets it.
async fn scrape_openmetrics(port: u16) -> String {
    let (content_type, body) = scrape_with(port, Some(OPENMETRICS_ACCEPT)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    body
}

async fn scrape(port: u16) -> String {
    let (content_type, body) = scrape_with(port, None).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    body
}

/// How much each sample moved between two scrapes.
struct Delta {
    before: BTreeMap<Key, f64>,
    after: BTreeMap<Key, f64>,
}

impl Delta {
    fn of(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = key(name, labels);
        self.after.get(&key).copied().unwrap_or(0.0) - self.before.get(&key).copied().unwrap_or(0.0)
    }
}

/// The metric names docs/metrics.md's table lists.
fn documented() -> Vec<String> {
    std::fs::read_to_string(repo().join("docs/metrics.md"))
        .expect("docs/metrics.md")
        .lines()
        .filter_map(|line| {
            let name = line.strip_prefix("| `")?.split('`').next()?;
            Some(name.to_owned())
        })
        .collect()
}

fn token(up: &Up) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .args(["token", "--data-dir"])
        .arg(up.data_dir())
        .output()
        .expect("ordermesh token");
    assert!(output.status.success());
    String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_move_by_what_was_sent() {
    let up = Up::start(&[]);
    let printed = up.started.join("\n");
    assert!(
        printed.contains(&format!("http://127.0.0.1:{}/metrics", up.metrics)),
        "{printed}"
    );
    let before = parse(&scrape(up.metrics).await);
    let mut inventory = InventoryServiceClient::connect(format!("http://127.0.0.1:{}", up.inventory))
        .await
        .expect("inventory");
    let mut order = OrderServiceClient::connect(format!("http://127.0.0.1:{}", up.order))
        .await
        .expect("order");
    for _ in 0..4 {
        inventory
            .list_stock(inventory_pb::ListStockRequest::default())
            .await
            .expect("list stock");
    }
    for _ in 0..3 {
        let missing = order
            .get_order(order_pb::GetOrderRequest {
                order_id: "no-such-order".into(),
            })
            .await
            .expect_err("not found");
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }
    let created = order
        .create_order(order_pb::CreateOrderRequest {
            request_id: "metrics-1".into(),
            customer_id: "alice".into(),
            lines: vec![order_pb::CreateOrderLine {
                sku: "CB-004".into(),
                quantity: 1,
            }],
        })
        .await
        .expect("created")
        .into_inner()
        .order
        .expect("order");
    let mut polls = 0.0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        polls += 1.0;
        let now = order
            .get_order(order_pb::GetOrderRequest {
                order_id: created.order_id.clone(),
            })
            .await
            .expect("get")
            .into_inner()
            .order
            .expect("order");
        if now.status() == order_pb::OrderStatus::Confirmed {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never confirmed: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Through the gateway: two refused for want of a token, one read.
    let http = ordermesh_tests::gateway::http_client();
    let url = format!("http://127.0.0.1:{}/v1/orders/{}", up.gateway, created.order_id);
    for _ in 0..2 {
        let refused = http.get(&url).send().await.expect("request");
        assert_eq!(refused.status(), 401);
    }
    let read = http
        .get(&url)
        .bearer_auth(token(&up))
        .send()
        .await
        .expect("request");
    assert_eq!(read.status(), 200, "{:?}", read.text().await);

    let text = scrape(up.metrics).await;
    let delta = Delta {
        before,
        after: parse(&text),
    };
    let inventory_service = "ordermesh.inventory.v1.InventoryService";
    let order_service = "ordermesh.order.v1.OrderService";
    let server = "ordermesh_rpc_server_requests_total";
    let ok = |service, method| {
        [
            ("rpc_service", service),
            ("rpc_method", method),
            ("grpc_code", "OK"),
        ]
    };
    assert_eq!(delta.of(server, &ok(inventory_service, "ListStock")), 4.0);
    assert_eq!(
        delta.of(
            "ordermesh_rpc_server_duration_seconds_count",
            &[("rpc_service", inventory_service), ("rpc_method", "ListStock")]
        ),
        4.0
    );
    assert_eq!(
        delta.of(
            server,
            &[
                ("rpc_service", order_service),
                ("rpc_method", "GetOrder"),
                ("grpc_code", "NOT_FOUND")
            ]
        ),
        3.0
    );
    // The polls, and the gateway's read.
    assert_eq!(delta.of(server, &ok(order_service, "GetOrder")), polls + 1.0);
    assert_eq!(delta.of(server, &ok(order_service, "CreateOrder")), 1.0);
    // The saga's calls, as its client counted them and as inventory served them.
    let reserve = [
        ("caller", "order"),
        ("downstream", "inventory"),
        ("rpc_method", "ReserveStock"),
        ("grpc_code", "OK"),
    ];
    assert_eq!(delta.of("ordermesh_rpc_client_requests_total", &reserve), 1.0);
    assert_eq!(delta.of(server, &ok(inventory_service, "ReserveStock")), 1.0);
    assert_eq!(
        delta.of(
            "ordermesh_rpc_client_requests_total",
            &[
                ("caller", "gateway"),
                ("downstream", "order"),
                ("rpc_method", "GetOrder"),
                ("grpc_code", "OK")
            ]
        ),
        1.0
    );
    assert_eq!(
        delta.of(
            "ordermesh_orders_ended_total",
            &[("status", "CONFIRMED"), ("reason", "")]
        ),
        1.0
    );
    assert_eq!(
        delta.of(
            "ordermesh_order_completion_seconds_count",
            &[("status", "CONFIRMED")]
        ),
        1.0
    );
    assert_eq!(
        delta.of(
            "ordermesh_saga_steps_total",
            &[("step", "RESERVE"), ("decision", "advance")]
        ),
        1.0
    );
    // Every service opened write transactions for the order, each timed.
    for service in ["order", "inventory", "payment"] {
        assert!(
            delta.of(
                "ordermesh_db_transaction_begin_seconds_count",
                &[("service", service), ("pool", "write")]
            ) >= 1.0,
            "{service}: {text}"
        );
    }
    let route = "GET /v1/orders/{order_id}";
    let gateway = |status| [("protocol", "rest"), ("route", route), ("status", status)];
    assert_eq!(delta.of("ordermesh_gateway_requests_total", &gateway("401")), 2.0);
    assert_eq!(delta.of("ordermesh_gateway_requests_total", &gateway("200")), 1.0);
    assert_eq!(
        delta.of(
            "ordermesh_gateway_auth_refusals_total",
            &[("reason", "missing_token")]
        ),
        2.0
    );
    // State read on scrape.
    let samples = &delta.after;
    assert_eq!(
        samples.get(&key("ordermesh_sagas_needing_attention", &[])),
        Some(&0.0)
    );
    assert_eq!(
        samples.get(&key(
            "ordermesh_mesh_breaker_state",
            &[("caller", "order"), ("downstream", "payment")]
        )),
        Some(&0.0)
    );
    assert!(
        samples
            .get(&key(
                "ordermesh_db_pool_connections",
                &[("service", "order"), ("pool", "write"), ("state", "idle")]
            ))
            .is_some(),
        "{text}"
    );
    assert!(
        samples
            .get(&key("process_resident_memory_bytes", &[]))
            .is_some_and(|v| *v > 0.0)
    );

    // Every ordermesh metric exported is documented.
    let listed = documented();
    for (name, _) in samples.keys() {
        if let Some(base) = name.strip_prefix("ordermesh_") {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let stripped = base.strip_suffix(suffix)?;
                    listed
                        .contains(&format!("ordermesh_{stripped}"))
                        .then_some(stripped)
                })
                .unwrap_or(base);
            assert!(
                listed.contains(&format!("ordermesh_{base}")),
                "{name} is exported but not in docs/metrics.md"
            );
        }
    }

    if let Some(promtool) = tool("PROMTOOL", "promtool", "promtool check metrics") {
        use std::io::Write;
        let mut check = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .output_with(|stdin| stdin.write_all(text.as_bytes()));
        assert!(
            check.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        check.stdout.clear();
    }

    // The same families in OpenMetrics, read by a strict parser
    // (prometheus_client's): counters named without `_total`, every other
    // family as in the text format.
    let open = scrape_openmetrics(up.metrics).await;
    assert!(open.ends_with("# EOF\n"), "{open}");
    let mut families: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| match rest.split_once(' ') {
            Some((name, "counter")) => format!("{} counter", name.strip_suffix("_total").unwrap_or(name)),
            Some((name, "untyped")) => format!("{name} unknown"),
            Some((name, kind)) => format!("{name} {kind}"),
            None => rest.to_owned(),
        })
        .collect();
    families.sort();
    if let Some(python) = tool("ORDERMESH_PYTHON", "python", "OpenMetrics parse") {
        use std::io::Write;
        const READ: &str = "import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()): print(family.name, family.type)
";
        let parsed = std::process::Command::new(python)
            .args(["-c", READ])
            .stdin(std::process::Stdio::piped())
            .output_with(|stdin| stdin.write_all(open.as_bytes()));
        assert!(
            parsed.status.success(),
            "the OpenMetrics parser refused the exposition: {}\n{open}",
            String::from_utf8_lossy(&parsed.stderr)
        );
        let mut read: Vec<String> = String::from_utf8_lossy(&parsed.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        read.sort();
        assert_eq!(read, families, "{open}");
    }
}

fn gauge(text: &str, name: &str, service: &str) -> Option<f64> {
    parse(text).get(&key(name, &[("service", service)])).copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_backlog_rises_while_nats_is_down_and_falls_when_it_returns() {
    let Some(mut nats) = ordermesh_tests::NatsServer::start().await else {
        return;
    };
    let up = Up::start(&["--nats-url".to_owned(), nats.url()]);
    let pending = "ordermesh_outbox_pending";
    let text = scrape(up.metrics).await;
    assert_eq!(gauge(&text, pending, "order"), Some(0.0), "{text}");
    nats.stop().await;
    let mut order = OrderServiceClient::connect(format!("http://127.0.0.1:{}", up.order))
        .await
        .expect("order");
    let created = order
        .create_order(order_pb::CreateOrderRequest {
            request_id: "backlog-1".into(),
            customer_id: "alice".into(),
            lines: vec![order_pb::CreateOrderLine {
                sku: "CB-004".into(),
                quantity: 1,
            }],
        })
        .await
        .expect("orders need no NATS")
        .into_inner()
        .order
        .expect("order");
    // The order's events wait in its outbox, and age there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(up.metrics).await;
        let age = gauge(&text, "ordermesh_outbox_oldest_age_seconds", "order").unwrap_or(0.0);
        if gauge(&text, pending, "order").unwrap_or(0.0) >= 1.0 && age > 0.5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no backlog while NATS is down ({}): {text}",
            created.order_id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nats.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(up.metrics).await;
        let drained = ["order", "inventory", "payment"].iter().all(|service| {
            gauge(&text, pending, service) == Some(0.0)
                && gauge(&text, "ordermesh_outbox_oldest_age_seconds", service) == Some(0.0)
        });
        if drained {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog never drained after NATS returned: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a command with `feed` writing its standard input.
trait OutputWith {
    fn output_with(
        &mut self,
        feed: impl FnOnce(&mut std::process::ChildStdin) -> std::io::Result<()>,
    ) -> std::process::Output;
}

impl OutputWith for std::process::Command {
    fn output_with(
        &mut self,
        feed: impl FnOnce(&mut std::process::ChildStdin) -> std::io::Result<()>,
    ) -> std::process::Output {
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        feed(&mut stdin).expect("write stdin");
        drop(stdin);
        child.wait_with_output().expect("wait")
    }
}
