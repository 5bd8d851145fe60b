//! Outbox and relay: events written in a transaction reach the bus, on the
//! right subjects with the CloudEvents envelope, once, in order per
//! aggregate, also across a NATS outage and a relay crash.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ordermesh_events::envelope::header;
use ordermesh_events::{BoundedContext, Bus, ConsumerConfig, Event, Outbox, Relay, RelayConfig};
use ordermesh_proto::events::v1 as pb;

use crate::harness::{Backend, BusKind, Db, NatsServer, bus, bus_settings, eventually};
use crate::support::{SHORT, commit_created, order_confirmed, order_created, payment_captured};

fn relay_config() -> RelayConfig {
    RelayConfig {
        // Small batches, so ordering across batches is exercised too.
        batch_size: 4,
        poll_interval: Duration::from_millis(200),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..RelayConfig::default()
    }
}

/// Every event a fresh durable consumer reads from `context`, acked.
async fn drain(bus: &Bus, name: &str, context: BoundedContext) -> Vec<Event> {
    let mut config = ConsumerConfig::new(name, context);
    config.ack_wait = Duration::from_secs(5);
    let mut consumer = bus.consumer(&config).await.expect("bind consumer");
    let mut events = Vec::new();
    loop {
        let batch = consumer
            .fetch(100, Duration::from_millis(300))
            .await
            .expect("fetch");
        if batch.is_empty() {
            return events;
        }
        for delivery in batch {
            events.push(delivery.event.clone().expect("a well-formed event"));
            delivery.ack().await.expect("ack");
        }
    }
}

async fn published_events_arrive_with_cloudevents_headers(backend: Backend) {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    let bus = Bus::connect(&nats.url(), bus_settings()).await.expect("connect");
    let relay = Relay::spawn(db.pool.clone(), bus.clone(), relay_config());
    let outbox = Outbox::new("/ordermesh/test");

    // One transaction with three events (two contexts), then interleaved
    // transactions on two more aggregates.
    let mut committed: Vec<Event> = Vec::new();
    let mut tx = db.pool.begin().await.expect("begin");
    committed.push(
        outbox
            .add(
                &mut tx,
                &order_created("o-1"),
                Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            )
            .await
            .expect("add"),
    );
    committed.push(
        outbox
            .add(&mut tx, &order_confirmed("o-1"), None)
            .await
            .expect("add"),
    );
    let captured = outbox
        .add(&mut tx, &payment_captured("p-1", "o-1"), None)
        .await
        .expect("add");
    tx.commit().await.expect("commit");
    relay.notifier().notify();
    for round in 0..5 {
        for order in ["o-2", "o-3"] {
            let mut tx = db.pool.begin().await.expect("begin");
            let event = if round % 2 == 0 {
                outbox.add(&mut tx, &order_created(order), None).await
            } else {
                outbox.add(&mut tx, &order_confirmed(order), None).await
            };
            committed.push(event.expect("add"));
            tx.commit().await.expect("commit");
            relay.notifier().notify();
        }
    }
    eventually(SHORT, "the relay publishes every row", || async {
        db.pending().await == 0
    })
    .await;

    let js = async_nats::jetstream::new(nats.client().await);
    let orders = js.get_stream("ORDERS").await.expect("ORDERS stream");
    let mut stored = Vec::new();
    for seq in 1..=committed.len() as u64 {
        stored.push(orders.get_raw_message(seq).await.expect("stored message"));
    }
    assert!(
        orders.get_raw_message(committed.len() as u64 + 1).await.is_err(),
        "nothing beyond the committed events"
    );
    let by_id: HashMap<&str, &Event> = committed.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut order_of: HashMap<String, Vec<String>> = HashMap::new();
    for message in &stored {
        let h = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
        let id = h(header::ID).expect("ce-id");
        let event = by_id.get(id.as_str()).expect("a committed event");
        assert_eq!(message.subject.as_str(), event.topic);
        assert_eq!(h(header::SPECVERSION).as_deref(), Some("1.0"));
        assert_eq!(h(header::SOURCE).as_deref(), Some("/ordermesh/test"));
        assert_eq!(h(header::TYPE).as_deref(), Some(event.ce_type.as_str()));
        assert_eq!(h(header::SUBJECT).as_deref(), Some(event.subject.as_str()));
        assert_eq!(h(header::CONTENT_TYPE).as_deref(), Some("application/protobuf"));
        assert_eq!(
            h("Nats-Msg-Id").as_deref(),
            Some(id.as_str()),
            "dedup id is the event id"
        );
        let time: prost_types::Timestamp = h(header::TIME).expect("ce-time").parse().expect("RFC 3339");
        assert_eq!(time, ordermesh_events::envelope::timestamp(event.time_us));
        assert_eq!(h(header::TRACEPARENT), event.traceparent);
        match message.subject.as_str() {
            "ordermesh.orders.v1.created" => {
                let created: pb::OrderCreated =
                    prost::Message::decode(message.payload.clone()).expect("decodes");
                assert_eq!(created.order_id, event.subject);
                assert_eq!(created.lines.len(), 1);
            }
            "ordermesh.orders.v1.confirmed" => {
                let confirmed: pb::OrderConfirmed =
                    prost::Message::decode(message.payload.clone()).expect("decodes");
                assert_eq!(confirmed.total.expect("total").amount_minor, 8999);
            }
            other => panic!("unexpected subject {other}"),
        }
        order_of.entry(event.subject.clone()).or_default().push(id);
    }
    // Per aggregate, the stream holds events in commit order.
    for (aggregate, ids) in &order_of {
        let expected: Vec<String> = committed
            .iter()
            .filter(|e| &e.subject == aggregate)
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(ids, &expected, "order of {aggregate}");
    }
    let payments = js.get_stream("PAYMENTS").await.expect("PAYMENTS stream");
    let message = payments.get_raw_message(1).await.expect("the captured event");
    assert_eq!(message.subject.as_str(), "ordermesh.payments.v1.captured");
    let event = Event::from_message(&message.subject, Some(&message.headers), message.payload.clone())
        .expect("envelope parses");
    assert_eq!(event.id, captured.id);
    assert_eq!(
        event.decode::<pb::PaymentCaptured>().expect("decodes").payment_id,
        "p-1"
    );
    relay.shutdown().await;
}

async fn republishing_a_row_stores_one_message(kind: BusKind, backend: Backend) {
    let Some((bus, _nats)) = bus(kind).await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    let relay = Relay::spawn(db.pool.clone(), bus.clone(), relay_config());
    let outbox = Outbox::new("/ordermesh/test");
    let mut ids = HashSet::new();
    for i in 0..3 {
        ids.insert(commit_created(&db.pool, &outbox, &format!("o-{i}")).await.id);
    }
    relay.notifier().notify();
    eventually(SHORT, "rows sent", || async { db.pending().await == 0 }).await;

    // The relay publishes every row again, as after a crash between the
    // publish ack and marking the row sent.
    sqlx::query("UPDATE outbox SET sent_us = NULL")
        .execute(&db.pool)
        .await
        .expect("reset rows");
    assert_eq!(db.pending().await, 3);
    relay.notifier().notify();
    eventually(SHORT, "rows re-sent", || async { db.pending().await == 0 }).await;

    let events = drain(&bus, "audit", BoundedContext::Orders).await;
    let got: HashSet<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(events.len(), 3, "one stored message per row: {events:?}");
    assert_eq!(got, ids);
    // And a direct re-publish is reported as a duplicate.
    let again = bus.publish(&events[0]).await.expect("publish");
    assert!(again.duplicate, "{again:?}");
    relay.shutdown().await;
}

async fn nothing_is_lost_while_nats_is_down(backend: Backend) {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    let bus = Bus::connect(&nats.url(), bus_settings()).await.expect("connect");
    bus.ensure_streams().await.expect("streams");
    let relay = Relay::spawn(db.pool.clone(), bus.clone(), relay_config());
    let outbox = Outbox::new("/ordermesh/test");
    let before = commit_created(&db.pool, &outbox, "before").await;
    relay.notifier().notify();
    eventually(SHORT, "first event sent", || async { db.pending().await == 0 }).await;

    nats.stop().await;
    let mut ids = HashSet::from([before.id]);
    for i in 0..20 {
        ids.insert(
            commit_created(&db.pool, &outbox, &format!("o-{}", i % 4))
                .await
                .id,
        );
        relay.notifier().notify();
    }
    // The outage lasts a while, so the relay fails and backs off; nothing may
    // be marked sent meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        db.pending().await,
        20,
        "nothing counts as sent while NATS is down"
    );

    nats.restart().await;
    eventually(
        Duration::from_secs(30),
        "the relay catches up after NATS returns",
        || async { db.pending().await == 0 },
    )
    .await;
    let events = drain(&bus, "audit", BoundedContext::Orders).await;
    let got: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got.len(), 21, "every event exactly once: {got:?}");
    assert_eq!(got.iter().cloned().collect::<HashSet<_>>(), ids);
    relay.shutdown().await;
}

async fn rows_committed_before_a_crash_are_published_by_the_next_relay(kind: BusKind, backend: Backend) {
    let Some((bus, _nats)) = bus(kind).await else {
        return;
    };
    let Some(db) = Db::new(backend).await else { return };
    // The process dies after committing, before its relay published.
    let crashed = Relay::spawn(db.pool.clone(), bus.clone(), relay_config());
    crashed.abort();
    let outbox = Outbox::new("/ordermesh/test");
    let mut ids = HashSet::new();
    for i in 0..5 {
        ids.insert(commit_created(&db.pool, &outbox, &format!("o-{i}")).await.id);
    }
    assert_eq!(db.pending().await, 5);
    // The next process's relay finds the rows without being notified.
    let relay = Relay::spawn(db.pool.clone(), bus.clone(), relay_config());
    eventually(SHORT, "rows sent by the new relay", || async {
        db.pending().await == 0
    })
    .await;
    let events = drain(&bus, "audit", BoundedContext::Orders).await;
    assert_eq!(events.iter().map(|e| e.id.clone()).collect::<HashSet<_>>(), ids);
    assert_eq!(events.len(), 5);
    relay.shutdown().await;
}

crate::per_backend!(
    published_events_arrive_with_cloudevents_headers,
    nothing_is_lost_while_nats_is_down
);

mod any_bus {
    use super::*;
    crate::per_bus_and_backend!(
        republishing_a_row_stores_one_message,
        rows_committed_before_a_crash_are_published_by_the_next_relay
    );
}
