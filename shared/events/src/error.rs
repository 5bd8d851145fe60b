//! The events crate's errors. Infrastructure failures (NATS, database) keep
//! their source; the gRPC edge ([`crate::admin`]) maps them to statuses once.

/// What can go wrong publishing, consuming or administering events.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// Stream or consumer management, fetching, acking on JetStream.
    #[error("JetStream {operation} failed: {reason}")]
    JetStream { operation: &'static str, reason: String },
    /// A durable consumer (or its whole stream) no longer exists on the
    /// server: NATS lost its store, or someone deleted it.
    #[error("durable consumer {consumer} on stream {stream} is gone")]
    ConsumerGone { stream: String, consumer: String },
    #[error("publishing {topic} failed: {reason}")]
    Publish { topic: String, reason: String },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A message without a usable CloudEvents envelope.
    #[error("event envelope on {topic}: {reason}")]
    Envelope { topic: String, reason: String },
    #[error("event type {0:?} is not an ordermesh event type")]
    UnknownType(String),
    #[error("cannot decode {ce_type} payload: {reason}")]
    Decode { ce_type: String, reason: String },
    /// A payload that decodes but breaks its type's contract (a required
    /// id empty, an amount not positive): refused at the producer,
    /// dead-lettered at the consumer.
    #[error("invalid {ce_type}: {reason}")]
    InvalidEvent { ce_type: String, reason: String },
    /// An outbox row that cannot be turned back into its event.
    #[error("outbox row {event_id}: {reason}")]
    OutboxRow { event_id: String, reason: String },
    #[error("dead letter {0:?} not found")]
    DeadLetterNotFound(String),
    /// A dead letter that cannot be replayed (it was never an ordermesh
    /// event, or no consumer of that name can take it).
    #[error("dead letter {id:?} cannot be replayed: {reason}")]
    NotReplayable { id: String, reason: String },
    /// Bad input (a subject filter, a page token, a consumer name).
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Error {
    /// Whether this is [`Error::ConsumerGone`] (the worker then re-creates
    /// its durable).
    pub fn is_consumer_gone(&self) -> bool {
        matches!(self, Error::ConsumerGone { .. })
    }

    pub(crate) fn jetstream(operation: &'static str, error: impl std::fmt::Display) -> Self {
        Error::JetStream {
            operation,
            reason: error.to_string(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// An events failure under a service's call is that service's infrastructure
/// failing (its outbox, its broker).
impl From<Error> for ordermesh_runtime::Infra {
    fn from(error: Error) -> Self {
        ordermesh_runtime::Infra::Events(Box::new(error))
    }
}
