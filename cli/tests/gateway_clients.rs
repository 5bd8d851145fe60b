//! Third-party clients through the gateway of a real `ordermesh up`, with a
//! token from `ordermesh token`: grpcurl (native gRPC, the gateway's own
//! reflection), the Python client (native gRPC, `--token`) and the
//! TypeScript example client (Connect's grpc-web transport over HTTP/1.1,
//! server streaming included). Each also checks that a call without a token is
//! refused with Unauthenticated.
//!
//! Tools: grpcurl and Python (grpcio-tools) from target/tools (or
//! GRPCURL / ORDERMESH_PYTHON); Node.js 20+ from PATH (or
//! ORDERMESH_NODE), with clients/typescript/node_modules, buf and
//! protoc-gen-es, all installed by `.ci/tools.sh`. A missing tool prints a
//! SKIP line, except under `CI`, where it fails the test.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{Up, missing, node, repo, tool};

/// `ordermesh token` for `up`'s data directory, with the default scopes.
fn token(up: &Up) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .args(["token", "--data-dir"])
        .arg(up.data_dir())
        .output()
        .expect("ordermesh token runs");
    assert!(
        output.status.success(),
        "ordermesh token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).expect("utf-8 token");
    let token = token.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    token
}

/// The JSON lines of one step (`"step": "watched"`) a client printed, parsed.
fn steps(stdout: &str, step: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["step"] == step)
        .collect()
}

/// Checks a client's create/get/watch run: one created order, PENDING; the
/// same order read back; a stream of it ending at CONFIRMED; priced from the
/// catalogue (KB-001, $89.99).
fn assert_created_got_watched(client: &str, output: &Output) -> String {
    let all = support::output_text(output);
    assert!(output.status.success(), "{client} failed: {all}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let created = steps(&stdout, "created");
    assert_eq!(created.len(), 1, "{client}: {all}");
    assert_eq!(created[0]["status"], "ORDER_STATUS_PENDING", "{client}: {all}");
    let order_id = created[0]["order_id"]
        .as_str()
        .expect("order_id in the created line")
        .to_owned();
    assert!(!order_id.is_empty(), "{client}: {all}");
    let got = steps(&stdout, "got");
    assert!(
        got.len() == 1 && got[0]["order_id"] == order_id.as_str(),
        "{client}: GetOrder returns the order: {all}"
    );
    let watched = steps(&stdout, "watched");
    assert!(!watched.is_empty(), "{client}: WatchOrder streams: {all}");
    assert!(
        watched.iter().all(|line| line["order_id"] == order_id.as_str()),
        "{client}: {all}"
    );
    assert_eq!(
        watched.last().map(|line| &line["status"]),
        Some(&serde_json::json!("ORDER_STATUS_CONFIRMED")),
        "{client}: the stream ends at CONFIRMED: {all}"
    );
    let done = steps(&stdout, "done");
    assert!(
        done.len() == 1
            && done[0]["total"] == serde_json::json!({"amount_minor": 8999, "currency_code": "USD"}),
        "{client}: priced from the catalogue: {all}"
    );
    order_id
}

// --- grpcurl ---------------------------------------------------------------

fn grpcurl(grpcurl: &Path, args: &[&str]) -> Output {
    Command::new(grpcurl)
        .args(["-plaintext", "-max-time", "30"])
        .args(args)
        .output()
        .expect("grpcurl runs")
}

#[test]
fn grpcurl_lists_describes_and_places_an_order_through_the_gateway() {
    let test = "grpcurl through the gateway";
    let Some(grpcurl_bin) = tool("GRPCURL", "grpcurl", test) else {
        return;
    };
    let up = Up::start(&[]);
    let gateway = format!("127.0.0.1:{}", up.gateway);
    let token = token(&up);
    let bearer = format!("authorization: Bearer {token}");

    // Reflection (v1 and v1alpha) and health are the gateway's own: no token.
    let listed = grpcurl(&grpcurl_bin, &[&gateway, "list"]);
    assert!(listed.status.success(), "list: {}", support::output_text(&listed));
    let services = String::from_utf8_lossy(&listed.stdout);
    for service in [
        "ordermesh.order.v1.OrderService",
        "ordermesh.inventory.v1.InventoryService",
        "ordermesh.payment.v1.PaymentService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.lines().any(|line| line.trim() == service),
            "list shows {service}: {services}"
        );
    }
    let described = grpcurl(
        &grpcurl_bin,
        &[
            &gateway,
            "describe",
            "ordermesh.order.v1.OrderService.CreateOrder",
        ],
    );
    let description = String::from_utf8_lossy(&described.stdout);
    assert!(
        described.status.success()
            && description.contains("rpc CreateOrder ( .ordermesh.order.v1.CreateOrderRequest )")
            && description.contains("returns ( .ordermesh.order.v1.CreateOrderResponse )"),
        "describe: {}",
        support::output_text(&described)
    );
    let health = grpcurl(&grpcurl_bin, &[&gateway, "grpc.health.v1.Health/Check"]);
    assert!(
        health.status.success() && String::from_utf8_lossy(&health.stdout).contains("SERVING"),
        "health: {}",
        support::output_text(&health)
    );

    // CreateOrder with the token, then GetOrder until the saga confirms it.
    let request = r#"{"request_id": "grpcurl-1", "customer_id": "alice",
        "lines": [{"sku": "KB-001", "quantity": 1}]}"#;
    let created = grpcurl(
        &grpcurl_bin,
        &[
            "-H",
            &bearer,
            "-d",
            request,
            &gateway,
            "ordermesh.order.v1.OrderService/CreateOrder",
        ],
    );
    assert!(
        created.status.success(),
        "CreateOrder: {}",
        support::output_text(&created)
    );
    let created: serde_json::Value =
        serde_json::from_slice(&created.stdout).expect("CreateOrder prints JSON");
    let order_id = created["order"]["orderId"]
        .as_str()
        .expect("CreateOrder returns an order id")
        .to_owned();
    assert!(!order_id.is_empty(), "{created}");
    assert_eq!(created["order"]["customerId"], "alice", "{created}");

    let get = format!(r#"{{"order_id": "{order_id}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(30);
    let order = loop {
        let got = grpcurl(
            &grpcurl_bin,
            &[
                "-H",
                &bearer,
                "-d",
                &get,
                &gateway,
                "ordermesh.order.v1.OrderService/GetOrder",
            ],
        );
        assert!(got.status.success(), "GetOrder: {}", support::output_text(&got));
        let got: serde_json::Value = serde_json::from_slice(&got.stdout).expect("GetOrder prints JSON");
        assert_eq!(got["order"]["orderId"], order_id.as_str(), "{got}");
        if got["order"]["status"] == "ORDER_STATUS_CONFIRMED" {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "the order is not CONFIRMED within 30s: {got}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        order["order"]["total"],
        serde_json::json!({"amountMinor": "8999", "currencyCode": "USD"}),
        "{order}"
    );

    // The same call without a token: refused at the gateway.
    let refused = grpcurl(
        &grpcurl_bin,
        &[
            "-d",
            request,
            &gateway,
            "ordermesh.order.v1.OrderService/CreateOrder",
        ],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("Code: Unauthenticated"),
        "CreateOrder without a token: {}",
        support::output_text(&refused)
    );
}

// --- Python ----------------------------------------------------------------

#[test]
fn python_client_places_gets_and_watches_an_order_through_the_gateway() {
    let test = "python client through the gateway";
    let Some(python) = support::python(test) else {
        return;
    };
    let generated = tempfile::Builder::new()
        .prefix("python-gateway-client-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir under target/");
    support::generate_python(&python, generated.path());

    let up = Up::start(&[]);
    let token = token(&up);
    let gateway = format!("127.0.0.1:{}", up.gateway);
    let client = |args: &[&str]| {
        Command::new(&python)
            .arg(repo().join("clients/python/order_client.py"))
            .args(["--target", &gateway])
            .args(args)
            .env("PYTHONPATH", generated.path())
            .output()
            .expect("order_client.py runs")
    };

    let placed = client(&[
        "--token",
        &token,
        "--request-id",
        "python-gateway-1",
        "--expect",
        "ORDER_STATUS_CONFIRMED",
    ]);
    assert_created_got_watched("order_client.py", &placed);

    for (args, code) in [
        (vec![], "UNAUTHENTICATED"),
        (vec!["--token", "not-a-jwt"], "UNAUTHENTICATED"),
    ] {
        let refused = client(&args);
        let stdout = String::from_utf8_lossy(&refused.stdout);
        let error = steps(&stdout, "error");
        assert!(
            refused.status.code() == Some(1)
                && error.len() == 1
                && error[0]["code"] == code
                && steps(&stdout, "created").is_empty(),
            "order_client.py {args:?}: {}",
            support::output_text(&refused)
        );
    }
}

// --- TypeScript over grpc-web ------------------------------------------------

/// Generates the JavaScript messages and service descriptors into
/// clients/typescript/gen with proto/buf.gen.js.yaml, as its README says.
fn generate_js(test: &str) -> bool {
    let Some(buf) = tool("ORDERMESH_BUF", "buf", test) else {
        return false;
    };
    let Some(plugin) = tool("ORDERMESH_PROTOC_GEN_ES", "protoc-gen-es", test) else {
        return false;
    };
    let plugin_dir = plugin.parent().expect("plugin directory").to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(plugin_dir).chain(std::env::var_os("PATH").iter().flat_map(std::env::split_paths)),
    )
    .expect("PATH");
    let generated = Command::new(buf)
        .current_dir(repo())
        .args(["generate", "proto", "--template", "proto/buf.gen.js.yaml"])
        .env("PATH", path)
        .output()
        .expect("buf generate runs");
    assert!(
        generated.status.success(),
        "buf generate: {}",
        support::output_text(&generated)
    );
    let order = repo().join("clients/typescript/gen/ordermesh/order/v1/order_pb.js");
    let source = std::fs::read_to_string(&order).expect("order_pb.js generated");
    assert!(
        source.contains("export const OrderService"),
        "{}",
        order.display()
    );
    true
}

/// Runs clients/typescript/order_client.mjs against `up`'s gateway.
struct TsClient {
    node: PathBuf,
    base_url: String,
}

impl TsClient {
    /// Node, the client's packages and its generated code (generated once per
    /// test binary: the template cleans its output directory), or `None`
    /// (skip) outside CI.
    fn new(test: &str, up: &Up) -> Option<TsClient> {
        static GENERATED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
        let node = node(test)?;
        let modules = repo().join("clients/typescript/node_modules/@connectrpc/connect-node");
        if !modules.is_dir() {
            missing(
                test,
                "clients/typescript/node_modules (npm ci --prefix clients/typescript)",
            );
            return None;
        }
        let mut generated = GENERATED.lock().expect("generation lock");
        if !*generated {
            *generated = generate_js(test);
        }
        if !*generated {
            return None;
        }
        Some(TsClient {
            node,
            base_url: format!("http://127.0.0.1:{}", up.gateway),
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.node)
            .arg(repo().join("clients/typescript/order_client.mjs"))
            .args(["--base-url", &self.base_url])
            .args(args)
            .output()
            .expect("order_client.mjs runs")
    }
}

#[test]
fn typescript_client_places_gets_and_watches_an_order_over_grpc_web() {
    let test = "TypeScript client over grpc-web";
    let up = Up::start(&[]);
    let Some(client) = TsClient::new(test, &up) else {
        return;
    };
    let token = token(&up);

    let placed = client.run(&[
        "--token",
        &token,
        "--request-id",
        "typescript-1",
        "--expect",
        "ORDER_STATUS_CONFIRMED",
    ]);
    let order_id = assert_created_got_watched("order_client.mjs", &placed);

    // Idempotent by request id through the gateway too.
    let again = client.run(&["--token", &token, "--request-id", "typescript-1"]);
    let again_stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success() && steps(&again_stdout, "created")[0]["order_id"] == order_id.as_str(),
        "the same request id: {}",
        support::output_text(&again)
    );
}

#[test]
fn typescript_client_without_a_valid_token_gets_unauthenticated_over_grpc_web() {
    let test = "TypeScript client over grpc-web, unauthenticated";
    let up = Up::start(&[]);
    let Some(client) = TsClient::new(test, &up) else {
        return;
    };
    // Without a token, and with one the gateway did not sign: the grpc-web
    // response carries Unauthenticated. Over HTTP/1.1 the client writes the
    // request body after the headers, so the refusal must not cut the
    // connection before the client has sent it; a few rounds show that.
    for round in 0..3 {
        for args in [vec![], vec!["--token", "not-a-jwt"]] {
            let refused = client.run(&args);
            let stdout = String::from_utf8_lossy(&refused.stdout);
            let error = steps(&stdout, "error");
            assert!(
                refused.status.code() == Some(1)
                    && error.len() == 1
                    && error[0]["code"] == "Unauthenticated"
                    && steps(&stdout, "created").is_empty(),
                "round {round}, order_client.mjs {args:?}: {}",
                support::output_text(&refused)
            );
        }
    }
}
