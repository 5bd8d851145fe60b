//! Rejections for an outage: the saga rejects an order `SERVICE_UNAVAILABLE`
//! only when a step before the capture could not go through for its whole
//! patience. The faults of the history make outage windows (each fault from
//! its start to its end plus the recovery grace: a restart to SERVING and an
//! open breaker's wait); windows that touch merge. An order so rejected is a
//! violation unless a merged window overlapping its life lasted at least the
//! patience.
//!
//! Every fault that can stall a saga counts, whichever service it hit (the
//! check errs towards excusing, so what it reports is a rejection no outage
//! explains); the gateway and NATS are not on a saga's path, so their
//! faults do not.

use super::snapshot::Snapshot;
use super::{Findings, Rule, Violation, order_end_ms, order_start_ms};
use crate::history::{FaultRecord, History};
use crate::schedule::FaultKind;

/// Whether a fault can hold up a saga: its replicas, its participants,
/// their database, the calls between them.
pub fn stalls_sagas(kind: FaultKind) -> bool {
    !matches!(
        kind,
        FaultKind::KillGateway | FaultKind::NatsStop | FaultKind::NatsWipe
    )
}

/// Merged outage windows of the faults that can stall a saga, [start, end)
/// in ms since time 0, in order.
pub fn outage_windows(faults: &[FaultRecord], grace_ms: u64) -> Vec<(i64, i64)> {
    let mut windows: Vec<(i64, i64)> = faults
        .iter()
        .filter(|f| stalls_sagas(f.fault.kind()))
        .map(|f| (f.start_ms as i64, (f.end_ms + grace_ms) as i64))
        .collect();
    windows.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (start, end) in windows {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The faults whose span (widened by `margin_ms` each side) meets [from, to].
pub fn faults_around(history: &History, from: i64, to: i64, margin_ms: i64) -> Vec<&FaultRecord> {
    history
        .faults
        .iter()
        .filter(|f| f.start_ms as i64 - margin_ms <= to && f.end_ms as i64 + margin_ms >= from)
        .collect()
}

pub fn check(history: &History, snapshot: &Snapshot, findings: &mut Findings) {
    let settings = &history.run.settings;
    let patience_ms = (settings.saga_patience_secs * 1000) as i64;
    let windows = outage_windows(&history.faults, settings.recovery_grace_ms);
    for order in &snapshot.orders {
        if order.status != "REJECTED" || order.reject_reason != "SERVICE_UNAVAILABLE" {
            continue;
        }
        let (from, to) = (order_start_ms(history, order), order_end_ms(history, order));
        let longest = windows
            .iter()
            .filter(|(start, end)| *start <= to && *end >= from)
            .map(|(start, end)| end - start)
            .max()
            .unwrap_or(0);
        if longest >= patience_ms {
            continue;
        }
        findings.push(Violation::of_order(
            Rule::UnavailableTooSoon,
            &order.order_id,
            format!(
                "rejected SERVICE_UNAVAILABLE ({:?}) after {} ms; the longest outage around it was {} ms \
                 (faults plus {} ms to recover), under the {} s patience",
                order.reject_detail,
                to - from,
                longest,
                settings.recovery_grace_ms,
                settings.saga_patience_secs
            ),
        ));
    }
}
