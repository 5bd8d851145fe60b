//! Dead-letter tooling: a replay reaches only the consumer that gave up, a
//! message that was never an ordermesh event is listed as it came (never
//! with invented attributes) and cannot be replayed, and a tail whose filter
//! matches no stream is refused instead of ending silently.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use ordermesh_events::{BoundedContext, Bus, ConsumerConfig, Error, Event, Handler, HandlerError, worker};

use crate::harness::{BusKind, bus, eventually};
use crate::support::{SHORT, order_created};

/// Counts calls; refuses (poison) while `refusing` is set.
#[derive(Clone, Default)]
struct Counting {
    calls: Arc<AtomicUsize>,
    refusing: Arc<AtomicBool>,
}

impl Handler for Counting {
    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.refusing.load(Ordering::SeqCst) {
            return Err(HandlerError::poison("refused by the test"));
        }
        Ok(())
    }
}

fn config(name: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(name, BoundedContext::Orders);
    config.ack_wait = Duration::from_secs(2);
    config
}

fn spawn(
    bus: &Bus,
    name: &str,
    handler: Counting,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), Error>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker::run(bus.clone(), config(name), handler, async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

/// Replaying a dead letter gives the event again to the consumer that gave
/// up on it, and to no other consumer of its stream.
async fn a_replay_reaches_only_the_consumer_that_gave_up(kind: BusKind) {
    let Some((bus, _nats)) = bus(kind).await else {
        return;
    };
    let refuser = Counting::default();
    refuser.refusing.store(true, Ordering::SeqCst);
    let bystander = Counting::default();
    let workers = [
        spawn(&bus, "refuser", refuser.clone()),
        spawn(&bus, "bystander", bystander.clone()),
    ];
    let event = Event::new("/ordermesh/test", &order_created("o-1"), None);
    bus.publish(&event).await.expect("publish");
    eventually(
        SHORT,
        "the refuser gave up and the bystander handled it",
        || async {
            bus.dead_letters(0, 10).await.expect("list").len() == 1
                && bystander.calls.load(Ordering::SeqCst) == 1
        },
    )
    .await;
    let letter = bus.dead_letters(0, 10).await.expect("list").remove(0);
    assert_eq!(letter.consumer, "refuser");

    refuser.refusing.store(false, Ordering::SeqCst);
    bus.replay(letter.id).await.expect("replay");
    eventually(SHORT, "the refuser handles the replay", || async {
        refuser.calls.load(Ordering::SeqCst) == 2
    })
    .await;
    // A later event marks the point by which the bystander would have had
    // the replay too (a copy on the stream comes before it).
    let marker = Event::new("/ordermesh/test", &order_created("o-2"), None);
    bus.publish(&marker).await.expect("publish");
    eventually(SHORT, "both consumers handled the marker", || async {
        refuser.calls.load(Ordering::SeqCst) == 3 && bystander.calls.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(
        bystander.calls.load(Ordering::SeqCst),
        2,
        "the bystander got the marker, not the replay"
    );
    assert!(
        bus.dead_letters(0, 10).await.expect("list").is_empty(),
        "no new dead letter"
    );
    for (stop, task) in workers {
        let _ = stop.send(());
        task.await.expect("worker task").expect("worker ends");
    }
}

/// A filter that no stream's subjects overlap is refused naming the
/// streams (the admin API answers that with INVALID_ARGUMENT, as it does any
/// bad filter, and the CLI exits non-zero).
async fn a_tail_matching_no_stream_is_refused(kind: BusKind) {
    let Some((bus, _nats)) = bus(kind).await else {
        return;
    };
    let Err(error) = bus.tail("ordermesh.shipping.>").await else {
        panic!("a filter matching no stream must be refused");
    };
    assert!(
        matches!(&error, Error::Invalid { field: "subject_filter", reason } if reason.contains("ORDERS: ordermesh.orders.v1.>")),
        "{error}"
    );
    assert!(
        bus.tail("ordermesh.*.v1.created").await.is_ok(),
        "a filter across streams is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_replay_reaches_only_the_consumer_that_gave_up() {
    a_replay_reaches_only_the_consumer_that_gave_up(BusKind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_replay_reaches_only_the_consumer_that_gave_up() {
    a_replay_reaches_only_the_consumer_that_gave_up(BusKind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_tail_matching_no_stream_is_refused() {
    a_tail_matching_no_stream_is_refused(BusKind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_tail_matching_no_stream_is_refused() {
    a_tail_matching_no_stream_is_refused(BusKind::Nats).await;
}
