//! The report: counts (orders by status, operations by outcome, faults
//! applied, events per stream), each violation with the order's status and
//! the faults around it, the sagas waiting for an operator, and what was
//! excused. Printed for people and written as JSON (`--report`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::check::outage::faults_around;
use crate::check::snapshot::Snapshot;
use crate::check::{Attention, Findings, Rule, Violation, order_end_ms, order_index, order_start_ms};
use crate::collect::settle::Settled;
use crate::history::History;
use crate::settings::RunSettings;

/// Faults this close (ms) to an order's life count as around it.
const AROUND_MS: i64 = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_secs: u64,
    pub passed: bool,
    pub run_dir: String,
    pub history: String,
    pub settings: RunSettings,
    pub orders_by_status: BTreeMap<String, usize>,
    pub rejections_by_reason: BTreeMap<String, usize>,
    /// "create OK", "cancel UNAVAILABLE", ...
    pub operations: BTreeMap<String, usize>,
    pub faults: Vec<FaultLine>,
    pub faults_by_kind: BTreeMap<String, usize>,
    pub events_per_stream: BTreeMap<String, usize>,
    pub confirmation_notices: usize,
    pub settle: Settled,
    pub violations_by_rule: BTreeMap<String, usize>,
    pub violations: Vec<ViolationLine>,
    pub attention: Vec<Attention>,
    pub excused_by_rule: BTreeMap<String, usize>,
    /// Faults the run could not apply or undo (the run itself failed).
    pub fault_errors: Vec<String>,
    pub timings_ms: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultLine {
    pub start_ms: u64,
    pub end_ms: u64,
    pub fault: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ViolationLine {
    #[serde(flatten)]
    pub violation: Violation,
    /// The order's status and life, on the history's scale.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub order: String,
    pub faults_around: Vec<String>,
}

fn rule_name(rule: Rule) -> String {
    serde_json::to_value(rule)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub struct Inputs<'a> {
    pub history: &'a History,
    pub snapshot: &'a Snapshot,
    pub findings: &'a Findings,
    pub settled: Settled,
    pub run_dir: String,
    pub history_path: String,
    pub timings_ms: BTreeMap<String, u64>,
}

pub fn build(inputs: Inputs<'_>) -> Report {
    let Inputs {
        history,
        snapshot,
        findings,
        ..
    } = inputs;
    let mut orders_by_status = BTreeMap::new();
    let mut rejections_by_reason = BTreeMap::new();
    for order in &snapshot.orders {
        *orders_by_status.entry(order.status.clone()).or_insert(0) += 1;
        if order.status == "REJECTED" {
            *rejections_by_reason
                .entry(order.reject_reason.clone())
                .or_insert(0) += 1;
        }
    }
    let mut operations = BTreeMap::new();
    for op in &history.ops {
        let kind = serde_json::to_value(op.op)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *operations.entry(format!("{kind} {}", op.code)).or_insert(0) += 1;
    }
    let mut faults_by_kind = BTreeMap::new();
    for fault in &history.faults {
        let kind = serde_json::to_value(fault.fault.kind())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *faults_by_kind.entry(kind).or_insert(0) += 1;
    }
    let faults: Vec<FaultLine> = history
        .faults
        .iter()
        .map(|f| FaultLine {
            start_ms: f.start_ms,
            end_ms: f.end_ms,
            fault: f.fault.describe(),
            error: f.error.clone(),
        })
        .collect();
    let orders = order_index(snapshot);
    let violations: Vec<ViolationLine> = findings
        .violations
        .iter()
        .map(|v| {
            let order = v.order_id.as_deref().and_then(|id| orders.get(id));
            let (order_line, around) = match order {
                Some(order) => {
                    let (from, to) = (order_start_ms(history, order), order_end_ms(history, order));
                    let around = faults_around(history, from, to, AROUND_MS)
                        .into_iter()
                        .map(|f| format!("{}-{} ms: {}", f.start_ms, f.end_ms, f.fault.describe()))
                        .collect();
                    (format!("{} {} ms to {} ms", order.status, from, to), around)
                }
                None => (String::new(), Vec::new()),
            };
            ViolationLine {
                violation: v.clone(),
                order: order_line,
                faults_around: around,
            }
        })
        .collect();
    let mut violations_by_rule = BTreeMap::new();
    for v in &findings.violations {
        *violations_by_rule.entry(rule_name(v.rule)).or_insert(0) += 1;
    }
    let mut excused_by_rule = BTreeMap::new();
    for e in &findings.excused {
        *excused_by_rule.entry(rule_name(e.rule)).or_insert(0) += 1;
    }
    let fault_errors: Vec<String> = faults
        .iter()
        .filter(|f| !f.error.is_empty())
        .map(|f| format!("{}: {}", f.fault, f.error))
        .collect();
    Report {
        seed: history.run.seed,
        duration_secs: history.run.duration_ms / 1000,
        passed: findings.violations.is_empty() && fault_errors.is_empty(),
        run_dir: inputs.run_dir,
        history: inputs.history_path,
        settings: history.run.settings,
        orders_by_status,
        rejections_by_reason,
        operations,
        faults,
        faults_by_kind,
        events_per_stream: snapshot
            .streams
            .iter()
            .map(|(name, s)| (name.clone(), s.events.len()))
            .collect(),
        confirmation_notices: snapshot.notices.len(),
        settle: inputs.settled,
        violations_by_rule,
        violations,
        attention: findings.attention.clone(),
        excused_by_rule,
        fault_errors,
        timings_ms: inputs.timings_ms,
    }
}

/// Violations of one rule printed in full; the rest are counted (all are
/// in the JSON), so one rule's flood does not hide another rule's few.
const PRINTED_PER_RULE: usize = 5;

impl Report {
    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "chaos seed {} for {} s: {}",
            self.seed,
            self.duration_secs,
            if self.passed { "PASSED" } else { "FAILED" }
        );
        let _ = writeln!(
            out,
            "  saga: patience {} s, lease {} ms, call timeout {} ms, recovery every {} ms, forward window {} s; outage grace {} ms",
            s.saga_patience_secs,
            s.saga_lease_ms,
            s.saga_call_timeout_ms,
            s.saga_recovery_interval_ms,
            s.saga_forward_window_secs,
            s.recovery_grace_ms
        );
        let _ = writeln!(out, "  orders: {}", pairs(&self.orders_by_status));
        let _ = writeln!(out, "  rejected: {}", pairs(&self.rejections_by_reason));
        let _ = writeln!(out, "  operations: {}", pairs(&self.operations));
        let _ = writeln!(out, "  events: {}", pairs(&self.events_per_stream));
        let _ = writeln!(out, "  confirmation notices: {}", self.confirmation_notices);
        let _ = writeln!(
            out,
            "  faults ({}): {}",
            self.faults.len(),
            pairs(&self.faults_by_kind)
        );
        for f in &self.faults {
            let error = if f.error.is_empty() {
                String::new()
            } else {
                format!("  FAILED: {}", f.error)
            };
            let _ = writeln!(
                out,
                "    {:>7}-{:>7} ms  {}{error}",
                f.start_ms, f.end_ms, f.fault
            );
        }
        let _ = writeln!(
            out,
            "  settled in {} ms: {} orders open, consumer backlog {}",
            self.settle.waited_ms, self.settle.open_orders, self.settle.consumer_backlog
        );
        for a in &self.attention {
            let _ = writeln!(
                out,
                "  needs attention: {} {} at {}: {}",
                a.order_id, a.status, a.step, a.last_error
            );
        }
        if !self.excused_by_rule.is_empty() {
            let _ = writeln!(out, "  excused: {}", pairs(&self.excused_by_rule));
        }
        if !self.violations.is_empty() {
            let _ = writeln!(
                out,
                "  violations ({}): {}",
                self.violations.len(),
                pairs(&self.violations_by_rule)
            );
        }
        let mut printed: BTreeMap<Rule, usize> = BTreeMap::new();
        let mut skipped = 0;
        for v in &self.violations {
            let n = printed.entry(v.violation.rule).or_insert(0);
            *n += 1;
            if *n > PRINTED_PER_RULE {
                skipped += 1;
                continue;
            }
            let order = v.violation.order_id.as_deref().unwrap_or("-");
            let _ = writeln!(
                out,
                "    [{}] {order}: {}",
                rule_name(v.violation.rule),
                v.violation.detail
            );
            if !v.order.is_empty() {
                let _ = writeln!(out, "        order {}", v.order);
            }
            for f in &v.faults_around {
                let _ = writeln!(out, "        around: {f}");
            }
        }
        if skipped > 0 {
            let _ = writeln!(out, "    ... {skipped} more in the JSON report");
        }
        for e in &self.fault_errors {
            let _ = writeln!(out, "  fault not applied: {e}");
        }
        let _ = writeln!(out, "  history: {}", self.history);
        let _ = writeln!(out, "  run directory: {}", self.run_dir);
        out
    }
}

fn pairs(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
