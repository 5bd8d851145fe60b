//! The order service's errors and their one mapping to `tonic::Status`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `google.rpc.ErrorInfo` domain of every order error.
pub const ERROR_DOMAIN: &str = reason::DOMAIN;

/// Machine-readable `ErrorInfo.reason` values (part of the contract).
pub use ordermesh_proto::error_reasons::order as reason;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("order {order_id:?} not found")]
    NotFound { order_id: String },
    #[error("request_id {request_id:?} was already used for a different order ({order_id})")]
    RequestIdReused { request_id: String, order_id: String },
    #[error("order {order_id:?} is {status}; only a CONFIRMED order can be cancelled")]
    NotCancellable { order_id: String, status: String },
    #[error("the saga of order {order_id:?} is finished; there is nothing to retry")]
    SagaFinished { order_id: String },
    /// The availability precheck found a line that cannot be filled now.
    #[error("insufficient stock: {detail}")]
    InsufficientStock { sku: String, detail: String },
    /// The availability precheck found a SKU the catalogue does not have.
    #[error("{field}: sku {sku:?} is not in the catalogue")]
    UnknownSku { field: String, sku: String },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("event outbox error: {0}")]
    Events(#[from] ordermesh_events::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

fn with_reason(code: Code, message: String, reason: &str, subject: (&str, &str)) -> Status {
    ordermesh_runtime::status::with_reason(code, message, ERROR_DOMAIN, reason, subject)
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match &error {
            Error::NotFound { order_id } => with_reason(
                Code::NotFound,
                message,
                reason::ORDER_NOT_FOUND,
                ("order_id", order_id),
            ),
            Error::RequestIdReused { order_id, .. } => with_reason(
                Code::AlreadyExists,
                message,
                reason::REQUEST_ID_REUSED,
                ("order_id", order_id),
            ),
            Error::NotCancellable { order_id, .. } => with_reason(
                Code::FailedPrecondition,
                message,
                reason::ORDER_NOT_CANCELLABLE,
                ("order_id", order_id),
            ),
            Error::SagaFinished { order_id } => with_reason(
                Code::FailedPrecondition,
                message,
                reason::SAGA_FINISHED,
                ("order_id", order_id),
            ),
            Error::InsufficientStock { sku, .. } => with_reason(
                Code::FailedPrecondition,
                message,
                reason::INSUFFICIENT_STOCK,
                ("sku", sku),
            ),
            Error::UnknownSku { field, sku } => {
                // A bad line is bad input: the field is named for the client,
                // the reason for programs.
                let mut details = ErrorDetails::with_bad_request_violation(field.clone(), message.clone());
                details.set_error_info(
                    reason::UNKNOWN_SKU,
                    ERROR_DOMAIN,
                    [("sku".to_owned(), sku.clone())],
                );
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::Db(db) => ordermesh_runtime::status::database("order", db),
            Error::Events(events) => ordermesh_runtime::status::internal("order", events),
            Error::Corrupt(detail) => ordermesh_runtime::status::corrupt("order", detail),
        }
    }
}
