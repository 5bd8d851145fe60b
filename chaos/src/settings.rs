//! The timing a chaos run gives the services, and the bounds the schedule
//! and the checker derive from it. Written once here, passed to the order
//! processes as flags, recorded in the history and printed in the report, so
//! a reader of a report knows which outages the saga had to wait out.
//!
//! Why these values: the lease is short (3 s) so that a paused or killed
//! order replica's sagas are taken over within the run; the call timeout
//! stays under the lease by more than the 1 s clock-skew margin the saga
//! demands; the patience (30 s, the binary's default) exceeds the longest
//! outage one fault is planned to make (12 s; a PostgreSQL stop and start
//! take a few seconds more on a busy machine) plus
//! [`RunSettings::recovery_grace`] (a restarted process getting back to
//! SERVING and an open breaker's wait before its probe), so an order
//! rejected `SERVICE_UNAVAILABLE` during a single fault is a finding, not
//! bad luck.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The saga flags of the order replicas and the bounds derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSettings {
    pub saga_patience_secs: u64,
    pub saga_lease_ms: u64,
    pub saga_call_timeout_ms: u64,
    pub saga_recovery_interval_ms: u64,
    pub saga_forward_window_secs: u64,
    /// How long after a fault ends the system may still count as out: a
    /// killed process's restart until SERVING, plus an open breaker's wait
    /// (the default policy's 5 s) before it probes again.
    pub recovery_grace_ms: u64,
    /// The longest back-off of an event consumer's reconnect or retry loop;
    /// a PostgreSQL outage lasts longer than this, so consumers go through
    /// a full back-off.
    pub consumer_backoff_ms: u64,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            saga_patience_secs: 30,
            saga_lease_ms: 3_000,
            saga_call_timeout_ms: 1_500,
            saga_recovery_interval_ms: 500,
            saga_forward_window_secs: 120,
            recovery_grace_ms: 8_000,
            consumer_backoff_ms: 5_000,
        }
    }
}

impl RunSettings {
    pub fn patience(&self) -> Duration {
        Duration::from_secs(self.saga_patience_secs)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.saga_lease_ms)
    }

    pub fn recovery_grace(&self) -> Duration {
        Duration::from_millis(self.recovery_grace_ms)
    }

    /// The flags every order replica runs with.
    pub fn order_flags(&self) -> Vec<String> {
        [
            ("--saga-patience-secs", self.saga_patience_secs),
            ("--saga-lease-ms", self.saga_lease_ms),
            ("--saga-call-timeout-ms", self.saga_call_timeout_ms),
            ("--saga-recovery-interval-ms", self.saga_recovery_interval_ms),
            ("--saga-forward-window-secs", self.saga_forward_window_secs),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value.to_string()])
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_covers_a_call_and_the_skew_margin() {
        let s = RunSettings::default();
        assert!(s.saga_lease_ms > s.saga_call_timeout_ms + 1_000);
    }

    #[test]
    fn flags_come_in_pairs() {
        let flags = RunSettings::default().order_flags();
        assert_eq!(flags.len(), 10);
        assert_eq!(flags[0], "--saga-patience-secs");
        assert_eq!(flags[1], "30");
    }
}
