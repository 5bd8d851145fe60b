//! Cost of the mesh client stack, measured against a bare tonic `Channel` to
//! the same loopback server in the same run, and the rejection latency of an
//! open circuit breaker. `cargo bench -p ordermesh-mesh`.
//!
//! Besides criterion's own report, the stack-vs-channel bench prints the
//! p50 of interleaved single calls and their ratio (the target: under 5%
//! added latency at p50).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, Service, ServiceExt};

use ordermesh_mesh::breaker::{BreakerConfig, BreakerHandle, BreakerLayer, Window};
use ordermesh_mesh::classify::{Classifier, status_response};
use ordermesh_mesh::policy::MeshPolicy;
use ordermesh_mesh::stack::Mesh;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn health_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_reporter, service) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    format!("http://{addr}")
}

fn p50(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn stack_versus_channel(c: &mut Criterion) {
    let rt = runtime();
    let (mut bare, mut meshed) = rt.block_on(async {
        let url = health_server().await;
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mesh = Mesh::new(MeshPolicy::default());
        let meshed = HealthClient::new(mesh.client("health", &url).expect("stack"));
        (HealthClient::new(channel), meshed)
    });
    let request = || HealthCheckRequest {
        service: String::new(),
    };
    rt.block_on(layer_by_layer());

    // Interleaved p50s: both paths see the same machine noise.
    let (mut bare_samples, mut mesh_samples) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for _ in 0..200 {
            let _ = bare.check(request()).await;
            let _ = meshed.check(request()).await;
        }
        for _ in 0..2000 {
            let start = Instant::now();
            bare.check(request()).await.expect("bare call");
            bare_samples.push(start.elapsed());
            let start = Instant::now();
            meshed.check(request()).await.expect("mesh call");
            mesh_samples.push(start.elapsed());
        }
    });
    let (bare_p50, mesh_p50) = (p50(&mut bare_samples), p50(&mut mesh_samples));
    println!(
        "p50 bare channel {:?}, mesh stack {:?}, ratio {:.3} (added {:+.1}%)",
        bare_p50,
        mesh_p50,
        mesh_p50.as_secs_f64() / bare_p50.as_secs_f64(),
        (mesh_p50.as_secs_f64() / bare_p50.as_secs_f64() - 1.0) * 100.0
    );

    let mut group = c.benchmark_group("unary call on loopback");
    group.bench_function("bare tonic Channel", |b| {
        b.to_async(&rt).iter(|| {
            let mut client = bare.clone();
            async move { client.check(request()).await.expect("call") }
        })
    });
    group.bench_function("mesh stack", |b| {
        b.to_async(&rt).iter(|| {
            let mut client = meshed.clone();
            async move { client.check(request()).await.expect("call") }
        })
    });
    group.finish();
}

/// Where the stack's cost comes from: p50 of each partial stack, bottom up.
async fn layer_by_layer() {
    use ordermesh_mesh::balance::{BalancerConfig, EndpointSource, balanced};
    use ordermesh_mesh::deadline::{DeadlineConfig, DeadlineLayer};
    use ordermesh_mesh::retry::{RetryBudget, RetryLayer, RetryPolicies};
    use std::sync::Arc;
    use tower::util::BoxCloneSyncService;
    type Svc = BoxCloneSyncService<Request<Body>, http::Response<Body>, tower::BoxError>;

    let url = health_server().await;
    let classifier = Arc::new(Classifier::default());
    let (balancer, _handle) = balanced(
        "b",
        BalancerConfig::new(EndpointSource::Static(vec![url.clone()])),
        classifier.clone(),
    )
    .expect("balancer");
    let breaker = BreakerHandle::new(BreakerConfig::default());
    let breaker_layer = BreakerLayer::new(breaker, classifier.clone());
    let retry = RetryLayer::new(RetryPolicies::default(), Arc::new(RetryBudget::new(10.0, 0.1)));
    let deadline = DeadlineLayer::new(DeadlineConfig::default());
    let channel = tonic::transport::Endpoint::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let stacks: Vec<(&str, Svc)> = vec![
        (
            "channel",
            BoxCloneSyncService::new(channel.clone().map_err(Into::into)),
        ),
        ("balancer", BoxCloneSyncService::new(balancer.clone())),
        (
            "breaker+balancer",
            BoxCloneSyncService::new(breaker_layer.layer(balancer.clone())),
        ),
        (
            "retry+breaker+balancer",
            BoxCloneSyncService::new(retry.layer(breaker_layer.layer(balancer.clone()))),
        ),
        (
            "deadline+retry+breaker+balancer",
            BoxCloneSyncService::new(deadline.layer(retry.layer(breaker_layer.layer(balancer)))),
        ),
        (
            "deadline+channel",
            BoxCloneSyncService::new(deadline.layer(channel.clone())),
        ),
        ("retry+channel", BoxCloneSyncService::new(retry.layer(channel))),
    ];
    let mut clients: Vec<(&str, HealthClient<Svc>, Vec<Duration>)> = stacks
        .into_iter()
        .map(|(n, s)| (n, HealthClient::new(s), Vec::new()))
        .collect();
    for round in 0..1200 {
        for (_, client, samples) in clients.iter_mut() {
            let start = Instant::now();
            client.check(HealthCheckRequest::default()).await.expect("call");
            if round >= 200 {
                samples.push(start.elapsed());
            }
        }
    }
    for (name, _, samples) in clients.iter_mut() {
        println!("p50 {name:<34} {:?}", p50(samples));
    }
}

fn open_breaker_rejection(c: &mut Criterion) {
    let rt = runtime();
    let breaker = BreakerHandle::new(BreakerConfig {
        name: "bench".into(),
        window: Window::Count(1),
        minimum_calls: 1,
        wait_in_open: Duration::from_secs(3600),
        ..BreakerConfig::default()
    });
    let failing = tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(status_response(tonic::Status::unavailable("down")))
    });
    let mut service =
        BreakerLayer::new(breaker.clone(), std::sync::Arc::new(Classifier::default())).layer(failing);
    rt.block_on(async {
        let _ = service
            .ready()
            .await
            .expect("ready")
            .call(Request::new(Body::empty()))
            .await;
    });
    assert_eq!(
        breaker.state().as_str(),
        "OPEN",
        "the bench measures an open breaker"
    );
    c.bench_function("open breaker rejection", |b| {
        b.to_async(&rt).iter(|| {
            let mut service = service.clone();
            async move {
                service
                    .ready()
                    .await
                    .expect("ready")
                    .call(Request::new(Body::empty()))
                    .await
                    .expect("answer")
            }
        })
    });
}

criterion_group!(benches, stack_versus_channel, open_breaker_rejection);
criterion_main!(benches);
