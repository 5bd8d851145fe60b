//! Building blocks of every service's one `impl From<Error> for Status`:
//! domain errors carry a `google.rpc.ErrorInfo` (domain, stable reason, the
//! subject); database trouble never shows its text to clients.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A service's `google.rpc.ErrorInfo` domain (`order.ordermesh`), which
/// makes its domain errors' statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Domain(pub &'static str);

impl Domain {
    /// `code` with `message` and an `ErrorInfo { reason, domain, {key: value} }`.
    pub fn status(self, code: Code, message: String, reason: &str, (key, value): (&str, &str)) -> Status {
        Status::with_error_details(
            code,
            message,
            ErrorDetails::with_error_info(reason, self.0, [(key.to_owned(), value.to_owned())]),
        )
    }
}

/// A database error: UNAVAILABLE when the database is down, busy or
/// contended (worth a retry: a deadlock or a serialization failure rolled
/// the whole transaction back, and every call is idempotent), INTERNAL
/// otherwise. The detail is logged, not sent.
pub fn database(service: &str, error: &sqlx::Error) -> Status {
    match crate::db::classify(error) {
        crate::db::ErrorClass::Transient => {
            tracing::warn!(service, %error, "database unavailable or contended");
            Status::unavailable(format!("{service} database unavailable"))
        }
        _ => {
            tracing::error!(service, %error, "database error");
            Status::internal(format!("{service} database error"))
        }
    }
}

/// Any other internal failure (e.g. writing an event): INTERNAL, detail logged.
pub fn internal(service: &str, error: &dyn std::fmt::Display) -> Status {
    tracing::error!(service, %error, "internal error");
    Status::internal(format!("{service} internal error"))
}

/// Stored data that cannot be read back: INTERNAL, detail logged.
pub fn corrupt(service: &str, detail: &str) -> Status {
    tracing::error!(service, %detail, "stored data corrupt");
    Status::internal(format!("{service} data error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_text_never_reaches_the_client() {
        let status = database("payment", &sqlx::Error::ColumnNotFound("secret_column".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
        let status = database("payment", &sqlx::Error::Protocol("secret table detail".into()));
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "a broken connection is worth a retry"
        );
        assert!(!status.message().contains("secret"));
        assert_eq!(
            database("payment", &sqlx::Error::PoolTimedOut).code(),
            Code::Unavailable
        );
    }

    #[test]
    fn reasons_travel_as_error_info() {
        let status = Domain("d").status(Code::NotFound, "gone".into(), "R", ("k", "v"));
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("R", "d"));
        assert_eq!(info.metadata.get("k").map(String::as_str), Some("v"));
    }
}
