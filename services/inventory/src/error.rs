//! The inventory service's errors and their one mapping to `tonic::Status`.

use tonic::{Code, Status};

use ordermesh_runtime::Infra;
use ordermesh_runtime::status::Domain;

/// `google.rpc.ErrorInfo` domain of every inventory error.
pub const ERROR_DOMAIN: &str = reason::DOMAIN;

/// Machine-readable `ErrorInfo.reason` values (part of the contract).
pub use ordermesh_proto::error_reasons::inventory as reason;

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
    #[error("unit_price.currency_code: sku {sku:?} is priced in {catalogue}, not {requested}")]
    CurrencyMismatch {
        sku: String,
        catalogue: String,
        requested: String,
    },
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
            Error::UnknownSku { sku } => {
                DOMAIN.status(Code::NotFound, message, reason::UNKNOWN_SKU, ("sku", sku))
            }
            Error::InsufficientStock { sku, .. } => DOMAIN.status(
                Code::FailedPrecondition,
                message,
                reason::INSUFFICIENT_STOCK,
                ("sku", sku),
            ),
            Error::MixedCurrencies { first, .. } => DOMAIN.status(
                Code::FailedPrecondition,
                message,
                reason::MIXED_CURRENCIES,
                ("currency", first),
            ),
            Error::ReservationNotFound { order_id } => DOMAIN.status(
                Code::NotFound,
                message,
                reason::RESERVATION_NOT_FOUND,
                ("order_id", order_id),
            ),
            Error::ReservationExpired { order_id } => DOMAIN.status(
                Code::FailedPrecondition,
                message,
                reason::RESERVATION_EXPIRED,
                ("order_id", order_id),
            ),
            Error::ReservationNotActive { order_id, .. } => DOMAIN.status(
                Code::FailedPrecondition,
                message,
                reason::RESERVATION_NOT_ACTIVE,
                ("order_id", order_id),
            ),
            Error::StockBelowZero { sku, .. } => DOMAIN.status(
                Code::FailedPrecondition,
                message,
                reason::STOCK_BELOW_ZERO,
                ("sku", sku),
            ),
            Error::RequestIdReused { request_id } => DOMAIN.status(
                Code::AlreadyExists,
                message,
                reason::REQUEST_ID_REUSED,
                ("request_id", request_id),
            ),
            // The SKU's stored currency decides, not the request alone:
            // FAILED_PRECONDITION, as payment answers its own mismatch.
            Error::CurrencyMismatch { sku, .. } => DOMAIN.status(
                Code::FailedPrecondition,
                message,
                reason::CURRENCY_MISMATCH,
                ("sku", sku),
            ),
            Error::Infra(infra) => infra.status("inventory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn a_price_in_another_currency_than_the_skus_is_a_failed_precondition() {
        let status = Status::from(Error::CurrencyMismatch {
            sku: "KB-001".into(),
            catalogue: "EUR".into(),
            requested: "USD".into(),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, reason::CURRENCY_MISMATCH);
        assert_eq!(info.metadata["sku"], "KB-001");
    }
}
