//! The order saga, orchestrated here and durable in the order database.
//!
//! Forward: RESERVE stock -> AUTHORIZE payment -> CAPTURE (the pivot) ->
//! COMMIT the reservation (and confirm, in the same record). A failure before
//! the pivot compensates: UNDO_PAYMENT (void by the authorization's key, or
//! refund) -> RELEASE stock -> REJECTED. After the pivot the saga only goes
//! forward. Cancelling a confirmed order runs the same compensation and ends
//! CANCELLED. [`plan`] holds every decision and says why.
//!
//! # Layout
//! - [`plan`]: the pure decision (state x step result -> what is recorded
//!   and what runs next), with exhaustive unit tests.
//! - [`steps`]: the downstream calls, each mapped to a step result.
//! - [`runner`]: the workers: leases, the drive loop, recovery, cancel and
//!   re-drive; they perform what the plan decides and nothing else.
//!
//! # What is guaranteed, and under which assumptions
//! - Durability: a step's outcome and the next step are one transaction,
//!   fenced on the worker's lease; a crash anywhere (kill -9 included) leaves
//!   a saga the recovery worker resumes once its lease lapses. Every call is
//!   keyed on the order, so a repeated step returns the first result.
//! - One driver: a worker calls downstream only while its lease covers the
//!   whole call plus `lease_margin`, by its own monotonic clock since it last
//!   wrote the lease; it renews the lease before any call it would not cover.
//!   This assumes the processes' wall clocks (which the database compares
//!   leases with) differ by less than `lease_margin`.
//! - Nothing held for a terminal order: a reached step is undone by the
//!   order's key, which also leaves a tombstone so a late forward call (a
//!   delayed request, a worker that lost its lease mid-call) holds nothing.
//!   As a last safety net, reservations expire (inventory) and authorization
//!   holds lapse (payment) by themselves.
//! - Bounded: an outage is waited out for `patience` before the pivot and
//!   `forward_window` after it; compensation makes at most
//!   `max_compensation_attempts`; then the saga stops for an operator
//!   (`OrderAdminService`), never retried silently forever.

pub mod measure;
pub mod plan;
pub mod runner;
pub mod steps;

use std::time::Duration;

pub use runner::SagaRunner;

use crate::store::Step;

/// A named point at which the order process freezes (its worker stops dead,
/// keeping its lease, writing nothing more) and says so on stderr, so a crash
/// test can SIGKILL it exactly there. Set with `ORDERMESH_CRASH_AT`; never in
/// production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After a step's downstream call returned, before its outcome is
    /// recorded: `after-reserve`, `after-authorize`, `after-capture`,
    /// `after-commit`, `after-undo-payment`, `after-release`.
    After(Step),
    /// After a cancel was recorded, before its saga is driven:
    /// `cancel-accepted`.
    CancelAccepted,
}

impl CrashPoint {
    /// Every crash point, for tests that visit each.
    pub const ALL: &[CrashPoint] = &[
        CrashPoint::After(Step::Reserve),
        CrashPoint::After(Step::Authorize),
        CrashPoint::After(Step::Capture),
        CrashPoint::After(Step::Commit),
        CrashPoint::After(Step::UndoPayment),
        CrashPoint::After(Step::Release),
        CrashPoint::CancelAccepted,
    ];

    pub fn name(self) -> String {
        match self {
            CrashPoint::After(step) => format!("after-{}", step.as_str().to_lowercase().replace('_', "-")),
            CrashPoint::CancelAccepted => "cancel-accepted".into(),
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|point| point.name() == name)
    }

    /// The line a frozen process prints to stderr.
    pub fn announcement(self) -> String {
        format!("ordermesh: crash point {} reached", self.name())
    }
}

/// Saga tuning: the decision's [`plan::Limits`], and the workers' own
/// settings. Each default is written once, in `Default` (the binary's flags
/// read theirs from it).
#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// What the decision keeps to: patience, forward window, compensation
    /// attempts and back-off.
    pub limits: plan::Limits,
    /// Deadline of each downstream call.
    pub call_timeout: Duration,
    /// How long a worker's claim on a saga lasts without being renewed.
    pub lease: Duration,
    /// Allowance for clock skew between processes (see the module docs).
    pub lease_margin: Duration,
    /// How often the recovery worker looks for orphaned sagas.
    pub recovery_interval: Duration,
    /// Crash-test hook: where to freeze, if anywhere.
    pub crash_at: Option<CrashPoint>,
    /// Chaos-test hook: the worker pauses between a step's call and its
    /// record, as a starved process or a long GC pause would, so tests can
    /// make leases lapse mid-step and a stale worker wake up after another
    /// took its saga over.
    pub pause_before_record: Option<Pause>,
    /// Chaos-test hook: the first record that completes this step commits,
    /// but its worker is told the connection broke (a reply lost during
    /// COMMIT), so tests can check the record is not made twice.
    pub lose_record_reply: Option<crate::store::Step>,
}

/// A pause of `duration` in `percent` (0..=100) of the places it applies to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pause {
    pub percent: f64,
    pub duration: Duration,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            limits: plan::Limits::default(),
            call_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(15),
            lease_margin: Duration::from_secs(1),
            recovery_interval: Duration::from_secs(5),
            crash_at: None,
            pause_before_record: None,
            lose_record_reply: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_points_round_trip_by_name() {
        for point in CrashPoint::ALL {
            assert_eq!(CrashPoint::parse(&point.name()), Some(*point));
        }
        assert_eq!(CrashPoint::After(Step::UndoPayment).name(), "after-undo-payment");
        assert_eq!(CrashPoint::parse("after-nothing"), None);
    }
}
