//! The order service's errors and their one mapping to `tonic::Status`.

use tonic::{Code, Status};

use ordermesh_runtime::Infra;
use ordermesh_runtime::status::Domain;
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
            Error::NotFound { order_id } => DOMAIN.status(
                Code::NotFound,
                message,
                reason::ORDER_NOT_FOUND,
                ("order_id", order_id),
            ),
            Error::RequestIdReused { order_id, .. } => DOMAIN.status(
                Code::AlreadyExists,
                message,
                reason::REQUEST_ID_REUSED,
                ("order_id", order_id),
            ),
            Error::NotCancellable { order_id, .. } => DOMAIN.status(
                Code::FailedPrecondition,
                message,
                reason::ORDER_NOT_CANCELLABLE,
                ("order_id", order_id),
            ),
            Error::SagaFinished { order_id } => DOMAIN.status(
                Code::FailedPrecondition,
                message,
                reason::SAGA_FINISHED,
                ("order_id", order_id),
            ),
            Error::InsufficientStock { sku, .. } => DOMAIN.status(
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
            Error::Infra(infra) => infra.status("order"),
        }
    }
}
