//! Request validation that reports every bad field at once, as AIP-193 asks:
//! `INVALID_ARGUMENT` whose message names the fields and whose details carry a
//! `google.rpc.BadRequest` with one field violation per problem, up to
//! [`MAX_REPORTED_VIOLATIONS`]: a request with a hundred bad lines gets the
//! first ones and a count of the rest, so its refusal stays small enough to
//! relay (an error travels in HTTP/2 headers, which clients bound).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Longest accepted identifier (SKU, order, customer, account, request id),
/// in characters.
pub const MAX_ID_LEN: usize = 128;
/// Longest display name (a product's, an account's), in characters.
pub const MAX_NAME_LEN: usize = 200;
/// Longest free text kept with an operation (a stock adjustment's reason, a
/// payment's reference), in characters.
pub const MAX_NOTE_LEN: usize = 1024;
/// Most lines one order (and its reservation) may hold.
pub const MAX_LINES: usize = 100;
/// Most units of one SKU per line.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Largest single amount of money, in minor units: far below where balance
/// arithmetic could overflow a BIGINT.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;
/// Most field violations one refusal names (the rest are counted).
pub const MAX_REPORTED_VIOLATIONS: usize = 10;
/// Longest description of a violation, in bytes.
const MAX_DESCRIPTION_LEN: usize = 200;

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

    /// Records a violation when `value` is blank or longer than `max_len`
    /// characters.
    pub fn require_text(&mut self, field: &str, value: &str, max_len: usize) {
        if value.trim().is_empty() {
            self.add(field, "must not be empty");
        } else if too_long(value, max_len) {
            self.add(field, format!("must be at most {max_len} characters"));
        }
    }

    /// Records a violation unless `value` is a usable identifier.
    pub fn require_id(&mut self, field: &str, value: &str) {
        self.require_text(field, value, MAX_ID_LEN);
    }

    /// Checks order lines given as (sku, quantity): at least one and at most
    /// [`MAX_LINES`], every SKU an identifier named once, every quantity in
    /// 1..=[`MAX_QUANTITY`]. Violations name `lines[i].sku` / `lines[i].quantity`.
    pub fn require_lines<'a>(&mut self, lines: impl ExactSizeIterator<Item = (&'a str, i64)>) {
        if lines.len() == 0 {
            self.add("lines", "must contain at least one line");
        } else if lines.len() > MAX_LINES {
            self.add("lines", format!("must contain at most {MAX_LINES} lines"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, (sku, quantity)) in lines.enumerate() {
            self.require_id(&format!("lines[{i}].sku"), sku);
            if !(1..=MAX_QUANTITY).contains(&quantity) {
                self.add(
                    format!("lines[{i}].quantity"),
                    format!("must be between 1 and {MAX_QUANTITY}"),
                );
            }
            if !sku.is_empty() && !seen.insert(sku) {
                self.add(format!("lines[{i}].sku"), "appears in more than one line");
            }
        }
    }

    /// `Ok` when nothing was recorded, else the `INVALID_ARGUMENT` status.
    pub fn into_result(self) -> Result<(), Status> {
        if self.violations.is_empty() {
            return Ok(());
        }
        let total = self.violations.len();
        let mut reported: Vec<FieldViolation> = self
            .violations
            .into_iter()
            .take(MAX_REPORTED_VIOLATIONS)
            .map(|mut v| {
                v.field = cut(v.field, MAX_ID_LEN);
                v.description = cut(v.description, MAX_DESCRIPTION_LEN);
                v
            })
            .collect();
        let mut summary = reported
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        if total > reported.len() {
            let more = total - reported.len();
            summary.push_str(&format!("; and {more} more"));
            reported.push(FieldViolation::new(
                "",
                format!("and {more} more violations, not listed"),
            ));
        }
        Err(Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid request: {summary}"),
            ErrorDetails::with_bad_request(reported),
        ))
    }
}

/// Whether `value` has more than `max` characters (Unicode scalar values,
/// as JSON Schema's `maxLength` counts them), not bytes: every length limit
/// on client text is checked with this.
pub fn too_long(value: &str, max: usize) -> bool {
    // At most one character per byte: short byte strings need no count.
    value.len() > max && value.chars().count() > max
}

/// `text` cut to at most `max` bytes (on a character boundary).
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// `INVALID_ARGUMENT` unless `value` is a usable identifier.
pub fn require_id(field: &str, value: &str) -> Result<(), Status> {
    let mut violations = Violations::new();
    violations.require_id(field, value);
    violations.into_result()
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
    fn a_hundred_bad_lines_give_a_small_refusal_that_counts_the_rest() {
        let line = ("KB-001", 1);
        let mut v = Violations::new();
        v.require_lines(std::iter::repeat_n(line, MAX_LINES));
        let status = v.into_result().expect_err("duplicates are refused");
        let bad = status.get_details_bad_request().expect("BadRequest");
        assert_eq!(bad.field_violations.len(), MAX_REPORTED_VIOLATIONS + 1);
        let last = bad.field_violations.last().expect("a count of the rest");
        assert_eq!(
            last.description,
            format!(
                "and {} more violations, not listed",
                MAX_LINES - 1 - MAX_REPORTED_VIOLATIONS
            )
        );
        assert!(
            status
                .message()
                .ends_with(&format!("and {} more", MAX_LINES - 1 - MAX_REPORTED_VIOLATIONS))
        );
        assert!(
            status.details().len() + status.message().len() < 2 * 1024,
            "{}",
            status.details().len()
        );
    }

    #[test]
    fn long_fields_and_descriptions_are_cut() {
        let mut v = Violations::new();
        v.add("x".repeat(1000), "é".repeat(500));
        let status = v.into_result().expect_err("refused");
        let bad = status.get_details_bad_request().expect("BadRequest");
        assert!(bad.field_violations[0].field.len() <= MAX_ID_LEN + '…'.len_utf8());
        assert!(bad.field_violations[0].description.len() <= MAX_DESCRIPTION_LEN + '…'.len_utf8());
    }

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
    fn lines_are_checked_each_with_its_index() {
        let mut v = Violations::new();
        v.require_lines([("A", 1), ("", 1), ("A", 0)].into_iter());
        let status = v.into_result().expect_err("invalid");
        let fields: Vec<_> = status
            .get_details_bad_request()
            .expect("details")
            .field_violations
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(fields, ["lines[1].sku", "lines[2].quantity", "lines[2].sku"]);
        let mut v = Violations::new();
        v.require_lines(std::iter::empty());
        assert!(v.into_result().is_err(), "no lines");
    }

    #[test]
    fn lengths_are_counted_in_characters_not_bytes() {
        let wide = "é".repeat(MAX_ID_LEN);
        assert_eq!(wide.len(), 2 * MAX_ID_LEN);
        assert!(!too_long(&wide, MAX_ID_LEN));
        assert!(require_id("order_id", &wide).is_ok(), "128 two-byte characters");
        let four = "🦀".repeat(MAX_ID_LEN);
        assert!(require_id("order_id", &four).is_ok(), "128 four-byte characters");
        let over = format!("{wide}é");
        assert!(too_long(&over, MAX_ID_LEN));
        let err = require_id("order_id", &over).expect_err("129 characters");
        assert!(
            err.message().contains("at most 128 characters"),
            "{}",
            err.message()
        );
        assert!(!too_long("", 0));
        assert!(too_long("a", 0));
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
