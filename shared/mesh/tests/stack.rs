//! The whole client stack (`Mesh::client`) and the server layers against
//! real tonic servers: the breaker failing fast and recovering through
//! half-open probes, retries and their budget, deadlines flowing from an
//! edge call through a relay to its downstream, fault injection behind its
//! flag, and load shedding.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordermesh_mesh::breaker::Caller;
use ordermesh_mesh::breaker::StateKind;
use ordermesh_mesh::deadline::{InheritDeadlineLayer, with_deadline};
use ordermesh_mesh::fault::FaultRule;
use ordermesh_mesh::flags::Flag;
use ordermesh_mesh::policy::MeshPolicy;
use ordermesh_mesh::server::{BoundErrorsLayer, ShedLayer};
use ordermesh_mesh::stack::{Mesh, MeshChannel};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Bounds every single call, so a hung stack fails the test instead of
/// hanging it.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Bounds every wait for a condition.
const WAIT: Duration = Duration::from_secs(10);

/// Pause between two looks at a condition being polled.
const POLL: Duration = Duration::from_millis(10);

/// What a test server does with a call once its script is used up.
#[derive(Debug, Clone)]
enum Mode {
    Serve,
    Fail(Code),
    /// Answers the call numbered `n` (from 0) with `codes[n % len]`.
    Cycle(Vec<Code>),
    /// Sleeps this long (unless the call is cancelled), then serves.
    Hang(Duration),
    /// Waits until the gate opens, then serves.
    Gate,
    /// Refuses with INVALID_ARGUMENT carrying this many bytes of details.
    Huge(usize),
}

/// A controllable test server's behaviour and what it saw.
struct Backend {
    /// Calls that reached the handler.
    calls: AtomicUsize,
    /// Handlers dropped before they answered (the call was cancelled).
    abandoned: AtomicUsize,
    /// Codes answered by the next calls, in order, before `mode` applies.
    script: Mutex<VecDeque<Code>>,
    mode: Mutex<Mode>,
    /// The request metadata of every call, in arrival order.
    metadata: Mutex<Vec<MetadataMap>>,
    gate: watch::Sender<bool>,
}

/// Counts a handler as abandoned unless it was disarmed by answering.
struct AbandonGuard<'a> {
    backend: &'a Backend,
    armed: bool,
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.backend.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Backend {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            script: Mutex::new(VecDeque::new()),
            mode: Mutex::new(mode),
            metadata: Mutex::new(Vec::new()),
            gate: watch::channel(false).0,
        })
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("mode lock") = mode;
    }

    fn set_script(&self, codes: impl IntoIterator<Item = Code>) {
        *self.script.lock().expect("script lock") = codes.into_iter().collect();
    }

    fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::SeqCst)
    }

    fn metadata(&self) -> Vec<MetadataMap> {
        self.metadata.lock().expect("metadata lock").clone()
    }

    async fn answer(&self, metadata: &MetadataMap) -> Result<HealthCheckResponse, Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.metadata
            .lock()
            .expect("metadata lock")
            .push(metadata.clone());
        let mut guard = AbandonGuard {
            backend: self,
            armed: true,
        };
        let scripted = self.script.lock().expect("script lock").pop_front();
        let mode = self.mode.lock().expect("mode lock").clone();
        if let (None, Mode::Huge(bytes)) = (&scripted, &mode) {
            guard.armed = false;
            return Err(Status::with_details(
                Code::InvalidArgument,
                "your request, refused at length",
                vec![b'x'; *bytes].into(),
            ));
        }
        let code = match (scripted, mode) {
            (Some(code), _) => code,
            (None, Mode::Serve) => Code::Ok,
            (None, Mode::Fail(code)) => code,
            (None, Mode::Cycle(codes)) => codes[n % codes.len()],
            (None, Mode::Hang(pause)) => {
                tokio::time::sleep(pause).await;
                Code::Ok
            }
            (None, Mode::Huge(_)) => unreachable!("answered above"),
            (None, Mode::Gate) => {
                let mut gate = self.gate.subscribe();
                gate.wait_for(|open| *open).await.expect("gate sender alive");
                Code::Ok
            }
        };
        guard.armed = false;
        if code == Code::Ok {
            Ok(HealthCheckResponse {
                status: ServingStatus::Serving as i32,
            })
        } else {
            Err(Status::new(code, format!("told to answer {code:?}")))
        }
    }
}

struct Server(Arc<Backend>);

#[tonic::async_trait]
impl Health for Server {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.0.answer(request.metadata()).await.map(Response::new)
    }

    type WatchStream = tokio_stream::Once<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let answer = self.0.answer(request.metadata()).await?;
        Ok(Response::new(tokio_stream::once(Ok(answer))))
    }
}

async fn listen() -> (TcpListenerStream, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local addr");
    (TcpListenerStream::new(listener), format!("http://{address}"))
}

/// Starts a plain server; returns its URL.
async fn serve(backend: &Arc<Backend>) -> String {
    let (incoming, url) = listen().await;
    let server = tonic::transport::Server::builder()
        .add_service(HealthServer::new(Server(Arc::clone(backend))))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    url
}

/// Starts a server behind `ShedLayer::new(limit)`; returns its URL.
async fn serve_shedding(backend: &Arc<Backend>, limit: usize) -> String {
    let (incoming, url) = listen().await;
    let server = tonic::transport::Server::builder()
        .layer(tower::ServiceBuilder::new().layer(ShedLayer::new(limit)))
        .add_service(HealthServer::new(Server(Arc::clone(backend))))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    url
}

/// A service that answers by calling its downstream through its own mesh.
struct Relay(HealthClient<MeshChannel>);

#[tonic::async_trait]
impl Health for Relay {
    async fn check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let mut client = self.0.clone();
        client.check(HealthCheckRequest::default()).await
    }

    type WatchStream = tokio_stream::Once<Result<HealthCheckResponse, Status>>;

    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("relay only checks"))
    }
}

/// Starts a server behind the services' bound on error sizes; returns its URL.
async fn serve_bounded(backend: &Arc<Backend>) -> String {
    let (incoming, url) = listen().await;
    let server = tonic::transport::Server::builder()
        .layer(tower::ServiceBuilder::new().layer(BoundErrorsLayer))
        .add_service(HealthServer::new(Server(Arc::clone(backend))))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    url
}

/// Starts a relay behind `InheritDeadlineLayer`; returns its URL.
async fn serve_relay(client: HealthClient<MeshChannel>) -> String {
    let (incoming, url) = listen().await;
    let server = tonic::transport::Server::builder()
        .layer(tower::ServiceBuilder::new().layer(InheritDeadlineLayer))
        .add_service(HealthServer::new(Relay(client)))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    url
}

fn mesh(policy: &str) -> Mesh {
    Mesh::new(MeshPolicy::parse(policy, []).expect("valid test policy"))
}

fn mesh_client(mesh: &Mesh, name: &str, url: &str) -> HealthClient<MeshChannel> {
    HealthClient::new(mesh.client(name, url).expect("client stack"))
}

async fn check<T>(client: &mut HealthClient<T>) -> Result<(), Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let call = client.check(HealthCheckRequest::default());
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .expect("call finished in time")
        .map(drop)
}

/// Polls `condition` until it holds; fails the test after [`WAIT`].
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(POLL).await;
    }
}

fn is_breaker_rejection(status: &Status, name: &str) -> bool {
    status.code() == Code::Unavailable
        && status.message().contains(&format!("circuit breaker {name:?}"))
        && status.message().contains("next probe in")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_breaker_fails_fast_without_reaching_the_server() {
    let backend = Backend::new(Mode::Fail(Code::Unavailable));
    let url = serve(&backend).await;
    let mesh = mesh(
        r#"
        [downstream.flaky.breaker]
        window_size = 4
        minimum_calls = 4
        wait_in_open_ms = 60000
        [downstream.flaky.retry]
        max_attempts = 1
        [downstream.flaky.ejection]
        consecutive_failures = 0
        "#,
    );
    let mut client = mesh_client(&mesh, "flaky", &url);
    let breaker = mesh.downstream("flaky").expect("downstream handles").breaker;

    for i in 0..4 {
        assert_eq!(breaker.state(), StateKind::Closed, "open after only {i} failures");
        let status = check(&mut client).await.expect_err("server fails");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(!is_breaker_rejection(&status, "flaky"), "{status:?}");
    }
    assert_eq!(breaker.state(), StateKind::Open);
    assert_eq!(backend.calls(), 4);

    // A call that got through now would hang far beyond the call timeout.
    backend.set_mode(Mode::Hang(Duration::from_secs(30)));
    for i in 0..20 {
        let status = tokio::time::timeout(CALL_TIMEOUT, client.check(HealthCheckRequest::default()))
            .await
            .unwrap_or_else(|_| panic!("call {i} reached the hanging server"))
            .expect_err("the open breaker rejects");
        assert!(is_breaker_rejection(&status, "flaky"), "call {i}: {status:?}");
        assert!(status.message().contains("OPEN"), "{status:?}");
    }
    assert_eq!(backend.calls(), 4, "a rejected call reached the server");
    assert_eq!(breaker.state(), StateKind::Open);
    let stats = breaker.stats();
    assert_eq!((stats.opened, stats.rejected), (1, 20), "{stats:?}");
    let left = breaker.opens_for().expect("open breaker has a probe time");
    assert!(
        left > Duration::from_secs(50) && left <= Duration::from_secs(60),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_errors_never_open_the_breaker() {
    let backend = Backend::new(Mode::Cycle(vec![
        Code::NotFound,
        Code::InvalidArgument,
        Code::FailedPrecondition,
    ]));
    let url = serve(&backend).await;
    let mesh = mesh(
        r#"
        [downstream.strict.breaker]
        window_size = 4
        minimum_calls = 4
        wait_in_open_ms = 60000
        "#,
    );
    let mut client = mesh_client(&mesh, "strict", &url);
    let breaker = mesh.downstream("strict").expect("downstream handles").breaker;
    let expected = [Code::NotFound, Code::InvalidArgument, Code::FailedPrecondition];
    for i in 0..50 {
        let status = check(&mut client).await.expect_err("caller error");
        assert_eq!(status.code(), expected[i % 3], "call {i}: {status:?}");
    }
    assert_eq!(breaker.state(), StateKind::Closed);
    assert_eq!(breaker.stats().opened, 0);
    assert_eq!(backend.calls(), 50, "caller errors are not retried nor rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_lets_probes_through_and_closes_on_success() {
    let backend = Backend::new(Mode::Fail(Code::Unavailable));
    let url = serve(&backend).await;
    let mesh = mesh(
        r#"
        [downstream.recovering.breaker]
        window_size = 4
        minimum_calls = 4
        wait_in_open_ms = 300
        permitted_in_half_open = 2
        [downstream.recovering.retry]
        max_attempts = 1
        [downstream.recovering.ejection]
        consecutive_failures = 0
        "#,
    );
    let mut client = mesh_client(&mesh, "recovering", &url);
    let breaker = mesh.downstream("recovering").expect("downstream handles").breaker;
    for _ in 0..4 {
        check(&mut client).await.expect_err("server fails");
    }
    assert_eq!(breaker.state(), StateKind::Open);
    backend.set_mode(Mode::Serve);

    // Rejected until the wait in open ends; then the first probe succeeds.
    let deadline = Instant::now() + WAIT;
    let mut rejected = 0;
    loop {
        assert!(
            Instant::now() < deadline && rejected < 1000,
            "no probe let through after {rejected} rejections"
        );
        match check(&mut client).await {
            Ok(()) => break,
            Err(status) => {
                assert!(is_breaker_rejection(&status, "recovering"), "{status:?}");
                rejected += 1;
                tokio::time::sleep(POLL).await;
            }
        }
    }
    assert_eq!(backend.calls(), 5, "rejected calls reached the server");
    assert_eq!(breaker.state(), StateKind::HalfOpen, "one of two probes done");
    check(&mut client).await.expect("second probe");
    assert_eq!(breaker.state(), StateKind::Closed);
    assert_eq!(backend.calls(), 6);
    let stats = breaker.stats();
    assert_eq!(
        (stats.opened, stats.half_opened, stats.closed),
        (1, 1, 1),
        "{stats:?}"
    );
    for _ in 0..10 {
        check(&mut client).await.expect("closed breaker passes calls");
    }
    assert_eq!(backend.calls(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_absorb_a_transient_unavailable() {
    let backend = Backend::new(Mode::Serve);
    backend.set_script([Code::Unavailable, Code::Unavailable]);
    let url = serve(&backend).await;
    let mesh = mesh(
        r#"
        [downstream.transient.retry]
        max_attempts = 3
        initial_backoff_ms = 5
        max_backoff_ms = 20
        "#,
    );
    let mut client = mesh_client(&mesh, "transient", &url);
    check(&mut client).await.expect("retries absorb two failures");
    assert_eq!(backend.calls(), 3);
    let previous: Vec<Option<String>> = backend
        .metadata()
        .iter()
        .map(|m| {
            m.get("grpc-previous-rpc-attempts")
                .map(|v| v.to_str().expect("ascii header").to_owned())
        })
        .collect();
    assert_eq!(previous, vec![None, Some("1".to_owned()), Some("2".to_owned())]);
    let downstream = mesh.downstream("transient").expect("downstream handles");
    assert_eq!(downstream.breaker.state(), StateKind::Closed);
    // 10 tokens, two failures, one success at 0.1 each.
    let tokens = downstream.budget.tokens();
    assert!((tokens - 8.1).abs() < 1e-9, "{tokens}");

    // Non-retryable codes are answered at once.
    backend.set_script([Code::Internal]);
    let status = check(&mut client).await.expect_err("INTERNAL is not retryable");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(backend.calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_budget_under_sustained_failure() {
    const CALLS: usize = 20;
    const MAX_ATTEMPTS: usize = 5;
    let backend = Backend::new(Mode::Fail(Code::Unavailable));
    let url = serve(&backend).await;
    let mesh = mesh(
        r#"
        [downstream.down.breaker]
        window_size = 1000000
        minimum_calls = 1000000
        [downstream.down.retry]
        max_attempts = 5
        initial_backoff_ms = 1
        max_backoff_ms = 2
        budget_max_tokens = 10.0
        budget_token_ratio = 0.1
        [downstream.down.ejection]
        consecutive_failures = 0
        "#,
    );
    let mut client = mesh_client(&mesh, "down", &url);
    let budget = mesh.downstream("down").expect("downstream handles").budget;

    // gRFC A6 as retry.rs implements it: tokens start at 10; every failed
    // attempt takes one; a retry follows only while tokens > 10 / 2.
    // Call 1: 10 -> 9, 8, 7, 6 (each still > 5, so retried), then its 5th
    // attempt takes it to 5 and max_attempts ends it: 5 attempts.
    // Every later call: one attempt, after which tokens <= 5 forbid a retry.
    let mut expected_tokens = 10.0_f64;
    let mut per_call = Vec::new();
    for i in 0..CALLS {
        let mut attempts = 0;
        loop {
            attempts += 1;
            expected_tokens = (expected_tokens - 1.0).max(0.0);
            if attempts >= MAX_ATTEMPTS || expected_tokens <= 5.0 {
                break;
            }
        }
        per_call.push(attempts);
        let before = backend.calls();
        let status = check(&mut client).await.expect_err("server is down");
        assert_eq!(status.code(), Code::Unavailable, "call {i}: {status:?}");
        assert_eq!(
            backend.calls() - before,
            attempts,
            "call {i} made the wrong number of attempts"
        );
        assert!(
            (budget.tokens() - expected_tokens).abs() < 1e-9,
            "call {i}: {} tokens, expected {expected_tokens}",
            budget.tokens()
        );
    }
    assert_eq!(per_call[0], MAX_ATTEMPTS);
    assert!(per_call[1..].iter().all(|&a| a == 1), "{per_call:?}");
    assert_eq!(backend.calls(), MAX_ATTEMPTS + CALLS - 1, "24, not 100");
    assert_eq!(budget.tokens(), 0.0);
    assert_eq!(
        mesh.downstream("down")
            .expect("downstream handles")
            .breaker
            .state(),
        StateKind::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_deadline_shortens_downstream_calls() {
    const EDGE_TIMEOUT: Duration = Duration::from_millis(300);
    let slow = Backend::new(Mode::Hang(Duration::from_secs(30)));
    let slow_url = serve(&slow).await;
    let relay_mesh = mesh(
        r#"
        [defaults]
        timeout_ms = 10000
        [downstream.slow.retry]
        max_attempts = 1
        "#,
    );
    let relay_url = serve_relay(mesh_client(&relay_mesh, "slow", &slow_url)).await;

    let edge = Channel::from_shared(relay_url)
        .expect("relay url")
        .connect()
        .await
        .expect("connect to the relay");
    let mut edge = HealthClient::new(edge);
    let mut request = Request::new(HealthCheckRequest::default());
    request.set_timeout(EDGE_TIMEOUT);
    let status = tokio::time::timeout(CALL_TIMEOUT, edge.check(request))
        .await
        .expect("the edge call ends with its deadline, not after the 30 s downstream")
        .expect_err("the downstream never answers in time");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );

    wait_until("the downstream saw the relayed call", || slow.calls() == 1).await;
    let metadata = slow.metadata();
    let timeout = metadata[0]
        .get("grpc-timeout")
        .map(|v| {
            let value = http::HeaderValue::from_bytes(v.as_bytes()).expect("header value");
            ordermesh_mesh::grpc_timeout::parse(&value).expect("valid grpc-timeout")
        })
        .expect("the relayed call carries a grpc-timeout");
    assert!(
        timeout > Duration::ZERO && timeout <= EDGE_TIMEOUT,
        "downstream got {timeout:?}, more than the edge's {EDGE_TIMEOUT:?}"
    );
    assert!(
        timeout <= EDGE_TIMEOUT - Duration::from_millis(20),
        "downstream got {timeout:?}: the 20 ms margin was not kept back"
    );
    // The downstream's work is cancelled with the deadline, not left to run.
    wait_until("the downstream call was cancelled", || slow.abandoned() == 1).await;
    assert_eq!(slow.calls(), 1, "a timed-out call was retried");

    // An inherited deadline already spent fails before calling out.
    let untouched = Backend::new(Mode::Serve);
    let untouched_url = serve(&untouched).await;
    let local = mesh("");
    let mut client = mesh_client(&local, "untouched", &untouched_url);
    let result = tokio::time::timeout(CALL_TIMEOUT, with_deadline(Instant::now(), check(&mut client)))
        .await
        .expect("an exhausted deadline answers at once");
    let status = result.expect_err("no time left");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(untouched.calls(), 0, "the downstream was called anyway");
    // The same client still works without the spent deadline.
    check(&mut client).await.expect("call with the default timeout");
    assert_eq!(untouched.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_abort_and_delay_only_when_armed() {
    let backend = Backend::new(Mode::Serve);
    let url = serve(&backend).await;
    let mesh = mesh(
        r#"
        [flags.fault_injection]
        enabled = true
        [downstream.chaos.breaker]
        window_size = 1000000
        minimum_calls = 1000000
        [downstream.chaos.retry]
        max_attempts = 1
        "#,
    );
    let mut client = mesh_client(&mesh, "chaos", &url);
    let faults = mesh.downstream("chaos").expect("downstream handles").faults;
    faults.set(vec![FaultRule {
        method: None,
        abort_percent: 100.0,
        abort_code: Code::Unavailable,
        delay_percent: 0.0,
        delay: Duration::ZERO,
    }]);
    for i in 0..10 {
        let status = check(&mut client).await.expect_err("aborted by the fault rule");
        assert_eq!(status.code(), Code::Unavailable, "call {i}: {status:?}");
        assert!(status.message().contains("fault injected"), "{status:?}");
    }
    assert_eq!(backend.calls(), 0, "an aborted call reached the server");

    let disarmed = Flag {
        enabled: false,
        rollout_percent: 100.0,
        description: String::new(),
    };
    mesh.flags().set("fault_injection", disarmed);
    for _ in 0..10 {
        check(&mut client).await.expect("disarmed rules do nothing");
    }
    assert_eq!(backend.calls(), 10);

    mesh.flags().set("fault_injection", Flag::on("armed again"));
    const DELAY: Duration = Duration::from_millis(200);
    faults.set(vec![FaultRule {
        method: Some("Check".to_owned()),
        abort_percent: 0.0,
        abort_code: Code::Unavailable,
        delay_percent: 100.0,
        delay: DELAY,
    }]);
    let started = Instant::now();
    check(&mut client).await.expect("a delayed call still succeeds");
    let took = started.elapsed();
    assert!(took >= DELAY, "delayed call took only {took:?}");
    assert_eq!(backend.calls(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_is_shed_beyond_the_concurrency_limit() {
    let backend = Backend::new(Mode::Gate);
    let url = serve_shedding(&backend, 2).await;
    let channel = Channel::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let client = HealthClient::new(channel);

    let blocked: Vec<_> = (0..2)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.check(HealthCheckRequest::default()).await.map(drop) })
        })
        .collect();
    wait_until("two calls are being served", || backend.calls() == 2).await;

    let mut third = client.clone();
    let status = check(&mut third)
        .await
        .expect_err("a third concurrent call is shed");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(backend.calls(), 2, "a shed call reached the handler");

    backend.open_gate();
    for call in blocked {
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .expect("released call finished in time")
            .expect("task")
            .expect("a released call succeeds");
    }
    let mut after = client.clone();
    check(&mut after).await.expect("capacity is back");
    assert_eq!(backend.calls(), 3);
    assert_eq!(backend.abandoned(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deadline_is_reported_as_deadline_exceeded() {
    // A downstream that never answers in time, called with short deadlines
    // of the caller's own (set_timeout) and inherited (with_deadline): each
    // call must end with DEADLINE_EXCEEDED, whichever timer notices first,
    // never as a transport failure (UNAVAILABLE, which callers retry).
    const CALLS: u64 = 20;
    let slow = Backend::new(Mode::Hang(Duration::from_secs(30)));
    let url = serve(&slow).await;
    let mesh = mesh(
        r#"
        [defaults]
        timeout_ms = 10000
        [downstream.slow.breaker]
        window_size = 1000000
        minimum_calls = 1000000
        [downstream.slow.ejection]
        consecutive_failures = 0
        "#,
    );
    let mut client = mesh_client(&mesh, "slow", &url);
    let mut wrong = Vec::new();
    for i in 0..CALLS {
        let budget = Duration::from_millis(40 + i);
        let status = if i % 2 == 0 {
            let mut request = Request::new(HealthCheckRequest::default());
            request.set_timeout(budget);
            tokio::time::timeout(CALL_TIMEOUT, client.check(request))
                .await
                .expect("the deadline ends the call")
                .map(drop)
        } else {
            with_deadline(Instant::now() + budget, check(&mut client)).await
        }
        .expect_err("the downstream hangs");
        if status.code() != Code::DeadlineExceeded {
            wrong.push(format!(
                "call {i} ({budget:?}): {:?} {:?}",
                status.code(),
                status.message()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {CALLS} expired calls misreported: {wrong:#?}",
        wrong.len()
    );
    assert_eq!(slow.calls(), CALLS as usize, "an expired call was retried");
}

/// An answer too large for this client to take (its header block over the
/// client's limit) is the request's doing, not the server's: the caller gets
/// RESOURCE_EXHAUSTED, nothing is retried, and however often it happens the
/// breaker stays closed for everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_too_large_to_relay_never_opens_the_breaker() {
    let backend = Backend::new(Mode::Huge(48 * 1024));
    let url = serve(&backend).await;
    let mesh = mesh("[downstream.big.breaker]\nminimum_calls = 2\nminimum_callers = 1\n");
    let mut client = mesh_client(&mesh, "big", &url);
    for i in 0..10 {
        let refused = check(&mut client).await.expect_err("too large");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert_eq!(backend.calls(), i + 1, "not retried");
    }
    let handles = mesh.downstream("big").expect("registered");
    assert_eq!(handles.breaker.state(), StateKind::Closed);
    // A healthy answer still goes through at once.
    backend.set_mode(Mode::Serve);
    check(&mut client).await.expect("served");
}

/// A server behind the error bound never sends what a client must refuse:
/// the caller gets its INVALID_ARGUMENT, told the details were left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_server_keeps_its_errors_relayable() {
    let backend = Backend::new(Mode::Huge(48 * 1024));
    let url = serve_bounded(&backend).await;
    let mesh = mesh("");
    let mut client = mesh_client(&mesh, "bounded", &url);
    let refused = check(&mut client).await.expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("details omitted"),
        "{}",
        refused.message()
    );
    assert!(refused.details().is_empty());
}

/// Server faults provoked by one caller never open the breaker; the same
/// failures from several callers do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_cannot_open_the_breaker_for_everyone() {
    let backend = Backend::new(Mode::Fail(Code::Internal));
    let url = serve(&backend).await;
    let mesh = mesh("[downstream.svc.breaker]\nminimum_calls = 4\nminimum_callers = 3\n");
    let mut client = mesh_client(&mesh, "svc", &url);
    let as_caller = |who: &str| {
        let mut request = Request::new(HealthCheckRequest::default());
        request.extensions_mut().insert(Caller::of(who));
        request
    };
    for _ in 0..20 {
        let failed = client.check(as_caller("mallory")).await.expect_err("fails");
        assert_eq!(failed.code(), Code::Internal);
    }
    let breaker = mesh.downstream("svc").expect("registered").breaker;
    assert_eq!(breaker.state(), StateKind::Closed, "one caller's failures");
    for who in ["alice", "bob", "carol"] {
        let _ = client.check(as_caller(who)).await;
    }
    assert_eq!(breaker.state(), StateKind::Open, "three callers' failures");
}

/// Fault injection is off unless an operator turns it on: rules set on a
/// mesh with the default policy do nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rules_do_nothing_unless_fault_injection_is_turned_on() {
    let backend = Backend::new(Mode::Serve);
    let url = serve(&backend).await;
    let mesh = mesh("");
    let mut client = mesh_client(&mesh, "unarmed", &url);
    mesh.downstream("unarmed")
        .expect("downstream handles")
        .faults
        .set(vec![FaultRule {
            method: None,
            abort_percent: 100.0,
            abort_code: Code::Unavailable,
            delay_percent: 0.0,
            delay: Duration::ZERO,
        }]);
    for _ in 0..5 {
        check(&mut client).await.expect("served: no rule is armed");
    }
    assert_eq!(backend.calls(), 5);
    assert!(!mesh.flags().is_enabled(ordermesh_mesh::fault::FAULT_FLAG, None));
}
