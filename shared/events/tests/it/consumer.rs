//! Consumers: redelivery after a crash with the effect applied once (inbox),
//! dead letters after `max_deliver`, replay. The same scenarios run on the
//! in-process broker and on JetStream, each on SQLite and PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use ordermesh_events::inbox::{Claim, claim};
use ordermesh_events::worker::ConsumerHealth;
use ordermesh_events::{
    BoundedContext, Bus, ConsumerConfig, Error, Event, Handler, HandlerError, InboxPruning, Inboxed, Outbox,
    Relay, RelayConfig, ServiceEvents, TxHandler, worker,
};
use ordermesh_proto::events::v1::OrderCreated;
use sqlx::AnyConnection;

use crate::harness::{Backend, BusKind, Db, bus, eventually};
use crate::support::{Counted, Recorder, SHORT, commit_created, order_created};

fn config(name: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(name, BoundedContext::Orders);
    // Long enough that a loaded CI machine does not redeliver a healthy handler's message.
    config.ack_wait = Duration::from_secs(1);
    config.max_deliver = 5;
    config.backoff = vec![Duration::from_millis(30)];
    config
}

fn relay_config() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(200),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..RelayConfig::default()
    }
}

struct Worker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), Error>>,
}

impl Worker {
    fn spawn<H: Handler>(bus: &Bus, config: ConsumerConfig, handler: H) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker::run(bus.clone(), config, handler, async move {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    /// Stops between deliveries.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("worker task")
            .expect("worker ends cleanly");
    }

    /// Dies wherever it is, as a killed process.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn counted<H: Handler>(inner: H) -> (Counted<H>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    (
        Counted {
            inner,
            calls: calls.clone(),
        },
        calls,
    )
}

async fn publish_created(bus: &Bus, order_id: &str) -> Event {
    let event = Event::new("/ordermesh/test", &order_created(order_id), None);
    bus.publish(&event).await.expect("publish");
    event
}

async fn consumer_killed_mid_handling_applies_its_effect_once(kind: BusKind, backend: Backend) {
    let Some((bus, _nats)) = bus(kind).await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    let config = config("timeline");

    // Killed after its transaction committed, before the ack.
    let first = publish_created(&bus, "o-1").await;
    {
        let mut consumer = bus.consumer(&config).await.expect("bind");
        let delivery = consumer
            .fetch(1, Duration::from_secs(5))
            .await
            .expect("fetch")
            .pop()
            .expect("a delivery");
        assert_eq!(delivery.event.as_ref().expect("event").id, first.id);
        let Claim::New(mut tx) = claim(&db.pool, "timeline", &first.id).await.expect("claim") else {
            panic!("first claim must be new");
        };
        sqlx::query("INSERT INTO effects (consumer, event_id) VALUES ('timeline', $1)")
            .bind(&first.id)
            .execute(&mut *tx)
            .await
            .expect("effect");
        tx.commit().await.expect("commit");
        drop(delivery); // the process dies here: no ack
    }

    // Killed in the middle of its transaction (the effect is written, not committed).
    let second = publish_created(&bus, "o-2").await;
    let hanging = Recorder::new("timeline");
    hanging.hang.store(true, Ordering::SeqCst);
    let worker = Worker::spawn(
        &bus,
        config.clone(),
        Inboxed::new(db.pool.clone(), "timeline", hanging.clone()),
    );
    eventually(SHORT, "the worker is inside the handler", || async {
        hanging.calls() >= 1
    })
    .await;
    worker.kill().await;
    assert_eq!(
        db.effects("timeline", &second.id).await,
        0,
        "rolled back with the worker"
    );

    // A new worker gets both again after ack_wait: each effect exactly once.
    let recorder = Recorder::new("timeline");
    let (handler, calls) = counted(Inboxed::new(db.pool.clone(), "timeline", recorder.clone()));
    let worker = Worker::spawn(&bus, config.clone(), handler);
    eventually(SHORT, "both events redelivered and settled", || async {
        db.effects("timeline", &second.id).await == 1 && calls.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(
        db.effects("timeline", &first.id).await,
        1,
        "the redelivery of a committed event has no effect"
    );
    // Both were acked: nothing comes back after another ack_wait.
    tokio::time::sleep(config.ack_wait * 2).await;
    assert_eq!(db.effects("timeline", &first.id).await, 1);
    assert_eq!(db.effects("timeline", &second.id).await, 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "no further redelivery after the acks"
    );
    worker.stop().await;
}

async fn poison_message_is_dead_lettered_and_replayable(kind: BusKind, backend: Backend) {
    let Some((bus, _nats)) = bus(kind).await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    let mut fragile_config = config("fragile");
    fragile_config.max_deliver = 3;
    let fragile = Recorder::new("fragile");
    fragile.broken.store(true, Ordering::SeqCst);
    let steady = Recorder::new("steady");
    let (steady_handler, steady_calls) = counted(Inboxed::new(db.pool.clone(), "steady", steady.clone()));
    let fragile_worker = Worker::spawn(
        &bus,
        fragile_config.clone(),
        Inboxed::new(db.pool.clone(), "fragile", fragile.clone()),
    );
    let steady_worker = Worker::spawn(&bus, config("steady"), steady_handler);

    let event = publish_created(&bus, "o-poison").await;
    eventually(SHORT, "the message reaches the dead letters", || async {
        !bus.dead_letters(0, 10).await.expect("list").is_empty()
    })
    .await;
    let dead = bus.dead_letters(0, 10).await.expect("list");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = &dead[0];
    assert_eq!(letter.event.as_ref().expect("an event").id, event.id);
    assert_eq!(
        letter.event.as_ref().expect("an event").topic,
        "ordermesh.orders.v1.created"
    );
    assert_eq!(letter.event.as_ref().expect("an event").data, event.data);
    assert_eq!(letter.consumer, "fragile");
    assert_eq!(letter.deliveries, 3);
    assert!(
        letter.error.contains("attempt 3") && letter.error.contains("downstream unavailable"),
        "{}",
        letter.error
    );
    assert_eq!(fragile.calls(), 3, "max_deliver attempts, no more");
    assert_eq!(db.effects("fragile", &event.id).await, 0);
    eventually(SHORT, "the healthy consumer handled it", || async {
        db.effects("steady", &event.id).await == 1
    })
    .await;

    // Fixed downstream; the operator replays.
    fragile.broken.store(false, Ordering::SeqCst);
    let replayed = bus.replay(letter.id).await.expect("replay");
    assert_eq!(replayed.event.as_ref().expect("an event").id, event.id);
    assert!(
        bus.dead_letters(0, 10).await.expect("list").is_empty(),
        "replay removes it"
    );
    eventually(
        SHORT,
        "the replay is handled by the consumer that gave up",
        || async { db.effects("fragile", &event.id).await == 1 },
    )
    .await;
    assert_eq!(
        db.effects("steady", &event.id).await,
        1,
        "the consumer that had it is not involved"
    );
    assert_eq!(steady_calls.load(Ordering::SeqCst), 1, "nor called again");
    assert!(matches!(
        bus.replay(letter.id).await,
        Err(Error::DeadLetterNotFound(_))
    ));
    fragile_worker.stop().await;
    steady_worker.stop().await;
}

async fn crashed_last_attempt_is_dead_lettered(kind: BusKind, backend: Backend) {
    let Some((bus, _nats)) = bus(kind).await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    let mut config = config("oneshot");
    config.max_deliver = 1;
    let recorder = Recorder::new("oneshot");
    recorder.hang.store(true, Ordering::SeqCst);
    let event = publish_created(&bus, "o-hang").await;
    let worker = Worker::spawn(
        &bus,
        config.clone(),
        Inboxed::new(db.pool.clone(), "oneshot", recorder.clone()),
    );
    eventually(SHORT, "the only attempt started", || async {
        recorder.calls() == 1
    })
    .await;
    worker.kill().await;

    let worker = Worker::spawn(
        &bus,
        config.clone(),
        Inboxed::new(db.pool.clone(), "oneshot", recorder.clone()),
    );
    eventually(SHORT, "the message reaches the dead letters", || async {
        !bus.dead_letters(0, 10).await.expect("list").is_empty()
    })
    .await;
    let dead = bus.dead_letters(0, 10).await.expect("list");
    assert_eq!(dead[0].event.as_ref().expect("an event").id, event.id);
    assert!(dead[0].error.contains("did not finish"), "{}", dead[0].error);
    assert_eq!(recorder.calls(), 1, "the handler is not run beyond max_deliver");
    assert_eq!(db.effects("oneshot", &event.id).await, 0);
    worker.stop().await;
}

/// Fails (unclassified, so retried) for one order, records an effect for the others.
#[derive(Clone)]
struct FailsFor {
    order_id: &'static str,
    calls: Arc<AtomicUsize>,
}

impl TxHandler for FailsFor {
    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let created: OrderCreated = event.decode()?;
        if created.order_id == self.order_id {
            return Err(HandlerError::failed("this one fails"));
        }
        sqlx::query("INSERT INTO effects (consumer, event_id) VALUES ('batch', $1)")
            .bind(&event.id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Publishes an event that `consumer`'s inbox already records as processed
/// (by an earlier worker), so a handler must skip it.
async fn publish_processed(bus: &Bus, db: &Db, consumer: &str, order_id: &str) -> Event {
    let event = publish_created(bus, order_id).await;
    let Claim::New(tx) = claim(&db.pool, consumer, &event.id).await.expect("claim") else {
        panic!("first claim must be new");
    };
    tx.commit().await.expect("commit");
    event
}

/// Events fetched together are handled in one transaction, yet each is
/// settled by its own result: one failing event is retried and then
/// dead-lettered alone, the others take effect exactly once, and an event
/// the inbox already holds has no second effect.
async fn a_batch_settles_each_event_by_its_own_result(kind: BusKind, backend: Backend) {
    let Some((bus, _nats)) = bus(kind).await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    let mut config = config("batch");
    config.max_deliver = 2;
    config.batch = 16;
    // Processed before (by an earlier worker): in the inbox already.
    let done = publish_processed(&bus, &db, "batch", "o-done").await;
    let mut events = Vec::new();
    for id in ["o-1", "o-2", "o-bad", "o-3", "o-4"] {
        events.push(publish_created(&bus, id).await);
    }
    let handler = FailsFor {
        order_id: "o-bad",
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let worker = Worker::spawn(
        &bus,
        config.clone(),
        Inboxed::new(db.pool.clone(), "batch", handler.clone()),
    );
    eventually(SHORT, "the failing event reaches the dead letters", || async {
        !bus.dead_letters(0, 10).await.expect("list").is_empty()
    })
    .await;
    let dead = bus.dead_letters(0, 10).await.expect("list");
    assert_eq!(dead.len(), 1, "only the failing event: {dead:?}");
    assert_eq!(dead[0].event.as_ref().expect("an event").id, events[2].id);
    assert_eq!(dead[0].deliveries, 2);
    for (i, event) in events.iter().enumerate() {
        let expected = if i == 2 { 0 } else { 1 };
        assert_eq!(db.effects("batch", &event.id).await, expected, "event {i}");
    }
    assert_eq!(db.effects("batch", &done.id).await, 0, "the inbox skipped it");
    // Nothing comes back: every other delivery was acked.
    let calls = handler.calls.load(Ordering::SeqCst);
    tokio::time::sleep(config.ack_wait * 2).await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), calls);
    worker.stop().await;
}

/// A batch without failures commits in one transaction: each new event
/// takes effect once, handled once (no one-by-one retry after a rolled-back
/// batch), and one the inbox already holds is skipped inside the batch.
async fn a_batch_commits_together_and_skips_what_the_inbox_holds(kind: BusKind, backend: Backend) {
    let Some((bus, _nats)) = bus(kind).await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    let mut config = config("together");
    config.batch = 16;
    let held = publish_processed(&bus, &db, "together", "o-held").await;
    let mut fresh = Vec::new();
    for id in ["o-1", "o-2", "o-3"] {
        fresh.push(publish_created(&bus, id).await);
    }
    let handler = FailsFor {
        order_id: "none",
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let worker = Worker::spawn(
        &bus,
        config.clone(),
        Inboxed::new(db.pool.clone(), "together", handler.clone()),
    );
    eventually(SHORT, "the new events took effect", || async {
        let mut done = 0;
        for event in &fresh {
            done += db.effects("batch", &event.id).await;
        }
        done == 3
    })
    .await;
    worker.stop().await;
    for event in &fresh {
        assert_eq!(db.effects("batch", &event.id).await, 1);
    }
    assert_eq!(db.effects("batch", &held.id).await, 0, "the inbox skipped it");
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        3,
        "each new event handled once, the held one never"
    );
}

crate::per_bus_and_backend!(
    a_batch_commits_together_and_skips_what_the_inbox_holds,
    a_batch_settles_each_event_by_its_own_result,
    consumer_killed_mid_handling_applies_its_effect_once,
    poison_message_is_dead_lettered_and_replayable,
    crashed_last_attempt_is_dead_lettered,
    a_database_outage_dead_letters_nothing,
    a_constraint_violation_is_poison
);

/// A message some other publisher put on an ordermesh subject without the
/// envelope is dead-lettered on its first delivery, handler not called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_without_envelope_is_dead_lettered_at_once() {
    let Some((bus, Some(nats))) = bus(BusKind::Nats).await else {
        return;
    };
    let Some(db) = Db::new(Backend::Sqlite).await else {
        return;
    };
    let js = async_nats::jetstream::new(nats.client().await);
    js.publish("ordermesh.orders.v1.created", "not protobuf".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let recorder = Recorder::new("strict");
    let worker = Worker::spawn(
        &bus,
        config("strict"),
        Inboxed::new(db.pool.clone(), "strict", recorder.clone()),
    );
    eventually(SHORT, "dead-lettered", || async {
        !bus.dead_letters(0, 10).await.expect("list").is_empty()
    })
    .await;
    let dead = bus.dead_letters(0, 10).await.expect("list");
    assert_eq!(dead[0].deliveries, 1);
    assert!(
        dead[0].error.contains("not an ordermesh event"),
        "{}",
        dead[0].error
    );
    let malformed = dead[0].event.as_ref().expect_err("never an ordermesh event");
    assert_eq!(malformed.data.as_ref(), b"not protobuf");
    assert!(
        malformed.headers.is_empty(),
        "it came without headers: {malformed:?}"
    );
    assert!(malformed.reason.contains("missing"), "{}", malformed.reason);
    let listed = dead[0].to_pb();
    assert!(listed.event.is_none(), "no invented attributes: {listed:?}");
    assert_eq!(listed.envelope_error, malformed.reason);
    assert_eq!(listed.topic, "ordermesh.orders.v1.created");
    assert_eq!(listed.data, b"not protobuf");
    assert!(matches!(
        bus.replay(dead[0].id).await,
        Err(Error::NotReplayable { .. })
    ));
    assert_eq!(recorder.calls(), 0);
    worker.stop().await;
}

/// Fails with a database error while `down` is set (as a real outage
/// would: the error comes from sqlx and goes through `?`), else records an
/// effect.
#[derive(Clone, Default)]
struct NeedsTheDatabase {
    down: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl TxHandler for NeedsTheDatabase {
    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(sqlx::Error::PoolTimedOut)?;
        }
        sqlx::query("INSERT INTO effects (consumer, event_id) VALUES ('outage', $1)")
            .bind(&event.id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// An outage of the database (or broker) is not the message's fault: the
/// consumer holds its batch and retries, however long it lasts, instead of
/// spending attempts and dead-lettering healthy events; once the database is
/// back each event takes effect once.
async fn a_database_outage_dead_letters_nothing(kind: BusKind, backend: Backend) {
    let Some((bus, _nats)) = bus(kind).await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    let mut config = config("outage");
    config.max_deliver = 2;
    let handler = NeedsTheDatabase::default();
    handler.down.store(true, Ordering::SeqCst);
    let first = publish_created(&bus, "o-1").await;
    let second = publish_created(&bus, "o-2").await;
    let worker = Worker::spawn(
        &bus,
        config.clone(),
        Inboxed::new(db.pool.clone(), "outage", handler.clone()),
    );
    // Far more attempts than max_deliver, and longer than ack_wait.
    let started = tokio::time::Instant::now();
    eventually(SHORT, "the outage outlasts ack_wait and max_deliver", || async {
        handler.calls.load(Ordering::SeqCst) > 2 * config.max_deliver as usize
            && started.elapsed() > config.ack_wait * 2
    })
    .await;
    assert!(
        bus.dead_letters(0, 10).await.expect("list").is_empty(),
        "nothing is dead-lettered during the outage"
    );
    handler.down.store(false, Ordering::SeqCst);
    eventually(
        SHORT,
        "both events take effect once the database is back",
        || async {
            db.effects("outage", &first.id).await == 1 && db.effects("outage", &second.id).await == 1
        },
    )
    .await;
    assert!(bus.dead_letters(0, 10).await.expect("list").is_empty());
    worker.stop().await;
}

/// Refused by a constraint of the consumer's own table: the message itself
/// is bad and fails the same way every time.
#[derive(Clone, Default)]
struct InsertsTwice {
    calls: Arc<AtomicUsize>,
}

impl TxHandler for InsertsTwice {
    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        for _ in 0..2 {
            sqlx::query("INSERT INTO unique_effects (event_id) VALUES ($1)")
                .bind(&event.id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// A constraint violation is poison: dead-lettered on its first delivery,
/// with the database's reason, not after max_deliver attempts.
async fn a_constraint_violation_is_poison(kind: BusKind, backend: Backend) {
    let Some((bus, _nats)) = bus(kind).await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    sqlx::query("CREATE TABLE unique_effects (event_id TEXT PRIMARY KEY)")
        .execute(&db.pool)
        .await
        .expect("create table");
    let mut config = config("strict-unique");
    config.max_deliver = 3;
    let handler = InsertsTwice::default();
    let event = publish_created(&bus, "o-dup").await;
    let worker = Worker::spawn(
        &bus,
        config,
        Inboxed::new(db.pool.clone(), "strict-unique", handler.clone()),
    );
    eventually(SHORT, "the message reaches the dead letters", || async {
        !bus.dead_letters(0, 10).await.expect("list").is_empty()
    })
    .await;
    let dead = bus.dead_letters(0, 10).await.expect("list");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event.as_ref().expect("an event").id, event.id);
    assert_eq!(dead[0].deliveries, 1, "poison is dead-lettered at once");
    assert!(
        dead[0].error.to_lowercase().contains("unique"),
        "{}",
        dead[0].error
    );
    worker.stop().await;
}

/// Whether `consumer`'s inbox holds `event_id`.
async fn in_inbox(db: &Db, consumer: &str, event_id: &str) -> bool {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE consumer = $1 AND event_id = $2")
        .bind(consumer)
        .bind(event_id)
        .fetch_one(&db.pool)
        .await
        .expect("count inbox");
    n == 1
}

/// A service that consumes through its inbox prunes it: records older than
/// the retention go, newer ones stay.
async fn the_inbox_is_pruned_past_its_retention(backend: Backend) {
    let Some(db) = Db::new(backend).await else { return };
    let bus = Bus::in_process(crate::harness::bus_settings());
    let mut events = ServiceEvents::start("/ordermesh/test", db.pool.clone(), bus.clone()).await;
    events.set_inbox_pruning(InboxPruning {
        retention: Some(Duration::from_secs(60)),
        interval: Duration::from_millis(50),
        chunk: 1,
    });
    let recorder = Recorder::new("pruned");
    events.consume_inboxed(config("pruned"), db.pool.clone(), recorder.clone());
    let mut old = Vec::new();
    for order in ["o-1", "o-2", "o-3"] {
        old.push(publish_created(&bus, order).await);
    }
    eventually(SHORT, "the first events are processed", || async {
        let mut done = 0;
        for event in &old {
            done += db.effects("pruned", &event.id).await;
        }
        done == 3
    })
    .await;
    // As if processed long ago.
    sqlx::query("UPDATE inbox SET processed_us = processed_us - 600000000")
        .execute(&db.pool)
        .await
        .expect("age the records");
    let recent = publish_created(&bus, "o-4").await;
    eventually(SHORT, "the recent event is processed", || async {
        db.effects("pruned", &recent.id).await == 1
    })
    .await;
    eventually(SHORT, "the old records are pruned (in chunks of one)", || async {
        let mut left = 0;
        for event in &old {
            left += usize::from(in_inbox(&db, "pruned", &event.id).await);
        }
        left == 0
    })
    .await;
    assert!(in_inbox(&db, "pruned", &recent.id).await, "a recent record stays");
    events.shutdown().await;
}

/// NATS restarts with an empty store (its streams and durable consumers are
/// gone): the relay re-creates the streams on its next publish, and the
/// worker notices its durable is gone, re-creates it and consumes again;
/// meanwhile its health says it cannot fetch.
async fn a_consumer_recovers_after_nats_lost_its_store(backend: Backend) {
    let Some((bus, Some(mut nats))) = bus(BusKind::Nats).await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    let relay = Relay::spawn(db.pool.clone(), bus.clone(), relay_config());
    let outbox = Outbox::new("/ordermesh/test");
    let recorder = Recorder::new("survivor");
    let (health_tx, health) = tokio::sync::watch::channel(ConsumerHealth::Starting);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker::run_reporting(
        bus.clone(),
        config("survivor"),
        Inboxed::new(db.pool.clone(), "survivor", recorder.clone()),
        async move {
            let _ = stopped.await;
        },
        health_tx,
    ));
    let first = commit_created(&db.pool, &outbox, "o-1").await;
    relay.notifier().notify();
    eventually(SHORT, "the first event takes effect", || async {
        db.effects("survivor", &first.id).await == 1
    })
    .await;
    assert!(
        matches!(*health.borrow(), ConsumerHealth::Running),
        "{:?}",
        *health.borrow()
    );

    nats.stop().await;
    eventually(SHORT, "the consumer reports it cannot fetch", || async {
        matches!(*health.borrow(), ConsumerHealth::CannotFetch { .. })
    })
    .await;
    nats.restart_empty().await;
    let second = commit_created(&db.pool, &outbox, "o-2").await;
    relay.notifier().notify();
    eventually(
        SHORT,
        "the second event takes effect on the re-created durable",
        || async { db.effects("survivor", &second.id).await == 1 },
    )
    .await;
    eventually(SHORT, "the consumer reports it runs again", || async {
        matches!(*health.borrow(), ConsumerHealth::Running)
    })
    .await;
    let _ = stop.send(());
    task.await.expect("worker task").expect("worker ends cleanly");
    relay.shutdown().await;
}

crate::per_backend!(
    the_inbox_is_pruned_past_its_retention,
    a_consumer_recovers_after_nats_lost_its_store
);
