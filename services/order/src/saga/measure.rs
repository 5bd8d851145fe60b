//! What the saga measures (docs/metrics.md): each step result by the
//! plan's decision, compensating steps run, orders ended by status and
//! reason with their time to the end, and, read when metrics are scraped,
//! the sagas this process drives and those waiting for an operator.
//!
//! Recorded by the driver from the decision it performs, so the figures
//! say what the plan decided, never a second opinion of it.

use crate::saga::plan::Decision;
use crate::store::{Order, SagaState, Step};

pub const STEPS: &str = "ordermesh_saga_steps_total";
pub const COMPENSATIONS: &str = "ordermesh_saga_compensations_total";
pub const ENDED: &str = "ordermesh_orders_ended_total";
pub const COMPLETION: &str = "ordermesh_order_completion_seconds";
pub const IN_FLIGHT: &str = "ordermesh_sagas_in_flight";
pub const NEEDING_ATTENTION: &str = "ordermesh_sagas_needing_attention";

/// The decision's label: `advance`, `compensate`, `done`, `retry` or
/// `needs_attention`.
pub fn decision_label(decision: &Decision) -> &'static str {
    match decision {
        Decision::Record(advance) => match advance.state {
            Some(SagaState::Done) => "done",
            Some(SagaState::Compensating) => "compensate",
            _ => "advance",
        },
        Decision::Retry { .. } => "retry",
        Decision::NeedsAttention { .. } => "needs_attention",
    }
}

/// A step's result and what the plan decided on it.
pub fn decided(step: Step, decision: &Decision) {
    metrics::counter!(STEPS, "step" => step.as_str(), "decision" => decision_label(decision)).increment(1);
}

/// A compensating step about to run.
pub fn compensating(step: Step) {
    metrics::counter!(COMPENSATIONS, "step" => step.as_str()).increment(1);
}

/// An order reached its terminal status (recorded by this worker).
pub fn ended(order: &Order) {
    let reason = if order.status == crate::store::OrderStatus::Rejected {
        order.reject_reason.as_str()
    } else {
        ""
    };
    metrics::counter!(ENDED, "status" => order.status.as_str(), "reason" => reason).increment(1);
    let micros = ordermesh_runtime::clock::now_micros().saturating_sub(order.create_time);
    metrics::histogram!(COMPLETION, "status" => order.status.as_str())
        .record(std::time::Duration::from_micros(u64::try_from(micros).unwrap_or(0)).as_secs_f64());
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::Advance;

    #[test]
    fn each_decision_has_its_label() {
        let record = |state| {
            Decision::Record(Advance {
                state,
                ..Advance::default()
            })
        };
        assert_eq!(decision_label(&record(None)), "advance");
        assert_eq!(decision_label(&record(Some(SagaState::Running))), "advance");
        assert_eq!(
            decision_label(&record(Some(SagaState::Compensating))),
            "compensate"
        );
        assert_eq!(decision_label(&record(Some(SagaState::Done))), "done");
        let retry = Decision::Retry {
            wait: Duration::ZERO,
            error: String::new(),
            maybe_sent: false,
        };
        assert_eq!(decision_label(&retry), "retry");
        let park = Decision::NeedsAttention { error: String::new() };
        assert_eq!(decision_label(&park), "needs_attention");
    }
}
