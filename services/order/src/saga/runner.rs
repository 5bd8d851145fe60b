//! The saga's workers: they perform what [`plan::decide`] decides and nothing
//! else. A worker holds the saga's lease, keeps the saga and its order in
//! memory (read once when it starts, then updated from what it records: no
//! read per step), calls downstream only while its lease covers the call,
//! and records each outcome fenced on its view of the saga (the lease owner
//! and the row's `version`, see `store::sagas`): a worker whose view is stale
//! writes nothing and stops.
//!
//! At most one worker per saga per process (`running`, with a "drive again"
//! flag for work that arrives while a worker finishes, and a wake-up for a
//! worker waiting out a back-off); across processes the lease decides. A
//! worker waiting out a back-off keeps renewing its lease, so one process and
//! several behave alike. The recovery worker resumes every unfinished saga
//! whose lease lapsed (after a crash), except those stopped for an operator.
//!
//! A record whose reply was lost (the connection broke during COMMIT) may
//! have landed: the worker reads the row's version back and goes on from the
//! record if it did, or counts a failed attempt if it did not; it never
//! decides again on a view the database may have left behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::Instrument;

use ordermesh_runtime::clock;

use super::plan::{self, Advance, Decision, OrderEvent, StepResult};
use super::steps::Steps;
use super::{CrashPoint, SagaConfig};
use crate::error::Error;
use crate::store::{
    AdvanceError, Applied, Created, Fence, NewOrder, Order, OrderStatus, Saga, SagaState, Store,
};
use crate::watch::WatchHub;

/// Runs sagas: at most one worker per saga in this process, fenced by the
/// database lease across processes.
#[derive(Clone)]
pub struct SagaRunner {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    steps: Steps,
    config: SagaConfig,
    limits: plan::Limits,
    /// This process's lease identity.
    owner: String,
    /// Sagas a worker of this process drives.
    running: Mutex<HashMap<String, Slot>>,
    watch: WatchHub,
    /// Set when the service shuts down: workers stop where they are.
    stop: watch::Sender<bool>,
    /// Sagas this process took up without having started them (recovery,
    /// re-drive): for tests and operators.
    resumed: AtomicU64,
    /// Chaos-test hook (`SagaConfig::lose_record_reply`): set once a reply
    /// was "lost".
    reply_lost: std::sync::atomic::AtomicBool,
}

/// A saga this process drives: whether to drive it once more when its worker
/// ends (work arrived meanwhile), and how to wake its worker from a back-off
/// so it checks at once whether its view is still the saga's.
struct Slot {
    again: bool,
    wake: Arc<Notify>,
}

/// Tells the watch hub that a saga's worker ended, when dropped.
struct Released {
    watch: WatchHub,
    order_id: String,
}

impl Drop for Released {
    fn drop(&mut self) {
        self.watch.released(&self.order_id);
    }
}

/// A saga being driven: its state, its order, and until when (by this
/// process's monotonic clock) the lease this worker wrote is certainly
/// still its own.
struct Driven {
    saga: Saga,
    order: Order,
    lease_valid_until: Instant,
}

/// Why a worker stopped before the saga finished.
#[derive(Debug)]
enum Halt {
    /// Another worker owns the saga now.
    LeaseLost,
    /// Stopped for an operator.
    NeedsAttention,
    /// The service is shutting down.
    Stopped,
    /// The order database failed where nothing could be recorded.
    Store(Error),
}

impl From<AdvanceError> for Halt {
    fn from(e: AdvanceError) -> Self {
        match e {
            AdvanceError::LeaseLost(_) => Halt::LeaseLost,
            AdvanceError::Store(e) => Halt::Store(e),
        }
    }
}

impl From<Error> for Halt {
    fn from(e: Error) -> Self {
        Halt::Store(e)
    }
}

impl Driven {
    fn view(&self) -> plan::SagaView {
        let age = clock::now_micros().saturating_sub(self.saga.step_since).max(0);
        plan::SagaView {
            kind: self.saga.kind,
            state: self.saga.state,
            step: self.saga.step,
            stock_maybe_reserved: self.saga.stock_maybe_reserved,
            payment_maybe_made: self.saga.payment_maybe_made,
            payment_captured: self.saga.payment_captured,
            attempts: self.saga.attempts,
            step_maybe_sent: self.saga.step_maybe_sent,
            step_age: Duration::from_micros(u64::try_from(age).unwrap_or(0)),
        }
    }

    /// What the database now holds after `advance` was recorded.
    fn apply(&mut self, advance: &Advance, applied: Applied) {
        let (saga, order) = (&mut self.saga, &mut self.order);
        if let Some(state) = advance.state {
            saga.state = state;
        }
        if let Some(step) = advance.step {
            saga.step = step;
        }
        if let Some(v) = advance.stock_maybe_reserved {
            saga.stock_maybe_reserved = v;
        }
        if let Some(v) = advance.payment_maybe_made {
            saga.payment_maybe_made = v;
        }
        if let Some(v) = advance.payment_captured {
            saga.payment_captured = v;
        }
        saga.attempts = 0;
        saga.step_maybe_sent = false;
        saga.last_error.clear();
        saga.step_since = applied.update_time;
        if let Some(status) = advance.order_status {
            order.status = status;
        }
        if let Some(payment_id) = &advance.payment_id {
            order.payment_id.clone_from(payment_id);
        }
        if let Some((reason, detail)) = &advance.reject {
            order.reject_reason = *reason;
            order.reject_detail.clone_from(detail);
        }
        if let Some(pricing) = &advance.pricing {
            order.total_minor = Some(pricing.total_minor);
            order.currency_code.clone_from(&pricing.currency_code);
            for (line, price) in order.lines.iter_mut().zip(&pricing.unit_prices) {
                line.unit_price_minor = Some(*price);
            }
        }
        order.update_time = applied.update_time;
        order.version = applied.version;
    }
}

impl SagaRunner {
    pub fn new(store: Store, steps: Steps, config: SagaConfig, watch: WatchHub) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                steps,
                limits: config.limits.clone(),
                config,
                owner: format!("order-{}", uuid::Uuid::new_v4()),
                running: Mutex::new(HashMap::new()),
                watch,
                stop: watch::channel(false).0,
                resumed: AtomicU64::new(0),
                reply_lost: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// This worker's lease identity.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// How many sagas this process took up that it was not driving (after
    /// another worker's lease lapsed, or on an operator's re-drive).
    pub fn resumed(&self) -> u64 {
        self.inner.resumed.load(Ordering::Relaxed)
    }

    /// How many sagas a worker of this process drives now.
    pub fn driving(&self) -> usize {
        self.inner.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// A lease taken now: its end in the database (wall clock) and in this
    /// process (monotonic, counted from before the write).
    fn new_lease(&self) -> (i64, Instant) {
        let lease = self.inner.config.lease;
        (
            clock::now_micros().saturating_add(clock::micros(lease)),
            Instant::now() + lease,
        )
    }

    /// Records a new order with its saga and starts driving it; a replayed
    /// request returns the first order and starts nothing.
    pub async fn place(&self, new: &NewOrder) -> Result<Created, Error> {
        let (until, valid_until) = self.new_lease();
        let created = self.inner.store.create_order(new, self.owner(), until).await?;
        if let Created::New(order, saga) = &created {
            self.spawn(
                &order.order_id,
                Some(Driven {
                    saga: saga.clone(),
                    order: order.clone(),
                    lease_valid_until: valid_until,
                }),
            );
        }
        Ok(created)
    }

    /// Accepts the cancel of a confirmed order and starts undoing it.
    pub async fn cancel(&self, order_id: &str) -> Result<Order, Error> {
        let (until, valid_until) = self.new_lease();
        let (order, armed) = self
            .inner
            .store
            .start_cancel(order_id, self.owner(), until)
            .await?;
        if let Some(saga) = armed {
            self.crash_point(CrashPoint::CancelAccepted).await;
            tracing::info!(%order_id, "cancelling order");
            self.inner.watch.publish(&order);
            self.spawn(
                order_id,
                Some(Driven {
                    saga,
                    order: order.clone(),
                    lease_valid_until: valid_until,
                }),
            );
        }
        Ok(order)
    }

    /// Re-drives a saga an operator fixed the cause of (or one whose lease
    /// lapsed). Returns the saga as it is now.
    pub async fn retry(&self, order_id: &str) -> Result<Saga, Error> {
        let (until, _) = self.new_lease();
        let store = &self.inner.store;
        if let Some(saga) = store.retry(order_id, self.owner(), until).await? {
            tracing::info!(%order_id, step = saga.step.as_str(), "saga re-driven by an operator");
            self.spawn(order_id, None);
            return Ok(saga);
        }
        match store.saga(order_id).await? {
            Some(saga) if saga.state == SagaState::Done => Err(Error::SagaFinished {
                order_id: order_id.into(),
            }),
            Some(saga) => Ok(saga),
            None => Err(Error::NotFound {
                order_id: order_id.into(),
            }),
        }
    }

    /// Drives the saga of `order_id` in the background, unless this process
    /// already does; then that worker is woken to check its view (a cancel or
    /// a retry changed the saga: its next fenced write fails and it stops)
    /// and the saga is driven once more, afresh, when it ends.
    fn spawn(&self, order_id: &str, preloaded: Option<Driven>) {
        self.spawn_under(order_id, preloaded, None);
    }

    /// [`SagaRunner::spawn`], its span the child of `parent` rather than of
    /// the current span.
    fn spawn_under(&self, order_id: &str, preloaded: Option<Driven>, parent: Option<opentelemetry::Context>) {
        let wake = {
            let mut running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = running.get_mut(order_id) {
                slot.again = true;
                slot.wake.notify_one();
                return;
            }
            let wake = Arc::new(Notify::new());
            running.insert(
                order_id.to_owned(),
                Slot {
                    again: false,
                    wake: wake.clone(),
                },
            );
            wake
        };
        let runner = self.clone();
        let order_id = order_id.to_owned();
        let mut stop = self.inner.stop.subscribe();
        // The saga's span: a child of the span that started it (CreateOrder's
        // or CancelOrder's server span), so its steps, and the calls they
        // make, join that request's trace.
        let span = tracing::info_span!(
            "saga",
            otel.name = "saga",
            ordermesh.order_id = %order_id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        if let Some(parent) = parent {
            ordermesh_mesh::trace::set_parent(&span, parent);
        }
        ordermesh_mesh::trace::record_ids(&span);
        tokio::spawn(async move {
            // However the worker ends, new watchers read the order again.
            let _released = Released {
                watch: runner.inner.watch.clone(),
                order_id: order_id.clone(),
            };
            let mut preloaded = preloaded;
            loop {
                let outcome = tokio::select! {
                    outcome = runner.drive(&order_id, preloaded.take(), &wake) => outcome,
                    _ = stop.wait_for(|stop| *stop) => Err(Halt::Stopped),
                };
                match &outcome {
                    Ok(()) | Err(Halt::NeedsAttention) => {}
                    Err(Halt::Stopped) => {
                        // Shutting down: hand the saga to the next process at
                        // once instead of after the lease lapses.
                        let _ = runner.inner.store.release_lease(&order_id, runner.owner()).await;
                        return;
                    }
                    Err(Halt::LeaseLost) => {
                        tracing::info!(%order_id, "saga changed under this worker (another owner, a cancel or a retry)")
                    }
                    Err(Halt::Store(e)) => {
                        tracing::error!(%order_id, error = %e, "saga halted on a database error; recovery resumes it")
                    }
                }
                let again = {
                    let mut running = runner.inner.running.lock().unwrap_or_else(|p| p.into_inner());
                    match running.get_mut(&order_id) {
                        Some(slot) if slot.again => {
                            slot.again = false;
                            true
                        }
                        _ => {
                            running.remove(&order_id);
                            false
                        }
                    }
                };
                if !again {
                    return;
                }
            }
        }.instrument(span));
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
                    for (order_id, traceparent) in orphans {
                        tracing::info!(%order_id, "resuming saga");
                        // Resumed in the order's own trace.
                        let parent = ordermesh_mesh::trace::context_of(&traceparent);
                        self.spawn_under(&order_id, None, Some(parent));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "recovery scan failed"),
            }
        }
    }

    /// Freezes this worker for good at `point` when the crash-test hook names
    /// it (the test then SIGKILLs the process).
    async fn crash_point(&self, point: CrashPoint) {
        if self.inner.config.crash_at == Some(point) {
            eprintln!("{}", point.announcement());
            std::future::pending::<()>().await;
        }
    }

    /// Takes the lease of a saga this process does not hold yet, and reads it.
    async fn take(&self, order_id: &str) -> Result<Option<Driven>, Halt> {
        let (until, valid_until) = self.new_lease();
        if !self
            .inner
            .store
            .acquire_lease(order_id, self.owner(), until)
            .await?
        {
            return match self.inner.store.saga(order_id).await? {
                Some(saga) if saga.state == SagaState::Done || saga.needs_attention => Ok(None),
                _ => Err(Halt::LeaseLost),
            };
        }
        let Some((mut saga, order)) = self.inner.store.load(order_id).await? else {
            return Ok(None);
        };
        self.inner.resumed.fetch_add(1, Ordering::Relaxed);
        // Resumed after another worker (perhaps a crashed process, which
        // recorded nothing of an attempt in flight): its current step may
        // have been sent.
        saga.step_maybe_sent = true;
        Ok(Some(Driven {
            saga,
            order,
            lease_valid_until: valid_until,
        }))
    }

    /// The fence of this worker's writes: this process, at the version of
    /// the saga the worker last read or wrote.
    fn fence<'a>(&'a self, driven: &Driven) -> Fence<'a> {
        Fence {
            owner: self.owner(),
            version: driven.order.version,
        }
    }

    /// Makes sure the lease covers a call: renews it when what is left would
    /// not outlast the call plus the skew margin.
    async fn ensure_lease(&self, driven: &mut Driven) -> Result<(), Halt> {
        let config = &self.inner.config;
        let remaining = driven.lease_valid_until.saturating_duration_since(Instant::now());
        if plan::lease_covers(remaining, config.call_timeout, config.lease_margin) {
            return Ok(());
        }
        self.renew(driven).await
    }

    /// Renews the lease, fenced on the worker's view: fails when the saga
    /// changed since (a cancel, a retry, another owner).
    async fn renew(&self, driven: &mut Driven) -> Result<(), Halt> {
        let (until, valid_until) = self.new_lease();
        if !self
            .inner
            .store
            .renew_lease(&driven.saga.order_id, self.fence(driven), until)
            .await?
        {
            return Err(Halt::LeaseLost);
        }
        driven.lease_valid_until = valid_until;
        Ok(())
    }

    async fn drive(&self, order_id: &str, preloaded: Option<Driven>, wake: &Notify) -> Result<(), Halt> {
        let mut driven = match preloaded {
            Some(driven) => driven,
            None => match self.take(order_id).await? {
                Some(driven) => driven,
                None => return Ok(()),
            },
        };
        self.inner.watch.driving(&driven.order);
        loop {
            if driven.saga.state == SagaState::Done {
                return Ok(());
            }
            let step = driven.saga.step;
            let span = tracing::info_span!(
                "saga.step",
                otel.name = %format!("saga {}", step.as_str()),
                ordermesh.saga.step = step.as_str(),
                ordermesh.saga.compensating = driven.saga.state == SagaState::Compensating,
                ordermesh.saga.decision = tracing::field::Empty,
            );
            let result = async {
                if !Steps::calls(step) {
                    return Ok(StepResult::Nothing);
                }
                self.ensure_lease(&mut driven).await?;
                if driven.saga.state == SagaState::Compensating {
                    super::measure::compensating(step);
                }
                let result = self.inner.steps.run(&driven.saga, &driven.order).await;
                self.crash_point(CrashPoint::After(step)).await;
                if let Some(pause) = self.inner.config.pause_before_record
                    && fastrand::f64() * 100.0 < pause.percent
                {
                    tokio::time::sleep(pause.duration).await;
                }
                Ok::<_, Halt>(result)
            }
            .instrument(span.clone())
            .await?;
            let decision = plan::decide(&driven.view(), result, &self.inner.limits, fastrand::f64());
            super::measure::decided(step, &decision);
            span.record(
                "ordermesh.saga.decision",
                super::measure::decision_label(&decision),
            );
            self.perform(&mut driven, decision, wake).instrument(span).await?;
        }
    }

    /// Performs a decision: records it, or counts a failed attempt and waits,
    /// or stops the saga for an operator.
    async fn perform(&self, driven: &mut Driven, decision: Decision, wake: &Notify) -> Result<(), Halt> {
        let store = &self.inner.store;
        let order_id = driven.saga.order_id.clone();
        match decision {
            Decision::Record(advance) => {
                let event = advance.event.map(|kind| self.order_event(driven, &advance, kind));
                let (until, valid_until) = self.new_lease();
                let recorded = store
                    .advance(&order_id, self.fence(driven), until, &advance, event.as_ref())
                    .await;
                let recorded = self.maybe_lose_reply(driven, recorded);
                let recorded = match recorded {
                    Err(AdvanceError::Store(e)) => self.landed(driven, e).await?,
                    other => other,
                };
                match recorded {
                    Ok(applied) => {
                        let from = driven.saga.step;
                        driven.apply(&advance, applied);
                        driven.lease_valid_until = valid_until;
                        if advance.order_status.is_some_and(OrderStatus::is_terminal) {
                            super::measure::ended(&driven.order);
                        }
                        self.inner.watch.publish(&driven.order);
                        if let Some((reason, detail)) = &advance.reject
                            && !detail.is_empty()
                        {
                            tracing::info!(%order_id, reason = reason.as_str(), %detail, "order compensating");
                        }
                        tracing::debug!(%order_id, from = from.as_str(), to = driven.saga.step.as_str(), "saga step recorded");
                        Ok(())
                    }
                    Err(AdvanceError::LeaseLost(_)) => Err(Halt::LeaseLost),
                    Err(AdvanceError::Store(e)) => {
                        // The record certainly did not land: the database
                        // failing counts as a failed attempt of the step
                        // (which is repeated: it is idempotent).
                        let failure = StepResult::Unavailable {
                            detail: format!("recording {}: {e}", driven.saga.step.as_str()),
                            maybe_sent: true,
                            retry_after: None,
                        };
                        match plan::decide(&driven.view(), failure, &self.inner.limits, fastrand::f64()) {
                            Decision::NeedsAttention { error } => self.park(driven, &error).await,
                            _ => {
                                let wait =
                                    plan::backoff(driven.saga.attempts, &self.inner.limits, fastrand::f64());
                                self.failed_attempt(driven, &e.to_string(), wait, true, wake)
                                    .await
                            }
                        }
                    }
                }
            }
            Decision::Retry {
                wait,
                error,
                maybe_sent,
            } => self.failed_attempt(driven, &error, wait, maybe_sent, wake).await,
            Decision::NeedsAttention { error } => self.park(driven, &error).await,
        }
    }

    /// After a record failed with a database error, which may have come after
    /// its commit (a reply lost to a broken connection): reads the saga's
    /// fence back (waiting out the database) and tells what happened. The
    /// record landed when the row is this process's at the next version; it
    /// did not when the version is unchanged; anything else is another
    /// worker's change.
    async fn landed(&self, driven: &Driven, error: Error) -> Result<Result<Applied, AdvanceError>, Halt> {
        let order_id = &driven.saga.order_id;
        let expected = driven.order.version;
        let mut wait = self.inner.limits.initial_backoff;
        let mut stop = self.inner.stop.subscribe();
        loop {
            match self.inner.store.fence_of(order_id).await {
                Ok(Some((owner, version, update_time))) => {
                    return Ok(if owner == self.owner() && version == expected + 1 {
                        tracing::warn!(%order_id, %error, "a saga record's reply was lost; it had landed");
                        Ok(Applied { version, update_time })
                    } else if owner == self.owner() && version == expected {
                        Err(AdvanceError::Store(error))
                    } else {
                        Err(AdvanceError::LeaseLost(crate::store::LeaseLost {
                            order_id: order_id.clone(),
                        }))
                    });
                }
                Ok(None) => return Err(Halt::LeaseLost),
                Err(e) => {
                    tracing::warn!(%order_id, error = %e, "cannot read back a record whose reply was lost")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|stop| *stop) => return Err(Halt::Stopped),
            }
            wait = (wait * 2).min(self.inner.limits.max_backoff);
        }
    }

    /// The chaos-test hook `lose_record_reply`: the first record of that step
    /// committed, but the worker is told the connection broke.
    fn maybe_lose_reply(
        &self,
        driven: &Driven,
        recorded: Result<Applied, AdvanceError>,
    ) -> Result<Applied, AdvanceError> {
        if recorded.is_ok()
            && self.inner.config.lose_record_reply == Some(driven.saga.step)
            && !self.inner.reply_lost.swap(true, Ordering::Relaxed)
        {
            let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
            return Err(AdvanceError::Store(Error::from(sqlx::Error::Io(reset))));
        }
        recorded
    }

    /// The order event a record publishes, from the order as the record
    /// leaves it.
    fn order_event(&self, driven: &Driven, advance: &Advance, kind: OrderEvent) -> ordermesh_events::Event {
        use ordermesh_proto::common::v1::Money;
        use ordermesh_proto::events::v1 as pb;
        let order = &driven.order;
        let events = self.inner.store.events();
        let total = order
            .total_minor
            .map(|amount| Money::new(amount, &order.currency_code));
        let occur_time = Some(clock::timestamp(clock::now_micros()));
        match kind {
            OrderEvent::Confirmed => events.event(&pb::OrderConfirmed {
                order_id: order.order_id.clone(),
                customer_id: order.customer_id.clone(),
                total,
                payment_id: advance
                    .payment_id
                    .clone()
                    .unwrap_or_else(|| order.payment_id.clone()),
                occur_time,
            }),
            OrderEvent::Rejected => {
                let (reason, detail) = advance
                    .reject
                    .clone()
                    .unwrap_or_else(|| (order.reject_reason, order.reject_detail.clone()));
                events.event(&pb::OrderRejected {
                    order_id: order.order_id.clone(),
                    customer_id: order.customer_id.clone(),
                    reject_reason: ordermesh_proto::order::v1::RejectReason::from(reason).into(),
                    reject_detail: detail,
                    occur_time,
                })
            }
            OrderEvent::Cancelled => events.event(&pb::OrderCancelled {
                order_id: order.order_id.clone(),
                customer_id: order.customer_id.clone(),
                refund: total,
                occur_time,
            }),
        }
    }

    async fn failed_attempt(
        &self,
        driven: &mut Driven,
        error: &str,
        wait: Duration,
        maybe_sent: bool,
        wake: &Notify,
    ) -> Result<(), Halt> {
        let order_id = driven.saga.order_id.clone();
        let order_id = &order_id;
        driven.saga.step_maybe_sent |= maybe_sent;
        match self
            .inner
            .store
            .record_failure(order_id, self.fence(driven), error, driven.saga.step_maybe_sent)
            .await
        {
            Ok(attempts) => driven.saga.attempts = attempts,
            Err(AdvanceError::LeaseLost(_)) => return Err(Halt::LeaseLost),
            Err(AdvanceError::Store(e)) => {
                tracing::warn!(%order_id, error = %e, "cannot record a failed attempt");
                driven.saga.attempts += 1;
            }
        }
        driven.saga.last_error = error.to_owned();
        tracing::warn!(
            %order_id,
            step = driven.saga.step.as_str(),
            attempts = driven.saga.attempts,
            wait_ms = wait.as_millis() as u64,
            %error,
            "saga step failed, will retry"
        );
        self.back_off(driven, wait, wake).await
    }

    /// Waits `wait` before the next attempt, keeping the lease (renewed,
    /// fenced on the worker's view, before it would lapse: a back-off may be
    /// longer than the lease, and another process must not take the saga
    /// over meanwhile). Woken early (a cancel or a retry arrived), it checks
    /// its view at once and stops if the saga changed.
    async fn back_off(&self, driven: &mut Driven, wait: Duration, wake: &Notify) -> Result<(), Halt> {
        let until = Instant::now() + wait;
        let mut stop = self.inner.stop.subscribe();
        let renew_before = self.inner.config.call_timeout + self.inner.config.lease_margin;
        loop {
            let renew_at = driven
                .lease_valid_until
                .checked_sub(renew_before)
                .unwrap_or_else(Instant::now);
            tokio::select! {
                () = tokio::time::sleep_until(until.min(renew_at)) => {}
                () = wake.notified() => {}
                _ = stop.wait_for(|stop| *stop) => return Err(Halt::Stopped),
            }
            if Instant::now() >= until {
                return Ok(());
            }
            self.renew(driven).await?;
        }
    }

    async fn park(&self, driven: &mut Driven, error: &str) -> Result<(), Halt> {
        let order_id = &driven.saga.order_id;
        tracing::error!(
            %order_id,
            step = driven.saga.step.as_str(),
            status = driven.order.status.as_str(),
            %error,
            "saga needs an operator (OrderAdminService/RetrySaga drives it again)"
        );
        self.inner.store.park(order_id, self.fence(driven), error).await?;
        driven.saga.needs_attention = true;
        Err(Halt::NeedsAttention)
    }
}
