//! The fault schedule: a pure function of the seed, the run's duration and
//! its [`RunSettings`], so a run is replayed by its seed and the schedule is
//! tested without starting anything.
//!
//! Kinds are drawn from a shuffled deck (every kind once, then the deck is
//! shuffled again), not independently: a run long enough for one deck has
//! every kind, and no kind starves. Faults never overlap: each starts at
//! least a gap (6 to 10 s, longer than [`RunSettings::recovery_grace`]'s
//! restart and breaker wait) after the previous one ended, the first after a
//! warm-up and the last ending a quiet tail before the traffic stops. The
//! empty-store NATS restart loses the streams' history, so it happens at
//! most once, and only in a run long enough to see traffic on both sides of
//! it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::RunSettings;

/// Traffic only, before the first fault.
pub const WARMUP: Duration = Duration::from_secs(5);
/// No fault in the last stretch of the traffic.
pub const QUIET_TAIL: Duration = Duration::from_secs(10);
/// The shortest gap between one fault's end and the next fault's start.
pub const MIN_GAP: Duration = Duration::from_secs(6);
const MAX_GAP: Duration = Duration::from_secs(10);
/// The shortest run that restarts NATS with an empty store.
pub const WIPE_MIN_DURATION: Duration = Duration::from_secs(90);
/// The wipe comes within the first this-many faults, so a short run has it.
const WIPE_WITHIN: usize = 5;

/// A process the chaos run can kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proc {
    #[serde(rename = "order-0")]
    Order0,
    #[serde(rename = "order-1")]
    Order1,
    Inventory,
    Payment,
    Gateway,
}

impl Proc {
    pub const ALL: [Proc; 5] = [
        Proc::Inventory,
        Proc::Payment,
        Proc::Order0,
        Proc::Order1,
        Proc::Gateway,
    ];

    /// The process's name in logs, the history and the report.
    pub fn name(self) -> &'static str {
        match self {
            Proc::Order0 => "order-0",
            Proc::Order1 => "order-1",
            Proc::Inventory => "inventory",
            Proc::Payment => "payment",
            Proc::Gateway => "gateway",
        }
    }

    /// The `ordermesh serve` target it runs.
    pub fn target(self) -> &'static str {
        match self {
            Proc::Order0 | Proc::Order1 => "order",
            Proc::Inventory => "inventory",
            Proc::Payment => "payment",
            Proc::Gateway => "gateway",
        }
    }
}

/// A downstream of the order service, as named in its mesh policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Downstream {
    Inventory,
    Payment,
}

impl Downstream {
    pub fn name(self) -> &'static str {
        match self {
            Downstream::Inventory => "inventory",
            Downstream::Payment => "payment",
        }
    }
}

/// One fault, with how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL, down for `down_ms`, then started again.
    Kill { proc: Proc, down_ms: u64 },
    /// SIGSTOP of an order replica for `ms` (longer than its lease), then SIGCONT.
    Pause { proc: Proc, ms: u64 },
    /// nats-server stopped (SIGTERM) for `ms`, then started on the same store.
    NatsStop { ms: u64 },
    /// nats-server stopped, its store deleted, started empty after `ms`.
    NatsWipe { ms: u64 },
    /// `pg_ctl restart -m immediate`.
    PgRestart,
    /// PostgreSQL stopped (`-m immediate`) for `ms`, then started.
    PgOutage { ms: u64 },
    /// SetFaults on both order replicas: `percent` of calls to `downstream`
    /// delayed by `delay_ms`, for `ms`, then cleared.
    MeshDelay {
        downstream: Downstream,
        percent: u32,
        delay_ms: u64,
        ms: u64,
    },
    /// SetFaults on both order replicas: `percent` of calls to `downstream`
    /// aborted with UNAVAILABLE, for `ms`, then cleared.
    MeshAbort {
        downstream: Downstream,
        percent: u32,
        ms: u64,
    },
}

/// What the deck is made of: every distinct thing the run does to the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    KillOrder,
    KillInventory,
    KillPayment,
    KillGateway,
    PauseOrder,
    NatsStop,
    NatsWipe,
    PgRestart,
    PgOutage,
    MeshDelay,
    MeshAbort,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::KillOrder,
        FaultKind::KillInventory,
        FaultKind::KillPayment,
        FaultKind::KillGateway,
        FaultKind::PauseOrder,
        FaultKind::NatsStop,
        FaultKind::NatsWipe,
        FaultKind::PgRestart,
        FaultKind::PgOutage,
        FaultKind::MeshDelay,
        FaultKind::MeshAbort,
    ];
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill { proc, .. } => match proc {
                Proc::Order0 | Proc::Order1 => FaultKind::KillOrder,
                Proc::Inventory => FaultKind::KillInventory,
                Proc::Payment => FaultKind::KillPayment,
                Proc::Gateway => FaultKind::KillGateway,
            },
            Fault::Pause { .. } => FaultKind::PauseOrder,
            Fault::NatsStop { .. } => FaultKind::NatsStop,
            Fault::NatsWipe { .. } => FaultKind::NatsWipe,
            Fault::PgRestart => FaultKind::PgRestart,
            Fault::PgOutage { .. } => FaultKind::PgOutage,
            Fault::MeshDelay { .. } => FaultKind::MeshDelay,
            Fault::MeshAbort { .. } => FaultKind::MeshAbort,
        }
    }

    /// How long the fault holds (the restart that follows not included).
    pub fn span(&self) -> Duration {
        Duration::from_millis(match self {
            Fault::Kill { down_ms, .. } => *down_ms,
            Fault::Pause { ms, .. }
            | Fault::NatsStop { ms }
            | Fault::NatsWipe { ms }
            | Fault::PgOutage { ms }
            | Fault::MeshDelay { ms, .. }
            | Fault::MeshAbort { ms, .. } => *ms,
            Fault::PgRestart => 0,
        })
    }

    /// One line for people, e.g. `kill order-1 (down 1.2 s)`.
    pub fn describe(&self) -> String {
        let secs = |ms: &u64| format!("{:.1} s", *ms as f64 / 1000.0);
        match self {
            Fault::Kill { proc, down_ms } => format!("kill -9 {} (down {})", proc.name(), secs(down_ms)),
            Fault::Pause { proc, ms } => format!("SIGSTOP {} for {}", proc.name(), secs(ms)),
            Fault::NatsStop { ms } => format!("nats-server stopped for {}", secs(ms)),
            Fault::NatsWipe { ms } => format!("nats-server restarted with an empty store after {}", secs(ms)),
            Fault::PgRestart => "pg_ctl restart -m immediate".to_owned(),
            Fault::PgOutage { ms } => format!("PostgreSQL stopped for {}", secs(ms)),
            Fault::MeshDelay {
                downstream,
                percent,
                delay_ms,
                ms,
            } => format!(
                "{percent}% of order->{} calls delayed {delay_ms} ms for {}",
                downstream.name(),
                secs(ms)
            ),
            Fault::MeshAbort {
                downstream,
                percent,
                ms,
            } => format!(
                "{percent}% of order->{} calls aborted UNAVAILABLE for {}",
                downstream.name(),
                secs(ms)
            ),
        }
    }
}

/// A fault and when it starts, from the start of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub at_ms: u64,
    pub fault: Fault,
}

/// The faults of a run of `duration` with `seed`, in start order.
pub fn schedule(seed: u64, duration: Duration, settings: &RunSettings) -> Vec<Planned> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_fa17_c4a0_5000);
    let wipe_allowed = duration >= WIPE_MIN_DURATION;
    let mut deck: Vec<FaultKind> = Vec::new();
    let mut first_deck = true;
    let mut planned = Vec::new();
    let last_end = duration.saturating_sub(QUIET_TAIL);
    let mut at = WARMUP;
    loop {
        if deck.is_empty() {
            deck = FaultKind::ALL
                .into_iter()
                .filter(|k| *k != FaultKind::NatsWipe || (wipe_allowed && first_deck))
                .collect();
            rng.shuffle(&mut deck);
            if first_deck && wipe_allowed {
                // Popped from the end: place the wipe among the first few.
                let from = deck.iter().position(|k| *k == FaultKind::NatsWipe).unwrap_or(0);
                let to = deck.len() - 1 - rng.usize(..WIPE_WITHIN.min(deck.len()));
                deck.swap(from, to);
            }
            first_deck = false;
        }
        let Some(kind) = deck.pop() else { break };
        let fault = draw(kind, &mut rng, settings);
        if at + fault.span() > last_end {
            break;
        }
        planned.push(Planned {
            at_ms: millis(at),
            fault: fault.clone(),
        });
        let gap = MIN_GAP + Duration::from_millis(rng.u64(..=millis(MAX_GAP - MIN_GAP)));
        at += fault.span() + gap;
    }
    planned
}

/// The parameters of one fault of `kind`.
fn draw(kind: FaultKind, rng: &mut fastrand::Rng, settings: &RunSettings) -> Fault {
    let order = |rng: &mut fastrand::Rng| if rng.bool() { Proc::Order0 } else { Proc::Order1 };
    let downstream = |rng: &mut fastrand::Rng| {
        if rng.bool() {
            Downstream::Inventory
        } else {
            Downstream::Payment
        }
    };
    let lease = settings.saga_lease_ms;
    match kind {
        FaultKind::KillOrder => Fault::Kill {
            proc: order(rng),
            down_ms: rng.u64(200..=3_000),
        },
        FaultKind::KillInventory => Fault::Kill {
            proc: Proc::Inventory,
            down_ms: rng.u64(200..=3_000),
        },
        FaultKind::KillPayment => Fault::Kill {
            proc: Proc::Payment,
            down_ms: rng.u64(200..=3_000),
        },
        FaultKind::KillGateway => Fault::Kill {
            proc: Proc::Gateway,
            down_ms: rng.u64(200..=3_000),
        },
        FaultKind::PauseOrder => Fault::Pause {
            proc: order(rng),
            ms: rng.u64(lease * 3 / 2..=lease * 5 / 2),
        },
        FaultKind::NatsStop => Fault::NatsStop {
            ms: rng.u64(3_000..=10_000),
        },
        FaultKind::NatsWipe => Fault::NatsWipe {
            ms: rng.u64(2_000..=5_000),
        },
        FaultKind::PgRestart => Fault::PgRestart,
        FaultKind::PgOutage => Fault::PgOutage {
            ms: rng.u64(settings.consumer_backoff_ms + 1_000..=10_000),
        },
        FaultKind::MeshDelay => Fault::MeshDelay {
            downstream: downstream(rng),
            percent: rng.u32(50..=100),
            delay_ms: rng.u64(200..=2_500),
            ms: rng.u64(4_000..=12_000),
        },
        FaultKind::MeshAbort => Fault::MeshAbort {
            downstream: downstream(rng),
            percent: rng.u32(30..=100),
            ms: rng.u64(3_000..=10_000),
        },
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
