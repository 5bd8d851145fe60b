//! The payment service's errors and their one mapping to `tonic::Status`.
//!
//! A declined authorization is not an error: it is a stored payment with
//! status DECLINED, returned as a successful call.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `google.rpc.ErrorInfo` domain of every payment error.
pub const ERROR_DOMAIN: &str = "payment.ordermesh";

/// Machine-readable `ErrorInfo.reason` values that callers (the order saga)
/// branch on.
pub mod reason {
    pub const ACCOUNT_NOT_FOUND: &str = "ACCOUNT_NOT_FOUND";
    pub const PAYMENT_NOT_FOUND: &str = "PAYMENT_NOT_FOUND";
    pub const CURRENCY_MISMATCH: &str = "CURRENCY_MISMATCH";
    pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";
    pub const INVALID_PAYMENT_STATE: &str = "INVALID_PAYMENT_STATE";
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("account {account_id:?} does not exist")]
    AccountNotFound { account_id: String },
    #[error("payment {payment_id:?} does not exist")]
    PaymentNotFound { payment_id: String },
    #[error("account {account_id:?} holds {account_currency}, the amount is in {requested}")]
    CurrencyMismatch {
        account_id: String,
        account_currency: String,
        requested: String,
    },
    #[error("request_id {request_id:?} was used for a different {used_for}")]
    RequestIdReused {
        request_id: String,
        used_for: &'static str,
    },
    #[error("payment {payment_id} is {status}, cannot {action}")]
    InvalidPaymentState {
        payment_id: String,
        status: &'static str,
        action: &'static str,
    },
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
            Error::AccountNotFound { account_id } => with_reason(
                Code::NotFound,
                message,
                reason::ACCOUNT_NOT_FOUND,
                ("account_id", account_id),
            ),
            Error::PaymentNotFound { payment_id } => with_reason(
                Code::NotFound,
                message,
                reason::PAYMENT_NOT_FOUND,
                ("payment_id", payment_id),
            ),
            Error::CurrencyMismatch { account_id, .. } => with_reason(
                Code::FailedPrecondition,
                message,
                reason::CURRENCY_MISMATCH,
                ("account_id", account_id),
            ),
            Error::RequestIdReused { request_id, .. } => with_reason(
                Code::AlreadyExists,
                message,
                reason::REQUEST_ID_REUSED,
                ("request_id", request_id),
            ),
            Error::InvalidPaymentState { payment_id, .. } => with_reason(
                Code::FailedPrecondition,
                message,
                reason::INVALID_PAYMENT_STATE,
                ("payment_id", payment_id),
            ),
            Error::Db(db) => {
                tracing::error!(error = %db, "payment database error");
                if matches!(db, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) {
                    Status::unavailable("payment database unavailable")
                } else {
                    Status::internal("payment database error")
                }
            }
            Error::Corrupt(detail) => {
                tracing::error!(%detail, "payment data corrupt");
                Status::internal("payment data error")
            }
        }
    }
}
