use std::collections::BTreeSet;

use http::{Request, Response};
use tokio::time::Instant;
use tonic::Code;
use tonic::body::Body;
use tower::discover::Change;
use tower::{BoxError, Service};

use super::endpoints::Discovered;
use super::*;
use crate::classify::Outcome;

const FAULT: Outcome = Outcome::ServerFault(Code::Unavailable);

struct Fixture {
    shared: Arc<Shared>,
    changes: mpsc::UnboundedReceiver<Discovered>,
}

impl Fixture {
    fn new(endpoints: usize, policy: EjectionPolicy) -> Self {
        let (tx, changes) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(
            "test",
            policy,
            Arc::new(Classifier::default()),
            Duration::from_secs(1),
            tx,
            tokio::runtime::Handle::current(),
        ));
        let mut fixture = Self { shared, changes };
        for i in 0..endpoints {
            let address = Self::address(i);
            let channel = fixture.shared.channel(&address).expect("valid uri");
            fixture.shared.add(address.clone(), channel);
            assert_eq!(fixture.next_change(), Some(Seen::Insert(address)));
        }
        fixture
    }

    fn address(i: usize) -> String {
        format!("http://127.0.0.1:{}", 1 + i)
    }

    /// The generation currently in the balancer for endpoint `i`.
    fn generation(&self, i: usize) -> u64 {
        self.shared.lock().endpoints[&Self::address(i)].generation
    }

    fn report(&self, i: usize, outcome: Outcome) {
        self.shared.record(&Self::address(i), self.generation(i), outcome);
    }

    fn status(&self, i: usize) -> EndpointStatus {
        let address = Self::address(i);
        self.shared
            .snapshot()
            .into_iter()
            .find(|s| s.address == address)
            .expect("endpoint known")
    }

    fn next_change(&mut self) -> Option<Seen> {
        self.changes.try_recv().ok().map(strip)
    }

    async fn wait_change(&mut self) -> Seen {
        strip(self.changes.recv().await.expect("sender alive"))
    }
}

/// A change as the balancer would see it, minus the service.
#[derive(Debug, PartialEq)]
enum Seen {
    Insert(String),
    Remove(String),
}

fn strip(change: Discovered) -> Seen {
    match change {
        Ok(Change::Insert(k, _)) => Seen::Insert(k),
        Ok(Change::Remove(k)) => Seen::Remove(k),
        Err(never) => match never {},
    }
}

fn policy(consecutive_failures: u32, max_ejected_percent: u8) -> EjectionPolicy {
    EjectionPolicy {
        consecutive_failures,
        base_ejection: Duration::from_secs(30),
        max_ejection: Duration::from_secs(70),
        max_ejected_percent,
    }
}

#[tokio::test]
async fn ejects_after_threshold_consecutive_faults() {
    tokio::time::pause();
    let mut f = Fixture::new(3, policy(5, 50));
    for n in 1..5 {
        f.report(0, FAULT);
        assert_eq!(f.status(0).consecutive_failures, n);
        assert!(!f.status(0).ejected);
    }
    assert_eq!(f.next_change(), None);
    f.report(0, FAULT);
    assert_eq!(f.next_change(), Some(Seen::Remove(Fixture::address(0))));
    let status = f.status(0);
    assert!(status.ejected);
    assert_eq!(status.ejected_for, Some(Duration::from_secs(30)));
    assert!(!f.status(1).ejected);
}

#[tokio::test]
async fn success_and_caller_errors_reset_the_count() {
    let mut f = Fixture::new(3, policy(3, 50));
    for reset in [Outcome::Success, Outcome::CallerError(Code::NotFound)] {
        f.report(0, FAULT);
        f.report(0, FAULT);
        f.report(0, reset);
        assert_eq!(f.status(0).consecutive_failures, 0);
    }
    f.report(0, FAULT);
    f.report(0, FAULT);
    assert_eq!(f.next_change(), None);
    assert!(!f.status(0).ejected);
    // Faults on other endpoints do not add up either.
    f.report(1, FAULT);
    assert_eq!(f.next_change(), None);
    f.report(0, FAULT);
    assert_eq!(f.next_change(), Some(Seen::Remove(Fixture::address(0))));
}

#[tokio::test]
async fn ejected_share_is_capped() {
    let mut f = Fixture::new(3, policy(2, 34));
    for _ in 0..2 {
        f.report(0, FAULT);
    }
    assert_eq!(f.next_change(), Some(Seen::Remove(Fixture::address(0))));
    for _ in 0..10 {
        f.report(1, FAULT);
    }
    assert_eq!(f.next_change(), None, "a second ejection would exceed 34%");
    assert!(!f.status(1).ejected);
    assert_eq!(f.status(1).consecutive_failures, 10);
}

#[tokio::test]
async fn a_single_endpoint_is_never_ejected() {
    let mut f = Fixture::new(1, policy(1, 100));
    for _ in 0..10 {
        f.report(0, FAULT);
    }
    assert_eq!(f.next_change(), None);
    assert!(!f.status(0).ejected);
}

#[tokio::test]
async fn the_last_serving_endpoint_is_kept_even_at_100_percent() {
    let mut f = Fixture::new(2, policy(1, 100));
    f.report(0, FAULT);
    assert_eq!(f.next_change(), Some(Seen::Remove(Fixture::address(0))));
    f.report(1, FAULT);
    assert_eq!(f.next_change(), None);
}

#[tokio::test]
async fn ejection_backs_off_and_readmits() {
    tokio::time::pause();
    let mut f = Fixture::new(2, policy(2, 50));
    for expected in [30, 60, 70, 70] {
        f.report(0, FAULT);
        f.report(0, FAULT);
        let ejected_at = Instant::now();
        assert_eq!(f.next_change(), Some(Seen::Remove(Fixture::address(0))));
        assert_eq!(f.status(0).ejected_for, Some(Duration::from_secs(expected)));
        // Paused time jumps straight to the re-admission timer.
        assert_eq!(f.wait_change().await, Seen::Insert(Fixture::address(0)));
        // The timer wheel rounds up to the next millisecond.
        let waited = ejected_at.elapsed();
        let expected = Duration::from_secs(expected);
        assert!(
            waited >= expected && waited <= expected + Duration::from_millis(5),
            "{waited:?}"
        );
        let status = f.status(0);
        assert!(!status.ejected);
        assert_eq!(status.ejected_for, None);
        assert_eq!(status.consecutive_failures, 0);
    }
}

#[tokio::test]
async fn outcomes_from_before_an_ejection_are_ignored() {
    tokio::time::pause();
    let mut f = Fixture::new(2, policy(2, 50));
    let old = f.generation(0);
    f.report(0, FAULT);
    f.report(0, FAULT);
    assert_eq!(f.next_change(), Some(Seen::Remove(Fixture::address(0))));
    // Late answers of calls already in flight while ejected.
    f.shared.record(&Fixture::address(0), old, FAULT);
    assert_eq!(f.wait_change().await, Seen::Insert(Fixture::address(0)));
    f.shared.record(&Fixture::address(0), old, FAULT);
    f.shared.record(&Fixture::address(0), old, FAULT);
    assert_eq!(f.status(0).consecutive_failures, 0);
    assert_eq!(f.next_change(), None);
}

#[tokio::test]
async fn zero_threshold_disables_ejection() {
    let mut f = Fixture::new(3, policy(0, 100));
    for _ in 0..10 {
        f.report(0, FAULT);
    }
    assert_eq!(f.next_change(), None);
}

#[tokio::test]
async fn dns_answers_add_and_remove_endpoints() {
    let mut f = Fixture::new(0, policy(2, 50));
    let answer = |ids: &[usize]| ids.iter().map(|&i| Fixture::address(i)).collect::<BTreeSet<_>>();
    f.shared.reconcile(&answer(&[0, 1]));
    assert_eq!(f.next_change(), Some(Seen::Insert(Fixture::address(0))));
    assert_eq!(f.next_change(), Some(Seen::Insert(Fixture::address(1))));
    f.shared.reconcile(&answer(&[1, 2]));
    assert_eq!(f.next_change(), Some(Seen::Remove(Fixture::address(0))));
    assert_eq!(f.next_change(), Some(Seen::Insert(Fixture::address(2))));
    assert_eq!(f.next_change(), None);
    let known: Vec<_> = f.shared.snapshot().into_iter().map(|s| s.address).collect();
    assert_eq!(known, vec![Fixture::address(1), Fixture::address(2)]);
}

#[test]
fn balanced_is_a_shareable_transport() {
    fn transport<T>()
    where
        T: Service<Request<Body>, Response = Response<Body>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        T::Future: Send,
    {
    }
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    transport::<Balanced>();
    shareable::<BalancerHandle>();
}

#[tokio::test]
async fn invalid_static_endpoint_is_named() {
    let config = BalancerConfig::new(EndpointSource::Static(vec![
        "http://127.0.0.1:1".to_owned(),
        "not a uri".to_owned(),
    ]));
    let error = balanced("inventory", config, Arc::new(Classifier::default()))
        .expect_err("invalid endpoint rejected");
    assert!(error.to_string().contains("not a uri"), "{error}");
    assert!(matches!(error, BalanceError::InvalidEndpoint { ref endpoint, .. } if endpoint == "not a uri"));
}

/// Calls waiting together for the first endpoint are all dispatched
/// once it arrives. The balancer keeps only the last waker it was polled
/// with; the others are woken by the dispatch that found it ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_waiting_together_for_an_endpoint_are_all_dispatched() {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(
        "test",
        EjectionPolicy::default(),
        Arc::new(Classifier::default()),
        Duration::from_secs(1),
        tx,
        tokio::runtime::Handle::current(),
    ));
    let balanced = Balanced::new(rx);
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut service = balanced.clone();
            let waiting = Arc::clone(&waiting);
            tokio::spawn(async move {
                let request = Request::builder()
                    .uri("http://test/grpc.health.v1.Health/Check")
                    .body(Body::empty())
                    .expect("request");
                let mut call = service.call(request);
                // Counts the call once it polled the empty balancer.
                let mut counted = false;
                // Answered or refused: either way dispatched, not lost.
                let _ = std::future::poll_fn(|cx| {
                    let polled = call.as_mut().poll(cx);
                    if polled.is_pending() && !counted {
                        counted = true;
                        waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    polled
                })
                .await;
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while waiting.load(std::sync::atomic::Ordering::SeqCst) < 8 {
        assert!(Instant::now() < deadline, "every call waits for an endpoint");
        tokio::task::yield_now().await;
    }
    let address = "http://127.0.0.1:1".to_owned();
    let channel = shared.channel(&address).expect("valid uri");
    shared.add(address, channel);
    for call in calls {
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("every waiting call is dispatched")
            .expect("call task");
    }
}
