//! The payment service's errors and their one mapping to `tonic::Status`.
//!
//! A declined authorization is not an error: it is a stored payment with
//! status DECLINED, returned as a successful call.

use tonic::{Code, Status};

use ordermesh_runtime::Infra;
use ordermesh_runtime::status::Domain;

/// `google.rpc.ErrorInfo` domain of every payment error.
pub const ERROR_DOMAIN: &str = reason::DOMAIN;

/// Machine-readable `ErrorInfo.reason` values (part of the contract).
pub use ordermesh_proto::error_reasons::payment as reason;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("account {account_id:?} does not exist")]
    AccountNotFound { account_id: String },
    #[error("account {account_id:?} already exists")]
    AccountExists { account_id: String },
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
    #[error("authorization request_id {request_id:?} was voided before it arrived; nothing is held")]
    AuthorizationVoided { request_id: String },
    #[error("payment {payment_id} was not captured within its hold time; its authorization expired")]
    AuthorizationExpired { payment_id: String },
    /// The database, the outbox or stored data failed (logged, never sent).
    #[error(transparent)]
    Infra(#[from] Infra),
}

ordermesh_runtime::infra_from!(Error: sqlx::Error, ordermesh_events::Error);

const DOMAIN: Domain = Domain(ERROR_DOMAIN);

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match &error {
            Error::AccountNotFound { account_id } => DOMAIN.status(
                Code::NotFound,
                message,
                reason::ACCOUNT_NOT_FOUND,
                ("account_id", account_id),
            ),
            Error::AccountExists { account_id } => DOMAIN.status(
                Code::AlreadyExists,
                message,
                reason::ACCOUNT_EXISTS,
                ("account_id", account_id),
            ),
            Error::PaymentNotFound { payment_id } => DOMAIN.status(
                Code::NotFound,
                message,
                reason::PAYMENT_NOT_FOUND,
                ("payment_id", payment_id),
            ),
            Error::CurrencyMismatch { account_id, .. } => DOMAIN.status(
                Code::FailedPrecondition,
                message,
                reason::CURRENCY_MISMATCH,
                ("account_id", account_id),
            ),
            Error::RequestIdReused { request_id, .. } => DOMAIN.status(
                Code::AlreadyExists,
                message,
                reason::REQUEST_ID_REUSED,
                ("request_id", request_id),
            ),
            Error::InvalidPaymentState { payment_id, .. } => DOMAIN.status(
                Code::FailedPrecondition,
                message,
                reason::INVALID_PAYMENT_STATE,
                ("payment_id", payment_id),
            ),
            Error::AuthorizationVoided { request_id } => DOMAIN.status(
                Code::FailedPrecondition,
                message,
                reason::AUTHORIZATION_VOIDED,
                ("request_id", request_id),
            ),
            Error::AuthorizationExpired { payment_id } => DOMAIN.status(
                Code::FailedPrecondition,
                message,
                reason::AUTHORIZATION_EXPIRED,
                ("payment_id", payment_id),
            ),
            Error::Infra(infra) => infra.status("payment"),
        }
    }
}
