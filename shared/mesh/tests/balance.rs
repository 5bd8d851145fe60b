//! The balancer against three real tonic servers: spreading, steering away
//! from a slow backend, and ejecting a failing one within the percent cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ordermesh_mesh::balance::{
    Balanced, BalancerConfig, BalancerHandle, EjectionPolicy, EndpointSource, EndpointStatus, balanced,
};
use ordermesh_mesh::classify::Classifier;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Bounds every single call, so a hung balancer fails the test instead of
/// hanging it.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How one test server behaves, changeable while it runs.
#[derive(Default)]
struct Behaviour {
    calls: AtomicUsize,
    failing: AtomicBool,
    delay_ms: AtomicU64,
}

impl Behaviour {
    async fn answer(&self) -> Result<HealthCheckResponse, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(Status::unavailable("told to fail"));
        }
        Ok(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

struct Backend(Arc<Behaviour>);

#[tonic::async_trait]
impl Health for Backend {
    async fn check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        self.0.answer().await.map(Response::new)
    }

    type WatchStream = tokio_stream::Once<Result<HealthCheckResponse, Status>>;

    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let answer = self.0.answer().await?;
        Ok(Response::new(tokio_stream::once(Ok(answer))))
    }
}

struct Servers {
    addresses: Vec<String>,
    behaviour: Vec<Arc<Behaviour>>,
}

impl Servers {
    async fn start(count: usize) -> Self {
        let mut servers = Self {
            addresses: Vec::new(),
            behaviour: Vec::new(),
        };
        for _ in 0..count {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = listener.local_addr().expect("local addr");
            let behaviour = Arc::new(Behaviour::default());
            let server = tonic::transport::Server::builder()
                .add_service(HealthServer::new(Backend(Arc::clone(&behaviour))))
                .serve_with_incoming(TcpListenerStream::new(listener));
            tokio::spawn(server);
            servers.addresses.push(format!("http://{address}"));
            servers.behaviour.push(behaviour);
        }
        servers
    }

    fn calls(&self) -> Vec<usize> {
        self.behaviour.iter().map(|b| b.calls()).collect()
    }

    fn status(&self, handle: &BalancerHandle, i: usize) -> EndpointStatus {
        handle
            .snapshot()
            .into_iter()
            .find(|s| s.address == self.addresses[i])
            .expect("endpoint in snapshot")
    }
}

fn client(servers: &Servers, ejection: EjectionPolicy) -> (HealthClient<Balanced>, BalancerHandle) {
    let config = BalancerConfig {
        source: EndpointSource::Static(servers.addresses.clone()),
        ejection,
        connect_timeout: Duration::from_secs(2),
    };
    let (balanced, handle) =
        balanced("health", config, Arc::new(Classifier::default())).expect("valid config");
    (HealthClient::new(balanced), handle)
}

async fn check(client: &mut HealthClient<Balanced>) -> Result<(), Status> {
    let call = client.check(HealthCheckRequest::default());
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .expect("call finished in time")
        .map(drop)
}

/// A server-streaming call, read to its end so its trailers are seen.
async fn watch(client: &mut HealthClient<Balanced>) -> Result<(), Status> {
    let call = async {
        let mut stream = client.watch(HealthCheckRequest::default()).await?.into_inner();
        let mut messages = 0;
        while stream.message().await?.is_some() {
            messages += 1;
        }
        assert_eq!(messages, 1);
        Ok(())
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .expect("call finished in time")
}

/// `calls` concurrent calls, the way a busy service issues them; returns
/// how many failed. Concurrency is what lets the balancer see load: each
/// call in flight raises its endpoint's cost.
async fn round(client: &HealthClient<Balanced>, calls: usize) -> usize {
    let calls = (0..calls).map(|_| {
        let mut client = client.clone();
        async move { check(&mut client).await }
    });
    let results = futures::future::join_all(calls).await;
    results
        .into_iter()
        .filter(|r| match r {
            Ok(()) => false,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                true
            }
        })
        .count()
}

const CONCURRENCY: usize = 6;

fn no_ejection() -> EjectionPolicy {
    EjectionPolicy {
        consecutive_failures: 0,
        ..EjectionPolicy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_servers_share_the_calls() {
    let servers = Servers::start(3).await;
    let (mut client, handle) = client(&servers, no_ejection());
    for _ in 0..45 {
        assert_eq!(round(&client, CONCURRENCY).await, 0);
    }
    // Server streaming goes through the same balancer.
    for _ in 0..30 {
        watch(&mut client).await.expect("healthy watch");
    }
    let calls = servers.calls();
    assert_eq!(calls.iter().sum::<usize>(), 300, "{calls:?}");
    assert!(calls.iter().all(|&c| c > 50), "unfair spread: {calls:?}");
    assert!(
        handle
            .snapshot()
            .iter()
            .all(|s| !s.ejected && s.consecutive_failures == 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_is_avoided() {
    let servers = Servers::start(3).await;
    servers.behaviour[1].delay_ms.store(200, Ordering::SeqCst);
    let (mut client, _handle) = client(&servers, no_ejection());
    // Until it has answered once the slow server looks like any other;
    // concurrent calls make sure it gets tried.
    for _ in 0..3 {
        assert_eq!(round(&client, CONCURRENCY).await, 0);
    }
    assert!(
        servers.behaviour[1].calls() > 0,
        "slow server never tried: {:?}",
        servers.calls()
    );
    let before = servers.calls();
    for _ in 0..300 {
        check(&mut client).await.expect("call");
    }
    let after = servers.calls();
    let got: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(got[1] < 30, "slow server got {} of 300: {got:?}", got[1]);
    assert!(got[0] > 50 && got[2] > 50, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_server_is_ejected_within_the_cap() {
    const THRESHOLD: usize = 3;
    let servers = Servers::start(3).await;
    servers.behaviour[1].failing.store(true, Ordering::SeqCst);
    let policy = EjectionPolicy {
        consecutive_failures: THRESHOLD as u32,
        base_ejection: Duration::from_secs(60),
        max_ejection: Duration::from_secs(300),
        max_ejected_percent: 34,
    };
    let (client, handle) = client(&servers, policy);

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rounds = 0;
    while !servers.status(&handle, 1).ejected {
        assert!(
            rounds < 50 && Instant::now() < deadline,
            "never ejected: {:?}",
            handle.snapshot()
        );
        rounds += 1;
        round(&client, CONCURRENCY).await;
    }
    // Calls already in flight when the threshold was reached still land.
    let at_ejection = servers.behaviour[1].calls();
    assert!(
        (THRESHOLD..THRESHOLD + CONCURRENCY).contains(&at_ejection),
        "ejected after {at_ejection} calls"
    );
    let left = servers
        .status(&handle, 1)
        .ejected_for
        .expect("ejection time left");
    assert!(
        left > Duration::from_secs(50) && left <= Duration::from_secs(60),
        "{left:?}"
    );
    assert!(!servers.status(&handle, 0).ejected && !servers.status(&handle, 2).ejected);

    for _ in 0..20 {
        assert_eq!(round(&client, CONCURRENCY).await, 0, "ejected server was called");
    }
    assert_eq!(servers.behaviour[1].calls(), at_ejection);

    // A second failing server stays in: two of three is over 34%.
    servers.behaviour[2].failing.store(true, Ordering::SeqCst);
    let before = servers.behaviour[2].calls();
    let mut failures = 0;
    for _ in 0..10 {
        failures += round(&client, CONCURRENCY).await;
    }
    let got = servers.behaviour[2].calls() - before;
    assert!(got > THRESHOLD, "second failing server got only {got} calls");
    assert_eq!(failures, got);
    let second = servers.status(&handle, 2);
    assert!(!second.ejected, "{second:?}");
    assert!(second.consecutive_failures >= THRESHOLD as u32, "{second:?}");
    assert!(servers.status(&handle, 1).ejected);
    assert_eq!(servers.behaviour[1].calls(), at_ejection);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_source_finds_the_server() {
    let servers = Servers::start(1).await;
    let port: u16 = servers.addresses[0]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in address");
    let config = BalancerConfig {
        source: EndpointSource::Dns {
            host: "127.0.0.1".to_owned(),
            port,
            refresh: Duration::from_secs(1),
        },
        ejection: EjectionPolicy::default(),
        connect_timeout: Duration::from_secs(2),
    };
    let (balanced, handle) =
        balanced("health", config, Arc::new(Classifier::default())).expect("valid config");
    let mut client = HealthClient::new(balanced);
    for _ in 0..5 {
        check(&mut client).await.expect("call through DNS endpoint");
    }
    assert_eq!(servers.calls(), vec![5]);
    let snapshot = handle.snapshot();
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].address, servers.addresses[0]);
}
