//! The client stack every outgoing call goes through, and the per-process
//! registry ([`Mesh`]) that builds one per downstream and keeps their
//! handles for the admin endpoint.
//!
//! Order, outermost first:
//! deadline -> retry (with budget) -> circuit breaker -> fault injection ->
//! balancer (p2c over peak-EWMA, outlier ejection) -> one HTTP/2 channel per
//! endpoint. The deadline wraps everything so one budget spans all retries;
//! retries sit above the breaker so a rejection is not retried into it; the
//! fault layer sits below the breaker so injected faults trip it as real ones
//! would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder};
use tracing::Instrument;

use crate::balance::{self, BalanceError, BalancerHandle, EndpointStatus};
use crate::breaker::{BreakerHandle, BreakerLayer, StateKind};
use crate::classify::Classifier;
use crate::deadline::DeadlineLayer;
use crate::fault::{FaultLayer, FaultRule, Faults};
use crate::flags::Flags;
use crate::policy::{MeshPolicy, PolicyError};
use crate::refused::NotSent;
use crate::retry::{RetryBudget, RetryLayer};

/// What a generated tonic client is built on: `FooClient::new(channel)`.
///
/// Whatever went wrong, callers see a gRPC status: a transport error that
/// reaches the top of the stack becomes an `UNAVAILABLE` response, and an
/// answer the mesh made itself without sending the call (an open breaker,
/// an injected abort, a spent deadline) is returned as the call's error, a
/// `tonic::Status` whose source is the typed [`NotSent`] marker.
#[derive(Clone)]
pub struct MeshChannel {
    inner: BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>,
    /// Who calls, and the downstream's name, for the metrics.
    caller: Arc<str>,
    downstream: Arc<str>,
}

impl std::fmt::Debug for MeshChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshChannel")
    }
}

impl tower::Service<Request<Body>> for MeshChannel {
    type Response = Response<Body>;
    type Error = tonic::Status;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        // A failed readiness (a balancer with no endpoint yet) is reported
        // by the call itself, so the service always claims ready.
        match self.inner.poll_ready(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(_) => std::task::Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let call = crate::metrics::ClientCall::start(&self.caller, &self.downstream, request.uri().path());
        let span = crate::trace::client_span(&self.downstream, request.uri().path());
        crate::trace::inject(&span, request.headers_mut());
        let future = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let status = match future.await {
                Ok(mut response) => match NotSent::take_status(&mut response) {
                    Some(status) => {
                        let not_sent = NotSent::of_status(&status);
                        crate::trace::record_code(&span, status.code());
                        if let Some(reason) = not_sent {
                            span.record("ordermesh.not_sent", reason.to_string());
                        }
                        call.ended(status.code(), not_sent);
                        return Err(status);
                    }
                    None => {
                        let traced = span.clone();
                        let response = crate::metrics::on_code(response, move |code| {
                            crate::trace::record_code(&traced, code)
                        });
                        return Ok(call.answered(response));
                    }
                },
                Err(error) if crate::classify::refused_here(&*error) => {
                    tonic::Status::resource_exhausted(format!(
                        "the response's headers exceed this client's limit of {} bytes: {error}",
                        crate::server::MAX_RESPONSE_HEADER_LIST_BYTES
                    ))
                }
                Err(error) => tonic::Status::unavailable(format!("transport error: {error}")),
            };
            crate::trace::record_code(&span, status.code());
            call.ended(status.code(), None);
            Ok(crate::classify::status_response(status))
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error(transparent)]
    MeshPolicy(#[from] PolicyError),
    #[error(transparent)]
    Balance(#[from] BalanceError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The handles of one downstream's stack.
#[derive(Debug, Clone)]
pub struct Downstream {
    pub breaker: BreakerHandle,
    pub budget: Arc<RetryBudget>,
    pub balancer: BalancerHandle,
    pub faults: Faults,
    /// The one classifier the breaker, retries and ejection of this
    /// downstream judge outcomes by.
    pub classifier: Arc<Classifier>,
}

impl Downstream {
    /// Whether a failed call is worth trying again later (an outage, not an
    /// answer): a server fault by the same classifier the breaker, the retry
    /// layer and outlier ejection use, so callers above the mesh (the order
    /// saga) agree with it on what "transient" means.
    pub fn is_transient(&self, status: &tonic::Status) -> bool {
        self.classifier.classify(status.code()).is_server_fault()
    }

    /// For a call the breaker refused without sending: how long until it lets
    /// a probe through, as the refusal said (an open breaker's wait, or a
    /// half-open one's while its probes are out; reading the breaker's state
    /// later would find a half-open breaker "due now" and retry at once,
    /// starving its probes).
    pub fn breaker_retry_after(&self, status: &tonic::Status) -> Option<Duration> {
        match NotSent::of_status(status) {
            Some(NotSent::Breaker { retry_after }) => Some(retry_after),
            _ => None,
        }
    }
}

/// A snapshot of one downstream, for the admin endpoint.
#[derive(Debug, Clone)]
pub struct DownstreamSnapshot {
    pub name: String,
    pub breaker_state: StateKind,
    pub breaker_opens_for: Option<Duration>,
    pub breaker_opened_total: u64,
    pub breaker_rejected_total: u64,
    pub retry_tokens: f64,
    pub retry_max_tokens: f64,
    pub endpoints: Vec<EndpointStatus>,
    pub faults: Vec<FaultRule>,
}

/// The mesh of one process: its policy, flags and downstream stacks.
#[derive(Debug, Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Whose mesh this is (`order`, `gateway`, ...): the `caller` label of
    /// its client metrics, since `up` runs several in one process.
    caller: Arc<str>,
    /// Mutual TLS for every downstream, when the process has certificates.
    tls: Option<Arc<crate::tls::MeshTls>>,
    policy: Mutex<MeshPolicy>,
    flags: Flags,
    downstreams: Mutex<BTreeMap<String, Downstream>>,
}

impl Default for Mesh {
    fn default() -> Self {
        Self::new(MeshPolicy::default())
    }
}

impl Mesh {
    pub fn new(policy: MeshPolicy) -> Self {
        Self::with_tls(policy, None)
    }

    /// A mesh whose clients connect over mutual TLS with `tls`.
    pub fn with_tls(policy: MeshPolicy, tls: Option<Arc<crate::tls::MeshTls>>) -> Self {
        Self::named("", policy, tls)
    }

    /// The mesh of the target `caller` (`order`, `gateway`, ...), which
    /// labels its client metrics.
    pub fn named(caller: &str, policy: MeshPolicy, tls: Option<Arc<crate::tls::MeshTls>>) -> Self {
        let flags = Flags::new(policy.flags());
        flags.define(
            crate::fault::FAULT_FLAG,
            crate::flags::Flag {
                enabled: false,
                rollout_percent: 100.0,
                description: "Arms fault injection rules (policy file or MeshAdminService/SetFaults); off unless an operator turns it on (policy file or MeshAdminService/SetFlag)".into(),
            },
        );
        Self {
            inner: Arc::new(Inner {
                caller: caller.into(),
                tls,
                policy: Mutex::new(policy),
                flags,
                downstreams: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    pub fn flags(&self) -> &Flags {
        &self.inner.flags
    }

    pub fn policy(&self) -> MeshPolicy {
        self.inner
            .policy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Builds the client stack for downstream `name` (reached at
    /// `default_url` unless the policy says otherwise). Needs a tokio runtime.
    pub fn client(&self, name: &str, default_url: &str) -> Result<MeshChannel, MeshError> {
        let settings = self.policy().downstream_settings(name, default_url)?;
        let classifier = Arc::new(settings.classifier);
        let connector = match &self.inner.tls {
            Some(tls) => Some(tls.connector(name)?),
            None => None,
        };
        let (balanced, balancer) =
            balance::balanced_over(name, settings.balancer, classifier.clone(), connector)?;
        let breaker = BreakerHandle::new(settings.breaker);
        let budget = Arc::new(RetryBudget::new(
            settings.budget_max_tokens,
            settings.budget_token_ratio,
        ));
        let faults = Faults::default();
        faults.set(settings.faults);
        let service = ServiceBuilder::new()
            .layer(DeadlineLayer::new(settings.deadline))
            .layer(RetryLayer::new(settings.retry, budget.clone()))
            .layer(BreakerLayer::new(breaker.clone(), classifier.clone()))
            .layer(FaultLayer::new(faults.clone(), self.inner.flags.clone()))
            .service(balanced);
        self.inner
            .downstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                name.to_owned(),
                Downstream {
                    breaker,
                    budget,
                    balancer,
                    faults,
                    classifier: classifier.clone(),
                },
            );
        Ok(MeshChannel {
            inner: BoxCloneSyncService::new(service),
            caller: self.inner.caller.clone(),
            downstream: name.into(),
        })
    }

    /// The handles of a downstream built by [`Mesh::client`].
    pub fn downstream(&self, name: &str) -> Option<Downstream> {
        self.inner
            .downstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn snapshot(&self) -> Vec<DownstreamSnapshot> {
        let downstreams = self
            .inner
            .downstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        downstreams
            .into_iter()
            .map(|(name, d)| {
                let stats = d.breaker.stats();
                DownstreamSnapshot {
                    name,
                    breaker_state: d.breaker.state(),
                    breaker_opens_for: d.breaker.opens_for(),
                    breaker_opened_total: stats.opened,
                    breaker_rejected_total: stats.rejected,
                    retry_tokens: d.budget.tokens(),
                    retry_max_tokens: d.budget.max_tokens(),
                    endpoints: d.balancer.snapshot(),
                    faults: d.faults.rules(),
                }
            })
            .collect()
    }

    /// Copies each downstream's state (breaker, endpoints, retries, faults)
    /// into the metrics recorder; called when metrics are scraped.
    pub fn export_metrics(&self) {
        use crate::metrics as m;
        let downstreams = self
            .inner
            .downstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let caller = self.inner.caller.to_string();
        for (name, d) in downstreams {
            let state = match d.breaker.state() {
                StateKind::Closed => 0.0,
                StateKind::HalfOpen => 1.0,
                StateKind::Open => 2.0,
            };
            metrics::gauge!(m::BREAKER_STATE, "caller" => caller.clone(), "downstream" => name.clone())
                .set(state);
            let stats = d.breaker.stats();
            for (to, count) in [
                ("closed", stats.closed),
                ("half_open", stats.half_opened),
                ("open", stats.opened),
            ] {
                metrics::counter!(m::BREAKER_TRANSITIONS, "caller" => caller.clone(), "downstream" => name.clone(), "to" => to)
                    .absolute(count);
            }
            let endpoints = d.balancer.snapshot();
            let ejected = endpoints.iter().filter(|e| e.ejected).count();
            for (state, count) in [("ready", endpoints.len() - ejected), ("ejected", ejected)] {
                metrics::gauge!(m::ENDPOINTS, "caller" => caller.clone(), "downstream" => name.clone(), "state" => state)
                    .set(count as f64);
            }
            let (retries, exhausted) = d.budget.counts();
            metrics::counter!(m::RETRIES, "caller" => caller.clone(), "downstream" => name.clone())
                .absolute(retries);
            metrics::counter!(m::RETRY_BUDGET_EXHAUSTED, "caller" => caller.clone(), "downstream" => name.clone()).absolute(exhausted);
            let (delays, aborts) = d.faults.applied();
            metrics::counter!(m::FAULTS_INJECTED, "caller" => caller.clone(), "downstream" => name.clone(), "kind" => "delay")
                .absolute(delays);
            metrics::counter!(m::FAULTS_INJECTED, "caller" => caller.clone(), "downstream" => name, "kind" => "abort").absolute(aborts);
        }
    }

    /// Applies a reloaded policy: flags and fault rules change at once;
    /// breaker, retry and balancing settings keep their start-up values.
    pub fn reload(&self, policy: MeshPolicy) -> Result<(), MeshError> {
        let downstreams = self
            .inner
            .downstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, d) in downstreams {
            let settings = policy.downstream_settings(&name, "http://127.0.0.1:1")?;
            d.faults.set(settings.faults);
        }
        self.inner.flags.replace(policy.flags());
        *self.inner.policy.lock().unwrap_or_else(|p| p.into_inner()) = policy;
        Ok(())
    }

    /// Re-reads the policy file whenever its content changes (checked every
    /// `interval`; content, not mtime, so a change within the filesystem's
    /// timestamp granularity is not missed); an invalid file is logged and
    /// the running policy kept.
    /// The file is first read when this is called, not when the returned
    /// future first runs, so a change made in between is seen.
    pub fn watch_file(
        self,
        path: PathBuf,
        interval: Duration,
    ) -> impl std::future::Future<Output = ()> + Send {
        let last = std::fs::read(&path).ok();
        self.watch_from(path, interval, last)
    }

    async fn watch_from(self, path: PathBuf, interval: Duration, mut last: Option<Vec<u8>>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = std::fs::read(&path).ok();
            if now == last {
                continue;
            }
            last = now;
            match MeshPolicy::load(Some(&path), std::env::vars())
                .map_err(MeshError::from)
                .and_then(|p| self.reload(p))
            {
                Ok(()) => tracing::info!(path = %path.display(), "mesh policy reloaded"),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "mesh policy reload refused; keeping the running policy")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the exposition's sample `line_start` (name and labels
    /// as rendered), if present.
    fn sample(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
    }

    #[test]
    fn calls_and_an_open_breaker_show_in_the_metrics() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let policy = MeshPolicy::parse(
            "[downstream.payment.breaker]\nminimum_calls = 2\nminimum_callers = 1\n\
             [downstream.payment.retry]\nmax_attempts = 1\n",
            [],
        )
        .expect("policy");
        let mesh = Mesh::named("order", policy, None);
        let recorded = metrics::with_local_recorder(&recorder, || {
            // The calls are recorded by the stack as they end, on this
            // thread (a current-thread runtime).
            runtime.block_on(async {
                // Nothing listens on port 1: every call fails with UNAVAILABLE.
                let channel = mesh.client("payment", "http://127.0.0.1:1").expect("stack");
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let mut refused = 0;
                for _ in 0..4 {
                    let status = health
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await
                        .expect_err("nothing answers");
                    assert_eq!(status.code(), tonic::Code::Unavailable);
                    if NotSent::of_status(&status).is_some() {
                        refused += 1;
                    }
                }
                mesh.export_metrics();
                refused
            })
        });
        assert!(recorded >= 1, "the breaker opened and refused calls");
        let text = handle.render();
        let labels = r#"{caller="order",downstream="payment""#;
        assert_eq!(
            sample(&text, &format!("ordermesh_mesh_breaker_state{labels}}}")),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!("ordermesh_mesh_breaker_transitions_total{labels},to=\"open\"}}")
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!(
                    "ordermesh_rpc_client_requests_total{labels},rpc_method=\"Check\",grpc_code=\"UNAVAILABLE\"}}"
                )
            ),
            Some(4.0),
            "every call counted once, refused or sent: {text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!("ordermesh_mesh_refused_total{labels},reason=\"breaker\"}}")
            ),
            Some(f64::from(recorded)),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_policy_file_is_reloaded_without_a_restart() {
        let dir = std::env::temp_dir().join(format!("ordermesh-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("policy.toml");
        std::fs::write(&path, "[flags.beta]\nenabled = false\n").expect("write");
        let mesh = Mesh::new(MeshPolicy::load(Some(&path), []).expect("valid"));
        mesh.client("payment", "http://127.0.0.1:1").expect("stack");
        assert!(!mesh.flags().is_enabled("beta", None));
        let watcher = tokio::spawn(mesh.clone().watch_file(path.clone(), Duration::from_millis(20)));

        let text = "[flags.beta]\nenabled = true\n[[downstream.payment.faults]]\nabort_percent = 100.0\n";
        std::fs::write(&path, text).expect("rewrite");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !mesh.flags().is_enabled("beta", None) {
            assert!(tokio::time::Instant::now() < deadline, "the flag never reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let faults = mesh.downstream("payment").expect("payment").faults.rules();
        assert_eq!(faults.len(), 1, "fault rules reload too");

        // An invalid file is refused and the running policy kept (a negative
        // result: give the watcher several ticks to get it wrong).
        std::fs::write(&path, "[flags.beta]\nenabled = 3\n").expect("rewrite");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            mesh.flags().is_enabled("beta", None),
            "kept the last valid policy"
        );
        watcher.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
