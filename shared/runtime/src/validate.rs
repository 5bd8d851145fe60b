//! Request validation that reports every bad field at once, as AIP-193 asks:
//! `INVALID_ARGUMENT` whose message names the fields and whose details carry a
//! `google.rpc.BadRequest` with one field violation per problem.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Collects field violations while a request is checked.
#[derive(Debug, Default)]
pub struct Violations {
    violations: Vec<FieldViolation>,
}

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` (a path such as `lines[2].quantity`) is invalid.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations
            .push(FieldViolation::new(field.into(), description.into()));
    }

    /// Records a violation when `value` is empty or longer than `max_len` bytes.
    pub fn require_text(&mut self, field: &str, value: &str, max_len: usize) {
        if value.trim().is_empty() {
            self.add(field, "must not be empty");
        } else if value.len() > max_len {
            self.add(field, format!("must be at most {max_len} characters"));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// `Ok` when nothing was recorded, else the `INVALID_ARGUMENT` status.
    pub fn into_result(self) -> Result<(), Status> {
        if self.violations.is_empty() {
            return Ok(());
        }
        let summary = self
            .violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        Err(Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid request: {summary}"),
            ErrorDetails::with_bad_request(self.violations),
        ))
    }
}

/// A single-field `INVALID_ARGUMENT`.
pub fn invalid_field(field: &str, description: &str) -> Status {
    let mut violations = Violations::new();
    violations.add(field, description);
    match violations.into_result() {
        Err(status) => status,
        Ok(()) => Status::invalid_argument(format!("{field}: {description}")),
    }
}

/// A client-supplied currency code: three ASCII upper-case letters.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_violation_is_reported_with_its_field() {
        let mut v = Violations::new();
        v.require_text("customer_id", "  ", 64);
        v.require_text("request_id", &"x".repeat(200), 128);
        v.require_text("fine", "ok", 10);
        let status = v.into_result().expect_err("two violations");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("customer_id"));
        assert!(status.message().contains("request_id"));
        let details = status.get_details_bad_request().expect("BadRequest details");
        let fields: Vec<_> = details
            .field_violations
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(fields, ["customer_id", "request_id"]);
    }

    #[test]
    fn no_violation_is_ok() {
        assert!(Violations::new().into_result().is_ok());
    }

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        assert!(is_currency_code("USD"));
        assert!(!is_currency_code("usd"));
        assert!(!is_currency_code("US"));
        assert!(!is_currency_code("USDX"));
    }
}
