//! Domain events for ordermesh: reliable from the state change that causes
//! them to the consumer that reacts, on NATS JetStream or in process.
//!
//! Why this shape: the well-known ways to lose events are a dual write
//! (commit, then publish, and crash in between), consumers that ack before
//! their effects are durable, and messages that fail forever and block or
//! vanish. So: services write events into an outbox table in the same
//! transaction as the change ([`outbox`]); a relay publishes them with the
//! event id as the de-duplication id ([`relay`]); consumers commit their
//! effects together with the event id ([`inbox`]) and ack after that
//! ([`worker`]); what fails `max_deliver` times goes to dead letters that an
//! operator lists and replays ([`admin`]).
//!
//! # Layout
//! - [`kind`]: event types, subjects `ordermesh.<context>.v1.<event>`, streams.
//! - [`envelope`]: the CloudEvents binary-mode envelope in NATS headers.
//! - [`config`]: stream, consumer and bus settings (plain data).
//! - [`bus`]: the bus with its two implementations, [`bus::jetstream`] and
//!   [`bus::memory`] (the in-process broker), deliveries and dead letters.
//! - [`outbox`]: the outbox table and the insert inside the caller's transaction.
//! - [`relay`]: the task publishing outbox rows.
//! - [`inbox`]: the processed-events table and the claim that makes effects
//!   exactly-once.
//! - [`worker`]: the consumer loop: handle, ack, retry with back-off, dead-letter.
//! - [`admin`]: the `EventAdminService` gRPC server.
//! - [`measure`]: the backlog, relay and consumer metrics.
//! - [`service`]: the plumbing every service starts (relay, publisher, admin).
//! - [`json`]: events as JSON (by `ce-type`, through prost-reflect).
//! - [`trace`]: the spans of publishing and handling events.
//! - [`testing`]: a real nats-server for tests and benches.
//! - [`error`]: the crate's error type.

pub mod admin;
pub mod bus;
pub mod config;
pub mod envelope;
pub mod error;
pub mod inbox;
pub mod json;
pub mod kind;
pub mod measure;
pub mod outbox;
pub mod relay;
pub mod service;
pub mod testing;
pub mod trace;
pub mod worker;

pub use bus::{Bus, DeadLetter, Delivery, Malformed, Published};
pub use bus::{DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, REPLAY_PREFIX, REPLAY_STREAM};
pub use config::{BusSettings, ConsumerConfig, InboxPruning, Retention, StreamSettings};
pub use envelope::Event;
pub use error::Error;
pub use kind::{BoundedContext, DomainEvent, EventKind};
pub use outbox::{Notifier, Outbox, Publisher};
pub use relay::{Relay, RelayConfig};
pub use service::ServiceEvents;
pub use worker::{Handler, HandlerError, Inboxed, TxHandler};
