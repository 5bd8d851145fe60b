//! Outbox benchmark against a real nats-server (started like the tests do):
//!
//! 1. raw: an async-nats JetStream publish loop (same payloads, headers and
//!    message ids as the relay sends), 256 in flight, acks awaited; and one
//!    awaiting each ack before the next publish.
//! 2. relay drain: N committed outbox rows, then the relay publishes them
//!    all: events/s until the stream holds them all (next to the raw rate),
//!    and until every row is marked sent (marks are batched).
//! 3. end to end: one event per committed transaction at a fixed 1,000/s
//!    for 5 s; a durable pull consumer acks each; commit-to-consumer latency
//!    p50/p99/max.
//! 4. end to end flat out: writers commit one event per transaction as fast
//!    as the database allows; sustained events/s at the consumer.
//!
//! CPU time per event (this process, and nats-server) comes from /proc.
//! Run: `bash .ci/tools.sh && cargo bench -p ordermesh-events --bench outbox`
//! (SQLite always; PostgreSQL too when one answers at
//! ORDERMESH_TEST_POSTGRES_URL or the local default). `BENCH_EVENTS` sets N
//! (20,000), `BENCH_BATCH` the relay batch, `BENCH_LOG=sqlx::query=debug`
//! logs every statement with its time to stderr.

#[allow(dead_code)]
#[path = "../tests/it/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use ordermesh_events::envelope::{now_micros, timestamp};
use ordermesh_events::{BoundedContext, Bus, ConsumerConfig, Event, Outbox, Relay, RelayConfig, outbox};
use ordermesh_proto::events::v1 as pb;

use harness::{Backend, Db, NatsServer, bus_settings};

/// Events per throughput run (`BENCH_EVENTS` overrides).
fn n() -> usize {
    std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn payload(i: usize) -> pb::OrderCreated {
    pb::OrderCreated {
        order_id: format!("order-{:06}", i % 1000),
        customer_id: "alice".into(),
        lines: vec![pb::OrderedLine {
            sku: "KB-001".into(),
            quantity: 1,
        }],
        occur_time: Some(timestamp(now_micros())),
    }
}

/// CPU seconds (user + system) of a process, from /proc/<pid>/stat.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

struct Cpu {
    nats_pid: String,
    ours: f64,
    nats: f64,
}

impl Cpu {
    fn start(nats: &NatsServer) -> Self {
        let nats_pid = nats.pid().map(|p| p.to_string()).unwrap_or_default();
        Self {
            ours: cpu_seconds("self"),
            nats: cpu_seconds(&nats_pid),
            nats_pid,
        }
    }

    /// CPU microseconds per event: (ours, nats-server).
    fn per_event(&self, events: usize) -> (f64, f64) {
        let n = events as f64;
        (
            (cpu_seconds("self") - self.ours) * 1e6 / n,
            (cpu_seconds(&self.nats_pid) - self.nats) * 1e6 / n,
        )
    }
}

fn report(name: &str, events: usize, elapsed: Duration, cpu: (f64, f64)) -> f64 {
    let rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<44} {rate:>9.0} events/s   cpu/event: ordermesh {:>6.1} µs, nats-server {:>6.1} µs",
        cpu.0, cpu.1
    );
    rate
}

async fn raw_publish(nats: &NatsServer, window: usize) -> f64 {
    let bus = Bus::connect(&nats.url(), bus_settings()).await.expect("connect");
    bus.ensure_streams().await.expect("streams");
    let js = async_nats::jetstream::new(nats.client().await);
    let events: Vec<Event> = (0..n())
        .map(|i| Event::new("/bench", &payload(i), None))
        .collect();
    let cpu = Cpu::start(nats);
    let started = Instant::now();
    for chunk in events.chunks(window) {
        let mut acks = Vec::with_capacity(chunk.len());
        for event in chunk {
            let message = PublishMessage::build()
                .payload(event.data.clone())
                .headers(event.headers())
                .message_id(&event.id);
            acks.push(js.send_publish(event.topic.clone(), message).await.expect("send"));
        }
        for ack in acks {
            ack.await.expect("ack");
        }
    }
    report(
        &format!("raw JetStream publish, {window} in flight"),
        n(),
        started.elapsed(),
        cpu.per_event(n()),
    )
}

async fn relay_drain(nats: &NatsServer, db: &Db) -> f64 {
    let bus = Bus::connect(&nats.url(), bus_settings()).await.expect("connect");
    bus.ensure_streams().await.expect("streams");
    let outbox = Outbox::new("/bench");
    for chunk in (0..n()).collect::<Vec<_>>().chunks(500) {
        let mut tx = db.pool.begin().await.expect("begin");
        for &i in chunk {
            outbox.add(&mut tx, &payload(i), None).await.expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    let js = async_nats::jetstream::new(nats.client().await);
    let mut stream = js.get_stream("ORDERS").await.expect("stream");
    let stored_before = stream.info().await.expect("info").state.messages;
    let cpu = Cpu::start(nats);
    let started = Instant::now();
    let batch_size = std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RelayConfig::default().batch_size);
    let relay = Relay::spawn(
        db.pool.clone(),
        bus,
        RelayConfig {
            batch_size,
            ..RelayConfig::default()
        },
    );
    // Published: the stream holds every event.
    while stream.info().await.expect("info").state.messages < stored_before + n() as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let published = started.elapsed();
    let cpu_published = cpu.per_event(n());
    // Marked: no row is pending any more (marks are batched, up to 100 ms later).
    while outbox::pending_count(&db.pool).await.expect("count") > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let marked = started.elapsed();
    relay.shutdown().await;
    report(
        "outbox relay drain, all marked sent",
        n(),
        marked,
        cpu.per_event(n()),
    );
    report(
        "outbox relay drain, all in the stream",
        n(),
        published,
        cpu_published,
    )
}

/// Commits one event per transaction, `rate` per second (0: flat out), for
/// `count` events; a consumer acks each. Returns the consumer's events/s and
/// the commit-to-consumer latencies.
async fn end_to_end(
    nats: &NatsServer,
    db: &Db,
    rate: u32,
    count: usize,
    label: &str,
) -> (f64, Vec<Duration>) {
    let bus = Bus::connect(&nats.url(), bus_settings()).await.expect("connect");
    bus.ensure_streams().await.expect("streams");
    // Start from an empty stream so the consumer sees only this run.
    let js = async_nats::jetstream::new(nats.client().await);
    js.get_stream("ORDERS")
        .await
        .expect("stream")
        .purge()
        .await
        .expect("purge");
    let relay = Relay::spawn(db.pool.clone(), bus.clone(), RelayConfig::default());
    let notifier = relay.notifier();
    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut config = ConsumerConfig::new(
        format!("bench-{}", uuid::Uuid::new_v4().simple()),
        BoundedContext::Orders,
    );
    config.batch = 256;
    config.max_ack_pending = 10_000;
    let mut consumer = bus.consumer(&config).await.expect("consumer");
    let seen = committed.clone();
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(count);
        let mut first = None;
        while latencies.len() < count {
            for delivery in consumer.fetch(256, Duration::from_secs(5)).await.expect("fetch") {
                let now = Instant::now();
                first.get_or_insert(now);
                let id = delivery.event.as_ref().expect("event").id.clone();
                if let Some(at) = seen.lock().expect("lock").get(&id) {
                    latencies.push(now.duration_since(*at));
                }
                delivery.ack().await.expect("ack");
            }
        }
        (latencies, first)
    });
    let outbox = Outbox::new("/bench");
    let cpu = Cpu::start(nats);
    let started = Instant::now();
    let mut ticker = (rate > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs(1) / rate);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    for i in 0..count {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        let mut tx = db.pool.begin().await.expect("begin");
        let event = outbox.add(&mut tx, &payload(i), None).await.expect("insert");
        // Recorded before the commit returns, so the latency includes the commit.
        committed.lock().expect("lock").insert(event.id, Instant::now());
        tx.commit().await.expect("commit");
        notifier.notify();
    }
    let (mut latencies, _) = receiver.await.expect("receiver");
    let elapsed = started.elapsed();
    relay.shutdown().await;
    let cpu = cpu.per_event(count);
    let throughput = report(label, count, elapsed, cpu);
    latencies.sort();
    (throughput, latencies)
}

/// The database alone: one plain INSERT per transaction, flat out, no
/// outbox, no relay: the ceiling any event path on this database shares.
async fn commit_baseline(nats: &NatsServer, db: &Db, count: usize) -> f64 {
    let cpu = Cpu::start(nats);
    let started = Instant::now();
    for i in 0..count {
        let mut tx = db.pool.begin().await.expect("begin");
        sqlx::query("INSERT INTO effects (consumer, event_id) VALUES ('bench', $1)")
            .bind(i.to_string())
            .execute(&mut *tx)
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
    }
    report(
        "database alone, 1 insert per transaction",
        count,
        started.elapsed(),
        cpu.per_event(count),
    )
}

/// One event per transaction flat out, `count` events: with the outbox
/// insert but no relay, then with the relay running but no consumer. With
/// [`commit_baseline`] and the end-to-end run this splits the CPU per event
/// into the database, the outbox insert, the relay and the consumer.
async fn cost_breakdown(nats: &NatsServer, db: &Db, count: usize) {
    let outbox = Outbox::new("/bench");
    for relay_on in [false, true] {
        let bus = Bus::connect(&nats.url(), bus_settings()).await.expect("connect");
        let relay = relay_on.then(|| Relay::spawn(db.pool.clone(), bus, RelayConfig::default()));
        let cpu = Cpu::start(nats);
        let started = Instant::now();
        for i in 0..count {
            let mut tx = db.pool.begin().await.expect("begin");
            outbox.add(&mut tx, &payload(i), None).await.expect("insert");
            tx.commit().await.expect("commit");
            if let Some(relay) = &relay {
                relay.notifier().notify();
            }
        }
        if let Some(relay) = relay {
            while outbox::pending_count(&db.pool).await.expect("count") > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            relay.shutdown().await;
        }
        let label = if relay_on {
            "outbox insert + relay, no consumer"
        } else {
            "outbox insert in the transaction, no relay"
        };
        report(label, count, started.elapsed(), cpu.per_event(count));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn run_backend(backend: Backend, raw: f64) {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    println!("--- {backend:?} ---");
    commit_baseline(&nats, &db, 5000).await;
    cost_breakdown(&nats, &db, 5000).await;
    let drain = relay_drain(&nats, &db).await;
    println!(
        "    relay drain / raw pipelined publish: {:.0}%",
        drain / raw * 100.0
    );
    let (_, latencies) = end_to_end(&nats, &db, 1000, 5000, "end to end at 1,000 events/s (5 s)").await;
    println!(
        "    commit-to-consumer latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} events)",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        latencies.len()
    );
    let (_, latencies) = end_to_end(
        &nats,
        &db,
        0,
        10_000,
        "end to end flat out, 1 event per transaction",
    )
    .await;
    println!(
        "    commit-to-consumer latency flat out: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    // BENCH_LOG=sqlx::query=debug shows each statement with its time.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let Some(nats) = NatsServer::start().await else {
            return;
        };
        println!("{} events of {} bytes payload", n(), {
            use prost::Message;
            payload(0).encoded_len()
        });
        let raw = raw_publish(&nats, 256).await;
        raw_publish(&nats, 1).await;
        drop(nats);
        run_backend(Backend::Sqlite, raw).await;
        run_backend(Backend::Postgres, raw).await;
    });
}
