//! Whose fault a handler's failure is, which decides what the worker does
//! with the message (see the module above): the environment's (wait), the
//! message's (dead-letter at once), or unknown (retry, then dead-letter).

use crate::error::Error;

/// What kind of failure a handler met; it decides what the worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The environment failed (database or broker unreachable, busy,
    /// a serialization conflict): the message is fine and will succeed
    /// later. The worker holds it and retries without spending attempts.
    Transient,
    /// The message itself is bad (undecodable, invalid, refused by a
    /// constraint): no retry can help; dead-letter at once.
    Poison,
    /// Not classified: retried with back-off, dead-lettered after
    /// `max_deliver` attempts.
    Failed,
}

/// Why a handler did not process an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub message: String,
    pub failure: Failure,
}

impl HandlerError {
    /// The environment failed; wait for it (see [`Failure::Transient`]).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            failure: Failure::Transient,
        }
    }

    /// The message will fail every time (see [`Failure::Poison`]).
    pub fn poison(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            failure: Failure::Poison,
        }
    }

    /// Unclassified: worth a few more attempts (see [`Failure::Failed`]).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            failure: Failure::Failed,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.failure == Failure::Transient
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for HandlerError {
    fn from(error: Error) -> Self {
        let failure = match &error {
            Error::Db(db) => classify_db(db),
            Error::Connect { .. }
            | Error::JetStream { .. }
            | Error::Publish { .. }
            | Error::ConsumerGone { .. } => Failure::Transient,
            Error::Decode { .. }
            | Error::Envelope { .. }
            | Error::UnknownType(_)
            | Error::InvalidEvent { .. } => Failure::Poison,
            Error::OutboxRow { .. }
            | Error::DeadLetterNotFound(_)
            | Error::NotReplayable { .. }
            | Error::Invalid { .. } => Failure::Failed,
        };
        Self {
            message: error.to_string(),
            failure,
        }
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        Self {
            failure: classify_db(&error),
            message: format!("database: {error}"),
        }
    }
}

/// A service's infrastructure error under a handler: the database's by the
/// database's rules, the events crate's by its own, corrupt data unclassified.
impl From<ordermesh_runtime::Infra> for HandlerError {
    fn from(error: ordermesh_runtime::Infra) -> Self {
        match error {
            ordermesh_runtime::Infra::Db(db) => db.into(),
            ordermesh_runtime::Infra::Events(events) => match events.downcast::<Error>() {
                Ok(events) => (*events).into(),
                Err(other) => Self::failed(other.to_string()),
            },
            corrupt @ ordermesh_runtime::Infra::Corrupt(_) => Self::failed(corrupt.to_string()),
        }
    }
}

/// Which database failures are the environment's (wait), which the
/// message's (a constraint refuses its data: poison), and which unknown.
fn classify_db(error: &sqlx::Error) -> Failure {
    match ordermesh_runtime::db::classify(error) {
        ordermesh_runtime::db::ErrorClass::Transient => Failure::Transient,
        ordermesh_runtime::db::ErrorClass::Constraint => Failure::Poison,
        ordermesh_runtime::db::ErrorClass::Other => Failure::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_transient_and_refused_data_is_poison() {
        assert_eq!(
            HandlerError::from(sqlx::Error::PoolTimedOut).failure,
            Failure::Transient
        );
        assert_eq!(
            HandlerError::from(sqlx::Error::RowNotFound).failure,
            Failure::Failed
        );
        let undecodable = Error::Decode {
            ce_type: "t".into(),
            reason: "r".into(),
        };
        assert_eq!(HandlerError::from(undecodable).failure, Failure::Poison);
        let broker = Error::jetstream("fetch", "no responders");
        assert_eq!(HandlerError::from(broker).failure, Failure::Transient);
    }
}
