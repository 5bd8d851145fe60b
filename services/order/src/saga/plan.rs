//! The saga's decisions, apart from its effects: given a saga's state and
//! the outcome of its current step, what is recorded and what runs next.
//! Pure (no I/O, no clock, no randomness: the caller passes the step's age
//! and a jitter draw), so every step x every outcome class is unit-tested
//! below, as tower's retry `Policy` is tested apart from the retry layer.
//!
//! The shape (Garcia-Molina's sagas; Richardson's compensatable / pivot /
//! retriable steps):
//! - RESERVE and AUTHORIZE are compensatable. CAPTURE is the pivot. COMMIT
//!   (with CONFIRM folded into its record) is retriable: after the pivot the
//!   saga only goes forward.
//! - Before the pivot, an outage is waited out for `patience` from the start
//!   of the step (an open breaker's next probe sets the wait), then the saga
//!   compensates with SERVICE_UNAVAILABLE. A business refusal compensates at
//!   once. The saga's own broken invariants compensate with INTERNAL, never
//!   retried as an outage.
//! - After the pivot, an outage is retried for `forward_window`; then, like a
//!   refusal or a broken invariant there, the saga stops for an operator
//!   (never a silent refund). The one exception is a reservation that expired
//!   before COMMIT: the order is rejected and the captured payment refunded,
//!   and the reject detail says so.
//! - Uncertainty is sticky: once any attempt of a forward step may have
//!   reached its service (it was sent and no answer came, it was answered, or
//!   a crashed process may have sent it), the step counts as possibly done,
//!   whatever later attempts say. Compensation undoes every possibly-done
//!   step by the order's own key (a void by authorization key, a release by
//!   order id), which also leaves a tombstone that makes a late forward call
//!   hold nothing. Only a step whose every attempt the mesh itself refused
//!   to send (an open breaker, an injected abort) is certainly not done; and
//!   the payment of a *declined* authorization needs no undo: its key holds
//!   the decline, so nothing can ever be held under it.
//! - A compensating step is done only when the downstream reports the undone
//!   state; anything else is a failed attempt. After `max_compensation_
//!   attempts` (capped exponential back-off in between) the saga stops for an
//!   operator, its order left in COMPENSATING or CANCELLING.
//! - Compensation found the payment captured (a capture that landed although
//!   its answer was lost): the pivot had passed, so a placing saga turns
//!   forward again to COMMIT.

use std::time::Duration;

pub use crate::store::{Advance, OrderEvent, Pricing};
use crate::store::{OrderStatus, RejectReason, SagaKind, SagaState, Step};

/// What performing a step produced, as the decision needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    /// CONFIRM and FINISH (rows written before they were folded into the
    /// step before them) have nothing to call.
    Nothing,
    /// RESERVE: the stock is held at these prices.
    Reserved(Pricing),
    /// AUTHORIZE: the amount is held.
    Authorized { payment_id: String },
    /// CAPTURE: the amount is taken.
    Captured,
    /// COMMIT: the reserved stock is sold.
    Committed,
    /// UNDO_PAYMENT: nothing is held or taken under the order's payment key
    /// any more (voided, refunded, declined, or never made and now voided
    /// in advance).
    PaymentUndone,
    /// UNDO_PAYMENT (by key, not knowing of a capture): the payment is
    /// captured, so nothing was voided.
    PaymentFoundCaptured { payment_id: String },
    /// RELEASE: the reservation is released, returned or expired.
    StockReleased,
    /// A business refusal (and, for a declined authorization, its payment).
    Refused {
        reason: RejectReason,
        detail: String,
        declined_payment_id: Option<String>,
    },
    /// An outage (a transient status by the mesh's one classifier, or the
    /// order database failing). `maybe_sent` unless the mesh refused to send
    /// the call (then it certainly did not land); `retry_after` is an open
    /// breaker's next probe.
    Unavailable {
        detail: String,
        maybe_sent: bool,
        retry_after: Option<Duration>,
    },
    /// The saga met data it cannot act on (a downstream answer missing what
    /// it must carry, a status that contradicts the saga's record).
    Invariant { detail: String },
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Record this (a new step starts, attempts reset), then run the step it
    /// names, unless the saga is done.
    Record(Advance),
    /// Record a failed attempt with this error (and whether some attempt of
    /// the step may now have reached its service), wait, run the step again.
    Retry {
        wait: Duration,
        error: String,
        maybe_sent: bool,
    },
    /// Record the error and stop: the saga needs an operator. The order keeps
    /// its status.
    NeedsAttention { error: String },
}

/// The saga's state as the decision reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaView {
    pub kind: SagaKind,
    pub state: SagaState,
    pub step: Step,
    pub stock_maybe_reserved: bool,
    pub payment_maybe_made: bool,
    pub payment_captured: bool,
    /// Failed attempts of the current step so far.
    pub attempts: i64,
    /// Some attempt of the current step may have reached its service.
    pub step_maybe_sent: bool,
    /// How long ago the current step began.
    pub step_age: Duration,
}

/// The bounds the decision keeps: how long outages are waited out, how
/// often compensation is tried, how retries back off. `SagaConfig::limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How long a step before the pivot waits out an outage.
    pub patience: Duration,
    /// How long a step after the pivot retries an outage before it stops for
    /// an operator.
    pub forward_window: Duration,
    /// Attempts of a compensating step before it stops for an operator.
    pub max_compensation_attempts: i64,
    /// Back-off before the second attempt of a forward step; doubles up to
    /// `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The cap of a compensating step's back-off (from the same initial
    /// back-off): longer, so its bounded attempts span a real outage.
    pub compensation_max_backoff: Duration,
}

impl Default for Limits {
    /// The binary's defaults (`ordermesh serve --help` shows them).
    fn default() -> Self {
        Self {
            patience: Duration::from_secs(30),
            forward_window: Duration::from_secs(10 * 60),
            max_compensation_attempts: 12,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            compensation_max_backoff: Duration::from_secs(60),
        }
    }
}

impl Limits {
    /// The longest a saga may need its reservation for: patience at each of
    /// the three steps before COMMIT, then the forward window.
    pub fn reservation_needed(&self) -> Duration {
        self.patience
            .saturating_mul(3)
            .saturating_add(self.forward_window)
    }
}

/// A forward step's back-off: capped exponential with full jitter (`jitter`
/// in [0, 1)), so the retries of many sagas against one outage spread out.
pub fn backoff(attempts: i64, limits: &Limits, jitter: f64) -> Duration {
    capped_backoff(attempts, limits.initial_backoff, limits.max_backoff, jitter)
}

fn capped_backoff(attempts: i64, initial: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = u32::try_from(attempts.max(0)).unwrap_or(u32::MAX).min(16);
    let ceiling = initial.saturating_mul(1 << exp).min(cap);
    ceiling.mul_f64(jitter.clamp(0.0, 1.0))
}

/// A compensating step's back-off (capped at `compensation_max_backoff`).
pub fn compensation_backoff(attempts: i64, limits: &Limits, jitter: f64) -> Duration {
    capped_backoff(
        attempts,
        limits.initial_backoff,
        limits.compensation_max_backoff,
        jitter,
    )
}

/// True when a lease valid for `remaining` still covers a call of `needed`
/// plus the `margin` allowed for clock skew between processes: a worker
/// renews its lease before any call this is false for, and never calls on a
/// lease that could lapse before the call ends.
pub fn lease_covers(remaining: Duration, needed: Duration, margin: Duration) -> bool {
    remaining > needed.saturating_add(margin)
}

/// The decision: given the saga and its current step's result, what is
/// recorded and what runs next.
pub fn decide(saga: &SagaView, result: StepResult, limits: &Limits, jitter: f64) -> Decision {
    use StepResult as R;
    if saga.state == SagaState::Done {
        // Nothing runs on a finished saga; a result for it is a driver bug.
        return Decision::NeedsAttention {
            error: format!("a {:?} result arrived for a finished saga", result_name(&result)),
        };
    }
    match (saga.step, result) {
        // --- No-I/O steps kept for rows written before they were folded.
        (Step::Confirm, _) => done(OrderStatus::Confirmed),
        (Step::Finish, _) => finish(saga),

        // --- Forward, before the pivot.
        (Step::Reserve, R::Reserved(pricing)) => Decision::Record(Advance {
            step: Some(Step::Authorize),
            order_status: Some(OrderStatus::StockReserved),
            stock_maybe_reserved: Some(true),
            pricing: Some(pricing),
            ..Advance::default()
        }),
        (Step::Authorize, R::Authorized { payment_id }) => Decision::Record(Advance {
            step: Some(Step::Capture),
            order_status: Some(OrderStatus::PaymentAuthorized),
            payment_maybe_made: Some(true),
            payment_id: Some(payment_id),
            ..Advance::default()
        }),
        (Step::Capture, R::Captured) => Decision::Record(Advance {
            step: Some(Step::Commit),
            order_status: Some(OrderStatus::PaymentCaptured),
            payment_captured: Some(true),
            ..Advance::default()
        }),
        (
            Step::Reserve | Step::Authorize | Step::Capture,
            R::Refused {
                reason,
                detail,
                declined_payment_id,
            },
        ) => {
            // Answered, so sent; a decline holds its key, so nothing to undo.
            let declined = saga.step == Step::Authorize && declined_payment_id.is_some();
            let mut advance = compensation(saga, reason, detail, !declined);
            if declined {
                advance.payment_id = declined_payment_id;
            }
            Decision::Record(advance)
        }
        (
            Step::Reserve | Step::Authorize | Step::Capture,
            R::Unavailable {
                detail,
                maybe_sent,
                retry_after,
            },
        ) => {
            let maybe_sent = saga.step_maybe_sent || maybe_sent;
            if saga.step_age < limits.patience {
                Decision::Retry {
                    wait: retry_after.unwrap_or_else(|| backoff(saga.attempts, limits, jitter)),
                    error: detail,
                    maybe_sent,
                }
            } else {
                let detail = format!(
                    "{} did not succeed within {:?}: {detail}",
                    saga.step.as_str(),
                    limits.patience
                );
                Decision::Record(compensation(
                    saga,
                    RejectReason::ServiceUnavailable,
                    detail,
                    maybe_sent,
                ))
            }
        }
        (Step::Reserve | Step::Authorize | Step::Capture, R::Invariant { detail }) => {
            Decision::Record(compensation(
                saga,
                RejectReason::Internal,
                format!("{}: {detail}", saga.step.as_str()),
                true,
            ))
        }

        // --- Forward, after the pivot.
        (Step::Commit, R::Committed) => done(OrderStatus::Confirmed),
        (
            Step::Commit,
            R::Refused {
                reason: RejectReason::ReservationExpired,
                detail,
                ..
            },
        ) => Decision::Record(compensation(
            saga,
            RejectReason::ReservationExpired,
            format!("{detail}; the captured payment is refunded"),
            true,
        )),
        (Step::Commit, R::Refused { detail, .. }) => Decision::NeedsAttention {
            error: format!("COMMIT refused after the payment was captured: {detail}"),
        },
        (
            Step::Commit,
            R::Unavailable {
                detail,
                maybe_sent,
                retry_after,
            },
        ) => {
            if saga.step_age < limits.forward_window {
                Decision::Retry {
                    wait: retry_after.unwrap_or_else(|| backoff(saga.attempts, limits, jitter)),
                    error: detail,
                    maybe_sent: saga.step_maybe_sent || maybe_sent,
                }
            } else {
                Decision::NeedsAttention {
                    error: format!(
                        "COMMIT did not succeed within {:?} after the payment was captured: {detail}",
                        limits.forward_window
                    ),
                }
            }
        }
        (Step::Commit, R::Invariant { detail }) => Decision::NeedsAttention {
            error: format!("COMMIT: {detail}"),
        },

        // --- Compensation.
        (Step::UndoPayment, R::PaymentUndone) => Decision::Record(after_undo(saga)),
        (Step::UndoPayment, R::PaymentFoundCaptured { payment_id }) => {
            if saga.kind == SagaKind::Place && !saga.payment_captured {
                // A capture landed although its answer was lost: the pivot
                // passed, so the order goes forward, not into a refund.
                Decision::Record(Advance {
                    state: Some(SagaState::Running),
                    step: Some(Step::Commit),
                    order_status: Some(OrderStatus::PaymentCaptured),
                    payment_captured: Some(true),
                    payment_id: Some(payment_id),
                    reject: Some((RejectReason::NotRejected, String::new())),
                    ..Advance::default()
                })
            } else {
                compensation_failed(
                    saga,
                    "UNDO_PAYMENT found the payment captured where a refund was due".into(),
                    limits,
                    jitter,
                )
            }
        }
        (Step::Release, R::StockReleased) => finish(saga),
        (
            Step::UndoPayment | Step::Release,
            R::Unavailable {
                detail, retry_after, ..
            },
        ) => match compensation_failed(saga, detail, limits, jitter) {
            Decision::Retry {
                error,
                wait,
                maybe_sent,
            } => Decision::Retry {
                // An open breaker's probe may come later than the back-off:
                // waiting for it saves an attempt.
                wait: retry_after.map_or(wait, |probe| probe.max(wait)),
                error,
                maybe_sent,
            },
            other => other,
        },
        (Step::UndoPayment | Step::Release, R::Refused { detail, .. }) => compensation_failed(
            saga,
            format!("{} refused: {detail}", saga.step.as_str()),
            limits,
            jitter,
        ),
        (Step::UndoPayment | Step::Release, R::Invariant { detail }) => {
            compensation_failed(saga, format!("{}: {detail}", saga.step.as_str()), limits, jitter)
        }

        // --- A result that does not belong to the step: a driver bug or a
        // downstream answer the step cannot have produced.
        (step, result) => {
            let error = format!(
                "{} produced an unexpected {} result",
                step.as_str(),
                result_name(&result)
            );
            match step {
                Step::Reserve | Step::Authorize | Step::Capture => {
                    Decision::Record(compensation(saga, RejectReason::Internal, error, true))
                }
                Step::Commit => Decision::NeedsAttention { error },
                _ => compensation_failed(saga, error, limits, jitter),
            }
        }
    }
}

fn result_name(result: &StepResult) -> &'static str {
    match result {
        StepResult::Nothing => "Nothing",
        StepResult::Reserved(_) => "Reserved",
        StepResult::Authorized { .. } => "Authorized",
        StepResult::Captured => "Captured",
        StepResult::Committed => "Committed",
        StepResult::PaymentUndone => "PaymentUndone",
        StepResult::PaymentFoundCaptured { .. } => "PaymentFoundCaptured",
        StepResult::StockReleased => "StockReleased",
        StepResult::Refused { .. } => "Refused",
        StepResult::Unavailable { .. } => "Unavailable",
        StepResult::Invariant { .. } => "Invariant",
    }
}

fn done_advance(status: OrderStatus) -> Advance {
    let event = match status {
        OrderStatus::Confirmed => Some(OrderEvent::Confirmed),
        OrderStatus::Rejected => Some(OrderEvent::Rejected),
        OrderStatus::Cancelled => Some(OrderEvent::Cancelled),
        _ => None,
    };
    Advance {
        state: Some(SagaState::Done),
        step: Some(Step::Finish),
        order_status: Some(status),
        event,
        ..Advance::default()
    }
}

fn done(status: OrderStatus) -> Decision {
    Decision::Record(done_advance(status))
}

/// The terminal status of a finished compensation.
fn finish_advance(saga: &SagaView) -> Advance {
    done_advance(match saga.kind {
        SagaKind::Place => OrderStatus::Rejected,
        SagaKind::Cancel => OrderStatus::Cancelled,
    })
}

fn finish(saga: &SagaView) -> Decision {
    Decision::Record(finish_advance(saga))
}

/// Where compensation begins after a forward failure at `saga.step`:
/// every step that may have taken effect is undone by the order's key — the
/// steps recorded before, and the failed one when `step_maybe_done` (some
/// attempt of it may have reached its service).
fn compensation(saga: &SagaView, reason: RejectReason, detail: String, step_maybe_done: bool) -> Advance {
    let payment_maybe_made = saga.payment_maybe_made
        || matches!(saga.step, Step::Capture | Step::Commit)
        || (saga.step == Step::Authorize && step_maybe_done);
    let stock_maybe_reserved = saga.stock_maybe_reserved || saga.step != Step::Reserve || step_maybe_done;
    let undo = if payment_maybe_made {
        Some(Step::UndoPayment)
    } else if stock_maybe_reserved {
        Some(Step::Release)
    } else {
        None
    };
    let base = match undo {
        Some(step) => Advance {
            state: Some(SagaState::Compensating),
            step: Some(step),
            order_status: Some(OrderStatus::Compensating),
            ..Advance::default()
        },
        // Nothing can have happened downstream: rejected at once.
        None => finish_advance(saga),
    };
    Advance {
        payment_maybe_made: Some(payment_maybe_made),
        stock_maybe_reserved: Some(stock_maybe_reserved),
        reject: Some((reason, detail)),
        ..base
    }
}

/// After the payment is undone: release the stock, or finish.
fn after_undo(saga: &SagaView) -> Advance {
    if saga.stock_maybe_reserved {
        Advance {
            step: Some(Step::Release),
            payment_maybe_made: Some(false),
            ..Advance::default()
        }
    } else {
        Advance {
            payment_maybe_made: Some(false),
            ..finish_advance(saga)
        }
    }
}

/// A compensating attempt failed: retry after a capped back-off, or stop for
/// an operator once the attempts are spent.
fn compensation_failed(saga: &SagaView, error: String, limits: &Limits, jitter: f64) -> Decision {
    if saga.attempts + 1 >= limits.max_compensation_attempts {
        Decision::NeedsAttention {
            error: format!(
                "{} failed {} times, last: {error}",
                saga.step.as_str(),
                saga.attempts + 1
            ),
        }
    } else {
        Decision::Retry {
            wait: compensation_backoff(saga.attempts, limits, jitter),
            error,
            maybe_sent: saga.step_maybe_sent,
        }
    }
}

#[cfg(test)]
mod tests;
