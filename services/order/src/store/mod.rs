//! The order database: orders with their saga's state in the same row, and
//! their lines.
//!
//! Every saga step's outcome is written by one UPDATE of the order's row,
//! together with the order's own status change, and only by the worker
//! holding the saga's lease (the update is fenced on `lease_owner`, so a
//! worker whose lease was taken over writes nothing). One row, one statement:
//! the cheapest durable record a step can have.
//!
//! # Layout
//! - this module: the stored types. Rows are read with `FromRow`; enums are
//!   stored as text and bound from their definitions (`as_str`), never
//!   written as SQL literals.
//! - [`orders`]: creating an order with its saga, reading and listing orders.
//! - [`sagas`]: the saga's part of the row: leases, recording step outcomes
//!   and failures, parking for an operator, cancel, recovery and admin reads.
//! - [`projections`]: the timeline and confirmation notices the consumers
//!   build from events.

// Column lists are macros so that queries are `concat!`ed at compile time
// (one fixed SQL text per query, nothing built at run time). Defined before
// the modules that use them.
macro_rules! order_columns {
    () => {
        "order_id, request_id, request_fingerprint, customer_id, status, total_minor, currency_code,
         reject_reason, reject_detail, payment_id, create_time, update_time, version, traceparent"
    };
}

/// The saga's columns of an order row, named as [`SagaRow`] reads them.
macro_rules! saga_columns {
    () => {
        "order_id, saga_kind AS kind, saga_state AS state, saga_step AS step, stock_maybe_reserved,
         payment_maybe_made, payment_captured, attempts, last_error, step_since, needs_attention,
         lease_owner, lease_until, update_time, step_maybe_sent, traceparent"
    };
}

mod orders;
pub mod projections;
mod sagas;

use ordermesh_events::Publisher;
use ordermesh_runtime::db::Db;
use ordermesh_runtime::text_enum;

use crate::error::Error;

pub use orders::Created;
pub use sagas::{Advance, AdvanceError, Applied, Fence, LeaseLost, OrderEvent, Pricing, SagaCursor};

text_enum!(
    /// An order's status, as stored.
    OrderStatus {
        Pending => "PENDING",
        StockReserved => "STOCK_RESERVED",
        PaymentAuthorized => "PAYMENT_AUTHORIZED",
        PaymentCaptured => "PAYMENT_CAPTURED",
        Confirmed => "CONFIRMED",
        Compensating => "COMPENSATING",
        Rejected => "REJECTED",
        Cancelling => "CANCELLING",
        Cancelled => "CANCELLED",
    }
);

impl OrderStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Confirmed | Self::Rejected | Self::Cancelled)
    }
}

text_enum!(
    /// Why an order was rejected; `NotRejected` (stored empty) otherwise.
    RejectReason {
        NotRejected => "",
        OutOfStock => "OUT_OF_STOCK",
        UnknownSku => "UNKNOWN_SKU",
        UnknownCustomer => "UNKNOWN_CUSTOMER",
        InsufficientFunds => "INSUFFICIENT_FUNDS",
        AccountBlocked => "ACCOUNT_BLOCKED",
        AmountOverLimit => "AMOUNT_OVER_LIMIT",
        ReservationExpired => "RESERVATION_EXPIRED",
        ServiceUnavailable => "SERVICE_UNAVAILABLE",
        CurrencyMismatch => "CURRENCY_MISMATCH",
        StepRefused => "STEP_REFUSED",
        Internal => "INTERNAL",
        AuthorizationExpired => "AUTHORIZATION_EXPIRED",
    }
);

/// The contract's reject reason (what `GetOrder` and `OrderRejected` carry).
impl From<RejectReason> for ordermesh_proto::order::v1::RejectReason {
    fn from(reason: RejectReason) -> Self {
        use RejectReason as R;
        use ordermesh_proto::order::v1::RejectReason as Pb;
        match reason {
            R::NotRejected => Pb::Unspecified,
            R::OutOfStock => Pb::OutOfStock,
            R::UnknownSku => Pb::UnknownSku,
            R::UnknownCustomer => Pb::UnknownCustomer,
            R::InsufficientFunds => Pb::InsufficientFunds,
            R::AccountBlocked => Pb::AccountBlocked,
            R::AmountOverLimit => Pb::AmountOverLimit,
            R::ReservationExpired => Pb::ReservationExpired,
            R::ServiceUnavailable => Pb::ServiceUnavailable,
            R::CurrencyMismatch => Pb::CurrencyMismatch,
            R::StepRefused => Pb::StepRefused,
            R::Internal => Pb::Internal,
            R::AuthorizationExpired => Pb::AuthorizationExpired,
        }
    }
}

text_enum!(
    /// Which saga a row drives: placing the order or cancelling it.
    SagaKind { Place => "PLACE", Cancel => "CANCEL" }
);

text_enum!(
    /// Whether a saga goes forward, undoes, or is finished.
    SagaState { Running => "RUNNING", Compensating => "COMPENSATING", Done => "DONE" }
);

text_enum!(
    /// The next step a saga runs.
    Step {
        Reserve => "RESERVE",
        Authorize => "AUTHORIZE",
        Capture => "CAPTURE",
        Commit => "COMMIT",
        Confirm => "CONFIRM",
        UndoPayment => "UNDO_PAYMENT",
        Release => "RELEASE",
        Finish => "FINISH",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: Option<i64>,
    /// The product's name when the order was placed (display only).
    pub name: String,
}

/// An order row; its lines are read apart.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct OrderRow {
    order_id: String,
    request_id: String,
    request_fingerprint: String,
    customer_id: String,
    #[sqlx(try_from = "String")]
    status: OrderStatus,
    total_minor: Option<i64>,
    currency_code: String,
    #[sqlx(try_from = "String")]
    reject_reason: RejectReason,
    reject_detail: String,
    payment_id: String,
    create_time: i64,
    update_time: i64,
    version: i64,
    traceparent: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub order_id: String,
    pub request_id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total_minor: Option<i64>,
    pub currency_code: String,
    pub reject_reason: RejectReason,
    pub reject_detail: String,
    pub payment_id: String,
    pub create_time: i64,
    pub update_time: i64,
    /// Incremented by every change.
    pub version: i64,
    /// The W3C trace context of the request that placed it (empty when
    /// tracing was off).
    pub traceparent: String,
}

impl Order {
    /// The trace id of [`Order::traceparent`], empty when there is none.
    pub fn trace_id(&self) -> &str {
        ordermesh_mesh::trace::trace_id_of(&self.traceparent)
    }
}

impl OrderRow {
    fn with_lines(self, lines: Vec<OrderLine>) -> Order {
        Order {
            order_id: self.order_id,
            request_id: self.request_id,
            customer_id: self.customer_id,
            status: self.status,
            lines,
            total_minor: self.total_minor,
            currency_code: self.currency_code,
            reject_reason: self.reject_reason,
            reject_detail: self.reject_detail,
            payment_id: self.payment_id,
            create_time: self.create_time,
            update_time: self.update_time,
            version: self.version,
            traceparent: self.traceparent,
        }
    }
}

/// A saga as stored in its order's row (flags are integers in portable DDL).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct SagaRow {
    order_id: String,
    #[sqlx(try_from = "String")]
    kind: SagaKind,
    #[sqlx(try_from = "String")]
    state: SagaState,
    #[sqlx(try_from = "String")]
    step: Step,
    stock_maybe_reserved: i64,
    payment_maybe_made: i64,
    payment_captured: i64,
    attempts: i64,
    last_error: String,
    step_since: i64,
    needs_attention: i64,
    lease_owner: String,
    lease_until: i64,
    update_time: i64,
    step_maybe_sent: i64,
    traceparent: String,
}

/// An order's saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    pub order_id: String,
    pub kind: SagaKind,
    pub state: SagaState,
    pub step: Step,
    /// A reservation may exist downstream (set once RESERVE was reached; a
    /// release by the order's key proves otherwise).
    pub stock_maybe_reserved: bool,
    /// An authorization may exist downstream (set once AUTHORIZE was
    /// reached; a void by the order's key proves otherwise).
    pub payment_maybe_made: bool,
    /// The payment is known to be captured: the saga passed its pivot.
    pub payment_captured: bool,
    /// Failed attempts of the current step.
    pub attempts: i64,
    pub last_error: String,
    /// When the current step began (microseconds).
    pub step_since: i64,
    pub needs_attention: bool,
    pub lease_owner: String,
    pub lease_until: i64,
    pub update_time: i64,
    /// Some attempt of the current step may have reached its service.
    pub step_maybe_sent: bool,
    /// The trace context of the request that placed the order.
    pub traceparent: String,
}

impl Saga {
    /// A saga at the start of `step`, leased to `owner`: what creating an
    /// order and re-arming it for a cancel write.
    fn starting(
        order_id: &str,
        (kind, state, step): (SagaKind, SagaState, Step),
        owner: &str,
        lease_until: i64,
        now: i64,
    ) -> Saga {
        let cancel = kind == SagaKind::Cancel;
        Saga {
            order_id: order_id.into(),
            kind,
            state,
            step,
            stock_maybe_reserved: cancel,
            payment_maybe_made: cancel,
            payment_captured: cancel,
            attempts: 0,
            last_error: String::new(),
            step_since: now,
            needs_attention: false,
            lease_owner: owner.into(),
            lease_until,
            update_time: now,
            step_maybe_sent: false,
            traceparent: String::new(),
        }
    }
}

impl From<SagaRow> for Saga {
    fn from(row: SagaRow) -> Self {
        Saga {
            order_id: row.order_id,
            kind: row.kind,
            state: row.state,
            step: row.step,
            stock_maybe_reserved: row.stock_maybe_reserved != 0,
            payment_maybe_made: row.payment_maybe_made != 0,
            payment_captured: row.payment_captured != 0,
            attempts: row.attempts,
            last_error: row.last_error,
            step_since: row.step_since,
            needs_attention: row.needs_attention != 0,
            lease_owner: row.lease_owner,
            lease_until: row.lease_until,
            update_time: row.update_time,
            step_maybe_sent: row.step_maybe_sent != 0,
            traceparent: row.traceparent,
        }
    }
}

/// A validated CreateOrder request.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order_id: String,
    pub request_id: String,
    pub customer_id: String,
    pub lines: Vec<NewLine>,
    /// The placing request's trace context (empty: none).
    pub traceparent: String,
}

/// A line as ordered, with the product's display name from the catalogue
/// cache (empty when unknown; the reservation is what prices it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLine {
    pub sku: String,
    pub quantity: i64,
    pub name: String,
}

impl NewOrder {
    /// What makes two requests "the same order" for idempotency. Every
    /// value is length-prefixed, so no SKU text can make two different
    /// requests look alike.
    pub fn fingerprint(&self) -> String {
        let mut out = format!("{}:{}", self.customer_id.len(), self.customer_id);
        for line in &self.lines {
            out.push_str(&format!("|{}:{}*{}", line.sku.len(), line.sku, line.quantity));
        }
        out
    }
}

#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Writes the order's events in the transactions that change it.
    events: Publisher,
}

impl Store {
    pub fn new(db: Db, events: Publisher) -> Self {
        Self { db, events }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The order events' publisher (to build an event a record carries).
    pub fn events(&self) -> &Publisher {
        &self.events
    }
}

#[cfg(test)]
mod fingerprint_tests {
    use super::{NewLine, NewOrder};

    fn order(customer: &str, lines: &[(&str, i64)]) -> NewOrder {
        NewOrder {
            order_id: String::new(),
            request_id: String::new(),
            customer_id: customer.into(),
            traceparent: String::new(),
            lines: lines
                .iter()
                .map(|(sku, quantity)| NewLine {
                    sku: (*sku).into(),
                    quantity: *quantity,
                    name: format!("name of {sku}"),
                })
                .collect(),
        }
    }

    #[test]
    fn crafted_skus_cannot_collide() {
        assert_ne!(
            order("c", &[("x*1|y", 2)]).fingerprint(),
            order("c", &[("x", 1), ("y", 2)]).fingerprint()
        );
        assert_ne!(
            order("a|b", &[("x", 1)]).fingerprint(),
            order("a", &[("b|x", 1)]).fingerprint()
        );
        assert_eq!(
            order("c", &[("x", 1)]).fingerprint(),
            order("c", &[("x", 1)]).fingerprint()
        );
        // The display name is not part of what makes two requests the same.
        let mut renamed = order("c", &[("x", 1)]);
        renamed.lines[0].name = "a new name".into();
        assert_eq!(renamed.fingerprint(), order("c", &[("x", 1)]).fingerprint());
    }
}
