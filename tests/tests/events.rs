//! Domain events end to end, on the in-process broker and on a real
//! `nats-server -js`, on SQLite and on PostgreSQL: the services write each
//! event in the transaction of its change, the relays publish them, and the
//! consumers build the order timeline, the confirmation notices, the restock
//! alerts and the catalogue cache from them.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use ordermesh_events::{DomainEvent, Event};
use ordermesh_proto::common::v1::Money;
use ordermesh_proto::events::v1 as events_pb;
use ordermesh_proto::inventory::v1 as inventory_pb;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::OrderStatus;
use ordermesh_tests::{Backend, BusKind, Mesh, MeshOptions, NatsServer, per_bus_and_backend};

const KEYBOARD: &str = "KB-001"; // 8999 cents, 25 in stock, threshold 5
const CABLE: &str = "CB-004"; // 999 cents, 200 in stock, threshold 20
const LAMP: &str = "LT-005"; // 14900 cents, 1 in stock, threshold 1

/// A mesh on the bus kind asked for (and the NATS server, kept alive).
async fn start(bus: BusKind, backend: Backend) -> Option<(Mesh, Option<NatsServer>)> {
    let mut options = MeshOptions::new(backend);
    let nats = match bus {
        BusKind::Memory => None,
        BusKind::Nats => {
            let server = NatsServer::start().await?;
            options.nats_url = Some(server.url());
            Some(server)
        }
    };
    let mesh = Mesh::start(options).await?;
    Some((mesh, nats))
}

async fn eventually<T>(within: Duration, what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn timeline(mesh: &Mesh, order_id: &str) -> Vec<order_pb::TimelineEntry> {
    mesh.order
        .clone()
        .get_order_timeline(order_pb::GetOrderTimelineRequest {
            order_id: order_id.into(),
        })
        .await
        .expect("GetOrderTimeline")
        .into_inner()
        .entries
}

fn type_of<E: DomainEvent>() -> &'static str {
    E::KIND.type_name
}

/// A confirmed order's six events arrive on their subjects with the
/// CloudEvents attributes and decode with the generated types; its timeline
/// shows them from all three services in occurrence order; the notifier
/// records one notice, even when the confirmation arrives twice.
async fn an_orders_events_arrive_and_build_its_timeline(bus: BusKind, backend: Backend) {
    let Some((mesh, _nats)) = start(bus, backend).await else {
        return;
    };
    let mut tail = mesh.bus.tail("ordermesh.>").await.expect("tail");
    let created = mesh
        .create_order("events-1", "alice", &[(KEYBOARD, 2)])
        .await
        .expect("created");
    let (_, order) = mesh.wait_terminal(&created.order_id).await;
    assert_eq!(order.status(), OrderStatus::Confirmed);

    let expected: BTreeSet<(&str, &str)> = [
        ("ordermesh.orders.v1.created", "/ordermesh/order"),
        ("ordermesh.inventory.v1.stock_reserved", "/ordermesh/inventory"),
        ("ordermesh.payments.v1.authorized", "/ordermesh/payment"),
        ("ordermesh.payments.v1.captured", "/ordermesh/payment"),
        ("ordermesh.inventory.v1.stock_committed", "/ordermesh/inventory"),
        ("ordermesh.orders.v1.confirmed", "/ordermesh/order"),
    ]
    .into_iter()
    .collect();
    let mut seen: Vec<Event> = Vec::new();
    let collect = async {
        while let Some(event) = tail.next().await {
            let event = event.expect("event");
            let about_order = event.subject == order.order_id || event.subject == order.payment_id;
            if about_order {
                seen.push(event);
            }
            let subjects: BTreeSet<(&str, &str)> = seen
                .iter()
                .map(|e| (e.topic.as_str(), e.source.as_str()))
                .collect();
            if expected.iter().all(|want| subjects.contains(want)) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), collect)
        .await
        .unwrap_or_else(|_| panic!("every event of the order arrives; saw {seen:#?}"));
    let confirmed = seen
        .iter()
        .find(|e| e.ce_type == type_of::<events_pb::OrderConfirmed>())
        .expect("OrderConfirmed");
    let payload: events_pb::OrderConfirmed = confirmed.decode().expect("decodes");
    assert_eq!(payload.order_id, order.order_id);
    assert_eq!(payload.customer_id, "alice");
    assert_eq!(payload.total, Some(Money::new(2 * 8999, "USD")));
    assert_eq!(payload.payment_id, order.payment_id);
    assert!(confirmed.time_us > 0);
    let headers = confirmed.headers();
    for header in [
        "ce-specversion",
        "ce-id",
        "ce-source",
        "ce-type",
        "ce-time",
        "ce-subject",
    ] {
        assert!(headers.get(header).is_some(), "{header} in {headers:?}");
    }

    // The timeline: the same six (plus nothing twice), in occurrence order.
    let entries = eventually(
        Duration::from_secs(15),
        "the timeline has all six events",
        async || {
            let entries = timeline(&mesh, &order.order_id).await;
            (entries.len() >= 6).then_some(entries)
        },
    )
    .await;
    let times: Vec<i64> = entries
        .iter()
        .map(|e| ordermesh_runtime::clock::micros_of(e.occur_time.as_ref().expect("time")))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "occurrence order: {entries:#?}"
    );
    let ids: BTreeSet<&str> = entries.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), entries.len(), "each event once");
    let sources: BTreeSet<&str> = entries.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(
        sources,
        ["/ordermesh/inventory", "/ordermesh/order", "/ordermesh/payment"]
            .into_iter()
            .collect()
    );
    assert_eq!(entries[0].r#type, type_of::<events_pb::OrderCreated>());
    assert_eq!(
        entries.last().map(|e| e.r#type.as_str()),
        Some(type_of::<events_pb::OrderConfirmed>())
    );
    assert!(
        entries
            .iter()
            .any(|e| e.summary.contains("stock reserved: 2 x KB-001")),
        "{entries:#?}"
    );

    // The notifier: one notice, even when the confirmation arrives again
    // (a second publish under a new id, as a relay re-run of another row
    // would be).
    let mut again = confirmed.clone();
    again.id = uuid::Uuid::new_v4().to_string();
    mesh.bus.publish(&again).await.expect("republish");
    let mut admin = mesh.order_admin_api.clone();
    let notices = eventually(Duration::from_secs(10), "the confirmation notice", async || {
        let notices = admin
            .list_confirmation_notices(order_pb::ListConfirmationNoticesRequest::default())
            .await
            .expect("ListConfirmationNotices")
            .into_inner()
            .notices;
        (!notices.is_empty()).then_some(notices)
    })
    .await;
    // The republished copy went through the notifier after the first; once
    // the timeline shows it, the notifier has had it too.
    eventually(
        Duration::from_secs(10),
        "the republished copy is consumed",
        async || {
            let entries = timeline(&mesh, &order.order_id).await;
            entries.iter().any(|e| e.event_id == again.id).then_some(())
        },
    )
    .await;
    let notices_after = admin
        .list_confirmation_notices(order_pb::ListConfirmationNoticesRequest::default())
        .await
        .expect("ListConfirmationNotices")
        .into_inner()
        .notices;
    assert_eq!(notices.len(), 1);
    assert_eq!(notices_after.len(), 1, "one notice per order: {notices_after:?}");
    assert_eq!(notices_after[0].order_id, order.order_id);
    mesh.shutdown().await;
}

/// The last lamp sold takes its stock below the threshold: inventory
/// publishes StockLow and the consumer records one restock alert.
async fn low_stock_raises_one_restock_alert(bus: BusKind, backend: Backend) {
    let Some((mesh, _nats)) = start(bus, backend).await else {
        return;
    };
    let created = mesh
        .create_order("lamp-1", "alice", &[(LAMP, 1)])
        .await
        .expect("created");
    assert_eq!(
        mesh.wait_terminal(&created.order_id).await.1.status(),
        OrderStatus::Confirmed
    );
    let mut inventory = mesh.inventory.clone();
    let alerts = eventually(Duration::from_secs(10), "a restock alert", async || {
        let alerts = inventory
            .list_restock_alerts(inventory_pb::ListRestockAlertsRequest::default())
            .await
            .expect("ListRestockAlerts")
            .into_inner()
            .alerts;
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(
        (
            alert.sku.as_str(),
            alert.available,
            alert.threshold,
            alert.order_id.as_str()
        ),
        (LAMP, 0, 1, created.order_id.as_str())
    );
    // A cable order stays above its threshold: no alert.
    let cable = mesh
        .create_order("cable-1", "alice", &[(CABLE, 1)])
        .await
        .expect("created");
    mesh.wait_terminal(&cable.order_id).await;
    eventually(
        Duration::from_secs(10),
        "the cable order's timeline",
        async || (timeline(&mesh, &cable.order_id).await.len() >= 6).then_some(()),
    )
    .await;
    let after = inventory
        .list_restock_alerts(inventory_pb::ListRestockAlertsRequest::default())
        .await
        .expect("ListRestockAlerts")
        .into_inner()
        .alerts;
    assert_eq!(after.len(), 1, "{after:?}");
    mesh.shutdown().await;
}

/// UpdateProduct publishes ProductUpdated; the order service drops its
/// cached entry, so the next order shows the new name (long before the
/// cache's TTL), while the price charged stays the reservation's.
async fn a_product_update_reaches_the_catalogue_cache(bus: BusKind, backend: Backend) {
    let Some((mesh, _nats)) = start(bus, backend).await else {
        return;
    };
    let first = mesh
        .create_order("named-0", "alice", &[(KEYBOARD, 1)])
        .await
        .expect("created");
    assert_eq!(first.lines[0].name, "Mechanical keyboard");
    let mut inventory = mesh.inventory.clone();
    let updated = inventory
        .update_product(inventory_pb::UpdateProductRequest {
            sku: KEYBOARD.into(),
            name: Some("Mechanical keyboard, second edition".into()),
            unit_price: Some(Money::new(9499, "USD")),
            low_stock_threshold: None,
        })
        .await
        .expect("UpdateProduct")
        .into_inner()
        .item
        .expect("item");
    assert_eq!(updated.name, "Mechanical keyboard, second edition");
    let mut attempt = 0;
    let renamed = eventually(
        Duration::from_secs(10),
        "the new name on a new order",
        async || {
            attempt += 1;
            let order = mesh
                .create_order(&format!("named-{attempt}"), "alice", &[(KEYBOARD, 1)])
                .await
                .expect("created");
            (order.lines[0].name == "Mechanical keyboard, second edition").then_some(order)
        },
    )
    .await;
    let (_, renamed) = mesh.wait_terminal(&renamed.order_id).await;
    assert_eq!(
        renamed.lines[0].unit_price.as_ref().map(|m| m.amount_minor),
        Some(9499),
        "charged the catalogue's new price"
    );
    // Bad input names the field.
    let err = inventory
        .update_product(inventory_pb::UpdateProductRequest {
            sku: KEYBOARD.into(),
            name: None,
            unit_price: Some(Money::new(-1, "usd")),
            low_stock_threshold: Some(-2),
        })
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for field in [
        "unit_price.amount_minor",
        "unit_price.currency_code",
        "low_stock_threshold",
    ] {
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    mesh.shutdown().await;
}

/// Events that cannot be right (an OrderConfirmed for no order, a StockLow
/// for no SKU) are dead-lettered by every consumer with the reason, naming
/// the field; no notice and no alert is recorded for them.
async fn invalid_events_are_dead_lettered_with_the_reason(bus: BusKind, backend: Backend) {
    let Some((mesh, _nats)) = start(bus, backend).await else {
        return;
    };
    let confirmed = events_pb::OrderConfirmed {
        order_id: String::new(),
        customer_id: "alice".into(),
        total: Some(Money::new(8999, "USD")),
        payment_id: "p-1".into(),
        occur_time: None,
    };
    let low = events_pb::StockLow {
        sku: String::new(),
        available: 2,
        threshold: 5,
        order_id: String::new(),
        occur_time: None,
    };
    mesh.bus
        .publish(&Event::new("/ordermesh/test", &confirmed, None))
        .await
        .expect("publish");
    mesh.bus
        .publish(&Event::new("/ordermesh/test", &low, None))
        .await
        .expect("publish");
    let dead = eventually(
        Duration::from_secs(15),
        "both dead-lettered by their consumers",
        async || {
            let dead = mesh.bus.dead_letters(0, 100).await.expect("dead letters");
            let by = |consumer: &str| dead.iter().any(|d| d.consumer == consumer);
            (by(ordermesh_order::projections::NOTIFIER) && by("inventory-restock-alerts")).then_some(dead)
        },
    )
    .await;
    for letter in &dead {
        let field = if letter.consumer == "inventory-restock-alerts"
            || letter.consumer == "order-timeline-inventory"
        {
            "sku is empty"
        } else {
            "order_id is empty"
        };
        assert!(
            letter.error.contains(field),
            "{}: {}",
            letter.consumer,
            letter.error
        );
        assert_eq!(letter.deliveries, 1, "dead-lettered at once");
    }
    let notices = mesh
        .order_admin_api
        .clone()
        .list_confirmation_notices(order_pb::ListConfirmationNoticesRequest::default())
        .await
        .expect("ListConfirmationNotices")
        .into_inner()
        .notices;
    assert!(notices.is_empty(), "{notices:?}");
    let alerts = mesh
        .inventory
        .clone()
        .list_restock_alerts(inventory_pb::ListRestockAlertsRequest::default())
        .await
        .expect("ListRestockAlerts")
        .into_inner()
        .alerts;
    assert!(alerts.is_empty(), "{alerts:?}");
    mesh.shutdown().await;
}

per_bus_and_backend!(
    invalid_events_are_dead_lettered_with_the_reason,
    an_orders_events_arrive_and_build_its_timeline,
    low_stock_raises_one_restock_alert,
    a_product_update_reaches_the_catalogue_cache,
);

/// NATS down while orders are placed: the orders go through (the events wait
/// in the outboxes); once NATS is back every event is published, once.
async fn events_written_while_nats_is_down_arrive_once_it_is_back(backend: Backend) {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let mut options = MeshOptions::new(backend);
    options.nats_url = Some(nats.url());
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    nats.stop().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let created = mesh
            .create_order(&format!("offline-{i}"), "alice", &[(CABLE, 1)])
            .await
            .expect("orders need no NATS");
        let (_, order) = mesh.wait_terminal(&created.order_id).await;
        assert_eq!(order.status(), OrderStatus::Confirmed);
        ids.push(order.order_id);
    }
    nats.restart().await;
    for order_id in &ids {
        let entries = eventually(
            Duration::from_secs(30),
            "the order's events after NATS returned",
            async || {
                let entries = timeline(&mesh, order_id).await;
                (entries.len() >= 6).then_some(entries)
            },
        )
        .await;
        assert_eq!(entries.len(), 6, "each event once: {entries:#?}");
    }
    // The streams hold each event once: 5 orders x (created, confirmed),
    // x (reserved, committed), x (authorized, captured).
    let client = async_nats::connect(nats.url()).await.expect("nats");
    let jetstream = async_nats::jetstream::new(client);
    for stream in ["ORDERS", "INVENTORY", "PAYMENTS"] {
        let messages = eventually(
            Duration::from_secs(10),
            "the stream's count settles",
            async || {
                let mut info = jetstream.get_stream(stream).await.ok()?;
                let messages = info.info().await.ok()?.state.messages;
                (messages >= 10).then_some(messages)
            },
        )
        .await;
        assert_eq!(messages, 10, "{stream}: every event once");
    }
    mesh.shutdown().await;
}

/// The order service's health for its events: SERVING or NOT_SERVING.
async fn events_health(mesh: &Mesh) -> ordermesh_runtime::health::Answer {
    let url = format!("http://{}", mesh.addr("order").expect("order runs"));
    ordermesh_runtime::health::check(&url, EVENT_ADMIN)
        .await
        .expect("health answers")
}

const EVENT_ADMIN: &str = "ordermesh.events.v1.EventAdminService";

/// NATS loses its store (restarted empty): while it is away the order
/// service's events health says NOT_SERVING (the server as a whole, on its
/// database, still SERVING); once it is back the services re-create the
/// streams and their durables, the catalogue cache follows the new stream
/// (a product renamed afterwards shows on the next order long before the
/// cache's TTL), and the events health is SERVING again.
async fn a_product_update_after_nats_lost_its_store_reaches_the_cache(backend: Backend) {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let mut options = MeshOptions::new(backend);
    options.nats_url = Some(nats.url());
    let Some(mesh) = Mesh::start(options).await else {
        return;
    };
    let rename = async |name: &str| {
        mesh.inventory
            .clone()
            .update_product(inventory_pb::UpdateProductRequest {
                sku: KEYBOARD.into(),
                name: Some(name.into()),
                unit_price: None,
                low_stock_threshold: None,
            })
            .await
            .expect("UpdateProduct");
    };
    let mut placed = 0;
    let mut order_named = async |name: &str| {
        eventually(
            Duration::from_secs(10),
            &format!("an order line named {name:?}"),
            async || {
                placed += 1;
                let order = mesh
                    .create_order(&format!("store-{placed}"), "alice", &[(KEYBOARD, 1)])
                    .await
                    .expect("created");
                mesh.wait_terminal(&order.order_id).await;
                (order.lines[0].name == name).then_some(())
            },
        )
        .await;
    };
    // Enough events that the INVENTORY stream's sequence is well above what
    // a fresh stream reaches in this test.
    for _ in 0..3 {
        order_named("Mechanical keyboard").await;
    }
    rename("Mechanical keyboard, second edition").await;
    order_named("Mechanical keyboard, second edition").await;
    assert_eq!(
        events_health(&mesh).await,
        ordermesh_runtime::health::Answer::Serving
    );

    nats.stop().await;
    eventually(
        Duration::from_secs(20),
        "events health NOT_SERVING while NATS is away",
        async || (events_health(&mesh).await == ordermesh_runtime::health::Answer::NotServing).then_some(()),
    )
    .await;
    let url = format!("http://{}", mesh.addr("order").expect("order runs"));
    assert_eq!(
        ordermesh_runtime::health::check(&url, "")
            .await
            .expect("health answers"),
        ordermesh_runtime::health::Answer::Serving,
        "the server as a whole stays on its database"
    );
    nats.restart_empty().await;
    // An order's events make the relays re-create the streams.
    order_named("Mechanical keyboard, second edition").await;
    rename("Mechanical keyboard, third edition").await;
    order_named("Mechanical keyboard, third edition").await;
    eventually(
        Duration::from_secs(20),
        "events health SERVING again",
        async || (events_health(&mesh).await == ordermesh_runtime::health::Answer::Serving).then_some(()),
    )
    .await;
    mesh.shutdown().await;
}

ordermesh_tests::both_backends!(
    events_written_while_nats_is_down_arrive_once_it_is_back,
    a_product_update_after_nats_lost_its_store_reaches_the_cache
);
