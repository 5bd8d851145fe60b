//! The bus on NATS JetStream (async-nats).
//!
//! Streams: one per bounded context (`ORDERS`, `INVENTORY`, `PAYMENTS`)
//! plus `DEADLETTER` (`ordermesh.deadletter.<consumer>`) and `REPLAY`
//! (`ordermesh.replay.<consumer>`: a replayed dead letter for that consumer
//! alone, read by a durable of the consumer's name), created or updated
//! idempotently. Publishing sets `Nats-Msg-Id` to the event id, so a
//! re-publish within the duplicate window is stored once; beyond it, the
//! relay first asks whether the message is stored ([`stored`]).
//!
//! Consumers are durable pull consumers with explicit ack. `max_deliver` on
//! the server is one more than the handler's attempts, so a worker that
//! crashed in the last attempt still gets the message once more, and moves it
//! to the dead letters itself (the server would just stop delivering it).
//! Failed attempts are NAKed with the configured back-off delay; the server's
//! own `backoff` list is not used, because it replaces `ack_wait` and would
//! redeliver a slow but healthy handler's message.

mod stored;

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context, ErrorCode};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::{
    Acker, DeadLetter, Delivery, Malformed, Published, dead_letter_subject, replay_message_id, replay_subject,
};
use crate::bus::{DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, REPLAY_PREFIX, REPLAY_STREAM};
use crate::config::{BusSettings, ConsumerConfig, Retention};
use crate::envelope::{Event, micros_of};
use crate::error::Error;
use crate::kind::{BoundedContext, subject_matches, subjects_overlap};

/// Headers a dead letter carries besides the event's own.
pub mod header {
    pub const TOPIC: &str = "ordermesh-topic";
    pub const CONSUMER: &str = "ordermesh-consumer";
    pub const ERROR: &str = "ordermesh-error";
    pub const DELIVERIES: &str = "ordermesh-deliveries";
}

/// A JetStream connection; clones share it.
#[derive(Clone)]
pub struct JetStreamBus {
    client: async_nats::Client,
    js: Context,
    settings: BusSettings,
}

impl JetStreamBus {
    pub(crate) async fn connect(url: &str, settings: BusSettings) -> Result<Self, Error> {
        let client = async_nats::ConnectOptions::new()
            .name("ordermesh")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            // Reconnect quickly: while NATS is down the outbox holds events,
            // and the sooner we are back the sooner it drains.
            .reconnect_delay_callback(|attempt| {
                let millis = 100u64.saturating_mul(1 << attempt.min(5));
                Duration::from_millis(millis.min(2_000))
            })
            .connect(url)
            .await
            .map_err(|e| Error::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(settings.publish_timeout)
            .build(client.clone());
        Ok(Self { client, js, settings })
    }

    pub(crate) fn settings(&self) -> &BusSettings {
        &self.settings
    }

    /// The NATS client (for tools and tests).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    fn stream_config(&self, name: &str, subjects: String, max_age: Duration) -> stream::Config {
        let s = &self.settings.streams;
        stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects],
            retention: match s.retention {
                Retention::Limits => RetentionPolicy::Limits,
                Retention::Interest => RetentionPolicy::Interest,
                Retention::WorkQueue => RetentionPolicy::WorkQueue,
            },
            num_replicas: s.replicas.max(1),
            max_age,
            max_messages: if s.max_messages > 0 { s.max_messages } else { -1 },
            duplicate_window: s.duplicate_window,
            storage: if s.file_storage {
                StorageType::File
            } else {
                StorageType::Memory
            },
            ..Default::default()
        }
    }

    pub(crate) async fn ensure_streams(&self) -> Result<(), Error> {
        for context in BoundedContext::ALL {
            let config = self.stream_config(
                context.stream(),
                context.subjects(),
                self.settings.streams.max_age,
            );
            self.js
                .create_or_update_stream(config)
                .await
                .map_err(|e| Error::jetstream("create or update stream", e))?;
        }
        let mut dead = self.stream_config(
            DEAD_LETTER_STREAM,
            format!("{DEAD_LETTER_PREFIX}.>"),
            self.settings.streams.dead_letter_max_age,
        );
        // One consumer at a time reads dead letters; keep them regardless.
        dead.retention = RetentionPolicy::Limits;
        self.js
            .create_or_update_stream(dead)
            .await
            .map_err(|e| Error::jetstream("create or update stream", e))?;
        // Replays, each for one consumer's durable (filtered to its own
        // subject), gone once it acks.
        let mut replays = self.stream_config(
            REPLAY_STREAM,
            format!("{REPLAY_PREFIX}.>"),
            self.settings.streams.max_age,
        );
        replays.retention = RetentionPolicy::WorkQueue;
        self.js
            .create_or_update_stream(replays)
            .await
            .map_err(|e| Error::jetstream("create or update stream", e))?;
        Ok(())
    }

    pub(crate) async fn publish_all(&self, events: &[Event]) -> Vec<Result<Published, Error>> {
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let message = PublishMessage::build()
                .payload(event.data.clone())
                .headers(event.headers())
                .message_id(&event.id);
            acks.push(self.js.send_publish(event.topic.clone(), message).await);
        }
        let mut results = Vec::with_capacity(events.len());
        for (event, ack) in events.iter().zip(acks) {
            let result = match ack {
                Ok(future) => future.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            results.push(
                result
                    .map(|ack| Published {
                        stream: ack.stream,
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    })
                    .map_err(|reason| Error::Publish {
                        topic: event.topic.clone(),
                        reason,
                    }),
            );
        }
        results
    }

    pub(crate) async fn consumer(&self, config: &ConsumerConfig) -> Result<JetStreamConsumer, Error> {
        let stream = self
            .js
            .get_stream_no_info(config.context.stream())
            .await
            .map_err(|e| Error::jetstream("get stream", e))?;
        let durable = |filter_subjects: Vec<String>| pull::Config {
            durable_name: Some(config.name.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_deliver: i64::from(config.max_deliver) + 1,
            filter_subjects,
            max_ack_pending: i64::try_from(config.max_ack_pending).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let consumer: PullConsumer = stream
            .create_consumer(durable(config.filter_subjects.clone()))
            .await
            .map_err(|e| Error::jetstream("create consumer", e))?;
        // The same name on the replay stream, for this consumer's replays only.
        let replays: PullConsumer = self
            .js
            .get_stream_no_info(REPLAY_STREAM)
            .await
            .map_err(|e| Error::jetstream("get stream", e))?
            .create_consumer(durable(vec![replay_subject(&config.name)]))
            .await
            .map_err(|e| Error::jetstream("create replay consumer", e))?;
        Ok(JetStreamConsumer {
            consumer,
            replays,
            replays_checked: None,
            stream: config.context.stream().to_owned(),
            name: config.name.clone(),
            batch: config.batch.max(1),
            messages: None,
        })
    }

    pub(crate) async fn tail(&self, filter: &str) -> Result<BoxStream<'static, Result<Event, Error>>, Error> {
        let mut streams = Vec::new();
        let mut watched = Vec::new();
        for context in BoundedContext::ALL {
            if !subjects_overlap(filter, &context.subjects()) {
                continue;
            }
            let stream = match self.js.get_stream(context.stream()).await {
                Ok(stream) => stream,
                Err(e) => match e.kind() {
                    GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                        return Err(Error::jetstream(
                            "tail",
                            format!(
                                "stream {} does not exist on this NATS yet (no ordermesh service has started with it)",
                                context.stream()
                            ),
                        ));
                    }
                    _ => return Err(Error::jetstream("get stream", e)),
                },
            };
            watched.push((context.stream(), stream.cached_info().created));
            // An ordered ephemeral consumer from now on; the filter is applied
            // here, since the server wants a filter inside the stream's subjects.
            let messages = stream
                .create_consumer(pull::OrderedConfig {
                    deliver_policy: DeliverPolicy::New,
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::jetstream("create tail consumer", e))?
                .messages()
                .await
                .map_err(|e| Error::jetstream("tail", e))?;
            streams.push(messages.boxed());
        }
        let filter = filter.to_owned();
        let events = futures::stream::select_all(streams).filter_map(move |item| {
            let event = match item {
                Ok(message) if subject_matches(&filter, &message.subject) => Some(Event::from_message(
                    &message.subject,
                    message.headers.as_ref(),
                    message.payload.clone(),
                )),
                Ok(_) => None,
                Err(e) => Some(Err(Error::jetstream("tail", e))),
            };
            std::future::ready(event)
        });
        // The events until a watched stream is gone or new, then that error,
        // then the end (the ordered consumers would never yield again).
        let (gone_tx, gone_rx) = tokio::sync::oneshot::channel();
        let watchdog = watch_streams(self.js.clone(), watched).map(move |error| {
            let _ = gone_tx.send(error);
        });
        let gone = futures::stream::once(gone_rx).filter_map(|error| std::future::ready(error.ok().map(Err)));
        Ok(events.take_until(watchdog).chain(gone).boxed())
    }

    pub(crate) async fn dead_letter(
        &self,
        delivery: &Delivery,
        consumer: &str,
        error: &str,
    ) -> Result<(), Error> {
        let Acker::JetStream(message) = &delivery.acker else {
            return Err(Error::jetstream("dead letter", "delivery is not from JetStream"));
        };
        let mut headers = message.headers.clone().unwrap_or_default();
        headers.insert(header::TOPIC, delivery.topic.as_str());
        headers.insert(header::CONSUMER, consumer);
        headers.insert(header::ERROR, error);
        headers.insert(header::DELIVERIES, delivery.delivered.to_string().as_str());
        let event_id = delivery.event.as_ref().map(|e| e.id.as_str()).unwrap_or("");
        // A worker that dies between this publish and its term ack publishes
        // again on the redelivery; the id makes that a duplicate.
        let origin = if delivery.replayed { "replay" } else { "stream" };
        let message_id = format!("{consumer}:{event_id}:{origin}:{}", delivery.stream_sequence);
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers)
            .message_id(message_id);
        self.js
            .send_publish(dead_letter_subject(consumer), publish)
            .await
            .map_err(|e| Error::jetstream("dead letter", e))?
            .await
            .map_err(|e| Error::jetstream("dead letter", e))?;
        Ok(())
    }

    async fn dead_stream(&self) -> Result<stream::Stream<()>, Error> {
        self.js
            .get_stream_no_info(DEAD_LETTER_STREAM)
            .await
            .map_err(|e| Error::jetstream("get dead-letter stream", e))
    }

    pub(crate) async fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        let stream = self.dead_stream().await?;
        let mut out = Vec::new();
        let mut next = after.saturating_add(1);
        while out.len() < limit {
            let message = stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(format!("{DEAD_LETTER_PREFIX}.>"))
                .send()
                .await;
            match message {
                Ok(message) => {
                    next = message.sequence + 1;
                    out.push(dead_letter_of(message));
                }
                Err(e) if matches!(e.kind(), stream::RawMessageErrorKind::NoMessageFound) => break,
                // No dead-letter stream yet (no service has started here): none.
                Err(e)
                    if matches!(e.kind(), stream::RawMessageErrorKind::JetStream(js)
                        if js.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {
                    break;
                }
                Err(e) => return Err(Error::jetstream("list dead letters", e)),
            }
        }
        Ok(out)
    }

    pub(crate) async fn replay(&self, id: u64) -> Result<DeadLetter, Error> {
        let stream = self.dead_stream().await?;
        let message = match stream.get_raw_message(id).await {
            Ok(message) => message,
            Err(e) if matches!(e.kind(), stream::RawMessageErrorKind::NoMessageFound) => {
                return Err(Error::DeadLetterNotFound(id.to_string()));
            }
            Err(e) => return Err(Error::jetstream("read dead letter", e)),
        };
        let dead = dead_letter_of(message.clone());
        let event = dead.event.as_ref().map_err(|malformed| Error::NotReplayable {
            id: id.to_string(),
            reason: format!("the message was never an ordermesh event ({})", malformed.reason),
        })?;
        // The event's own headers, and the subject it came on.
        let mut headers = HeaderMap::new();
        for (name, values) in message.headers.iter() {
            let name: &str = name.as_ref();
            if name.starts_with("ordermesh-") || name.starts_with("Nats-") {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
        headers.insert(header::TOPIC, event.topic.as_str());
        let subject = replay_subject(&dead.consumer);
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers)
            .message_id(replay_message_id(&event.id, id));
        let failed = |e: &dyn std::fmt::Display| Error::Publish {
            topic: subject.clone(),
            reason: e.to_string(),
        };
        self.js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| failed(&e))?
            .await
            .map_err(|e| failed(&e))?;
        stream
            .delete_message(id)
            .await
            .map_err(|e| Error::jetstream("delete dead letter", e))?;
        Ok(dead)
    }
}

/// How often a tail checks that its streams are still the ones it follows.
const TAIL_WATCH_EVERY: Duration = Duration::from_secs(2);

/// Resolves when one of `watched` (stream name, creation time) no longer
/// exists or was created anew. An ordered consumer does not notice: it
/// resumes after its last sequence on the new stream, skipping everything up
/// to there, so the tail ends instead and its reader subscribes again (the
/// catalogue clears its cache then). While NATS is away nothing is decided.
async fn watch_streams(js: Context, watched: Vec<(&'static str, async_nats::datetime::DateTime)>) -> Error {
    loop {
        tokio::time::sleep(TAIL_WATCH_EVERY).await;
        for (name, created) in &watched {
            let reason = match js.get_stream(*name).await {
                Ok(stream) if stream.cached_info().created == *created => continue,
                Ok(_) => format!("stream {name} was re-created; subscribe again"),
                Err(e) => match e.kind() {
                    GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                        format!("stream {name} is gone; subscribe again")
                    }
                    _ => continue,
                },
            };
            return Error::jetstream("tail", reason);
        }
    }
}

fn dead_letter_of(message: jetstream::message::StreamMessage) -> DeadLetter {
    let get = |name: &str| {
        message
            .headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    let topic = get(header::TOPIC);
    let event = Event::from_message(&topic, Some(&message.headers), message.payload.clone()).map_err(|e| {
        // As it came: its own headers, not the dead letter's.
        let mut headers = Vec::new();
        for (name, values) in message.headers.iter() {
            let name: &str = name.as_ref();
            if name.starts_with("ordermesh-") || name.starts_with("Nats-") {
                continue;
            }
            headers.extend(values.iter().map(|v| (name.to_owned(), v.as_str().to_owned())));
        }
        Malformed {
            reason: e.to_string(),
            topic: topic.clone(),
            headers,
            data: message.payload.clone(),
        }
    });
    let time = prost_types::Timestamp {
        seconds: message.time.unix_timestamp(),
        nanos: i32::try_from(message.time.nanosecond()).unwrap_or(0),
    };
    DeadLetter {
        id: message.sequence,
        event,
        consumer: get(header::CONSUMER),
        error: get(header::ERROR),
        deliveries: get(header::DELIVERIES).parse().unwrap_or(0),
        time_us: micros_of(&time),
    }
}

/// A bound durable pull consumer on JetStream.
pub struct JetStreamConsumer {
    consumer: PullConsumer,
    /// The consumer's durable on the replay stream.
    replays: PullConsumer,
    replays_checked: Option<tokio::time::Instant>,
    stream: String,
    name: String,
    batch: usize,
    messages: Option<pull::Stream>,
}

impl JetStreamConsumer {
    /// Replays waiting for this consumer, looked for at most every
    /// [`REPLAY_POLL`] (one no-wait pull; they are rare).
    async fn fetch_replays(&mut self, max: usize) -> Result<Vec<Delivery>, Error> {
        if self.replays_checked.is_some_and(|at| at.elapsed() < REPLAY_POLL) {
            return Ok(Vec::new());
        }
        self.replays_checked = Some(tokio::time::Instant::now());
        let pull = async {
            let mut batch = self
                .replays
                .fetch()
                .max_messages(max.max(1))
                .messages()
                .await
                .map_err(|e| Error::jetstream("pull replays", e))?;
            let mut out = Vec::new();
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| Error::jetstream("pull replays", e))?;
                out.push(replay_delivery_of(message));
            }
            Ok(out)
        };
        // While NATS is away the pull would wait for an answer forever.
        tokio::time::timeout(REPLAY_PULL_TIMEOUT, pull)
            .await
            .unwrap_or_else(|_| Err(Error::jetstream("pull replays", "no answer (NATS away?)")))
    }

    pub(crate) fn pause(&mut self) {
        self.messages = None;
    }

    pub(crate) async fn check(&mut self) -> Result<(), Error> {
        let Err(e) = self.consumer.get_info().await else {
            return Ok(());
        };
        let gone = match e.kind() {
            ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound => true,
            ConsumerInfoErrorKind::JetStream(js) => {
                matches!(
                    js.error_code(),
                    ErrorCode::CONSUMER_NOT_FOUND | ErrorCode::STREAM_NOT_FOUND
                )
            }
            _ => false,
        };
        if gone {
            self.messages = None;
            return Err(Error::ConsumerGone {
                stream: self.stream.clone(),
                consumer: self.name.clone(),
            });
        }
        Err(Error::jetstream("consumer info", e))
    }

    /// Waits up to `wait` for the first message, then takes whatever else is
    /// already buffered, up to `max`: low latency at low rates, batches at
    /// high ones.
    pub(crate) async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, Error> {
        let replays = self.fetch_replays(max).await?;
        if !replays.is_empty() {
            return Ok(replays);
        }
        if self.messages.is_none() {
            let messages = self
                .consumer
                .stream()
                .max_messages_per_batch(self.batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(|e| Error::jetstream("pull", e))?;
            self.messages = Some(messages);
        }
        let Some(messages) = self.messages.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let first = match tokio::time::timeout(wait, messages.next()).await {
            Err(_) => return Ok(out),
            Ok(item) => item,
        };
        let mut item = first;
        loop {
            match item {
                None => {
                    // The pull stream ended; start a new one on the next fetch.
                    self.messages = None;
                    break;
                }
                Some(Err(e)) => {
                    if out.is_empty() {
                        self.messages = None;
                        return Err(Error::jetstream("pull", e));
                    }
                    break;
                }
                Some(Ok(message)) => out.push(delivery_of(message)),
            }
            if out.len() >= max {
                break;
            }
            match messages.next().now_or_never() {
                Some(next) => item = next,
                None => break,
            }
        }
        Ok(out)
    }
}

/// How often a consumer looks for replays of its dead letters.
const REPLAY_POLL: Duration = Duration::from_secs(1);
/// How long a look for replays may take.
const REPLAY_PULL_TIMEOUT: Duration = Duration::from_secs(2);

/// A replayed dead letter: the event under its original subject
/// (`ordermesh-topic`), counted by the replay durable.
fn replay_delivery_of(message: jetstream::Message) -> Delivery {
    let topic = message
        .headers
        .as_ref()
        .and_then(|h| h.get(header::TOPIC))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| message.subject.to_string());
    let mut delivery = delivery_of(message);
    delivery.event = delivery.event.map(|event| Event {
        topic: topic.clone(),
        ..event
    });
    delivery.topic = topic;
    delivery.replayed = true;
    delivery
}

fn delivery_of(message: jetstream::Message) -> Delivery {
    let (delivered, stream_sequence, pending) = message
        .info()
        .map(|info| {
            (
                u32::try_from(info.delivered).unwrap_or(u32::MAX),
                info.stream_sequence,
                info.pending,
            )
        })
        .unwrap_or((1, 0, 0));
    let topic = message.subject.to_string();
    let event = Event::from_message(&topic, message.headers.as_ref(), message.payload.clone())
        .map_err(|e| e.to_string());
    Delivery {
        event,
        topic,
        delivered,
        stream_sequence,
        replayed: false,
        pending,
        acker: Acker::JetStream(Box::new(message)),
    }
}
