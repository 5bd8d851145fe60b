//! The spans of events: one per event a relay publishes (kind producer),
//! one per batch a consumer handles (kind consumer), with OpenTelemetry's
//! messaging attributes.
//!
//! The trace context travels with the event: the outbox row keeps the
//! context of the transaction that wrote it ([`crate::outbox::Publisher`]
//! takes the current span's), the relay sends it as the message's
//! `traceparent` header, and a consumer's span is the child of it (one
//! event) or links to each (a batch), so an order's trace shows who
//! published what and who handled it, across processes and NATS.

use tracing::Span;

use crate::envelope::Event;

/// The span of publishing `event`; ends when dropped.
pub(crate) fn producer(event: &Event) -> Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("{} publish", event.topic),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "nats",
        messaging.operation.type = "publish",
        messaging.destination.name = %event.topic,
        messaging.message.id = %event.id,
    );
    if let Some(traceparent) = &event.traceparent {
        ordermesh_mesh::trace::set_parent(&span, ordermesh_mesh::trace::context_of(traceparent));
    }
    span
}

/// The span of `consumer` handling `events` (one handler call).
pub(crate) fn consumer(consumer: &str, events: &[&Event]) -> Span {
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("{consumer} process"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.consumer.group.name = %consumer,
        messaging.batch.message_count = events.len(),
        messaging.destination.name = tracing::field::Empty,
        messaging.message.id = tracing::field::Empty,
    );
    match events {
        [event] => {
            span.record("messaging.destination.name", event.topic.as_str());
            span.record("messaging.message.id", event.id.as_str());
            if let Some(traceparent) = &event.traceparent {
                ordermesh_mesh::trace::set_parent(&span, ordermesh_mesh::trace::context_of(traceparent));
            }
        }
        events => {
            for traceparent in events.iter().filter_map(|e| e.traceparent.as_deref()) {
                ordermesh_mesh::trace::add_link(&span, traceparent);
            }
        }
    }
    span
}
