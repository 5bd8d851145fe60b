//! The order saga, orchestrated here and durable in the order database.
//!
//! Forward: RESERVE stock -> AUTHORIZE payment -> CAPTURE -> COMMIT the
//! reservation -> CONFIRM. When a forward step fails for a business reason
//! (no stock, declined) or stays unavailable past its retry limit, the saga
//! turns to compensation: UNDO_PAYMENT (void or refund, whichever the
//! payment's state needs) -> RELEASE stock -> FINISH as REJECTED. Cancelling a
//! confirmed order runs the same compensation and finishes as CANCELLED.
//!
//! Durability: each step's outcome is recorded (with the next step) before the
//! next step starts; a worker drives a saga only while holding its lease; the
//! recovery worker resumes every saga whose lease lapsed, e.g. after a crash.
//! Idempotency: every downstream call is keyed on the order (`order_id` for
//! inventory, `order_id:step` request ids for payment), so repeating a step
//! after a crash returns the first result instead of acting twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordermesh_mesh::breaker::not_sent_reason;
use ordermesh_mesh::stack::MeshChannel;
use tokio::sync::{broadcast, watch};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use ordermesh_proto::common::v1::Money;
use ordermesh_proto::error_reasons::{inventory as inventory_reason, payment as payment_reason};
use ordermesh_proto::inventory::v1 as inventory;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::payment::v1 as payment;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh_runtime::clock;

use crate::store::{Advance, AdvanceError, Order, OrderStatus, Saga, SagaKind, SagaState, Step, Store};

/// A point at which a test can make the saga "crash": the worker stops dead,
/// writing nothing more, exactly as if the process had died there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The payment service authorized, but the outcome was not recorded.
    AfterAuthorizeBeforeRecord,
    /// The authorization was recorded; capture has not started.
    AfterAuthorizeRecorded,
}

/// Saga tuning.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// Deadline of each downstream call.
    pub call_timeout: Duration,
    /// Attempts of a step against an unavailable service before a forward
    /// step gives up (and compensates) or a compensating step is left for the
    /// recovery worker.
    pub max_step_attempts: i64,
    /// Back-off before the second attempt; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a worker's claim on a saga lasts without progress.
    pub lease: Duration,
    /// How often the recovery worker looks for orphaned sagas.
    pub recovery_interval: Duration,
    /// Test hook: where to crash, if anywhere.
    pub crash_at: Option<CrashPoint>,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(5),
            max_step_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            lease: Duration::from_secs(10),
            recovery_interval: Duration::from_secs(5),
            crash_at: None,
        }
    }
}

/// Runs sagas: at most one worker per saga in this process, fenced by the
/// database lease across processes.
#[derive(Clone)]
pub struct SagaRunner {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    inventory: InventoryServiceClient<MeshChannel>,
    payment: PaymentServiceClient<MeshChannel>,
    config: SagaConfig,
    /// This process's lease identity.
    owner: String,
    /// Sagas a worker of this process drives, each with a "drive again"
    /// flag set when more work arrived meanwhile (a cancel re-arming a saga
    /// whose worker is just finishing).
    running: Mutex<HashMap<String, bool>>,
    /// Every recorded step's order snapshot, for WatchOrder.
    updates: broadcast::Sender<Arc<Order>>,
    /// Set when the service shuts down: workers stop where they are.
    stop: watch::Sender<bool>,
}

/// Why a worker stopped before the saga finished.
#[derive(Debug)]
enum Halt {
    /// Another worker owns the saga now.
    LeaseLost,
    /// A compensating step keeps failing; the recovery worker retries later.
    Parked,
    /// The test crash hook fired.
    Crashed,
    /// The order database failed.
    Store(crate::Error),
}

impl From<AdvanceError> for Halt {
    fn from(e: AdvanceError) -> Self {
        match e {
            AdvanceError::LeaseLost(_) => Halt::LeaseLost,
            AdvanceError::Store(e) => Halt::Store(e),
        }
    }
}

impl From<crate::Error> for Halt {
    fn from(e: crate::Error) -> Self {
        Halt::Store(e)
    }
}

/// How a downstream failure is treated.
fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::ResourceExhausted
            | Code::Aborted
    )
}

/// True when the mesh answered without sending the call (open breaker,
/// injected abort, exhausted deadline): the step certainly did not happen.
fn never_sent(status: &Status) -> bool {
    not_sent_reason(status.metadata().as_ref()).is_some()
}

/// The `google.rpc.ErrorInfo` reason of a downstream error, if any.
fn error_reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// A step's result as the driver sees it.
enum Outcome {
    /// Record this and go on.
    Advance(Advance),
    /// A business failure: compensate with this reject reason and detail
    /// (and the payment, when one was declined).
    Reject {
        reason: &'static str,
        detail: String,
        payment_id: Option<String>,
    },
    /// The step's service stayed unavailable: compensate. `uncertain` when
    /// the last attempt may have reached the service (it was sent and no
    /// answer came), so the step may have taken effect downstream.
    GiveUp { detail: String, uncertain: bool },
}

impl Outcome {
    fn reject(reason: &'static str, detail: String) -> Self {
        Outcome::Reject {
            reason,
            detail,
            payment_id: None,
        }
    }
}

impl SagaRunner {
    pub fn new(
        store: Store,
        inventory: InventoryServiceClient<MeshChannel>,
        payment: PaymentServiceClient<MeshChannel>,
        config: SagaConfig,
        updates: broadcast::Sender<Arc<Order>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                inventory,
                payment,
                config,
                owner: format!("order-{}", uuid::Uuid::new_v4()),
                running: Mutex::new(HashMap::new()),
                updates,
                stop: watch::channel(false).0,
            }),
        }
    }

    /// This worker's lease identity.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// When a lease taken now ends.
    pub fn lease_until(&self) -> i64 {
        clock::now_micros().saturating_add(clock::micros(self.inner.config.lease))
    }

    /// Drives the saga of `order_id` in the background, unless this process
    /// already does; then that worker drives it once more when done.
    pub fn spawn(&self, order_id: String) {
        {
            let mut running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(again) = running.get_mut(&order_id) {
                *again = true;
                return;
            }
            running.insert(order_id.clone(), false);
        }
        let runner = self.clone();
        let mut stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            loop {
                let outcome = tokio::select! {
                    outcome = runner.drive(&order_id) => outcome,
                    _ = stop.wait_for(|stop| *stop) => return,
                };
                match &outcome {
                    Ok(()) => {}
                    Err(Halt::Crashed) => {
                        // A crashed worker writes nothing more and keeps its
                        // lease and its place in `running`, as a dead process
                        // would: only another process may resume the saga.
                        tracing::warn!(%order_id, "saga worker crashed (test hook)");
                        return;
                    }
                    Err(Halt::LeaseLost) => tracing::info!(%order_id, "saga owned by another worker"),
                    Err(Halt::Parked) => tracing::warn!(%order_id, "saga parked for the recovery worker"),
                    Err(Halt::Store(e)) => {
                        tracing::error!(%order_id, error = %e, "saga halted on a database error")
                    }
                }
                let again = {
                    let mut running = runner.inner.running.lock().unwrap_or_else(|p| p.into_inner());
                    if running.get(&order_id) == Some(&true) {
                        running.insert(order_id.clone(), false);
                        true
                    } else {
                        running.remove(&order_id);
                        false
                    }
                };
                if again {
                    continue;
                }
                let _ = runner.inner.store.release_lease(&order_id, runner.owner()).await;
                return;
            }
        });
    }

    /// Stops every worker of this process where it is (shutdown). Their
    /// sagas are durable; the next process resumes them.
    pub fn stop(&self) {
        let _ = self.inner.stop.send(true);
    }

    /// Resumes every saga whose lease lapsed, now and every
    /// `recovery_interval`, until the task is dropped.
    pub async fn recover_forever(self) {
        let mut ticker = tokio::time::interval(self.inner.config.recovery_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.inner.store.orphaned_sagas(100).await {
                Ok(orphans) => {
                    for order_id in orphans {
                        tracing::info!(%order_id, "resuming saga");
                        self.spawn(order_id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "recovery scan failed"),
            }
        }
    }

    async fn drive(&self, order_id: &str) -> Result<(), Halt> {
        let store = &self.inner.store;
        loop {
            // Renewed before every step: a worker whose lease lapsed (a long
            // stall) must not call downstream on a saga someone else owns.
            if !store
                .acquire_lease(order_id, self.owner(), self.lease_until())
                .await?
            {
                return match store.saga(order_id).await? {
                    Some(saga) if saga.state == SagaState::Done => Ok(()),
                    _ => Err(Halt::LeaseLost),
                };
            }
            let saga = store.saga(order_id).await?.ok_or(Halt::LeaseLost)?;
            let order = store.order(order_id).await?.ok_or(Halt::LeaseLost)?;
            if saga.state == SagaState::Done {
                return Ok(());
            }
            let outcome = match self.run_step(&saga, &order).await {
                Ok(outcome) => outcome,
                Err(status) if is_transient(&status) => {
                    let attempts = store
                        .record_failure(
                            order_id,
                            self.owner(),
                            &format!("{:?}: {}", status.code(), status.message()),
                        )
                        .await?;
                    tracing::warn!(%order_id, step = saga.step.as_str(), attempts, code = ?status.code(), "step failed, will retry");
                    // An open breaker answers the same until it probes
                    // again: fail fast instead of retrying into it.
                    let breaker_open = not_sent_reason(status.metadata().as_ref()) == Some("breaker");
                    if attempts < self.inner.config.max_step_attempts && !breaker_open {
                        tokio::time::sleep(self.backoff(attempts)).await;
                        continue;
                    }
                    if saga.state == SagaState::Compensating {
                        return Err(Halt::Parked);
                    }
                    Outcome::GiveUp {
                        detail: format!("{} failed: {}", saga.step.as_str(), status.message()),
                        uncertain: !never_sent(&status),
                    }
                }
                Err(status) => {
                    // A compensating step refused outright is a bug or
                    // corrupt data: retrying later is safer than giving up
                    // with money or stock held.
                    tracing::error!(%order_id, step = saga.step.as_str(), code = ?status.code(), message = status.message(), "step refused");
                    if saga.state == SagaState::Compensating {
                        store
                            .record_failure(order_id, self.owner(), status.message())
                            .await?;
                        return Err(Halt::Parked);
                    }
                    Outcome::reject(
                        "STEP_REFUSED",
                        format!("{} refused: {}", saga.step.as_str(), status.message()),
                    )
                }
            };
            if self.inner.config.crash_at == Some(CrashPoint::AfterAuthorizeBeforeRecord)
                && saga.step == Step::Authorize
            {
                return Err(Halt::Crashed);
            }
            let advance = match outcome {
                Outcome::Advance(advance) => advance,
                Outcome::Reject {
                    reason,
                    detail,
                    payment_id,
                } => {
                    let mut advance = self.compensation_start(&saga, reason, detail, false);
                    advance.payment_id = payment_id;
                    advance
                }
                Outcome::GiveUp { detail, uncertain } => {
                    self.compensation_start(&saga, "SERVICE_UNAVAILABLE", detail, uncertain)
                }
            };
            store
                .advance(order_id, self.owner(), self.lease_until(), advance)
                .await?;
            if let Some(snapshot) = store.order(order_id).await? {
                let _ = self.inner.updates.send(Arc::new(snapshot));
            }
            if self.inner.config.crash_at == Some(CrashPoint::AfterAuthorizeRecorded)
                && saga.step == Step::Authorize
            {
                return Err(Halt::Crashed);
            }
        }
    }

    fn backoff(&self, attempts: i64) -> Duration {
        let config = &self.inner.config;
        let exp = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(16);
        let ceiling = config
            .initial_backoff
            .saturating_mul(1 << exp)
            .min(config.max_backoff);
        // Full jitter, so retries of many sagas against one outage spread out.
        ceiling.mul_f64(fastrand::f64())
    }

    /// Where compensation begins after a forward failure. When the failed
    /// step's outcome is `uncertain` (its service never answered), the step
    /// may have taken effect and is undone too.
    fn compensation_start(
        &self,
        saga: &Saga,
        reason: &'static str,
        detail: String,
        uncertain: bool,
    ) -> Advance {
        tracing::info!(order_id = %saga.order_id, reason, %detail, "order rejected, compensating");
        let payment_maybe_made = saga.payment_maybe_made || (uncertain && saga.step == Step::Authorize);
        let stock_maybe_reserved = saga.stock_maybe_reserved || (uncertain && saga.step == Step::Reserve);
        let step = if payment_maybe_made {
            Step::UndoPayment
        } else if stock_maybe_reserved {
            Step::Release
        } else {
            Step::Finish
        };
        Advance {
            state: Some(SagaState::Compensating),
            step: Some(step),
            order_status: Some(OrderStatus::Compensating),
            payment_maybe_made: Some(payment_maybe_made),
            stock_maybe_reserved: Some(stock_maybe_reserved),
            reject: Some((reason.to_owned(), detail)),
            ..Advance::default()
        }
    }

    fn deadline<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.inner.config.call_timeout);
        request
    }

    async fn run_step(&self, saga: &Saga, order: &Order) -> Result<Outcome, Status> {
        match saga.step {
            Step::Reserve => self.reserve(order).await,
            Step::Authorize => self.authorize(order).await,
            Step::Capture => self.capture(order).await,
            Step::Commit => self.commit(order).await,
            Step::Confirm => Ok(Outcome::Advance(Advance {
                state: Some(SagaState::Done),
                order_status: Some(OrderStatus::Confirmed),
                ..Advance::default()
            })),
            Step::UndoPayment => self.undo_payment(saga, order).await,
            Step::Release => self.release(order).await,
            Step::Finish => Ok(Outcome::Advance(Advance {
                state: Some(SagaState::Done),
                order_status: Some(match saga.kind {
                    SagaKind::Place => OrderStatus::Rejected,
                    SagaKind::Cancel => OrderStatus::Cancelled,
                }),
                ..Advance::default()
            })),
        }
    }

    async fn reserve(&self, order: &Order) -> Result<Outcome, Status> {
        // Before the call: from here on stock may be held downstream even if
        // the answer never arrives.
        let request = inventory::ReserveStockRequest {
            order_id: order.order_id.clone(),
            lines: order
                .lines
                .iter()
                .map(|l| inventory::StockLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                })
                .collect(),
        };
        let mut client = self.inner.inventory.clone();
        match client.reserve_stock(self.deadline(request)).await {
            Ok(response) => {
                let reservation = response
                    .into_inner()
                    .reservation
                    .ok_or_else(|| Status::internal("empty reservation"))?;
                let prices = order
                    .lines
                    .iter()
                    .map(|line| {
                        reservation
                            .lines
                            .iter()
                            .find(|r| r.sku == line.sku)
                            .and_then(|r| r.unit_price.as_ref())
                            .map(|m| m.amount_minor)
                            .ok_or_else(|| Status::internal(format!("reservation lacks sku {}", line.sku)))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                // An existing reservation is replayed whatever its state; only
                // a live one lets the order go on.
                match inventory::ReservationStatus::try_from(reservation.status).unwrap_or_default() {
                    inventory::ReservationStatus::Active | inventory::ReservationStatus::Committed => {}
                    inventory::ReservationStatus::Expired => {
                        return Ok(Outcome::reject(
                            "RESERVATION_EXPIRED",
                            format!("the reservation for order {} expired", order.order_id),
                        ));
                    }
                    other => {
                        return Ok(Outcome::reject(
                            "STEP_REFUSED",
                            format!(
                                "the reservation for order {} is {}",
                                order.order_id,
                                other.as_str_name()
                            ),
                        ));
                    }
                }
                let total = reservation
                    .total
                    .ok_or_else(|| Status::internal("reservation lacks total"))?;
                Ok(Outcome::Advance(Advance {
                    step: Some(Step::Authorize),
                    order_status: Some(OrderStatus::StockReserved),
                    stock_maybe_reserved: Some(true),
                    pricing: Some((prices, total.amount_minor, total.currency_code)),
                    ..Advance::default()
                }))
            }
            Err(status) if is_transient(&status) => Err(status),
            Err(status) => {
                let reason = match error_reason(&status).as_str() {
                    inventory_reason::INSUFFICIENT_STOCK => "OUT_OF_STOCK",
                    inventory_reason::UNKNOWN_SKU => "UNKNOWN_SKU",
                    inventory_reason::MIXED_CURRENCIES => "CURRENCY_MISMATCH",
                    _ if status.code() == Code::NotFound => "UNKNOWN_SKU",
                    _ if status.code() == Code::FailedPrecondition => "OUT_OF_STOCK",
                    _ => "STEP_REFUSED",
                };
                Ok(Outcome::reject(reason, status.message().to_owned()))
            }
        }
    }

    async fn authorize_call(&self, order: &Order) -> Result<payment::Payment, Status> {
        let total = order
            .total_minor
            .ok_or_else(|| Status::internal("order has no total before payment"))?;
        let request = payment::AuthorizePaymentRequest {
            request_id: format!("{}:authorize", order.order_id),
            account_id: order.customer_id.clone(),
            amount: Some(Money {
                amount_minor: total,
                currency_code: order.currency_code.clone(),
            }),
            reference: order.order_id.clone(),
        };
        let mut client = self.inner.payment.clone();
        client
            .authorize_payment(self.deadline(request))
            .await?
            .into_inner()
            .payment
            .ok_or_else(|| Status::internal("empty payment"))
    }

    async fn authorize(&self, order: &Order) -> Result<Outcome, Status> {
        // Whether an unanswered authorization happened is learned later by
        // looking it up by request id (see undo_payment).
        match self.authorize_call(order).await {
            Ok(payment) => {
                let status = payment::PaymentStatus::try_from(payment.status).unwrap_or_default();
                if status == payment::PaymentStatus::Declined {
                    let reason =
                        match payment::DeclineReason::try_from(payment.decline_reason).unwrap_or_default() {
                            payment::DeclineReason::InsufficientFunds => "INSUFFICIENT_FUNDS",
                            payment::DeclineReason::AccountBlocked => "ACCOUNT_BLOCKED",
                            payment::DeclineReason::AmountOverLimit => "AMOUNT_OVER_LIMIT",
                            payment::DeclineReason::Unspecified => "INSUFFICIENT_FUNDS",
                        };
                    return Ok(Outcome::Reject {
                        reason,
                        detail: format!("payment {} declined", payment.payment_id),
                        payment_id: Some(payment.payment_id),
                    });
                }
                Ok(Outcome::Advance(Advance {
                    step: Some(Step::Capture),
                    order_status: Some(OrderStatus::PaymentAuthorized),
                    payment_maybe_made: Some(true),
                    payment_id: Some(payment.payment_id),
                    ..Advance::default()
                }))
            }
            Err(status) if is_transient(&status) => Err(status),
            Err(status) if status.code() == Code::NotFound => {
                Ok(Outcome::reject("UNKNOWN_CUSTOMER", status.message().to_owned()))
            }
            Err(status) if error_reason(&status) == payment_reason::CURRENCY_MISMATCH => {
                Ok(Outcome::reject("CURRENCY_MISMATCH", status.message().to_owned()))
            }
            Err(status) => Ok(Outcome::reject("STEP_REFUSED", status.message().to_owned())),
        }
    }

    async fn capture(&self, order: &Order) -> Result<Outcome, Status> {
        let request = payment::CapturePaymentRequest {
            payment_id: order.payment_id.clone(),
            request_id: format!("{}:capture", order.order_id),
        };
        let mut client = self.inner.payment.clone();
        match client.capture_payment(self.deadline(request)).await {
            Ok(_) => Ok(Outcome::Advance(Advance {
                step: Some(Step::Commit),
                order_status: Some(OrderStatus::PaymentCaptured),
                ..Advance::default()
            })),
            Err(status) if is_transient(&status) => Err(status),
            Err(status) => Ok(Outcome::reject("STEP_REFUSED", status.message().to_owned())),
        }
    }

    async fn commit(&self, order: &Order) -> Result<Outcome, Status> {
        let request = inventory::CommitReservationRequest {
            order_id: order.order_id.clone(),
        };
        let mut client = self.inner.inventory.clone();
        match client.commit_reservation(self.deadline(request)).await {
            Ok(_) => Ok(Outcome::Advance(Advance {
                step: Some(Step::Confirm),
                ..Advance::default()
            })),
            Err(status) if is_transient(&status) => Err(status),
            Err(status) => {
                let reason = match error_reason(&status).as_str() {
                    inventory_reason::RESERVATION_EXPIRED => "RESERVATION_EXPIRED",
                    _ => "STEP_REFUSED",
                };
                Ok(Outcome::reject(reason, status.message().to_owned()))
            }
        }
    }

    /// Voids an authorized payment or refunds a captured one; both are
    /// idempotent by request id, and a payment already undone is left alone.
    async fn undo_payment(&self, saga: &Saga, order: &Order) -> Result<Outcome, Status> {
        let next = Outcome::Advance(Advance {
            step: Some(if saga.stock_maybe_reserved {
                Step::Release
            } else {
                Step::Finish
            }),
            payment_maybe_made: Some(false),
            ..Advance::default()
        });
        let mut client = self.inner.payment.clone();
        let current = if order.payment_id.is_empty() {
            if order.total_minor.is_none() {
                return Ok(next);
            }
            // The authorization's outcome was never recorded: look it up by
            // its request id (without making one). An authorization still in
            // flight that lands after this lookup is the one case this cannot
            // see; the payment service's authorizations are keyed so that a
            // later replay finds it.
            let request = payment::ListPaymentsRequest {
                authorize_request_id: format!("{}:authorize", order.order_id),
                account_id: order.customer_id.clone(),
                ..Default::default()
            };
            let found = client
                .list_payments(self.deadline(request))
                .await?
                .into_inner()
                .payments;
            match found.into_iter().next() {
                Some(payment) => payment,
                None => return Ok(next),
            }
        } else {
            let request = payment::GetPaymentRequest {
                payment_id: order.payment_id.clone(),
            };
            client
                .get_payment(self.deadline(request))
                .await?
                .into_inner()
                .payment
                .ok_or_else(|| Status::internal("empty payment"))?
        };
        match payment::PaymentStatus::try_from(current.status).unwrap_or_default() {
            payment::PaymentStatus::Authorized => {
                let request = payment::VoidAuthorizationRequest {
                    payment_id: current.payment_id.clone(),
                    request_id: format!("{}:void", order.order_id),
                };
                client.void_authorization(self.deadline(request)).await?;
            }
            payment::PaymentStatus::Captured => {
                let request = payment::RefundPaymentRequest {
                    payment_id: current.payment_id.clone(),
                    request_id: format!("{}:refund", order.order_id),
                };
                client.refund_payment(self.deadline(request)).await?;
            }
            _ => {}
        }
        Ok(next)
    }

    async fn release(&self, order: &Order) -> Result<Outcome, Status> {
        let request = inventory::ReleaseReservationRequest {
            order_id: order.order_id.clone(),
        };
        let mut client = self.inner.inventory.clone();
        client.release_reservation(self.deadline(request)).await?;
        Ok(Outcome::Advance(Advance {
            step: Some(Step::Finish),
            stock_maybe_reserved: Some(false),
            ..Advance::default()
        }))
    }
}
