//! Traces of the real binary, received by an OTLP receiver inside the test
//! (the collector's `TraceService`): an order placed over REST through a
//! gateway process before three `serve` processes with events on NATS,
//! under a trace context the caller chose, forms one trace in
//! which the gateway's span is the child of the caller's, the order
//! service's CreateOrder is under the gateway's span, and the saga's calls
//! to inventory and payment are client spans whose children are those
//! services' server spans (the context crossed each process boundary in
//! the request's headers). No token appears in any span, and the order
//! names its trace. A saga resumed by another process after the first was
//! killed with SIGKILL goes on in its order's trace. With
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` the same spans go to the
//! collector's HTTP endpoint (`/v1/traces`) instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_tests::procs::Cluster;
use ordermesh_tests::{Backend, NatsServer};

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    logs: Arc<Mutex<Vec<LogRecord>>>,
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.keep_logs(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep_spans(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

impl Receiver {
    /// Keeps the spans of one export (over gRPC or HTTP).
    fn keep_spans(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().expect("lock");
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }

    /// Keeps the log records of one export (over gRPC or HTTP).
    fn keep_logs(&self, request: ExportLogsServiceRequest) {
        let mut logs = self.logs.lock().expect("lock");
        for resource in request.resource_logs {
            for scope in resource.scope_logs {
                logs.extend(scope.log_records);
            }
        }
    }

    /// Serves on a free port until dropped with the returned task.
    async fn start() -> (Receiver, u16, tokio::task::JoinHandle<()>) {
        Receiver::start_grpc(None).await
    }

    /// The gRPC receiver, with `tls` over mutual TLS.
    async fn start_grpc(tls: Option<&CollectorPki>) -> (Receiver, u16, tokio::task::JoinHandle<()>) {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let service = TraceServiceServer::new(receiver.clone());
        let logs = LogsServiceServer::new(receiver.clone());
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder
                .tls_config(
                    tonic::transport::ServerTlsConfig::new()
                        .identity(tonic::transport::Identity::from_pem(&tls.server.0, &tls.server.1))
                        .client_ca_root(tonic::transport::Certificate::from_pem(&tls.ca_pem)),
                )
                .expect("server TLS");
        }
        let server = tokio::spawn(async move {
            let _ = builder
                .add_service(service)
                .add_service(logs)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        (receiver, port, server)
    }

    /// An OTLP/HTTP receiver (protobuf bodies on `/v1/traces` and
    /// `/v1/logs`) on a free port until dropped with the returned task.
    async fn start_http(tls: Option<&CollectorPki>) -> (Receiver, u16, tokio::task::JoinHandle<()>) {
        use prost::Message;
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let traces = receiver.clone();
        let logs = receiver.clone();
        let protobuf = |body: Vec<u8>| ([("content-type", "application/x-protobuf")], body);
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| async move {
                    traces.keep_spans(ExportTraceServiceRequest::decode(body).expect("an OTLP trace export"));
                    protobuf(ExportTraceServiceResponse::default().encode_to_vec())
                }),
            )
            .route(
                "/v1/logs",
                axum::routing::post(move |body: axum::body::Bytes| async move {
                    logs.keep_logs(ExportLogsServiceRequest::decode(body).expect("an OTLP log export"));
                    protobuf(ExportLogsServiceResponse::default().encode_to_vec())
                }),
            );
        let server = match tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
            Some(tls) => {
                let listener = TlsListener {
                    tcp: listener,
                    acceptor: tokio_rustls::TlsAcceptor::from(tls.server_config()),
                };
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                })
            }
        };
        (receiver, port, server)
    }

    /// The spans of `trace_id` once `done` holds for them (30 s at most).
    async fn trace(&self, trace_id: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Span> = self
                .spans
                .lock()
                .expect("lock")
                .iter()
                .filter(|s| hex(&s.trace_id) == trace_id)
                .cloned()
                .collect();
            if done(&spans) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the trace is incomplete: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Whether `spans` hold a server span of each method.
fn served(spans: &[Span], methods: &[&str]) -> bool {
    methods.iter().all(|method| {
        spans
            .iter()
            .any(|s| s.kind == SpanKind::Server as i32 && s.name.ends_with(&format!("/{method}")))
    })
}

/// The names of `span`'s ancestors in `spans`, nearest first, then the id
/// of the first parent not among them.
fn ancestors(spans: &[Span], span: &Span) -> Vec<String> {
    let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    let mut chain = Vec::new();
    let mut parent = hex(&span.parent_span_id);
    while let Some(next) = by_id.get(&parent) {
        chain.push(next.name.clone());
        parent = hex(&next.parent_span_id);
    }
    chain.push(parent);
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_one_trace_from_the_gateway_to_every_service() {
    let (receiver, port, server) = Receiver::start().await;
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("ORDERMESH_LOG_FORMAT", "json"),
    ];
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_ordermesh"));
    let Some(mut cluster) =
        Cluster::start_with_env(bin, Backend::Sqlite, None, Some(&nats.url()), &env).await
    else {
        return;
    };
    let gateway_port = cluster.spawn_gateway().await;
    let token = cluster.token("alice");
    // The caller's own trace context.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let http = ordermesh_tests::gateway::http_client();
    let response = http
        .post(format!("http://127.0.0.1:{gateway_port}/v1/orders"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .body(r#"{"requestId": "traced-1", "customerId": "alice", "lines": [{"sku": "CB-004", "quantity": 1}]}"#)
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 200);
    let answered = response
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("the response names its trace")
        .to_owned();
    assert!(answered.starts_with(&format!("00-{trace_id}-")), "{answered}");
    assert!(
        !answered.contains(caller_span),
        "the gateway's own span: {answered}"
    );

    let created: serde_json::Value = response.json().await.expect("json");
    let order_id = created["order"]["orderId"].as_str().expect("orderId").to_owned();
    assert_eq!(created["order"]["traceId"], trace_id, "{created}");

    // Spans are batched (every 5 s by default): wait for the saga's.
    let kind = |spans: &[Span], kind: SpanKind| spans.iter().any(|s| s.kind == kind as i32);
    let spans = receiver
        .trace(trace_id, |spans| {
            served(spans, &["CommitReservation", "CapturePayment"])
                && kind(spans, SpanKind::Producer)
                && kind(spans, SpanKind::Consumer)
        })
        .await;
    let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    let ancestors = |span: &Span| ancestors(&spans, span);
    let find = |kind: SpanKind, name: &str| -> &Span {
        spans
            .iter()
            .find(|s| s.kind == kind as i32 && s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no {kind:?} span {name}: {:?}",
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
    };
    let gateway = find(SpanKind::Server, "POST /v1/orders");
    assert_eq!(
        hex(&gateway.parent_span_id),
        caller_span,
        "under the caller's span"
    );
    assert_eq!(
        attribute(gateway, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attribute(gateway, "http.request.method").as_deref(), Some("POST"));

    let create = find(SpanKind::Server, "ordermesh.order.v1.OrderService/CreateOrder");
    let chain = ancestors(create);
    assert!(chain.contains(&"POST /v1/orders".to_owned()), "{chain:?}");
    assert_eq!(
        by_id[&hex(&create.parent_span_id)].kind,
        SpanKind::Client as i32,
        "the gateway's call reached order through its headers"
    );
    assert_eq!(attribute(create, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(attribute(create, "rpc.grpc.status_code").as_deref(), Some("0"));

    for (service, method) in [
        ("ordermesh.inventory.v1.InventoryService", "ReserveStock"),
        ("ordermesh.payment.v1.PaymentService", "AuthorizePayment"),
        ("ordermesh.payment.v1.PaymentService", "CapturePayment"),
        ("ordermesh.inventory.v1.InventoryService", "CommitReservation"),
    ] {
        let name = format!("{service}/{method}");
        let server = find(SpanKind::Server, &name);
        let client = by_id
            .get(&hex(&server.parent_span_id))
            .unwrap_or_else(|| panic!("{name}'s parent is not in the trace"));
        assert_eq!(client.kind, SpanKind::Client as i32, "{name}");
        assert_eq!(client.name, name);
        let chain = ancestors(server);
        assert!(
            chain.iter().any(|n| n.starts_with("saga ")) && chain.contains(&"saga".to_owned()),
            "{name} runs in a saga step: {chain:?}"
        );
        assert!(
            chain.contains(&"ordermesh.order.v1.OrderService/CreateOrder".to_owned()),
            "{name} joins the order's trace: {chain:?}"
        );
    }
    // The events the order caused: published by the relays and handled by
    // the consumers, in the order's trace, under the span that wrote them.
    for span in spans
        .iter()
        .filter(|s| [SpanKind::Producer as i32, SpanKind::Consumer as i32].contains(&s.kind))
    {
        assert_eq!(attribute(span, "messaging.system").as_deref(), Some("nats"));
        assert!(
            by_id.contains_key(&hex(&span.parent_span_id)),
            "{} hangs under a span of the trace",
            span.name
        );
    }
    let created_event = spans
        .iter()
        .find(|s| s.kind == SpanKind::Producer as i32 && s.name.contains("order"))
        .expect("an order event published");
    assert!(
        ancestors(created_event).contains(&"ordermesh.order.v1.OrderService/CreateOrder".to_owned()),
        "{:?}",
        ancestors(created_event)
    );

    // The decisions are on the steps.
    let reserve = find(SpanKind::Internal, "saga RESERVE");
    assert_eq!(
        attribute(reserve, "ordermesh.saga.decision").as_deref(),
        Some("advance")
    );

    // No credential in any span, anywhere.
    let everything: Vec<Span> = receiver.spans.lock().expect("lock").clone();
    let secret = token.rsplit('.').next().expect("a signature");
    for span in &everything {
        for kv in &span.attributes {
            let text = format!("{:?}", kv.value);
            assert!(
                !text.contains(secret) && !text.to_lowercase().contains("bearer"),
                "{} carries a credential in {}",
                span.name,
                kv.key
            );
        }
    }
    // The logs: the gateway's line for the request names its trace (as do
    // the saga's), and no line holds the token.
    let logs: String = ["gateway", "order", "inventory", "payment"]
        .iter()
        .map(|process| cluster.log(process))
        .collect();
    let traced: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains(&format!("\"trace_id\":\"{trace_id}\"")))
        .collect();
    assert!(
        traced.iter().any(|l| l.contains("ordermesh_gateway::access")),
        "no access line names the trace: {logs}"
    );
    for line in logs.lines() {
        assert!(
            !line.contains(secret) && !line.to_lowercase().contains("bearer "),
            "a log line holds a credential: {line}"
        );
    }

    // The log records went out over OTLP too, in the request's trace.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let in_trace = receiver
            .logs
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| hex(&r.trace_id) == trace_id)
            .count();
        if in_trace > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log record of the order's trace reached the receiver"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for record in receiver.logs.lock().expect("lock").iter() {
        let text = format!("{:?} {:?}", record.body, record.attributes);
        assert!(
            !text.contains(secret) && !text.to_lowercase().contains("bearer "),
            "a log record holds a credential: {text}"
        );
    }

    // The order names its trace on every read.
    let read: serde_json::Value = http
        .get(format!("http://127.0.0.1:{gateway_port}/v1/orders/{order_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    assert_eq!(read["order"]["traceId"], trace_id, "{read}");
    drop(cluster);
    drop(nats);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_resumed_after_a_crash_goes_on_in_its_orders_trace() {
    let (receiver, port, server) = Receiver::start().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_ordermesh"));
    let point = "after-authorize";
    let Some(mut cluster) = Cluster::start_with_env(bin, Backend::Sqlite, Some(point), None, &env).await
    else {
        return;
    };
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let order = create_traced(&cluster, "traced-crash", trace_id, "b7ad6b7169203331").await;
    assert_eq!(order.trace_id, trace_id);
    // Frozen after AUTHORIZE answered; killed there, and another process
    // resumes the saga from its record.
    cluster
        .wait_for_log(
            "order",
            &format!("crash point {point} reached"),
            Duration::from_secs(30),
        )
        .await;
    cluster.kill("order");
    cluster.spawn("order", None).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    ordermesh_tests::load::follow(&mut cluster.order(), &order.order_id, until).await;
    let last = cluster
        .order()
        .get_order(order_pb::GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(last.status(), order_pb::OrderStatus::Confirmed, "{last:?}");
    assert_eq!(last.trace_id, trace_id, "the resumed order keeps its trace");
    let saga = ordermesh_proto::order::v1::order_admin_service_client::OrderAdminServiceClient::new(
        cluster.channel("order"),
    )
    .get_saga(order_pb::GetSagaRequest {
        order_id: order.order_id.clone(),
    })
    .await
    .expect("GetSaga")
    .into_inner()
    .saga
    .expect("saga");
    assert_eq!(saga.trace_id, trace_id, "GetSaga names the order's trace");

    // CAPTURE and COMMIT ran in the new process, in the order's trace.
    let spans = receiver
        .trace(trace_id, |spans| {
            served(spans, &["CapturePayment", "CommitReservation"])
        })
        .await;
    let capture = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32 && s.name.ends_with("/CapturePayment"))
        .expect("capture");
    let chain = ancestors(&spans, capture);
    assert!(
        chain.contains(&"saga CAPTURE".to_owned()) && chain.contains(&"saga".to_owned()),
        "{chain:?}"
    );
    drop(cluster);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_log_records_go_out_over_otlp_http_when_the_protocol_says_so() {
    exported_to_a_collector("http/protobuf", None, "4bf92f3577b34da6a3ce929d0e0e4736").await;
}

/// An `https://` collector that requires a client certificate, reached
/// over gRPC with the CA and the client certificate the standard variables
/// name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_collector_gets_spans_over_mutual_tls_on_grpc() {
    let pki = CollectorPki::new();
    exported_to_a_collector("grpc", Some(&pki), "5bf92f3577b34da6a3ce929d0e0e4736").await;
}

/// The same over OTLP/HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_collector_gets_spans_over_mutual_tls_on_http() {
    let pki = CollectorPki::new();
    exported_to_a_collector("http/protobuf", Some(&pki), "6bf92f3577b34da6a3ce929d0e0e4736").await;
}

/// Starts a collector on `protocol` (over mutual TLS with `tls`) and three
/// processes exporting to it; one order's spans from all three and some
/// log records arrive.
async fn exported_to_a_collector(protocol: &str, tls: Option<&CollectorPki>, trace_id: &str) {
    let (receiver, port, server) = match protocol {
        "grpc" => Receiver::start_grpc(tls).await,
        _ => Receiver::start_http(tls).await,
    };
    // `localhost`: the name the collector's certificate holds.
    let endpoint = match tls {
        Some(_) => format!("https://localhost:{port}"),
        None => format!("http://127.0.0.1:{port}"),
    };
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    if let Some(tls) = tls {
        env.extend(tls.client_env());
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_ordermesh"));
    let Some(cluster) = Cluster::start_with_env(bin, Backend::Sqlite, None, None, &env).await else {
        return;
    };
    let order = create_traced(&cluster, "traced-export", trace_id, "00f067aa0ba902b7").await;
    assert_eq!(order.trace_id, trace_id);
    // Each of the three processes exported, in the order's trace.
    let spans = receiver
        .trace(trace_id, |spans| {
            served(spans, &["CreateOrder", "ReserveStock", "AuthorizePayment"])
        })
        .await;
    let create = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32 && s.name.ends_with("/CreateOrder"))
        .expect("CreateOrder");
    assert_eq!(
        hex(&create.parent_span_id),
        "00f067aa0ba902b7",
        "the caller's span is its parent"
    );
    // Log records too, on /v1/logs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while receiver.logs.lock().expect("lock").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log record over {protocol} to {endpoint}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(cluster);
    server.abort();
}

/// Places one order of CB-004 for alice with a `traceparent` naming
/// `trace_id` (and `parent_span` as the caller's span).
async fn create_traced(
    cluster: &Cluster,
    request_id: &str,
    trace_id: &str,
    parent_span: &str,
) -> order_pb::Order {
    let mut request = tonic::Request::new(order_pb::CreateOrderRequest {
        request_id: request_id.into(),
        customer_id: "alice".into(),
        lines: vec![order_pb::CreateOrderLine {
            sku: "CB-004".into(),
            quantity: 1,
        }],
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_span}-01").parse().expect("ascii"),
    );
    cluster
        .order()
        .create_order(request)
        .await
        .expect("created")
        .into_inner()
        .order
        .expect("order")
}

/// A collector's certificate (for `localhost`) and a client certificate,
/// from one throwaway CA, in files the exporter's variables name.
struct CollectorPki {
    dir: tempfile::TempDir,
    ca_pem: String,
    server: (String, String),
}

impl CollectorPki {
    fn new() -> CollectorPki {
        let ca = ordermesh_mesh::tls::mint::Ca::new("test collector CA").expect("CA");
        let server = ca.issue_for("localhost").expect("collector certificate");
        let (cert, key) = ca.issue("order").expect("client certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, body) in [
            ("ca.crt", ca.cert_pem()),
            ("client.crt", &cert),
            ("client.key", &key),
        ] {
            std::fs::write(dir.path().join(name), body).expect("write");
        }
        CollectorPki {
            dir,
            ca_pem: ca.cert_pem().to_owned(),
            server,
        }
    }

    fn client_env(&self) -> Vec<(&'static str, String)> {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", path("ca.crt")),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", path("client.crt")),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path("client.key")),
        ]
    }

    /// The collector's side: its certificate, and client certificates
    /// from the CA required.
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA PEM"))
            .expect("CA");
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .expect("client verifier");
        let chain = vec![CertificateDer::from_pem_slice(self.server.0.as_bytes()).expect("cert PEM")];
        let key = PrivateKeyDer::from_pem_slice(self.server.1.as_bytes()).expect("key PEM");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// axum's listener over TLS: a handshake that fails (a client without a
/// certificate) drops that connection and waits for the next.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
