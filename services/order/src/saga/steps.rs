//! The saga's effects: one downstream call per step, keyed on the order so
//! that repeating it returns the first result, and its answer mapped to the
//! [`StepResult`] the decision reads. No decisions here.
//!
//! Keys: `ReserveStock` / `CommitReservation` / `ReleaseReservation` by
//! order id; payment request ids `<order_id>:authorize`, `:capture`, `:void`,
//! `:refund`. Undoing is by the same keys: a void names the authorization
//! by its request id (voiding it in advance if it never arrived), a release
//! names the order (leaving a placeholder if nothing was reserved).
//!
//! Failures are sorted once: a status the downstream's classifier (the mesh's
//! one classifier) calls a server fault is an outage, anything else is the
//! service's answer. An answer the saga cannot act on (a reservation without
//! a total, a payment in a status the call cannot produce) is a broken
//! invariant, never an outage.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

use ordermesh_mesh::breaker::Caller;
use ordermesh_mesh::refused::NotSent;
use ordermesh_mesh::stack::{Downstream, MeshChannel};
use ordermesh_proto::common::v1::Money;
use ordermesh_proto::error_reasons::{inventory as inventory_reason, payment as payment_reason};
use ordermesh_proto::inventory::v1 as inventory;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::payment::v1 as payment;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;

use super::plan::{Pricing, StepResult};
use crate::store::{Order, RejectReason, Saga, Step};

/// A downstream service as the saga calls it: the client and its mesh
/// handles (classifier, breaker).
#[derive(Clone)]
pub struct Participant<C> {
    pub client: C,
    pub mesh: Downstream,
}

#[derive(Clone)]
pub struct Steps {
    pub inventory: Participant<InventoryServiceClient<MeshChannel>>,
    pub payment: Participant<PaymentServiceClient<MeshChannel>>,
    /// Deadline of each downstream call.
    pub call_timeout: Duration,
}

/// The AuthorizePayment request id of an order: the key every payment
/// call and its undo name the authorization by.
pub fn authorize_key(order_id: &str) -> String {
    format!("{order_id}:authorize")
}

fn error_reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

fn invariant(detail: impl Into<String>) -> StepResult {
    StepResult::Invariant {
        detail: detail.into(),
    }
}

fn refused(reason: RejectReason, status: &Status) -> StepResult {
    StepResult::Refused {
        reason,
        detail: status.message().to_owned(),
        declined_payment_id: None,
    }
}

/// An outage or an answer, by the participant's classifier; answers are
/// mapped to a reject reason by `reason`.
fn failed(mesh: &Downstream, status: Status, reason: impl FnOnce(&Status) -> RejectReason) -> StepResult {
    if mesh.is_transient(&status) {
        StepResult::Unavailable {
            detail: format!("{:?}: {}", status.code(), status.message()),
            maybe_sent: NotSent::of_status(&status).is_none(),
            retry_after: mesh.breaker_retry_after(&status),
        }
    } else {
        let reason = reason(&status);
        refused(reason, &status)
    }
}

impl Steps {
    /// A call of a step of `order`'s saga, with the step's deadline, made
    /// for that order (to the breaker, each order is a caller of its own, so
    /// one order failing again and again is one caller).
    fn request<T>(&self, order: &Order, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.call_timeout);
        request.extensions_mut().insert(Caller::of(&order.order_id));
        request
    }

    /// Whether `step` calls a downstream service (CONFIRM and FINISH do not).
    pub fn calls(step: Step) -> bool {
        !matches!(step, Step::Confirm | Step::Finish)
    }

    pub async fn run(&self, saga: &Saga, order: &Order) -> StepResult {
        match saga.step {
            Step::Reserve => self.reserve(order).await,
            Step::Authorize => self.authorize(order).await,
            Step::Capture => self.capture(order).await,
            Step::Commit => self.commit(order).await,
            Step::Confirm | Step::Finish => StepResult::Nothing,
            Step::UndoPayment => self.undo_payment(saga, order).await,
            Step::Release => self.release(order).await,
        }
    }

    async fn reserve(&self, order: &Order) -> StepResult {
        let request = inventory::ReserveStockRequest {
            order_id: order.order_id.clone(),
            customer_id: order.customer_id.clone(),
            lines: order
                .lines
                .iter()
                .map(|l| inventory::StockLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                })
                .collect(),
        };
        let mut client = self.inventory.client.clone();
        let reservation = match client.reserve_stock(self.request(order, request)).await {
            Ok(response) => response.into_inner().reservation,
            Err(status) => {
                return failed(&self.inventory.mesh, status, |status| {
                    match error_reason(status).as_str() {
                        inventory_reason::INSUFFICIENT_STOCK => RejectReason::OutOfStock,
                        inventory_reason::UNKNOWN_SKU => RejectReason::UnknownSku,
                        inventory_reason::MIXED_CURRENCIES => RejectReason::CurrencyMismatch,
                        _ if status.code() == Code::NotFound => RejectReason::UnknownSku,
                        _ if status.code() == Code::FailedPrecondition => RejectReason::OutOfStock,
                        _ => RejectReason::StepRefused,
                    }
                });
            }
        };
        let Some(reservation) = reservation else {
            return invariant("ReserveStock answered without a reservation");
        };
        // An existing reservation is replayed whatever its state; only a
        // live one lets the order go on.
        match inventory::ReservationStatus::try_from(reservation.status).unwrap_or_default() {
            inventory::ReservationStatus::Active | inventory::ReservationStatus::Committed => {}
            inventory::ReservationStatus::Expired => {
                return StepResult::Refused {
                    reason: RejectReason::ReservationExpired,
                    detail: format!("the reservation for order {} expired", order.order_id),
                    declined_payment_id: None,
                };
            }
            other => {
                return StepResult::Refused {
                    reason: RejectReason::StepRefused,
                    detail: format!(
                        "the reservation for order {} is {}",
                        order.order_id,
                        other.as_str_name()
                    ),
                    declined_payment_id: None,
                };
            }
        }
        let mut unit_prices = Vec::with_capacity(order.lines.len());
        for line in &order.lines {
            let price = reservation
                .lines
                .iter()
                .find(|r| r.sku == line.sku)
                .and_then(|r| r.unit_price.as_ref())
                .map(|m| m.amount_minor);
            match price {
                Some(price) => unit_prices.push(price),
                None => return invariant(format!("the reservation lacks sku {}", line.sku)),
            }
        }
        let Some(total) = reservation.total else {
            return invariant("the reservation lacks a total");
        };
        StepResult::Reserved(Pricing {
            unit_prices,
            total_minor: total.amount_minor,
            currency_code: total.currency_code,
        })
    }

    async fn authorize(&self, order: &Order) -> StepResult {
        let Some(total) = order.total_minor else {
            return invariant("the order has no total before payment");
        };
        let request = payment::AuthorizePaymentRequest {
            request_id: authorize_key(&order.order_id),
            account_id: order.customer_id.clone(),
            amount: Some(Money::new(total, &order.currency_code)),
            reference: order.order_id.clone(),
        };
        let mut client = self.payment.client.clone();
        let payment = match client.authorize_payment(self.request(order, request)).await {
            Ok(response) => response.into_inner().payment,
            Err(status) => {
                return failed(&self.payment.mesh, status, |status| {
                    match error_reason(status).as_str() {
                        payment_reason::CURRENCY_MISMATCH => RejectReason::CurrencyMismatch,
                        _ if status.code() == Code::NotFound => RejectReason::UnknownCustomer,
                        _ => RejectReason::StepRefused,
                    }
                });
            }
        };
        let Some(payment) = payment else {
            return invariant("AuthorizePayment answered without a payment");
        };
        match payment::PaymentStatus::try_from(payment.status).unwrap_or_default() {
            payment::PaymentStatus::Authorized => StepResult::Authorized {
                payment_id: payment.payment_id,
            },
            payment::PaymentStatus::Declined => {
                use payment::DeclineReason as D;
                let reason = match D::try_from(payment.decline_reason).unwrap_or_default() {
                    D::InsufficientFunds => RejectReason::InsufficientFunds,
                    D::AccountBlocked => RejectReason::AccountBlocked,
                    D::AmountOverLimit => RejectReason::AmountOverLimit,
                    D::Unspecified => {
                        return invariant(format!(
                            "payment {} declined without a reason",
                            payment.payment_id
                        ));
                    }
                };
                StepResult::Refused {
                    reason,
                    detail: format!("payment {} declined", payment.payment_id),
                    declined_payment_id: Some(payment.payment_id),
                }
            }
            other => invariant(format!(
                "AuthorizePayment answered payment {} {}",
                payment.payment_id,
                other.as_str_name()
            )),
        }
    }

    async fn capture(&self, order: &Order) -> StepResult {
        if order.payment_id.is_empty() {
            return invariant("no payment recorded before capture");
        }
        let request = payment::CapturePaymentRequest {
            payment_id: order.payment_id.clone(),
            request_id: format!("{}:capture", order.order_id),
        };
        let mut client = self.payment.client.clone();
        match client.capture_payment(self.request(order, request)).await {
            Ok(response) => match response.into_inner().payment.map(|p| p.status()) {
                Some(payment::PaymentStatus::Captured) => StepResult::Captured,
                other => invariant(format!("CapturePayment answered {other:?}")),
            },
            Err(status) => failed(&self.payment.mesh, status, |status| {
                match error_reason(status).as_str() {
                    payment_reason::AUTHORIZATION_EXPIRED => RejectReason::AuthorizationExpired,
                    _ => RejectReason::StepRefused,
                }
            }),
        }
    }

    async fn commit(&self, order: &Order) -> StepResult {
        let request = inventory::CommitReservationRequest {
            order_id: order.order_id.clone(),
        };
        let mut client = self.inventory.client.clone();
        match client.commit_reservation(self.request(order, request)).await {
            Ok(response) => match response.into_inner().reservation.map(|r| r.status()) {
                Some(inventory::ReservationStatus::Committed) => StepResult::Committed,
                other => invariant(format!("CommitReservation answered {other:?}")),
            },
            Err(status) => failed(&self.inventory.mesh, status, |status| {
                match error_reason(status).as_str() {
                    inventory_reason::RESERVATION_EXPIRED => RejectReason::ReservationExpired,
                    _ => RejectReason::StepRefused,
                }
            }),
        }
    }

    /// Refunds a payment known to be captured; otherwise voids by the
    /// authorization key, which also voids it in advance when no
    /// authorization arrived (yet).
    async fn undo_payment(&self, saga: &Saga, order: &Order) -> StepResult {
        let mut client = self.payment.client.clone();
        if saga.payment_captured {
            if order.payment_id.is_empty() {
                return invariant("the payment is captured but its id was not recorded");
            }
            let request = payment::RefundPaymentRequest {
                payment_id: order.payment_id.clone(),
                request_id: format!("{}:refund", order.order_id),
            };
            return match client.refund_payment(self.request(order, request)).await {
                Ok(response) => match response.into_inner().payment.map(|p| p.status()) {
                    Some(payment::PaymentStatus::Refunded) => StepResult::PaymentUndone,
                    other => invariant(format!("RefundPayment answered {other:?}")),
                },
                Err(status) => failed(&self.payment.mesh, status, |_| RejectReason::StepRefused),
            };
        }
        let request = payment::VoidAuthorizationRequest {
            payment_id: String::new(),
            request_id: format!("{}:void", order.order_id),
            authorize_request_id: authorize_key(&order.order_id),
        };
        match client.void_authorization(self.request(order, request)).await {
            Ok(response) => {
                let Some(payment) = response.into_inner().payment else {
                    // No authorization was made; none can be now.
                    return StepResult::PaymentUndone;
                };
                use payment::PaymentStatus as P;
                match payment.status() {
                    P::Voided | P::Declined | P::Refunded => StepResult::PaymentUndone,
                    P::Captured => StepResult::PaymentFoundCaptured {
                        payment_id: payment.payment_id,
                    },
                    other => invariant(format!(
                        "VoidAuthorization answered payment {} {}",
                        payment.payment_id,
                        other.as_str_name()
                    )),
                }
            }
            Err(status) => failed(&self.payment.mesh, status, |_| RejectReason::StepRefused),
        }
    }

    /// Done only when inventory reports the stock back: released, returned
    /// (a committed reservation's sold units) or expired.
    async fn release(&self, order: &Order) -> StepResult {
        let request = inventory::ReleaseReservationRequest {
            order_id: order.order_id.clone(),
        };
        let mut client = self.inventory.client.clone();
        match client.release_reservation(self.request(order, request)).await {
            Ok(response) => {
                use inventory::ReservationStatus as S;
                match response.into_inner().reservation.map(|r| r.status()) {
                    Some(S::Released | S::Returned | S::Expired) => StepResult::StockReleased,
                    other => invariant(format!("ReleaseReservation answered {other:?}")),
                }
            }
            Err(status) => failed(&self.inventory.mesh, status, |_| RejectReason::StepRefused),
        }
    }
}
