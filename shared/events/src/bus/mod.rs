//! The event bus: one set of semantics, two implementations.
//!
//! - [`jetstream`]: NATS JetStream (production, `--nats-url`).
//! - [`memory`]: an in-process broker for `ordermesh up` without NATS.
//!
//! Both give the same guarantees, so the outbox relay, the consumers and
//! their tests do not care which one runs: publish with a message id that is
//! stored once within the duplicate window; durable pull consumers with
//! explicit ack, `ack_wait`, NAK with delay and redelivery of unacked
//! messages; after `max_deliver` failed attempts the message goes to the
//! dead letters with the error, where it is listed and replayed.
//!
//! Why an enum and not a trait object: there are exactly two buses, the
//! methods are async (a trait would need boxing or `async-trait`), and a
//! match costs nothing next to a network round trip.

pub mod jetstream;
pub mod memory;

use std::time::Duration;

use futures::stream::BoxStream;

use crate::config::{BusSettings, ConsumerConfig};
use crate::envelope::Event;
use crate::error::Error;

/// The stream holding dead letters.
pub const DEAD_LETTER_STREAM: &str = "DEADLETTER";
/// Dead letters are published on `<prefix>.<consumer>`.
pub const DEAD_LETTER_PREFIX: &str = "ordermesh.deadletter";

/// Where a publish landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub stream: String,
    pub sequence: u64,
    /// True when the message id was seen within the duplicate window: the
    /// stream kept the first copy and stored nothing.
    pub duplicate: bool,
}

/// The stream holding replayed dead letters, each for one consumer.
pub const REPLAY_STREAM: &str = "REPLAY";
/// A replay for a consumer is published on `<prefix>.<consumer>`.
pub const REPLAY_PREFIX: &str = "ordermesh.replay";

/// A message that a consumer gave up on.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Position in the dead letters (opaque to users).
    pub id: u64,
    /// The event, or the message as it came when it never was one.
    pub event: Result<Event, Malformed>,
    pub consumer: String,
    pub error: String,
    pub deliveries: u32,
    pub time_us: i64,
}

/// A dead-lettered message without a usable CloudEvents envelope, as it
/// came: nothing about it is made up.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    /// Why it is not an ordermesh event.
    pub reason: String,
    /// The subject it was delivered on.
    pub topic: String,
    /// Its own headers (not the dead letter's `ordermesh-*` ones), in order.
    pub headers: Vec<(String, String)>,
    pub data: bytes::Bytes,
}

impl DeadLetter {
    pub fn to_pb(&self) -> ordermesh_proto::events::v1::DeadLetter {
        let (event, envelope_error, topic, headers, data) = match &self.event {
            Ok(event) => (
                Some(event.to_pb()),
                String::new(),
                event.topic.clone(),
                Default::default(),
                Vec::new(),
            ),
            Err(malformed) => (
                None,
                malformed.reason.clone(),
                malformed.topic.clone(),
                malformed.headers.iter().cloned().collect(),
                malformed.data.to_vec(),
            ),
        };
        ordermesh_proto::events::v1::DeadLetter {
            dead_letter_id: self.id.to_string(),
            event,
            consumer: self.consumer.clone(),
            error: self.error.clone(),
            deliveries: i64::from(self.deliveries),
            dead_letter_time: Some(crate::envelope::timestamp(self.time_us)),
            envelope_error,
            topic,
            headers,
            data,
        }
    }

    /// Back from the wire form (`event` unset: malformed).
    pub fn from_pb(dead: ordermesh_proto::events::v1::DeadLetter) -> Result<Self, Error> {
        let id = dead.dead_letter_id.parse().map_err(|_| {
            Error::invalid(
                "dead_letter_id",
                format!("{:?} is not a dead-letter id", dead.dead_letter_id),
            )
        })?;
        let event = match dead.event {
            Some(event) => Ok(Event::from_pb(event)),
            None => Err(Malformed {
                reason: dead.envelope_error,
                topic: dead.topic,
                headers: dead.headers.into_iter().collect(),
                data: bytes::Bytes::from(dead.data),
            }),
        };
        Ok(Self {
            id,
            event,
            consumer: dead.consumer,
            error: dead.error,
            deliveries: u32::try_from(dead.deliveries).unwrap_or(0),
            time_us: dead
                .dead_letter_time
                .as_ref()
                .map(crate::envelope::micros_of)
                .unwrap_or(0),
        })
    }
}

/// The event bus of a process: cheap to clone, shared by its relay,
/// consumers and admin API.
#[derive(Clone)]
pub enum Bus {
    JetStream(std::sync::Arc<jetstream::JetStreamBus>),
    Memory(memory::MemoryBus),
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bus::JetStream(_) => f.write_str("Bus::JetStream"),
            Bus::Memory(_) => f.write_str("Bus::Memory"),
        }
    }
}

impl Bus {
    /// JetStream at `url`. Returns at once even when NATS is down (the
    /// client keeps reconnecting; publishes fail until it is back).
    pub async fn connect(url: &str, settings: BusSettings) -> Result<Self, Error> {
        let bus = jetstream::JetStreamBus::connect(url, settings).await?;
        Ok(Bus::JetStream(std::sync::Arc::new(bus)))
    }

    /// The in-process broker.
    pub fn in_process(settings: BusSettings) -> Self {
        Bus::Memory(memory::MemoryBus::new(settings))
    }

    /// JetStream when a URL is given, else the in-process broker: what
    /// `--nats-url` / `ORDERMESH_NATS_URL` decides.
    pub async fn from_url(url: Option<&str>, settings: BusSettings) -> Result<Self, Error> {
        match url {
            Some(url) if !url.trim().is_empty() => Self::connect(url, settings).await,
            _ => Ok(Self::in_process(settings)),
        }
    }

    /// The settings the bus was made with.
    pub fn settings(&self) -> &BusSettings {
        match self {
            Bus::JetStream(bus) => bus.settings(),
            Bus::Memory(bus) => bus.settings(),
        }
    }

    /// Creates or updates the context streams and the dead-letter stream
    /// (idempotent; called at start and again by the relay after a failure).
    pub async fn ensure_streams(&self) -> Result<(), Error> {
        match self {
            Bus::JetStream(bus) => bus.ensure_streams().await,
            Bus::Memory(_) => Ok(()),
        }
    }

    /// Publishes one event with `Nats-Msg-Id` = its id and waits for the ack.
    pub async fn publish(&self, event: &Event) -> Result<Published, Error> {
        self.publish_all(std::slice::from_ref(event))
            .await
            .pop()
            .unwrap_or_else(|| {
                Err(Error::Publish {
                    topic: event.topic.clone(),
                    reason: "no result".into(),
                })
            })
    }

    /// Publishes events pipelined (all sent, then all acks awaited); one
    /// result per event, in order.
    pub async fn publish_all(&self, events: &[Event]) -> Vec<Result<Published, Error>> {
        match self {
            Bus::JetStream(bus) => bus.publish_all(events).await,
            Bus::Memory(bus) => events.iter().map(|e| bus.publish(e, &e.id)).collect(),
        }
    }

    /// Whether `event` (by its id, the message id) is stored on its subject
    /// at or after `since_us`: the relay's question before it publishes a
    /// row again after the duplicate window may have passed.
    pub async fn stored_since(&self, event: &Event, since_us: i64) -> Result<bool, Error> {
        match self {
            Bus::JetStream(bus) => bus.stored_since(event, since_us).await,
            Bus::Memory(bus) => Ok(bus.stored(event)),
        }
    }

    /// Binds (creating or updating) a durable pull consumer.
    pub async fn consumer(&self, config: &ConsumerConfig) -> Result<Consumer, Error> {
        config.validate()?;
        match self {
            Bus::JetStream(bus) => Ok(Consumer::JetStream(Box::new(bus.consumer(config).await?))),
            Bus::Memory(bus) => Ok(Consumer::Memory(bus.consumer(config))),
        }
    }

    /// Live events from now on whose topic matches `filter` (empty: all).
    pub async fn tail(&self, filter: &str) -> Result<BoxStream<'static, Result<Event, Error>>, Error> {
        let filter = if filter.is_empty() {
            format!("{}.>", crate::kind::SUBJECT_PREFIX)
        } else {
            filter.to_owned()
        };
        crate::kind::validate_filter(&filter)?;
        // Else JetStream would follow no stream and end at once, and the
        // in-process broker would wait forever: silence either way.
        let streams = crate::kind::BoundedContext::ALL;
        if !streams
            .iter()
            .any(|c| crate::kind::subjects_overlap(&filter, &c.subjects()))
        {
            let known: Vec<String> = streams
                .iter()
                .map(|c| format!("{}: {}", c.stream(), c.subjects()))
                .collect();
            return Err(Error::invalid(
                "subject_filter",
                format!("{filter:?} matches no event stream ({})", known.join(", ")),
            ));
        }
        match self {
            Bus::JetStream(bus) => bus.tail(&filter).await,
            Bus::Memory(bus) => Ok(bus.tail(filter)),
        }
    }

    /// Moves a delivery to the dead letters with the error (the caller then
    /// terminates the delivery). Idempotent per consumer and event.
    pub async fn dead_letter(&self, delivery: &Delivery, consumer: &str, error: &str) -> Result<(), Error> {
        let error = sanitize(error);
        match self {
            Bus::JetStream(bus) => bus.dead_letter(delivery, consumer, &error).await,
            Bus::Memory(bus) => {
                bus.dead_letter(delivery, consumer, &error);
                Ok(())
            }
        }
    }

    /// Dead letters with an id above `after`, oldest first, at most `limit`.
    pub async fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        match self {
            Bus::JetStream(bus) => bus.dead_letters(after, limit).await,
            Bus::Memory(bus) => Ok(bus.dead_letters(after, limit)),
        }
    }

    /// Gives a dead letter's event again to the consumer that gave up on it,
    /// and to no other (the others had it already), then removes the letter.
    /// On JetStream it is published on `ordermesh.replay.<consumer>` in the
    /// `REPLAY` stream, which each worker also reads. The event keeps its
    /// `ce-id` but gets a fresh `Nats-Msg-Id`, or the duplicate window would
    /// swallow it. A malformed letter is refused ([`Error::NotReplayable`]):
    /// it would only fail again.
    pub async fn replay(&self, id: u64) -> Result<DeadLetter, Error> {
        match self {
            Bus::JetStream(bus) => bus.replay(id).await,
            Bus::Memory(bus) => bus.replay(id),
        }
    }
}

/// Header values cannot hold line breaks; long errors are cut.
fn sanitize(error: &str) -> String {
    let mut text: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.len() > 1024 {
        let mut end = 1024;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The dead-letter subject of a consumer.
pub(crate) fn dead_letter_subject(consumer: &str) -> String {
    format!("{DEAD_LETTER_PREFIX}.{consumer}")
}

/// The subject a replay for `consumer` is published on.
pub(crate) fn replay_subject(consumer: &str) -> String {
    format!("{REPLAY_PREFIX}.{consumer}")
}

/// The message id a replay publishes with.
pub(crate) fn replay_message_id(event_id: &str, dead_letter_id: u64) -> String {
    format!("{event_id}:replay:{dead_letter_id}")
}

/// A bound durable consumer.
pub enum Consumer {
    JetStream(Box<jetstream::JetStreamConsumer>),
    Memory(memory::MemoryConsumer),
}

impl Consumer {
    /// Up to `max` deliveries, waiting at most `wait` for the first.
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, Error> {
        match self {
            Consumer::JetStream(c) => c.fetch(max, wait).await,
            Consumer::Memory(c) => Ok(c.fetch(max, wait).await),
        }
    }

    /// Whether the durable still exists on the bus: [`Error::ConsumerGone`]
    /// when it (or its stream) does not, another error when the bus cannot
    /// be asked.
    pub async fn check(&mut self) -> Result<(), Error> {
        match self {
            Consumer::JetStream(c) => c.check().await,
            Consumer::Memory(_) => Ok(()),
        }
    }

    /// Stops prefetching until the next fetch: what the bus already pushed
    /// ahead is given back (redelivered after `ack_wait`) instead of waiting
    /// out its ack wait unseen while the worker holds a batch.
    pub fn pause(&mut self) {
        match self {
            Consumer::JetStream(c) => c.pause(),
            Consumer::Memory(_) => {}
        }
    }
}

/// One delivery of a message to a consumer; settle it with exactly one of
/// [`ack`](Delivery::ack), [`nak`](Delivery::nak) or [`term`](Delivery::term).
pub struct Delivery {
    /// The event, or why the message is not a usable event (poison).
    pub event: Result<Event, String>,
    /// The topic it was delivered on.
    pub topic: String,
    /// 1 on the first delivery.
    pub delivered: u32,
    /// In its stream, or for a replay in the replays.
    pub stream_sequence: u64,
    /// A replayed dead letter rather than a message of the event stream.
    pub replayed: bool,
    /// Messages of the stream the consumer has not been sent yet, as of
    /// this delivery (its lag).
    pub pending: u64,
    pub(crate) acker: Acker,
}

pub(crate) enum Acker {
    JetStream(Box<async_nats::jetstream::Message>),
    Memory(memory::MemoryAcker),
}

impl Delivery {
    /// Done: never deliver again.
    pub async fn ack(self) -> Result<(), Error> {
        match self.acker {
            Acker::JetStream(m) => m.ack().await.map_err(|e| Error::jetstream("ack", e)),
            Acker::Memory(a) => {
                a.settle(memory::Settle::Ack);
                Ok(())
            }
        }
    }

    /// Failed: deliver again after `delay` (counts as an attempt).
    pub async fn nak(self, delay: Duration) -> Result<(), Error> {
        match self.acker {
            Acker::JetStream(m) => m
                .ack_with(async_nats::jetstream::AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| Error::jetstream("nak", e)),
            Acker::Memory(a) => {
                a.settle(memory::Settle::Nak(delay));
                Ok(())
            }
        }
    }

    /// Given up (dead-lettered): never deliver again, not processed.
    pub async fn term(self) -> Result<(), Error> {
        match self.acker {
            Acker::JetStream(m) => m
                .ack_with(async_nats::jetstream::AckKind::Term)
                .await
                .map_err(|e| Error::jetstream("term", e)),
            Acker::Memory(a) => {
                a.settle(memory::Settle::Ack);
                Ok(())
            }
        }
    }

    /// Still working: restart the ack-wait clock.
    pub async fn in_progress(&self) -> Result<(), Error> {
        match &self.acker {
            Acker::JetStream(m) => m
                .ack_with(async_nats::jetstream::AckKind::Progress)
                .await
                .map_err(|e| Error::jetstream("progress", e)),
            Acker::Memory(a) => {
                a.progress();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_become_single_line_header_values() {
        assert_eq!(super::sanitize("a\r\nb"), "a  b");
        assert!(super::sanitize(&"é".repeat(2000)).len() <= 1024);
    }
}
