//! REST/JSON through the gateway to the real services: the order flow
//! (create, get, list with paging, cancel, watch as NDJSON and SSE), the
//! JSON mapping at the wire, errors as `google.rpc.Status` with the standard
//! HTTP codes, a down service as a prompt 503, and the composed order
//! details with a part marked unavailable.

use std::time::{Duration, Instant};

use ordermesh_tests::gateway::Gateway;
use ordermesh_tests::mesh::Mesh;
use ordermesh_tests::{Backend, MeshOptions};
use serde_json::{Value, json};

struct Rest {
    http: reqwest::Client,
    gateway: Gateway,
    token: String,
}

impl Rest {
    async fn start(mesh: &Mesh) -> Rest {
        let urls = ["order", "inventory", "payment"]
            .map(|name| format!("http://{}", mesh.addr(name).expect("runs")));
        let gateway = Gateway::start(urls, None).await;
        let token = gateway.token(
            "alice",
            &["orders:read", "orders:write", "inventory:read", "payments:read"],
        );
        Rest {
            http: ordermesh_tests::gateway::http_client(),
            gateway,
            token,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.gateway.url(path))
            .bearer_auth(&self.token)
    }

    async fn json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.json(reqwest::Method::GET, path, None).await
    }

    async fn create(&self, request_id: &str, sku: &str, quantity: i64) -> Value {
        let (status, body) = self
            .json(
                reqwest::Method::POST,
                "/v1/orders",
                Some(json!({"request_id": request_id, "customerId": "alice",
                    "lines": [{"sku": sku, "quantity": quantity}]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["order"].clone()
    }

    async fn until_status(&self, order_id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, body) = self.get(&format!("/v1/orders/{order_id}")).await;
            assert_eq!(status, 200, "{body}");
            if body["order"]["status"] == want {
                return body["order"].clone();
            }
            assert!(Instant::now() < deadline, "order never reached {want}: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn mesh() -> Mesh {
    Mesh::start(MeshOptions::new(Backend::Sqlite))
        .await
        .expect("sqlite mesh")
}

#[tokio::test]
async fn order_flow_over_rest() {
    let mesh = mesh().await;
    let rest = Rest::start(&mesh).await;

    let created = rest.create("rest-1", "CB-004", 2).await;
    let order_id = created["orderId"].as_str().expect("orderId").to_owned();
    assert_eq!(created["customerId"], "alice");
    let confirmed = rest.until_status(&order_id, "ORDER_STATUS_CONFIRMED").await;
    // The JSON mapping as it reaches a client.
    assert_eq!(confirmed["lines"][0]["quantity"], "2", "int64 as a string");
    assert_eq!(confirmed["total"]["amountMinor"], "1998");
    assert_eq!(confirmed["total"]["currencyCode"], "USD");
    assert_eq!(
        confirmed["rejectReason"], "REJECT_REASON_UNSPECIFIED",
        "enums by name, defaults written"
    );
    let created_at = confirmed["createTime"].as_str().expect("timestamp");
    assert!(
        created_at.ends_with('Z') && created_at.contains('T'),
        "RFC 3339: {created_at}"
    );

    // HEAD answers as GET does, without a body; a route with no GET has no HEAD.
    let head = rest
        .request(reqwest::Method::HEAD, &format!("/v1/orders/{order_id}"))
        .send()
        .await
        .expect("send");
    assert_eq!(head.status(), 200);
    assert!(
        head.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/json")
    );
    assert!(head.bytes().await.expect("body").is_empty());
    let head = rest
        .request(reqwest::Method::HEAD, "/v1/accounts:open")
        .send()
        .await
        .expect("send");
    assert_eq!(head.status(), 405);
    assert_eq!(head.headers()["allow"], "POST");

    // A replay of the same request id answers with the same order.
    let replay = rest.create("rest-1", "CB-004", 2).await;
    assert_eq!(replay["orderId"], order_id.as_str());

    // Paging: two orders, one per page, newest first.
    let second = rest.create("rest-2", "MS-002", 1).await;
    let (status, page) = rest.get("/v1/orders?customer_id=alice&page_size=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["orders"].as_array().expect("orders").len(), 1);
    assert_eq!(page["orders"][0]["orderId"], second["orderId"]);
    let token = page["nextPageToken"].as_str().expect("next page token");
    assert!(!token.is_empty());
    let (_, next) = rest
        .get(&format!(
            "/v1/orders?customer_id=alice&page_size=1&page_token={token}"
        ))
        .await;
    assert_eq!(next["orders"][0]["orderId"], order_id.as_str());

    // Cancel by the custom verb; the order ends CANCELLED.
    let (status, cancelled) = rest
        .json(
            reqwest::Method::POST,
            &format!("/v1/orders/{order_id}:cancel"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    rest.until_status(&order_id, "ORDER_STATUS_CANCELLED").await;

    // The timeline (GET with a nested path): built from the events of all
    // three services, which arrive asynchronously.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, timeline) = rest.get(&format!("/v1/orders/{order_id}/timeline")).await;
        assert_eq!(status, 200, "{timeline}");
        let mut sources: Vec<String> = timeline["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["source"].as_str().expect("source").to_owned())
            .collect();
        sources.sort();
        sources.dedup();
        if sources.len() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the timeline lacks a source: {timeline}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn watch_streams_as_ndjson_and_sse() {
    let mesh = mesh().await;
    let rest = Rest::start(&mesh).await;
    let order_id = rest.create("watch-1", "KB-001", 1).await["orderId"]
        .as_str()
        .expect("id")
        .to_owned();
    rest.until_status(&order_id, "ORDER_STATUS_CONFIRMED").await;

    // NDJSON (the default): `{"result": ...}` per line; a terminal order's
    // watch ends after its state.
    let response = rest
        .request(reqwest::Method::GET, &format!("/v1/orders/{order_id}:watch"))
        .send()
        .await
        .expect("watch");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("the stream of a terminal order ends")
        .expect("body");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert!(!lines.is_empty());
    assert_eq!(
        lines.last().expect("a line")["result"]["order"]["status"],
        "ORDER_STATUS_CONFIRMED"
    );

    // SSE when asked for.
    let response = rest
        .request(reqwest::Method::GET, &format!("/v1/orders/{order_id}:watch"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("watch");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("ends")
        .expect("body");
    let event = text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("data: "))
        .expect("a data event");
    let event: Value = serde_json::from_str(event).expect("JSON data");
    assert_eq!(event["order"]["status"], "ORDER_STATUS_CONFIRMED");

    // A watch refused before its first message is a plain HTTP error.
    let (status, body) = rest.get("/v1/orders/no-such-order:watch").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["details"][0]["reason"], "ORDER_NOT_FOUND");
}

/// One caller's own bad requests never take a service away from everyone:
/// an order with a hundred copies of one line (and a stock check likewise)
/// is refused with a small 400 naming the first fields and counting the
/// rest, however often it is sent, and the next good order goes through.
#[tokio::test]
async fn bad_requests_of_one_caller_never_open_a_breaker() {
    let mesh = mesh().await;
    let rest = Rest::start(&mesh).await;
    let lines: Vec<Value> = (0..100)
        .map(|_| json!({"sku": "KB-001", "quantity": 1}))
        .collect();
    for i in 0..30 {
        let (status, body) = rest
            .json(
                reqwest::Method::POST,
                "/v1/orders",
                Some(json!({"requestId": format!("dup-{i}"), "customerId": "alice", "lines": lines})),
            )
            .await;
        assert_eq!(status, 400, "attempt {i}: {body}");
        let violations = body["details"][0]["fieldViolations"]
            .as_array()
            .expect("violations");
        assert_eq!(violations.len(), 11, "ten named, then the rest counted: {body}");
        let (status, body) = rest
            .json(
                reqwest::Method::POST,
                "/v1/stock:checkAvailability",
                Some(json!({"lines": lines})),
            )
            .await;
        assert_eq!(status, 400, "attempt {i}: {body}");
    }
    let order = rest.create("after-the-flood", "KB-001", 1).await;
    assert_eq!(order["customerId"], "alice");
}

/// A REST watch keeps the caller's deadline: with `X-Request-Timeout: 1s`
/// on an order that stays open for seconds, the stream ends at the deadline
/// with DEADLINE_EXCEEDED in-band, not when the order ends.
#[tokio::test]
async fn a_watch_ends_at_its_deadline() {
    let mesh = mesh().await;
    let rest = Rest::start(&mesh).await;
    // Payment answers after 10 s: the order stays open until the saga's
    // patience (3 s) runs out.
    mesh.set_faults(
        "payment",
        vec![ordermesh_proto::mesh::v1::FaultRule {
            delay_percent: 100.0,
            delay_ms: 10_000,
            ..Default::default()
        }],
    )
    .await;
    let order_id = rest.create("watch-deadline", "CB-004", 1).await["orderId"]
        .as_str()
        .expect("id")
        .to_owned();
    let started = std::time::Instant::now();
    let response = rest
        .request(reqwest::Method::GET, &format!("/v1/orders/{order_id}:watch"))
        .header("x-request-timeout", "1s")
        .send()
        .await
        .expect("watch");
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("the stream ends")
        .expect("body");
    let last: Value = serde_json::from_str(text.lines().last().expect("a line")).expect("JSON");
    assert_eq!(last["error"]["code"], 4, "{text}");
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "ended at the 1 s deadline, not with the order: {:?}",
        started.elapsed()
    );
    mesh.set_faults("payment", vec![]).await;

    // A stream whose upstream stays open and idle (a tail with no new
    // events) ends at the deadline all the same, right after its error line.
    let admin = rest.gateway.token("ops", &["admin"]);
    let started = std::time::Instant::now();
    let response = rest
        .http
        .get(
            rest.gateway
                .url("/v1/events:tail?subject_filter=ordermesh.payments.v1.nothing"),
        )
        .bearer_auth(&admin)
        .header("x-request-timeout", "1s")
        .send()
        .await
        .expect("tail");
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(5), response.text())
        .await
        .expect("the stream ends at its deadline")
        .expect("body");
    let last: Value = serde_json::from_str(text.lines().last().expect("a line")).expect("JSON");
    assert_eq!(last["error"]["code"], 4, "{text}");
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn errors_are_google_rpc_status_with_standard_codes() {
    let mut mesh = mesh().await;
    let rest = Rest::start(&mesh).await;

    let (status, body) = rest.get("/v1/orders/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], 5);
    assert!(
        body["message"].as_str().expect("message").contains("nope"),
        "{body}"
    );

    let (status, body) = rest
        .json(
            reqwest::Method::POST,
            "/v1/orders",
            Some(json!({"customer_id": "alice", "lines": [{"sku": "CB-004", "quantity": "lots"}]})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    assert_eq!(
        body["details"][0]["fieldViolations"][0]["field"],
        "lines[0].quantity"
    );

    let (status, body) = rest
        .json(
            reqwest::Method::POST,
            "/v1/orders",
            Some(json!({"customer_id": "alice", "colour": "red"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["fieldViolations"][0]["field"], "colour");

    // A validation error from the service itself keeps its details.
    let (status, body) = rest
        .json(
            reqwest::Method::POST,
            "/v1/orders",
            Some(json!({"request_id": "v-1", "customer_id": "alice"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 3);
    assert!(!body["details"].as_array().expect("details").is_empty(), "{body}");

    let (status, _) = rest.get("/v2/nothing").await;
    assert_eq!(status, 404);
    let response = rest
        .request(reqwest::Method::DELETE, "/v1/orders")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 405);
    let allow = response.headers()["allow"].to_str().expect("allow").to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    // The gateway's own routes (the composed read, the OpenAPI document)
    // answer another verb the same way (JSON status, Allow).
    for path in ["/v1/orders/o-1/details", "/openapi.json"] {
        let response = rest
            .request(reqwest::Method::POST, path)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 405, "{path}");
        assert_eq!(response.headers()["allow"], "GET", "{path}");
        let body: Value = response.json().await.expect("status JSON");
        assert_eq!(body["code"], 12, "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("POST is not allowed"),
            "{path}: {body}"
        );
    }

    // A stopped service: 503 UNAVAILABLE, promptly, never a hang.
    mesh.stop("payment").await;
    let started = Instant::now();
    let (status, body) = rest.get("/v1/accounts/alice").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], 14);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn composed_details_mark_a_down_part_unavailable() {
    let mut mesh = mesh().await;
    let rest = Rest::start(&mesh).await;
    let order_id = rest.create("bff-1", "MN-003", 1).await["orderId"]
        .as_str()
        .expect("id")
        .to_owned();
    rest.until_status(&order_id, "ORDER_STATUS_CONFIRMED").await;

    let (status, details) = rest.get(&format!("/v1/orders/{order_id}/details")).await;
    assert_eq!(status, 200, "{details}");
    assert_eq!(details["partial"], false);
    assert_eq!(details["order"]["orderId"], order_id.as_str());
    assert_eq!(details["payment"]["status"], "PAYMENT_STATUS_CAPTURED");
    assert_eq!(details["payment"]["amount"]["amountMinor"], "27900");
    assert_eq!(details["reservation"]["status"], "RESERVATION_STATUS_COMMITTED");

    // A token that may read orders but not payments or stock: those parts
    // are withheld (403 in `unavailable`), not shown.
    let orders_only = rest.gateway.token("alice", &["orders:read"]);
    let response = rest
        .http
        .get(rest.gateway.url(&format!("/v1/orders/{order_id}/details")))
        .bearer_auth(&orders_only)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let limited: Value = response.json().await.expect("json");
    assert_eq!(limited["order"]["orderId"], order_id.as_str());
    assert!(
        limited["payment"].is_null() && limited["reservation"].is_null(),
        "{limited}"
    );
    assert_eq!(limited["unavailable"]["payment"]["code"], 7, "{limited}");
    assert_eq!(limited["unavailable"]["reservation"]["code"], 7, "{limited}");

    mesh.stop("inventory").await;
    let started = Instant::now();
    let (status, details) = rest.get(&format!("/v1/orders/{order_id}/details")).await;
    assert_eq!(status, 200, "a down part is not a failed page: {details}");
    assert_eq!(details["partial"], true);
    assert_eq!(
        details["order"]["orderId"],
        order_id.as_str(),
        "what is there is returned"
    );
    assert_eq!(details["payment"]["status"], "PAYMENT_STATUS_CAPTURED");
    assert!(details["reservation"].is_null());
    assert_eq!(details["unavailable"]["reservation"]["code"], 14, "{details}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "within the deadline: {:?}",
        started.elapsed()
    );

    let (status, _) = rest.get("/v1/orders/no-such-order/details").await;
    assert_eq!(status, 404, "a missing order is a 404, not a partial page");

    // An id the order service will not read is the same 400 on both routes.
    let long = "x".repeat(200);
    for id in ["%20", long.as_str()] {
        let (status, order) = rest.get(&format!("/v1/orders/{id}")).await;
        assert_eq!(status, 400, "{id}: {order}");
        let (status, details) = rest.get(&format!("/v1/orders/{id}/details")).await;
        assert_eq!(status, 400, "{id}: {details}");
        assert_eq!(details["code"], 3, "INVALID_ARGUMENT: {details}");
    }
}
