//! The order service's errors and their one mapping to `tonic::Status`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `google.rpc.ErrorInfo` domain of every order error.
pub const ERROR_DOMAIN: &str = "order.ordermesh";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("order {order_id:?} not found")]
    NotFound { order_id: String },
    #[error("request_id {request_id:?} was already used for a different order ({order_id})")]
    RequestIdReused { request_id: String, order_id: String },
    #[error("order {order_id:?} is {status}; only a CONFIRMED order can be cancelled")]
    NotCancellable { order_id: String, status: String },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

fn with_reason(code: Code, message: String, reason: &str, order_id: &str) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(
            reason,
            ERROR_DOMAIN,
            [("order_id".to_owned(), order_id.to_owned())],
        ),
    )
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match &error {
            Error::NotFound { order_id } => with_reason(Code::NotFound, message, "ORDER_NOT_FOUND", order_id),
            Error::RequestIdReused { order_id, .. } => {
                with_reason(Code::AlreadyExists, message, "REQUEST_ID_REUSED", order_id)
            }
            Error::NotCancellable { order_id, .. } => with_reason(
                Code::FailedPrecondition,
                message,
                "ORDER_NOT_CANCELLABLE",
                order_id,
            ),
            Error::Db(db) => {
                tracing::error!(error = %db, "order database error");
                if matches!(db, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) {
                    Status::unavailable("order database unavailable")
                } else {
                    Status::internal("order database error")
                }
            }
            Error::Corrupt(detail) => {
                tracing::error!(%detail, "order data corrupt");
                Status::internal("order data error")
            }
        }
    }
}
