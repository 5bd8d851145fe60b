//! The in-process broker: JetStream's semantics, in memory, for a process
//! running without NATS (`ordermesh up` on a fresh machine, tests).
//!
//! What it keeps from JetStream: one stream per bounded context with
//! sequence numbers; de-duplication by message id within the duplicate
//! window; durable consumers that survive their worker (a restarted worker
//! binds the same name and gets the unacked messages again); explicit ack,
//! NAK with delay, redelivery after `ack_wait`, at most `max_deliver + 1`
//! deliveries (the extra one lets the worker dead-letter a message whose
//! last attempt crashed); dead letters listed and replayed.
//!
//! What it does not keep: durability across a process restart. Messages live
//! in memory; what the outbox relay already handed over is gone with the
//! process. That fits its purpose (development, one process); production
//! runs on JetStream. Memory is bounded by `max_messages` and `max_age`
//! (10,000 messages per stream when unset); the duplicate window keeps at
//! most as many message ids as the stream keeps messages.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use super::{DeadLetter, Delivery, Published};
use crate::config::{BusSettings, ConsumerConfig};
use crate::envelope::{Event, now_micros};
use crate::error::Error;
use crate::kind::{BoundedContext, subject_matches};

/// Messages kept per stream when the settings give no limit.
const DEFAULT_MAX_MESSAGES: usize = 10_000;

/// The broker; clones share it.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// One per stream, woken when a fetch of that stream may find more: a
    /// publish, a NAK (a redelivery falls due at another time), an ack that
    /// frees room under `max_ack_pending`. Per stream and not on every ack,
    /// so a busy stream does not wake every other consumer of the process
    /// for nothing (each wake-up is a lock and a scan).
    changed: [Notify; BoundedContext::ALL.len()],
    tail: broadcast::Sender<Event>,
    settings: BusSettings,
}

#[derive(Default)]
struct State {
    streams: HashMap<BoundedContext, Stream>,
    consumers: HashMap<(BoundedContext, String), ConsumerState>,
    dead: BTreeMap<u64, DeadLetter>,
    dead_keys: HashSet<String>,
    next_dead: u64,
    next_replay: u64,
}

#[derive(Default)]
struct Stream {
    messages: BTreeMap<u64, Stored>,
    last_seq: u64,
    dedup: HashMap<String, u64>,
    dedup_order: VecDeque<(Instant, String)>,
}

struct Stored {
    event: Event,
    at: Instant,
}

struct ConsumerState {
    config: ConsumerConfig,
    /// The next stream sequence not yet delivered.
    cursor: u64,
    pending: BTreeMap<u64, Pending>,
    /// Replayed dead letters for this consumer alone, by replay id; served
    /// before the stream.
    replays: BTreeMap<u64, (Event, Pending)>,
}

struct Pending {
    delivered: u32,
    /// When the delivery is due again (ack wait elapsed or NAK delay over).
    due: Instant,
}

impl MemoryBus {
    pub fn new(settings: BusSettings) -> Self {
        let (tail, _) = broadcast::channel(4096);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changed: std::array::from_fn(|_| Notify::new()),
                tail,
                settings,
            }),
        }
    }

    pub(crate) fn settings(&self) -> &BusSettings {
        &self.inner.settings
    }

    fn changed(&self, context: BoundedContext) -> &Notify {
        // A fieldless enum's discriminants are 0.. in the order of `ALL`.
        &self.inner.changed[context as usize]
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; carry on.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `event` under `message_id` unless that id was seen within the
    /// duplicate window.
    /// Whether `event` is among its stream's messages (kept ones: the
    /// broker holds at most `max_messages` per stream).
    pub(crate) fn stored(&self, event: &Event) -> bool {
        let Some(context) = BoundedContext::of_subject(&event.topic) else {
            return false;
        };
        let state = self.lock();
        state
            .streams
            .get(&context)
            .is_some_and(|stream| stream.messages.values().any(|m| m.event.id == event.id))
    }

    pub(crate) fn publish(&self, event: &Event, message_id: &str) -> Result<Published, Error> {
        let context = BoundedContext::of_subject(&event.topic).ok_or_else(|| Error::Publish {
            topic: event.topic.clone(),
            reason: "no stream holds this subject".into(),
        })?;
        let settings = &self.inner.settings.streams;
        let now = Instant::now();
        let published = {
            let mut state = self.lock();
            let stream = state.streams.entry(context).or_default();
            let cap = usize::try_from(settings.max_messages)
                .ok()
                .filter(|&m| m > 0)
                .unwrap_or(DEFAULT_MAX_MESSAGES);
            // The window holds at most `cap` ids as well as ending in time:
            // at a few hundred events a second JetStream's two minutes would
            // be the largest thing in the process.
            while let Some((at, _)) = stream.dedup_order.front()
                && (now.duration_since(*at) >= settings.duplicate_window || stream.dedup_order.len() >= cap)
            {
                if let Some((_, id)) = stream.dedup_order.pop_front() {
                    stream.dedup.remove(&id);
                }
            }
            if let Some(&sequence) = stream.dedup.get(message_id) {
                return Ok(Published {
                    stream: context.stream().to_owned(),
                    sequence,
                    duplicate: true,
                });
            }
            stream.last_seq += 1;
            let sequence = stream.last_seq;
            stream.dedup.insert(message_id.to_owned(), sequence);
            stream.dedup_order.push_back((now, message_id.to_owned()));
            stream.messages.insert(
                sequence,
                Stored {
                    event: event.clone(),
                    at: now,
                },
            );
            while let Some((_, oldest)) = stream.messages.first_key_value()
                && (stream.messages.len() > cap
                    || (!settings.max_age.is_zero() && now.duration_since(oldest.at) > settings.max_age))
            {
                stream.messages.pop_first();
            }
            Published {
                stream: context.stream().to_owned(),
                sequence,
                duplicate: false,
            }
        };
        let _ = self.inner.tail.send(event.clone());
        self.changed(context).notify_waiters();
        Ok(published)
    }

    /// Binds a durable consumer, creating it on first use; a later bind of
    /// the same name keeps its position and unacked messages.
    pub(crate) fn consumer(&self, config: &ConsumerConfig) -> MemoryConsumer {
        let key = (config.context, config.name.clone());
        let mut state = self.lock();
        let first = state
            .streams
            .get(&config.context)
            .and_then(|s| s.messages.first_key_value().map(|(seq, _)| *seq))
            .unwrap_or(1);
        state
            .consumers
            .entry(key.clone())
            .and_modify(|c| c.config = config.clone())
            .or_insert_with(|| ConsumerState {
                config: config.clone(),
                cursor: first,
                pending: BTreeMap::new(),
                replays: BTreeMap::new(),
            });
        MemoryConsumer {
            bus: self.clone(),
            key,
        }
    }

    pub(crate) fn tail(&self, filter: String) -> BoxStream<'static, Result<Event, Error>> {
        let receiver = self.inner.tail.subscribe();
        tokio_stream::wrappers::BroadcastStream::new(receiver)
            .filter_map(move |item| {
                let keep = match item {
                    Ok(event) if subject_matches(&filter, &event.topic) => Some(Ok(event)),
                    Ok(_) => None,
                    Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "event tail fell behind; events skipped");
                        None
                    }
                };
                std::future::ready(keep)
            })
            .boxed()
    }

    pub(crate) fn dead_letter(&self, delivery: &Delivery, consumer: &str, error: &str) {
        let event = match &delivery.event {
            Ok(event) => Ok(event.clone()),
            // Only well-formed events are ever published here.
            Err(reason) => Err(super::Malformed {
                reason: reason.clone(),
                topic: delivery.topic.clone(),
                headers: Vec::new(),
                data: bytes::Bytes::new(),
            }),
        };
        let event_id = event.as_ref().map(|e| e.id.as_str()).unwrap_or("");
        let key = format!(
            "{consumer}:{event_id}:{}:{}",
            delivery.stream_sequence, delivery.replayed
        );
        let mut state = self.lock();
        if !state.dead_keys.insert(key) {
            return;
        }
        state.next_dead += 1;
        let id = state.next_dead;
        state.dead.insert(
            id,
            DeadLetter {
                id,
                event,
                consumer: consumer.to_owned(),
                error: error.to_owned(),
                deliveries: delivery.delivered,
                time_us: now_micros(),
            },
        );
    }

    pub(crate) fn dead_letters(&self, after: u64, limit: usize) -> Vec<DeadLetter> {
        let state = self.lock();
        state
            .dead
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Hands a dead letter's event to the consumer that gave up on it, and
    /// to no other, then removes the letter.
    pub(crate) fn replay(&self, id: u64) -> Result<DeadLetter, Error> {
        let dead = {
            let mut state = self.lock();
            let dead = state
                .dead
                .get(&id)
                .cloned()
                .ok_or_else(|| Error::DeadLetterNotFound(id.to_string()))?;
            let event = dead.event.clone().map_err(|malformed| Error::NotReplayable {
                id: id.to_string(),
                reason: format!("the message was never an ordermesh event ({})", malformed.reason),
            })?;
            let context = BoundedContext::of_subject(&event.topic).ok_or_else(|| Error::NotReplayable {
                id: id.to_string(),
                reason: format!("no stream holds its subject {:?}", event.topic),
            })?;
            state.next_replay += 1;
            let replay = state.next_replay;
            let consumer = state
                .consumers
                .get_mut(&(context, dead.consumer.clone()))
                .ok_or_else(|| Error::NotReplayable {
                    id: id.to_string(),
                    reason: format!("consumer {:?} is not bound on this broker", dead.consumer),
                })?;
            let due = Instant::now();
            consumer
                .replays
                .insert(replay, (event, Pending { delivered: 0, due }));
            state.dead.remove(&id);
            self.changed(context).notify_waiters();
            dead
        };
        Ok(dead)
    }
}

/// A bound durable consumer of the in-process broker.
pub struct MemoryConsumer {
    bus: MemoryBus,
    key: (BoundedContext, String),
}

impl MemoryConsumer {
    /// Up to `max` deliveries: due redeliveries first, then new messages.
    pub(crate) async fn fetch(&mut self, max: usize, wait: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.bus.changed(self.key.0).notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let (out, next_due) = self.collect(max.max(1), now);
            if !out.is_empty() || now >= deadline {
                return out;
            }
            let until = next_due.map_or(deadline, |due| due.min(deadline));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    fn collect(&self, max: usize, now: Instant) -> (Vec<Delivery>, Option<Instant>) {
        let mut out = Vec::new();
        let mut guard = self.bus.lock();
        let State {
            streams, consumers, ..
        } = &mut *guard;
        let Some(consumer) = consumers.get_mut(&self.key) else {
            return (out, None);
        };
        let Some(stream) = streams.get(&self.key.0) else {
            return (out, None);
        };
        let limit = consumer.config.max_deliver.saturating_add(1);
        let ack_wait = consumer.config.ack_wait;
        let mut spent = Vec::new();
        for (&id, (event, pending)) in consumer.replays.iter_mut() {
            if out.len() >= max {
                break;
            }
            if pending.due > now {
                continue;
            }
            if pending.delivered >= limit {
                spent.push(id);
                continue;
            }
            pending.delivered += 1;
            pending.due = now + ack_wait;
            out.push(self.delivery(event, id, pending.delivered, true));
        }
        for id in spent {
            consumer.replays.remove(&id);
        }
        let mut gone = Vec::new();
        for (&seq, pending) in consumer.pending.iter_mut() {
            if out.len() >= max {
                break;
            }
            if pending.due > now {
                continue;
            }
            match stream.messages.get(&seq) {
                Some(stored) if pending.delivered < limit => {
                    pending.delivered += 1;
                    pending.due = now + ack_wait;
                    out.push(self.delivery(&stored.event, seq, pending.delivered, false));
                }
                // Delivered as often as allowed, or expired from the stream.
                _ => gone.push(seq),
            }
        }
        for seq in gone {
            consumer.pending.remove(&seq);
        }
        let room = consumer.config.max_ack_pending.max(1);
        let mut next = consumer.cursor;
        for (&seq, stored) in stream.messages.range(consumer.cursor..) {
            if out.len() >= max || consumer.pending.len() >= room {
                break;
            }
            next = seq + 1;
            if consumer.config.wants(&stored.event.topic) {
                consumer.pending.insert(
                    seq,
                    Pending {
                        delivered: 1,
                        due: now + ack_wait,
                    },
                );
                out.push(self.delivery(&stored.event, seq, 1, false));
            }
        }
        consumer.cursor = next.max(consumer.cursor);
        let left = stream
            .messages
            .range(consumer.cursor..)
            .filter(|(_, stored)| consumer.config.wants(&stored.event.topic))
            .count();
        for delivery in &mut out {
            delivery.pending = u64::try_from(left).unwrap_or(u64::MAX);
        }
        let next_due = consumer
            .pending
            .values()
            .chain(consumer.replays.values().map(|(_, p)| p))
            .map(|p| p.due)
            .min();
        (out, next_due)
    }

    /// A delivery of stream message `seq`, or (`replayed`) of replay `seq`.
    fn delivery(&self, event: &Event, seq: u64, delivered: u32, replayed: bool) -> Delivery {
        Delivery {
            event: Ok(event.clone()),
            topic: event.topic.clone(),
            delivered,
            stream_sequence: seq,
            replayed,
            pending: 0,
            acker: super::Acker::Memory(MemoryAcker {
                bus: self.bus.clone(),
                key: self.key.clone(),
                seq,
                replayed,
            }),
        }
    }
}

/// How a delivery was settled.
pub(crate) enum Settle {
    Ack,
    Nak(Duration),
}

/// Settles one delivery of the in-process broker.
pub struct MemoryAcker {
    bus: MemoryBus,
    key: (BoundedContext, String),
    seq: u64,
    replayed: bool,
}

impl ConsumerState {
    /// The outstanding delivery of stream message `seq`, or of replay `seq`.
    fn pending_mut(&mut self, seq: u64, replayed: bool) -> Option<&mut Pending> {
        if replayed {
            self.replays.get_mut(&seq).map(|(_, p)| p)
        } else {
            self.pending.get_mut(&seq)
        }
    }
}

impl MemoryAcker {
    pub(crate) fn settle(&self, how: Settle) {
        let wake = {
            let mut state = self.bus.lock();
            let Some(consumer) = state.consumers.get_mut(&self.key) else {
                return;
            };
            match how {
                Settle::Ack if self.replayed => {
                    consumer.replays.remove(&self.seq);
                    false
                }
                Settle::Ack => {
                    let was_full = consumer.pending.len() >= consumer.config.max_ack_pending.max(1);
                    consumer.pending.remove(&self.seq).is_some() && was_full
                }
                Settle::Nak(delay) => {
                    if let Some(pending) = consumer.pending_mut(self.seq, self.replayed) {
                        pending.due = Instant::now() + delay;
                    }
                    true
                }
            }
        };
        if wake {
            self.bus.changed(self.key.0).notify_waiters();
        }
    }

    pub(crate) fn progress(&self) {
        let mut state = self.bus.lock();
        if let Some(consumer) = state.consumers.get_mut(&self.key) {
            let ack_wait = consumer.config.ack_wait;
            if let Some(pending) = consumer.pending_mut(self.seq, self.replayed) {
                pending.due = Instant::now() + ack_wait;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordermesh_proto::events::v1 as pb;

    fn event(order_id: &str) -> Event {
        let created = pb::OrderCreated {
            order_id: order_id.into(),
            ..Default::default()
        };
        Event::new("/ordermesh/test", &created, None)
    }

    fn bus(max_messages: i64) -> MemoryBus {
        let mut settings = BusSettings::default();
        settings.streams.max_messages = max_messages;
        MemoryBus::new(settings)
    }

    #[test]
    fn duplicate_window_holds_no_more_ids_than_the_stream_holds_messages() {
        let bus = bus(3);
        let events: Vec<Event> = ["o-1", "o-2", "o-3", "o-4"].map(event).into();
        for e in &events {
            assert!(!bus.publish(e, &e.id).expect("publish").duplicate);
        }
        // Within the window and among the newest 3 ids: dropped.
        let again = bus.publish(&events[3], &events[3].id).expect("publish");
        assert!(again.duplicate);
        assert_eq!(again.sequence, 4);
        // The oldest id left the window with its message: stored anew.
        let oldest = bus.publish(&events[0], &events[0].id).expect("publish");
        assert!(!oldest.duplicate);
        assert_eq!(oldest.sequence, 5);
        let state = bus.lock();
        let stream = &state.streams[&BoundedContext::Orders];
        assert!(stream.dedup.len() <= 3 && stream.dedup_order.len() <= 3);
        assert_eq!(stream.messages.len(), 3);
    }

    /// A fetch held back by `max_ack_pending` is woken by the ack that frees
    /// room (acks wake only then), not left waiting until its timeout.
    #[tokio::test(start_paused = true)]
    async fn an_ack_that_frees_room_wakes_a_waiting_fetch() {
        let bus = bus(0);
        let mut config = ConsumerConfig::new("c", BoundedContext::Orders);
        config.max_ack_pending = 1;
        config.ack_wait = Duration::from_secs(60);
        for id in ["o-1", "o-2"] {
            let e = event(id);
            bus.publish(&e, &e.id).expect("publish");
        }
        let mut first = bus.consumer(&config);
        let got = first.fetch(10, Duration::from_secs(1)).await;
        assert_eq!(got.len(), 1, "room for one unacked delivery");
        let mut second = bus.consumer(&config);
        let waiting = tokio::spawn(async move { second.fetch(10, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room until the ack");
        let delivery = got.into_iter().next().expect("one");
        delivery.ack().await.expect("ack");
        let started = Instant::now();
        let next = waiting.await.expect("fetch task");
        assert_eq!(next.len(), 1, "the ack let the next message through");
        assert_eq!(next[0].stream_sequence, 2);
        assert!(started.elapsed() < Duration::from_secs(5), "woken, not timed out");
    }

    /// A publish wakes the fetches waiting on its stream (the wake-ups are
    /// per stream).
    #[tokio::test(start_paused = true)]
    async fn a_publish_wakes_the_fetches_of_its_stream() {
        let bus = bus(0);
        let mut consumer = bus.consumer(&ConsumerConfig::new("c", BoundedContext::Orders));
        let waiting = tokio::spawn(async move { consumer.fetch(10, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        let started = Instant::now();
        let e = event("o-1");
        bus.publish(&e, &e.id).expect("publish");
        let got = waiting.await.expect("fetch task");
        assert_eq!(got.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(5), "woken by the publish");
    }
}
