//! The inventory service's errors and their one mapping to `tonic::Status`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `google.rpc.ErrorInfo` domain of every inventory error.
pub const ERROR_DOMAIN: &str = "inventory.ordermesh";

/// Machine-readable `ErrorInfo.reason` values that callers (the order saga)
/// branch on.
pub mod reason {
    pub const UNKNOWN_SKU: &str = "UNKNOWN_SKU";
    pub const INSUFFICIENT_STOCK: &str = "INSUFFICIENT_STOCK";
    pub const MIXED_CURRENCIES: &str = "MIXED_CURRENCIES";
    pub const RESERVATION_NOT_FOUND: &str = "RESERVATION_NOT_FOUND";
    pub const RESERVATION_EXPIRED: &str = "RESERVATION_EXPIRED";
    pub const RESERVATION_NOT_ACTIVE: &str = "RESERVATION_NOT_ACTIVE";
    pub const STOCK_BELOW_ZERO: &str = "STOCK_BELOW_ZERO";
    pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sku {sku:?} is not in the catalogue")]
    UnknownSku { sku: String },
    #[error("insufficient stock for sku {sku:?}: requested {requested}, available {available}")]
    InsufficientStock {
        sku: String,
        requested: i64,
        available: i64,
    },
    #[error("lines are priced in different currencies ({first} and {second})")]
    MixedCurrencies { first: String, second: String },
    #[error("no reservation for order {order_id:?}")]
    ReservationNotFound { order_id: String },
    #[error("the reservation for order {order_id:?} expired")]
    ReservationExpired { order_id: String },
    #[error("the reservation for order {order_id:?} is {status}, not active")]
    ReservationNotActive { order_id: String, status: String },
    #[error("adjusting sku {sku:?} by {delta} would take available stock below zero")]
    StockBelowZero { sku: String, delta: i64 },
    #[error("request_id {request_id:?} was already used for a different adjustment")]
    RequestIdReused { request_id: String },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

fn with_reason(code: Code, message: String, reason: &str, subject: (&str, &str)) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(
            reason,
            ERROR_DOMAIN,
            [(subject.0.to_owned(), subject.1.to_owned())],
        ),
    )
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match &error {
            Error::UnknownSku { sku } => {
                with_reason(Code::NotFound, message, reason::UNKNOWN_SKU, ("sku", sku))
            }
            Error::InsufficientStock { sku, .. } => with_reason(
                Code::FailedPrecondition,
                message,
                reason::INSUFFICIENT_STOCK,
                ("sku", sku),
            ),
            Error::MixedCurrencies { first, .. } => with_reason(
                Code::FailedPrecondition,
                message,
                reason::MIXED_CURRENCIES,
                ("currency", first),
            ),
            Error::ReservationNotFound { order_id } => with_reason(
                Code::NotFound,
                message,
                reason::RESERVATION_NOT_FOUND,
                ("order_id", order_id),
            ),
            Error::ReservationExpired { order_id } => with_reason(
                Code::FailedPrecondition,
                message,
                reason::RESERVATION_EXPIRED,
                ("order_id", order_id),
            ),
            Error::ReservationNotActive { order_id, .. } => with_reason(
                Code::FailedPrecondition,
                message,
                reason::RESERVATION_NOT_ACTIVE,
                ("order_id", order_id),
            ),
            Error::StockBelowZero { sku, .. } => with_reason(
                Code::FailedPrecondition,
                message,
                reason::STOCK_BELOW_ZERO,
                ("sku", sku),
            ),
            Error::RequestIdReused { request_id } => with_reason(
                Code::AlreadyExists,
                message,
                reason::REQUEST_ID_REUSED,
                ("request_id", request_id),
            ),
            Error::Db(db) => {
                tracing::error!(error = %db, "inventory database error");
                if matches!(db, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) {
                    Status::unavailable("inventory database unavailable")
                } else {
                    Status::internal("inventory database error")
                }
            }
            Error::Corrupt(detail) => {
                tracing::error!(%detail, "inventory data corrupt");
                Status::internal("inventory data error")
            }
        }
    }
}
