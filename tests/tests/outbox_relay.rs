//! The outbox relay against real databases and a real nats-server:
//!
//! - On PostgreSQL, where transactions commit in any order, an aggregate's
//!   events are published in their order even when the transaction of the
//!   first one commits after hundreds of other rows and after the relay's
//!   cursor has moved past it (PostgreSQL only: SQLite has one writer at a
//!   time, so a row cannot commit behind rows inserted after it there).
//! - On both backends, a row whose publish was stored but whose ack was
//!   lost is not stored again when the relay retries it after JetStream's
//!   duplicate window.
//! - On PostgreSQL, two replicas' relays on one database elect one that
//!   publishes; the follower's commits wake the leader at once, and when
//!   the leader ends the follower takes over.

use std::time::Duration;

use futures::StreamExt;
use ordermesh_events::relay::Rounds;
use ordermesh_events::{Bus, BusSettings, DomainEvent, Event, Relay, RelayConfig, outbox};
use ordermesh_proto::events::v1 as pb;
use ordermesh_tests::{Backend, NatsServer, both_backends, postgres_database};
use sqlx::AnyPool;

const SOURCE: &str = "/ordermesh/test";

/// A fresh database holding only the outbox (and the directory of its
/// SQLite file).
async fn outbox_database(backend: Backend, label: &str) -> Option<(AnyPool, tempfile::TempDir)> {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.path().join("outbox.db").display()),
        Backend::Postgres => postgres_database(label).await?,
    };
    let pool = AnyPool::connect(&url).await.expect("connect");
    sqlx::raw_sql(outbox::DDL)
        .execute(&pool)
        .await
        .expect("outbox DDL");
    Some((pool, dir))
}

fn low(sku: &str) -> Event {
    Event::new(
        SOURCE,
        &pb::StockLow {
            sku: sku.into(),
            available: 1,
            threshold: 5,
            order_id: String::new(),
            occur_time: Some(ordermesh_runtime::clock::timestamp(
                ordermesh_runtime::clock::now_micros(),
            )),
        },
        None,
    )
}

fn adjusted(sku: &str) -> Event {
    Event::new(
        SOURCE,
        &pb::StockAdjusted {
            sku: sku.into(),
            request_id: sku.into(),
            delta: 1,
            available: 1,
            occur_time: Some(ordermesh_runtime::clock::timestamp(
                ordermesh_runtime::clock::now_micros(),
            )),
        },
        None,
    )
}

async fn commit_one(pool: &AnyPool, event: &Event) {
    let mut tx = pool.begin().await.expect("begin");
    outbox::insert(&mut tx, event).await.expect("insert");
    tx.commit().await.expect("commit");
}

/// X1 is inserted in a transaction that stays open while 300 other rows
/// commit and a full round moves the relay's cursor past X1's key; then X1
/// commits, X2 (same aggregate) commits, and the relay goes on. The stream
/// must get X1 before X2 (before the fix, the read after the cursor
/// published X2 and the next read from the start X1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_is_published_before_its_successor() {
    let Some((pool, _dir)) = outbox_database(Backend::Postgres, "late commit").await else {
        return;
    };
    let bus = Bus::in_process(BusSettings::default());
    let mut published = bus
        .tail(&pb::StockLow::KIND.subject())
        .await
        .expect("tail StockLow");
    let (x1, x2) = (low("X"), low("X"));

    let mut late = pool.begin().await.expect("begin");
    outbox::insert(&mut late, &x1).await.expect("insert X1");
    for i in 0..300 {
        commit_one(&pool, &adjusted(&format!("other-{i}"))).await;
    }
    let mut rounds = Rounds::new(pool.clone(), bus.clone(), 256, Duration::ZERO);
    assert_eq!(
        rounds.round().await.expect("round"),
        256,
        "a full batch: the cursor moves on"
    );
    rounds.flush_marks(true).await;
    late.commit().await.expect("X1 commits, behind the cursor");
    commit_one(&pool, &x2).await;
    for _ in 0..3 {
        rounds.round().await.expect("round");
        rounds.flush_marks(true).await;
    }
    assert_eq!(
        outbox::pending_count(&pool).await.expect("pending"),
        0,
        "all published"
    );

    let mut order = Vec::new();
    while order.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), published.next())
            .await
            .expect("both X events published")
            .expect("tail open")
            .expect("event");
        order.push(event.id);
    }
    assert_eq!(
        order,
        vec![x1.id.clone(), x2.id.clone()],
        "X1 (seq 1) before X2 (seq 2)"
    );
}

/// How many messages a JetStream stream holds.
async fn stream_messages(nats: &NatsServer, stream: &str) -> u64 {
    let client = async_nats::connect(nats.url()).await.expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stream).await.expect("stream");
    stream.info().await.expect("stream info").state.messages
}

/// A row is published (stored), then its ack counts as lost: the row is
/// pending again, as after a publish timeout or a relay killed before its
/// mark. Retried within the 2 s duplicate window, JetStream drops the copy;
/// retried after it, by a relay started anew, the stream must still hold
/// the event once (before the look-up, it held it twice).
async fn a_lost_ack_retried_after_the_duplicate_window_is_stored_once(backend: Backend) {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let Some((pool, _dir)) = outbox_database(backend, "lost ack").await else {
        return;
    };
    let mut settings = BusSettings::default();
    settings.streams.duplicate_window = Duration::from_secs(2);
    let bus = Bus::connect(&nats.url(), settings).await.expect("bus");
    bus.ensure_streams().await.expect("streams");
    let event = adjusted("LOST-ACK");
    commit_one(&pool, &event).await;
    let mut rounds = Rounds::new(pool.clone(), bus.clone(), 16, Duration::ZERO);
    assert_eq!(rounds.round().await.expect("round"), 1);
    rounds.flush_marks(true).await;
    assert_eq!(
        outbox::pending_count(&pool).await.expect("pending"),
        0,
        "acked and marked"
    );
    assert_eq!(stream_messages(&nats, "INVENTORY").await, 1);

    let lose_the_ack = async || {
        sqlx::query("UPDATE outbox SET sent_us = NULL WHERE event_id = $1")
            .bind(&event.id)
            .execute(&pool)
            .await
            .expect("the ack is lost: pending again");
    };
    // Within the window: JetStream drops the copy.
    lose_the_ack().await;
    let mut rounds = Rounds::new(pool.clone(), bus.clone(), 16, Duration::ZERO);
    rounds.round().await.expect("round");
    rounds.flush_marks(true).await;
    assert_eq!(
        stream_messages(&nats, "INVENTORY").await,
        1,
        "a duplicate within the window"
    );

    // After the window (the relay down meanwhile).
    lose_the_ack().await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut rounds = Rounds::new(pool.clone(), bus.clone(), 16, Duration::ZERO);
    rounds.round().await.expect("round");
    rounds.flush_marks(true).await;
    assert_eq!(
        outbox::pending_count(&pool).await.expect("pending"),
        0,
        "found, marked sent"
    );
    assert_eq!(
        stream_messages(&nats, "INVENTORY").await,
        1,
        "stored once after the window"
    );

    // A row never stored, first attempted long ago, is published once.
    let unsent = adjusted("NEVER-STORED");
    commit_one(&pool, &unsent).await;
    sqlx::query("UPDATE outbox SET attempted_us = 1 WHERE event_id = $1")
        .bind(&unsent.id)
        .execute(&pool)
        .await
        .expect("an old first attempt");
    rounds.round().await.expect("round");
    rounds.flush_marks(true).await;
    assert_eq!(outbox::pending_count(&pool).await.expect("pending"), 0);
    assert_eq!(
        stream_messages(&nats, "INVENTORY").await,
        2,
        "the missing one published"
    );
}

/// Waits until the stream holds `n` messages; how long it took.
async fn until_stored(nats: &NatsServer, stream: &str, n: u64, within: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let stored = stream_messages(nats, stream).await;
        if stored >= n {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{stored} of {n} events stored within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two replicas' relays on one PostgreSQL database, the first leading, the
/// second following (checked), with the NATS server they publish to.
struct Replicas {
    nats: NatsServer,
    pool: AnyPool,
    _dir: tempfile::TempDir,
    leader: Relay,
    follower: Relay,
}

/// Starts [`Replicas`]: the second relay starts once the first leads; its
/// first try of the lock fails at once. `None` where PostgreSQL or NATS is
/// missing outside CI.
async fn replicas(label: &str, poll_interval: Duration) -> Option<Replicas> {
    let nats = NatsServer::start().await?;
    let (pool, dir) = outbox_database(Backend::Postgres, label).await?;
    let bus = Bus::connect(&nats.url(), BusSettings::default())
        .await
        .expect("bus");
    bus.ensure_streams().await.expect("streams");
    let config = RelayConfig {
        poll_interval,
        service: "inventory".into(),
        ..RelayConfig::default()
    };
    let leader = Relay::spawn(pool.clone(), bus.clone(), config.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !leader.leads() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first relay never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let follower = Relay::spawn(pool.clone(), bus, config);
    // An absence cannot be waited for: a window for the follower's first
    // try, then both roles are checked.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(leader.leads(), "the first relay keeps the lock");
    assert!(!follower.leads(), "the second follows");
    Some(Replicas {
        nats,
        pool,
        _dir: dir,
        leader,
        follower,
    })
}

/// Two relays on one PostgreSQL database, as two replicas of a service run
/// them: one leads (publishes), the other follows. Rows committed through
/// the follower's process (its notifier poked) are published at once, not
/// at the leader's 3 s poll: the follower wakes the leader. When the
/// leader's relay ends (its task dropped, as in a crash: its lock
/// connection closes), the follower takes over within the poll interval
/// and publishes what was committed meanwhile.
#[tokio::test]
async fn replicas_relays_elect_one_publisher_and_take_over_from_it() {
    let Some(Replicas {
        nats,
        pool,
        _dir,
        leader: a,
        follower: b,
    }) = replicas("relay election", Duration::from_secs(3)).await
    else {
        return;
    };

    // Committed by the follower's process: published well before the poll.
    for n in 0..5 {
        commit_one(&pool, &adjusted(&format!("FOLLOWER-{n}"))).await;
        b.notifier().notify();
    }
    let took = until_stored(&nats, "INVENTORY", 5, Duration::from_secs(10)).await;
    assert!(
        took < Duration::from_millis(1_500),
        "woken by the follower: {took:?}"
    );
    assert!(!b.leads(), "the follower published nothing itself");

    // The leader ends; what is committed next is published by the other.
    a.abort();
    for n in 0..5 {
        commit_one(&pool, &adjusted(&format!("AFTER-{n}"))).await;
        b.notifier().notify();
    }
    let took = until_stored(&nats, "INVENTORY", 10, Duration::from_secs(10)).await;
    assert!(
        took < Duration::from_millis(4_500),
        "taken over within the poll: {took:?}"
    );
    assert!(b.leads(), "the follower leads now");
    b.shutdown().await;
    assert_eq!(
        outbox::pending_count(&pool).await.expect("pending"),
        0,
        "marked sent"
    );
}

/// Sessions PostgreSQL has counted for the pool's database (a session is
/// counted by the backend that served it; every ended one is in).
async fn sessions(pool: &AnyPool) -> i64 {
    sqlx::query_scalar("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(pool)
        .await
        .expect("pg_stat_database")
}

/// A follower woken by a stream of its process's commits tries the lock at
/// most once per poll, on pooled connections: the database serves the
/// burst without a new session (before, every wake-up tried the lock on a
/// connection of its own and closed it: a backend process per few commits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_woken_by_many_commits_opens_no_sessions() {
    let Some(Replicas {
        nats,
        pool,
        _dir,
        leader,
        follower,
    }) = replicas("follower sessions", Duration::from_secs(5)).await
    else {
        return;
    };
    let before = sessions(&pool).await;
    for n in 0..40 {
        commit_one(&pool, &adjusted(&format!("BURST-{n}"))).await;
        follower.notifier().notify();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    until_stored(&nats, "INVENTORY", 40, Duration::from_secs(10)).await;
    let opened = sessions(&pool).await - before;
    assert!(
        opened <= 5,
        "{opened} sessions ended during 40 of the follower's wake-ups"
    );
    assert!(!follower.leads(), "the follower published nothing itself");
    follower.shutdown().await;
    leader.shutdown().await;
}

both_backends!(a_lost_ack_retried_after_the_duplicate_window_is_stored_once);
