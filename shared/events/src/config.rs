//! Plain-data settings of streams, consumers and the bus. Defaults suit
//! `ordermesh up` and tests; production overrides them from its config.

use std::time::Duration;

use crate::kind::BoundedContext;

/// How a stream keeps messages (JetStream's retention policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep messages until a limit (age, count) removes them; consumers come
    /// and go. The default: replay and late consumers need history.
    Limits,
    /// Keep a message while some consumer has yet to ack it.
    Interest,
    /// One consumer; a message is removed once acked.
    WorkQueue,
}

/// Settings of every context stream (`ORDERS`, `INVENTORY`, `PAYMENTS`).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    pub retention: Retention,
    /// Copies in a NATS cluster (1 for a single server, 3 in production).
    pub replicas: usize,
    /// Messages older than this are removed (zero keeps them forever).
    pub max_age: Duration,
    /// A re-publish with the same message id within this window is stored
    /// once. Beyond half of it, the relay looks a row's message up in the
    /// stream before publishing it again (`relay::republish`).
    pub duplicate_window: Duration,
    /// Most messages per stream (0: no limit). The in-process broker always
    /// caps (at 10,000 when 0) since it keeps messages in memory: enough for a
    /// consumer to catch up after a pause, and a bound on `up`'s memory.
    pub max_messages: i64,
    /// File storage (durable) rather than memory storage.
    pub file_storage: bool,
    /// How long dead letters are kept (zero keeps them until replayed).
    pub dead_letter_max_age: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            retention: Retention::Limits,
            replicas: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            max_messages: 0,
            file_storage: true,
            dead_letter_max_age: Duration::ZERO,
        }
    }
}

/// Settings of the bus as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct BusSettings {
    pub streams: StreamSettings,
    /// How long a publish waits for JetStream's ack before it counts as
    /// failed (the relay then backs off and retries the row).
    pub publish_timeout: Duration,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            streams: StreamSettings::default(),
            publish_timeout: Duration::from_secs(2),
        }
    }
}

/// How a service's inbox is pruned ([`crate::inbox::Pruner`]).
#[derive(Debug, Clone, PartialEq)]
pub struct InboxPruning {
    /// Records older than this are deleted. It must outlast every way an
    /// event can come back to a consumer; `None` derives it from the bus:
    /// the streams' `max_age` plus a day (a durable re-created on a
    /// surviving stream replays up to `max_age`), and no pruning at all
    /// when streams keep messages forever.
    pub retention: Option<Duration>,
    /// Time between pruning rounds.
    pub interval: Duration,
    /// Rows per DELETE, so no round holds long locks or the SQLite writer.
    pub chunk: u32,
}

impl Default for InboxPruning {
    fn default() -> Self {
        Self {
            retention: None,
            interval: Duration::from_secs(600),
            chunk: 1000,
        }
    }
}

impl InboxPruning {
    /// The retention in force on a bus with `streams`, if records may be
    /// pruned at all.
    pub fn retention_for(&self, streams: &StreamSettings) -> Option<Duration> {
        self.retention.or_else(|| {
            (!streams.max_age.is_zero()).then(|| streams.max_age + Duration::from_secs(24 * 3600))
        })
    }
}

/// A durable pull consumer on one context's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerConfig {
    /// Durable name: a token without dots or wildcards; also the inbox key.
    pub name: String,
    pub context: BoundedContext,
    /// Subjects to receive (empty: the whole stream).
    pub filter_subjects: Vec<String>,
    /// How long a delivery may stay unacked before it is redelivered.
    pub ack_wait: Duration,
    /// Handler attempts before the message goes to the dead letters.
    pub max_deliver: u32,
    /// Delay before attempt n+1 after attempt n failed (the last value
    /// repeats); empty means redeliver after `ack_wait`.
    pub backoff: Vec<Duration>,
    /// Messages fetched per pull.
    pub batch: usize,
    /// Most deliveries outstanding (unacked) at once.
    pub max_ack_pending: usize,
}

impl ConsumerConfig {
    pub fn new(name: impl Into<String>, context: BoundedContext) -> Self {
        Self {
            name: name.into(),
            context,
            filter_subjects: Vec::new(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            batch: 64,
            max_ack_pending: 1000,
        }
    }

    /// The redelivery delay after `attempt` (1-based) failed.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(self.ack_wait)
    }

    /// Checks the name and filters; `Invalid` names the field.
    pub fn validate(&self) -> Result<(), crate::error::Error> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(crate::error::Error::invalid(
                "consumer.name",
                format!(
                    "{:?} must be non-empty ASCII letters, digits, '-' or '_'",
                    self.name
                ),
            ));
        }
        if self.max_deliver == 0 {
            return Err(crate::error::Error::invalid(
                "consumer.max_deliver",
                "must be at least 1",
            ));
        }
        if self.ack_wait.is_zero() {
            return Err(crate::error::Error::invalid(
                "consumer.ack_wait",
                "must be positive",
            ));
        }
        for filter in &self.filter_subjects {
            crate::kind::validate_filter(filter)?;
            if !crate::kind::subjects_overlap(filter, &self.context.subjects()) {
                return Err(crate::error::Error::invalid(
                    "consumer.filter_subjects",
                    format!("{filter:?} matches nothing in stream {}", self.context.stream()),
                ));
            }
        }
        Ok(())
    }

    /// Whether the consumer receives messages on `topic`.
    pub fn wants(&self, topic: &str) -> bool {
        self.filter_subjects.is_empty()
            || self
                .filter_subjects
                .iter()
                .any(|f| crate::kind::subject_matches(f, topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_repeats_its_last_step_and_falls_back_to_ack_wait() {
        let mut config = ConsumerConfig::new("c", BoundedContext::Orders);
        config.backoff = vec![Duration::from_millis(10), Duration::from_millis(20)];
        assert_eq!(config.delay_after(1), Duration::from_millis(10));
        assert_eq!(config.delay_after(5), Duration::from_millis(20));
        config.backoff.clear();
        assert_eq!(config.delay_after(1), config.ack_wait);
    }

    #[test]
    fn bad_names_and_foreign_filters_are_refused_naming_the_field() {
        let mut config = ConsumerConfig::new("time.line", BoundedContext::Orders);
        assert!(
            config
                .validate()
                .is_err_and(|e| e.to_string().contains("consumer.name"))
        );
        config.name = "timeline".into();
        config.filter_subjects = vec!["ordermesh.payments.v1.>".into()];
        assert!(
            config
                .validate()
                .is_err_and(|e| e.to_string().contains("filter_subjects"))
        );
        config.filter_subjects = vec!["ordermesh.orders.v1.confirmed".into()];
        assert!(config.validate().is_ok());
        assert!(config.wants("ordermesh.orders.v1.confirmed"));
        assert!(!config.wants("ordermesh.orders.v1.created"));
    }
}
