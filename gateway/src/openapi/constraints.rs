//! What the services refuse, written into the document as JSON Schema:
//! which request fields must be set (`required`) and the limits on their
//! values (`maxLength`, `pattern`, `minItems`, ...), so that a request the
//! document calls valid is one the services accept, and a generated client
//! or a front-end validator can refuse the rest before it is sent.
//!
//! The protos carry no validation annotations, and the services check in
//! Rust with the constants of `ordermesh_runtime::validate` and `paging`;
//! this table says which field each check applies to, with the same
//! constants. [`of`] gives a field's constraint (merged into its schema
//! wherever the field appears: message property, path or query parameter,
//! `body: "field"` body); [`of_message`] gives the few rules that tie a
//! request's fields together, merged into the request's own schema (whole,
//! or less the fields its path sets, which it is told). A rule JSON Schema
//! cannot state exactly is written as a stricter one, so the document stays
//! a subset of what the services accept: identifiers "not blank" as "holds
//! a character that is whitespace to no one", 64-bit ranges as patterns
//! (proto3 JSON writes them as strings), page tokens as the encodings of
//! ASCII keys. A rule it cannot state at all (each SKU once per order, one
//! currency across an account's opening amounts) is in the field's
//! description. Refusals for the state a request meets (FAILED_PRECONDITION:
//! a released reservation, a rejected order; a price in another currency
//! than the SKU's) are no document's to rule out.
//!
//! Schemathesis drives the document against the running services in CI
//! (`.ci/schemathesis.sh`): a schema-valid request refused fails it, but for
//! those two kinds (`.ci/schemathesis_hooks.py` skips bodies breaking a
//! rule stated in words, and drops refusals for state). A test checks
//! every key here names a field or message of the contracts, and every
//! such field is listed.

use serde_json::{Value, json};

use ordermesh_runtime::validate::{
    MAX_AMOUNT_MINOR, MAX_ID_LEN, MAX_LINES, MAX_NAME_LEN, MAX_NOTE_LEN, MAX_QUANTITY,
};

/// A request field's constraint.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// The request must set it (a JSON body lists it in `required`; a query
    /// parameter is `required: true`).
    pub required: bool,
    /// JSON Schema keywords merged into the field's schema: for a repeated
    /// field, into the array's (`minItems`, ...), with an `items` object
    /// merged into the items' schema; for a message field, beside its
    /// `$ref`, moved into an `allOf` ([`merge`]), so that `required` and
    /// `properties` constrain the message where this field holds it only.
    /// A `description` is added to the field's own.
    pub schema: Value,
}

/// Not blank, as Rust's `trim` sees it: a character that is not
/// whitespace. `\s` differs between regex dialects (ECMA 262's lacks
/// U+0085, which Rust trims), so that one is named too.
const NOT_BLANK: &str = r"[^\s\u0085]";

/// An identifier (the services' `require_id`): not blank, at most
/// [`MAX_ID_LEN`] characters.
pub fn id() -> Value {
    text(MAX_ID_LEN)
}

/// Text that must not be blank, at most `max` characters (`require_text`).
pub fn text(max: usize) -> Value {
    json!({ "minLength": 1, "maxLength": max, "pattern": NOT_BLANK })
}

/// Optional text (a filter, a note): empty or at most `max` characters.
pub fn up_to(max: usize) -> Value {
    json!({ "maxLength": max })
}

/// A page size: 0 for the default, larger ones are served the ceiling,
/// negative ones refused ([`ordermesh_runtime::paging::page_size`]).
pub fn page_size() -> Value {
    json!({ "minimum": 0 })
}

/// The largest power of ten an int64 holds: every number of fewer digits fits.
const INT64_POWER_OF_TEN: i64 = 1_000_000_000_000_000_000;

/// How many zeros `max`, a power of ten, has.
fn power_of_ten(max: i64) -> usize {
    let digits = max.checked_ilog10().unwrap_or(0);
    assert_eq!(10_i64.pow(digits), max, "{max} is not a power of ten");
    digits as usize
}

/// 1 to `max` (a power of ten), as the gateway reads an int64 string: plain
/// digits, no leading zero.
fn magnitude(max: i64) -> String {
    match power_of_ten(max) {
        0 => "1".to_owned(),
        digits => format!("[1-9][0-9]{{0,{}}}|1{}", digits - 1, "0".repeat(digits)),
    }
}

/// A 64-bit integer (a JSON string in proto3 JSON) from 1 to `max`, a power of ten.
pub fn positive_up_to(max: i64) -> Value {
    json!({ "pattern": format!("^(?:{})$", magnitude(max)) })
}

/// A 64-bit integer from 0 to `max`, a power of ten.
pub fn non_negative_up_to(max: i64) -> Value {
    json!({ "pattern": format!("^(?:0|{})$", magnitude(max)) })
}

/// A 64-bit integer from `-max` to `max` but 0, `max` a power of ten.
pub fn non_zero_up_to(max: i64) -> Value {
    json!({ "pattern": format!("^-?(?:{})$", magnitude(max)) })
}

/// A client-supplied ISO 4217 code (`validate::is_currency_code`).
pub fn currency_code() -> Value {
    json!({ "pattern": "^[A-Z]{3}$" })
}

/// A `Money` field of a request whose amount takes `amount` (a pattern from
/// the helpers above): its currency is always required, its amount unless
/// 0 (what an unset amount is) is taken.
fn money(amount: Value, zero_allowed: bool) -> Value {
    let required = if zero_allowed {
        json!(["currencyCode"])
    } else {
        json!(["amountMinor", "currencyCode"])
    };
    json!({
        "required": required,
        "properties": { "amountMinor": amount, "currencyCode": currency_code() },
    })
}

/// Order lines (`Violations::require_lines`): 1 to [`MAX_LINES`], each with
/// an identifier SKU and a quantity from 1 to [`MAX_QUANTITY`].
fn lines() -> Value {
    json!({
        "minItems": 1,
        "maxItems": MAX_LINES,
        "items": {
            "required": ["sku", "quantity"],
            "properties": { "sku": id(), "quantity": positive_up_to(MAX_QUANTITY) },
        },
    })
}

/// What a page token is, for the fields whose comments do not say.
const PAGE_TOKEN: &str = "The nextPageToken of the previous page; empty for the first.";

/// `schema` with a description, added to the field's own: for a rule the
/// keywords cannot state, or the field's comment does not.
fn described(mut schema: Value, text: &str) -> Value {
    schema["description"] = text.into();
    schema
}

/// The page token of a listing keyed by a text (an id, a SKU;
/// [`ordermesh_runtime::paging::decode_token`]): empty for the first page,
/// else the key in unpadded base64url. Written as the encodings of ASCII
/// keys: the tokens of keys beyond ASCII are taken too, undocumented.
fn key_token() -> Value {
    json!({
        "pattern": format!("^{}$", base64url::ascii(0)),
    })
}

/// The page token of a listing keyed by a (time, id) position
/// ([`ordermesh_runtime::paging::decode_time_id`]): the key `time:id` in
/// unpadded base64url. Written as the encodings of keys whose time has 1 to
/// 18 digits (microseconds have 16 until 2286) and whose id is ASCII.
fn time_id_token() -> Value {
    json!({
        "pattern": format!("^(?:{})?$", base64url::time_id()),
    })
}

/// A dead letter's id (`EventAdminService`'s `dead_letter_id`): a
/// decimal `u64`, written as 1 to 19 digits (all of which fit).
fn dead_letter_id() -> Value {
    json!({ "pattern": "^[0-9]{1,19}$" })
}

/// The event streams' contexts, the second token of their subjects
/// (`ordermesh_events::kind::BoundedContext`: the gateway does not depend
/// on the events crate, a test compares them).
const CONTEXTS: [&str; 3] = ["orders", "inventory", "payments"];

/// A NATS subject filter that `TailEvents` takes: empty (every event), or
/// tokens (`*` one, `>` the rest) that can match the subject of an event
/// stream, `ordermesh.<context>.v1.<event>`.
fn subject_filter() -> Value {
    let contexts = CONTEXTS.join("|");
    json!({
        "pattern": format!(
            r"^(?:>|(?:ordermesh|\*)\.(?:>|(?:{contexts}|\*)\.(?:>|(?:v1|\*)\.(?:>|\*|[a-z_]+))))?$"
        ),
    })
}

/// The constraint on the field `full_name` (`package.Message.field`), if any.
pub fn of(full_name: &str) -> Option<Constraint> {
    let required = |schema: Value| Constraint {
        required: true,
        schema,
    };
    let optional = |schema: Value| Constraint {
        required: false,
        schema,
    };
    Some(match full_name {
        // Identifiers a request must name: its idempotency key, the
        // customer or account it is for, the entity its path names.
        "ordermesh.order.v1.CreateOrderRequest.request_id"
        | "ordermesh.order.v1.CreateOrderRequest.customer_id"
        | "ordermesh.order.v1.GetOrderRequest.order_id"
        | "ordermesh.order.v1.CancelOrderRequest.order_id"
        | "ordermesh.order.v1.WatchOrderRequest.order_id"
        | "ordermesh.order.v1.GetOrderTimelineRequest.order_id"
        | "ordermesh.order.v1.GetSagaRequest.order_id"
        | "ordermesh.order.v1.RetrySagaRequest.order_id"
        | "ordermesh.inventory.v1.GetStockRequest.sku"
        | "ordermesh.inventory.v1.AdjustStockRequest.sku"
        | "ordermesh.inventory.v1.AdjustStockRequest.request_id"
        | "ordermesh.inventory.v1.ReserveStockRequest.order_id"
        | "ordermesh.inventory.v1.GetReservationRequest.order_id"
        | "ordermesh.inventory.v1.ReleaseReservationRequest.order_id"
        | "ordermesh.inventory.v1.CommitReservationRequest.order_id"
        | "ordermesh.inventory.v1.UpdateProductRequest.sku"
        | "ordermesh.payment.v1.GetAccountRequest.account_id"
        | "ordermesh.payment.v1.OpenAccountRequest.request_id"
        | "ordermesh.payment.v1.OpenAccountRequest.account_id"
        | "ordermesh.payment.v1.CreditAccountRequest.request_id"
        | "ordermesh.payment.v1.CreditAccountRequest.account_id"
        | "ordermesh.payment.v1.AuthorizePaymentRequest.request_id"
        | "ordermesh.payment.v1.AuthorizePaymentRequest.account_id"
        | "ordermesh.payment.v1.CapturePaymentRequest.payment_id"
        | "ordermesh.payment.v1.CapturePaymentRequest.request_id"
        | "ordermesh.payment.v1.VoidAuthorizationRequest.request_id"
        | "ordermesh.payment.v1.RefundPaymentRequest.payment_id"
        | "ordermesh.payment.v1.RefundPaymentRequest.request_id"
        | "ordermesh.payment.v1.GetPaymentRequest.payment_id" => required(id()),
        // Either names the payment, and the other must then be empty
        // (`of_message`).
        "ordermesh.payment.v1.VoidAuthorizationRequest.payment_id"
        | "ordermesh.payment.v1.VoidAuthorizationRequest.authorize_request_id" => optional(id()),
        // Filters and optional identifiers: empty, or at most an identifier's length.
        "ordermesh.order.v1.ListOrdersRequest.customer_id"
        | "ordermesh.order.v1.ListConfirmationNoticesRequest.customer_id"
        | "ordermesh.inventory.v1.ReserveStockRequest.customer_id"
        | "ordermesh.inventory.v1.ListRestockAlertsRequest.sku"
        | "ordermesh.payment.v1.ListPaymentsRequest.account_id"
        | "ordermesh.payment.v1.ListPaymentsRequest.authorize_request_id"
        | "ordermesh.payment.v1.ListLedgerEntriesRequest.ledger_account"
        | "ordermesh.payment.v1.ListLedgerEntriesRequest.payment_id" => optional(up_to(MAX_ID_LEN)),
        "ordermesh.order.v1.ListOrdersRequest.page_size"
        | "ordermesh.order.v1.ListSagasRequest.page_size"
        | "ordermesh.order.v1.ListConfirmationNoticesRequest.page_size"
        | "ordermesh.inventory.v1.ListStockRequest.page_size"
        | "ordermesh.inventory.v1.ListRestockAlertsRequest.page_size"
        | "ordermesh.payment.v1.ListAccountsRequest.page_size"
        | "ordermesh.payment.v1.ListPaymentsRequest.page_size"
        | "ordermesh.payment.v1.ListLedgerEntriesRequest.page_size"
        | "ordermesh.events.v1.ListDeadLettersRequest.page_size" => optional(page_size()),
        // ListStock's comment says what its token is.
        "ordermesh.inventory.v1.ListStockRequest.page_token" => optional(key_token()),
        "ordermesh.payment.v1.ListAccountsRequest.page_token"
        | "ordermesh.payment.v1.ListLedgerEntriesRequest.page_token" => {
            optional(described(key_token(), PAGE_TOKEN))
        }
        "ordermesh.order.v1.ListOrdersRequest.page_token"
        | "ordermesh.order.v1.ListSagasRequest.page_token"
        | "ordermesh.order.v1.ListConfirmationNoticesRequest.page_token"
        | "ordermesh.inventory.v1.ListRestockAlertsRequest.page_token"
        | "ordermesh.payment.v1.ListPaymentsRequest.page_token" => {
            optional(described(time_id_token(), PAGE_TOKEN))
        }
        // Each SKU at most once, which `uniqueItems` cannot say of objects
        // that differ in quantity: the comments of the others say it.
        "ordermesh.order.v1.CreateOrderRequest.lines"
        | "ordermesh.inventory.v1.ReserveStockRequest.lines" => required(lines()),
        "ordermesh.inventory.v1.CheckAvailabilityRequest.lines" => required(described(
            lines(),
            &format!("1 to {MAX_LINES} lines, each SKU at most once."),
        )),
        "ordermesh.inventory.v1.AdjustStockRequest.delta" => required(non_zero_up_to(MAX_QUANTITY)),
        "ordermesh.inventory.v1.AdjustStockRequest.reason"
        | "ordermesh.payment.v1.AuthorizePaymentRequest.reference" => optional(up_to(MAX_NOTE_LEN)),
        "ordermesh.inventory.v1.UpdateProductRequest.name" => optional(text(MAX_NAME_LEN)),
        "ordermesh.inventory.v1.UpdateProductRequest.unit_price" => {
            optional(money(non_negative_up_to(INT64_POWER_OF_TEN), true))
        }
        "ordermesh.inventory.v1.UpdateProductRequest.low_stock_threshold" => {
            optional(non_negative_up_to(INT64_POWER_OF_TEN))
        }
        "ordermesh.payment.v1.OpenAccountRequest.display_name" => optional(up_to(MAX_NAME_LEN)),
        "ordermesh.payment.v1.OpenAccountRequest.opening_balance" => {
            required(money(non_negative_up_to(MAX_AMOUNT_MINOR), true))
        }
        "ordermesh.payment.v1.OpenAccountRequest.credit_limit"
        | "ordermesh.payment.v1.OpenAccountRequest.payment_limit" => optional(described(
            money(non_negative_up_to(MAX_AMOUNT_MINOR), true),
            "In the currency of openingBalance (the same currencyCode).",
        )),
        "ordermesh.payment.v1.CreditAccountRequest.amount"
        | "ordermesh.payment.v1.AuthorizePaymentRequest.amount" => {
            required(money(positive_up_to(MAX_AMOUNT_MINOR), false))
        }
        "ordermesh.events.v1.TailEventsRequest.subject_filter" => optional(subject_filter()),
        "ordermesh.events.v1.ListDeadLettersRequest.page_token" => {
            optional(described(json!({ "pattern": "^[0-9]{0,19}$" }), PAGE_TOKEN))
        }
        "ordermesh.events.v1.ReplayDeadLetterRequest.dead_letter_id" => required(dead_letter_id()),
        _ => return None,
    })
}

/// Every field [`of`] has a constraint for, for the test that they exist.
pub const NAMED: &[&str] = &[
    "ordermesh.order.v1.CreateOrderRequest.request_id",
    "ordermesh.order.v1.CreateOrderRequest.customer_id",
    "ordermesh.order.v1.CreateOrderRequest.lines",
    "ordermesh.order.v1.GetOrderRequest.order_id",
    "ordermesh.order.v1.ListOrdersRequest.customer_id",
    "ordermesh.order.v1.ListOrdersRequest.page_size",
    "ordermesh.order.v1.ListOrdersRequest.page_token",
    "ordermesh.order.v1.CancelOrderRequest.order_id",
    "ordermesh.order.v1.WatchOrderRequest.order_id",
    "ordermesh.order.v1.GetOrderTimelineRequest.order_id",
    "ordermesh.order.v1.GetSagaRequest.order_id",
    "ordermesh.order.v1.ListSagasRequest.page_size",
    "ordermesh.order.v1.ListSagasRequest.page_token",
    "ordermesh.order.v1.RetrySagaRequest.order_id",
    "ordermesh.order.v1.ListConfirmationNoticesRequest.customer_id",
    "ordermesh.order.v1.ListConfirmationNoticesRequest.page_size",
    "ordermesh.order.v1.ListConfirmationNoticesRequest.page_token",
    "ordermesh.inventory.v1.CheckAvailabilityRequest.lines",
    "ordermesh.inventory.v1.GetStockRequest.sku",
    "ordermesh.inventory.v1.ListStockRequest.page_size",
    "ordermesh.inventory.v1.ListStockRequest.page_token",
    "ordermesh.inventory.v1.AdjustStockRequest.sku",
    "ordermesh.inventory.v1.AdjustStockRequest.delta",
    "ordermesh.inventory.v1.AdjustStockRequest.reason",
    "ordermesh.inventory.v1.AdjustStockRequest.request_id",
    "ordermesh.inventory.v1.ReserveStockRequest.order_id",
    "ordermesh.inventory.v1.ReserveStockRequest.lines",
    "ordermesh.inventory.v1.ReserveStockRequest.customer_id",
    "ordermesh.inventory.v1.GetReservationRequest.order_id",
    "ordermesh.inventory.v1.ReleaseReservationRequest.order_id",
    "ordermesh.inventory.v1.CommitReservationRequest.order_id",
    "ordermesh.inventory.v1.UpdateProductRequest.sku",
    "ordermesh.inventory.v1.UpdateProductRequest.name",
    "ordermesh.inventory.v1.UpdateProductRequest.unit_price",
    "ordermesh.inventory.v1.UpdateProductRequest.low_stock_threshold",
    "ordermesh.inventory.v1.ListRestockAlertsRequest.sku",
    "ordermesh.inventory.v1.ListRestockAlertsRequest.page_size",
    "ordermesh.inventory.v1.ListRestockAlertsRequest.page_token",
    "ordermesh.payment.v1.GetAccountRequest.account_id",
    "ordermesh.payment.v1.ListAccountsRequest.page_size",
    "ordermesh.payment.v1.ListAccountsRequest.page_token",
    "ordermesh.payment.v1.OpenAccountRequest.request_id",
    "ordermesh.payment.v1.OpenAccountRequest.account_id",
    "ordermesh.payment.v1.OpenAccountRequest.display_name",
    "ordermesh.payment.v1.OpenAccountRequest.opening_balance",
    "ordermesh.payment.v1.OpenAccountRequest.credit_limit",
    "ordermesh.payment.v1.OpenAccountRequest.payment_limit",
    "ordermesh.payment.v1.CreditAccountRequest.request_id",
    "ordermesh.payment.v1.CreditAccountRequest.account_id",
    "ordermesh.payment.v1.CreditAccountRequest.amount",
    "ordermesh.payment.v1.AuthorizePaymentRequest.request_id",
    "ordermesh.payment.v1.AuthorizePaymentRequest.account_id",
    "ordermesh.payment.v1.AuthorizePaymentRequest.amount",
    "ordermesh.payment.v1.AuthorizePaymentRequest.reference",
    "ordermesh.payment.v1.CapturePaymentRequest.payment_id",
    "ordermesh.payment.v1.CapturePaymentRequest.request_id",
    "ordermesh.payment.v1.VoidAuthorizationRequest.payment_id",
    "ordermesh.payment.v1.VoidAuthorizationRequest.request_id",
    "ordermesh.payment.v1.VoidAuthorizationRequest.authorize_request_id",
    "ordermesh.payment.v1.RefundPaymentRequest.payment_id",
    "ordermesh.payment.v1.RefundPaymentRequest.request_id",
    "ordermesh.payment.v1.GetPaymentRequest.payment_id",
    "ordermesh.payment.v1.ListPaymentsRequest.account_id",
    "ordermesh.payment.v1.ListPaymentsRequest.page_size",
    "ordermesh.payment.v1.ListPaymentsRequest.page_token",
    "ordermesh.payment.v1.ListPaymentsRequest.authorize_request_id",
    "ordermesh.payment.v1.ListLedgerEntriesRequest.ledger_account",
    "ordermesh.payment.v1.ListLedgerEntriesRequest.payment_id",
    "ordermesh.payment.v1.ListLedgerEntriesRequest.page_size",
    "ordermesh.payment.v1.ListLedgerEntriesRequest.page_token",
    "ordermesh.events.v1.TailEventsRequest.subject_filter",
    "ordermesh.events.v1.ListDeadLettersRequest.page_size",
    "ordermesh.events.v1.ListDeadLettersRequest.page_token",
    "ordermesh.events.v1.ReplayDeadLetterRequest.dead_letter_id",
];

/// Rules tying fields of the request `full_name` together, as JSON Schema
/// keywords merged into its schema; `from_path` are the fields (proto
/// names) its path sets, which its body then lacks.
pub fn of_message(full_name: &str, from_path: &[&str]) -> Option<Value> {
    Some(match full_name {
        // Exactly one of payment_id and authorize_request_id names the
        // payment: the one the path sets, else either.
        "ordermesh.payment.v1.VoidAuthorizationRequest" => {
            if from_path.contains(&"payment_id") {
                json!({ "properties": { "authorizeRequestId": false } })
            } else if from_path.contains(&"authorize_request_id") {
                json!({ "properties": { "paymentId": false } })
            } else {
                json!({
                    "oneOf": [
                        { "required": ["paymentId"], "properties": { "authorizeRequestId": false } },
                        { "required": ["authorizeRequestId"], "properties": { "paymentId": false } },
                    ],
                })
            }
        }
        // At least one change.
        "ordermesh.inventory.v1.UpdateProductRequest" => json!({
            "anyOf": [
                { "required": ["name"] },
                { "required": ["unitPrice"] },
                { "required": ["lowStockThreshold"] },
            ],
        }),
        _ => return None,
    })
}

/// Every message [`of_message`] has a rule for, for the test that they exist.
pub const NAMED_MESSAGES: &[&str] = &[
    "ordermesh.payment.v1.VoidAuthorizationRequest",
    "ordermesh.inventory.v1.UpdateProductRequest",
];

/// Merges `extra`'s keys into `schema` (objects recursively; anything else
/// replaces what was there). Into a `$ref`, the reference is first moved
/// into an `allOf`: 3.1 applies keywords beside a `$ref`, but not every
/// tool does (Schemathesis drops some), and every one applies `allOf`.
pub fn merge(schema: &mut Value, extra: &Value) {
    match (schema, extra) {
        (Value::Object(schema), Value::Object(extra)) => {
            if !extra.is_empty()
                && let Some(reference) = schema.remove("$ref")
            {
                schema.insert("allOf".to_owned(), json!([{ "$ref": reference }]));
            }
            for (key, value) in extra {
                match schema.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => merge(existing, value),
                    _ => {
                        schema.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (schema, extra) => *schema = extra.clone(),
    }
}

/// Regular expressions for unpadded base64url text (`paging`'s tokens),
/// built from what the encoded bytes may be: base64 writes 3 bytes as 4
/// characters of 6 bits each, so a character class per byte class does not
/// do, and each group is worked out bit by bit.
mod base64url {
    use std::collections::HashMap;

    /// The alphabet, by 6-bit value.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    type Class = fn(u8) -> bool;

    fn ascii_byte(b: u8) -> bool {
        b.is_ascii()
    }

    fn digit(b: u8) -> bool {
        b.is_ascii_digit()
    }

    fn colon(b: u8) -> bool {
        b == b':'
    }

    /// The encodings of 1 to 3 bytes, the i-th one of `classes[i]`: 2 to 4
    /// characters, the bits past the last byte zero (as the decoder wants).
    pub(super) fn bytes(classes: &[Class]) -> String {
        assert!((1..=3).contains(&classes.len()));
        Group {
            classes,
            memo: HashMap::new(),
        }
        .from(0, 0)
    }

    struct Group<'a> {
        classes: &'a [Class],
        memo: HashMap<(usize, u16), String>,
    }

    impl Group<'_> {
        /// The characters from bit `at` on, `partial` being the bits of
        /// the byte `at` is in that the characters so far wrote.
        fn from(&mut self, at: usize, partial: u16) -> String {
            let total = 8 * self.classes.len();
            if at >= total {
                return String::new();
            }
            if let Some(done) = self.memo.get(&(at, partial)) {
                return done.clone();
            }
            // Each character value that can come next, grouped by what may follow it.
            let mut options: Vec<(String, Vec<u8>)> = Vec::new();
            for value in 0..64u8 {
                let Some((next, rest)) = self.step(at, partial, value) else {
                    continue;
                };
                let after = self.from(next, rest);
                match options.iter_mut().find(|(tail, _)| *tail == after) {
                    Some((_, values)) => values.push(value),
                    None => options.push((after, vec![value])),
                }
            }
            let alternatives: Vec<String> = options
                .into_iter()
                .map(|(after, values)| format!("{}{after}", class(&values)))
                .collect();
            let regex = match alternatives.as_slice() {
                [one] => one.clone(),
                many => format!("(?:{})", many.join("|")),
            };
            self.memo.insert((at, partial), regex.clone());
            regex
        }

        /// Writes the 6 bits of `value` at bit `at`: the next position and
        /// its partial byte, or `None` when no bytes of the classes begin so.
        fn step(&self, mut at: usize, mut partial: u16, value: u8) -> Option<(usize, u16)> {
            let total = 8 * self.classes.len();
            for shift in (0..6).rev() {
                let bit = u16::from((value >> shift) & 1);
                if at >= total {
                    if bit != 0 {
                        return None;
                    }
                    at += 1;
                    continue;
                }
                partial = (partial << 1) | bit;
                at += 1;
                if at.is_multiple_of(8) {
                    let byte = u8::try_from(partial).ok()?;
                    if !(self.classes[at / 8 - 1])(byte) {
                        return None;
                    }
                    partial = 0;
                }
            }
            if at < total && !at.is_multiple_of(8) {
                let written = at % 8;
                let class = self.classes[at / 8];
                if !(0..=255u8).any(|b| u16::from(b) >> (8 - written) == partial && class(b)) {
                    return None;
                }
            }
            Some((at, partial))
        }
    }

    /// A character class of these 6-bit values (one character bare).
    fn class(values: &[u8]) -> String {
        let mut chars: Vec<u8> = values.iter().map(|&v| ALPHABET[usize::from(v)]).collect();
        chars.sort_unstable();
        let literal = |c: u8| match c {
            b'-' => r"\-".to_owned(),
            c => char::from(c).to_string(),
        };
        if let [one] = chars.as_slice() {
            return literal(*one);
        }
        let mut out = String::from("[");
        let mut i = 0;
        while i < chars.len() {
            let mut j = i;
            while j + 1 < chars.len() && chars[j + 1] == chars[j] + 1 {
                j += 1;
            }
            if j >= i + 2 {
                out.push_str(&format!("{}-{}", literal(chars[i]), literal(chars[j])));
            } else {
                for &c in &chars[i..=j] {
                    out.push_str(&literal(c));
                }
            }
            i = j + 1;
        }
        out.push(']');
        out
    }

    /// `regex` repeated as `quantifier` says (`*`, `{1,6}`, ...).
    fn repeat(regex: &str, quantifier: &str) -> String {
        format!("(?:{regex}){quantifier}")
    }

    /// ASCII text of at least `min` (0 or 1) characters.
    pub(super) fn ascii(min: usize) -> String {
        let group = bytes(&[ascii_byte, ascii_byte, ascii_byte]);
        let one = bytes(&[ascii_byte]);
        let two = bytes(&[ascii_byte, ascii_byte]);
        match min {
            0 => format!("{}(?:{one}|{two})?", repeat(&group, "*")),
            _ => format!("{}(?:{group}|{one}|{two})", repeat(&group, "*")),
        }
    }

    /// `time:id` with a time of 1 to 18 digits (every one an i64) and an
    /// ASCII id of at least one character. The colon falls in the group
    /// after the time's whole groups of three digits, at one of three
    /// places.
    pub(super) fn time_id() -> String {
        let digits = bytes(&[digit, digit, digit]);
        [
            // 3k digits (k from 1 to 6), then ':' and the id.
            format!(
                "{}(?:{}{}|{})",
                repeat(&digits, "{1,6}"),
                bytes(&[colon, ascii_byte, ascii_byte]),
                ascii(0),
                bytes(&[colon, ascii_byte])
            ),
            // 3k + 1 digits (k from 0 to 5).
            format!(
                "{}{}{}",
                repeat(&digits, "{0,5}"),
                bytes(&[digit, colon, ascii_byte]),
                ascii(0)
            ),
            // 3k + 2 digits (k from 0 to 5).
            format!(
                "{}{}{}",
                repeat(&digits, "{0,5}"),
                bytes(&[digit, digit, colon]),
                ascii(1)
            ),
        ]
        .join("|")
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ordermesh_runtime::paging;
    use regex::Regex;

    use super::*;

    fn regex(schema: &Value) -> Regex {
        Regex::new(schema["pattern"].as_str().expect("a pattern")).expect("a valid regex")
    }

    #[test]
    fn every_named_field_is_in_the_contracts_and_has_its_constraint() {
        let pool = crate::descriptors::pool();
        for name in NAMED {
            let (message, field) = name.rsplit_once('.').expect("Message.field");
            let message = pool
                .get_message_by_name(message)
                .unwrap_or_else(|| panic!("{name}: no message {message}"));
            assert!(
                message.get_field_by_name(field).is_some(),
                "{name}: no field {field}"
            );
            assert!(of(name).is_some(), "{name} is listed but has no constraint");
        }
        // And the other way: every field with a constraint is listed.
        for message in pool.all_messages() {
            for field in message.fields() {
                assert_eq!(
                    of(field.full_name()).is_some(),
                    NAMED.contains(&field.full_name()),
                    "{}",
                    field.full_name()
                );
            }
            assert_eq!(
                of_message(message.full_name(), &[]).is_some(),
                NAMED_MESSAGES.contains(&message.full_name()),
                "{}",
                message.full_name()
            );
        }
    }

    #[test]
    fn int64_patterns_take_exactly_the_range() {
        assert_eq!(
            positive_up_to(1_000_000)["pattern"],
            "^(?:[1-9][0-9]{0,5}|1000000)$"
        );
        let cases: [(Value, &[&str], &[&str]); 4] = [
            (
                positive_up_to(MAX_QUANTITY),
                &["1", "9", "10", "999999", "1000000"],
                &["", "0", "-1", "01", "1000001", "9999999", "+1", "1e3", " 1"],
            ),
            (
                non_zero_up_to(MAX_QUANTITY),
                &["1", "-1", "-1000000", "1000000"],
                &["0", "-0", "1000001", "-1000001", "--1"],
            ),
            (
                non_negative_up_to(MAX_AMOUNT_MINOR),
                &["0", "1", "1000000000000000"],
                &["-1", "00", "1000000000000001"],
            ),
            (
                non_negative_up_to(INT64_POWER_OF_TEN),
                &["0", "999999999999999999", "1000000000000000000"],
                &["-1", "1000000000000000001", "9223372036854775808"],
            ),
        ];
        for (schema, good, bad) in cases {
            let pattern = regex(&schema);
            for text in good {
                assert!(pattern.is_match(text), "{text} is taken by {schema}");
                assert!(text.parse::<i64>().is_ok(), "{text}");
            }
            for text in bad {
                assert!(!pattern.is_match(text), "{text} is refused by {schema}");
            }
        }
    }

    #[test]
    fn identifiers_count_characters_and_refuse_blanks() {
        let id = id();
        assert_eq!(id["maxLength"], MAX_ID_LEN);
        let pattern = regex(&id);
        for blank in [" ", "\t\n", "\u{85}", "\u{a0}\u{3000}", "\u{2028}"] {
            assert!(blank.trim().is_empty());
            assert!(!pattern.is_match(blank), "{blank:?}");
        }
        assert!(pattern.is_match(" x "));
        assert!(pattern.is_match("\u{feff}"), "not whitespace to Rust");
    }

    #[test]
    fn page_token_patterns_take_the_tokens_the_services_give_and_no_others() {
        let key = regex(&key_token());
        let time_id = regex(&time_id_token());
        for text in ["", "KB-001", "customer:alice", "0", "ab", "abc", "\u{0}~"] {
            let token = paging::encode_token(text);
            assert!(key.is_match(&token), "{text:?}: {token}");
        }
        assert!(time_id.is_match(""), "the first page");
        let mut rng = fastrand::Rng::with_seed(7);
        for digits in 1..=18 {
            for id_len in 1..=7 {
                let time: i64 = (0..digits)
                    .map(|_| char::from(b'0' + rng.u8(0..10)))
                    .collect::<String>()
                    .parse()
                    .expect("digits");
                let id: String = (0..id_len).map(|_| char::from(rng.u8(0..128))).collect();
                let token = paging::encode_token(&paging::time_id_key(time, &id));
                assert!(time_id.is_match(&token), "{time}:{id:?}: {token}");
            }
        }
        let now = paging::time_id_key(1_765_000_000_000_000, "0190d7a2-7c3e-7000-8000-000000000000");
        assert!(time_id.is_match(&paging::encode_token(&now)));
        // What a pattern takes, the services take.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let (mut keys, mut positions) = (0, 0);
        for _ in 0..100_000 {
            let len = rng.usize(1..16);
            let token: String = (0..len).map(|_| char::from(alphabet[rng.usize(0..64)])).collect();
            if key.is_match(&token) {
                keys += 1;
                assert!(paging::decode_token(&token).is_ok(), "{token}");
                let bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64url");
                assert!(bytes.is_ascii(), "{token}");
            }
            // A random token is rarely digits and a colon: make some.
            let digits = rng.u32(1..18);
            let time = rng.u64(0..10_u64.pow(digits));
            let id: String = (0..rng.usize(0..4))
                .map(|_| char::from(rng.u8(0..=255)))
                .collect();
            let made = URL_SAFE_NO_PAD.encode(format!("{time}:{id}"));
            for token in [token, made] {
                if time_id.is_match(&token) {
                    positions += 1;
                    let decoded = paging::decode_time_id(&token);
                    assert!(decoded.is_ok_and(|p| p.is_some()), "{token}");
                }
            }
        }
        assert!(keys > 1_000 && positions > 1_000, "{keys} {positions}");
        // Bad lengths, padding, bits set past the last byte, beyond ASCII.
        for bad in ["A", "AAAAA", "AB", "A=", "_w", "gA"] {
            assert!(!key.is_match(bad), "{bad}");
            assert!(!time_id.is_match(bad), "{bad}");
        }
        // "0" (no colon), "17:" (no id), ":x" (no time).
        for bad in ["MA", "MTc6", "Ong"] {
            assert!(key.is_match(bad), "{bad}");
            assert!(!time_id.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn subject_filters_are_those_tail_events_takes() {
        use ordermesh_events::kind::{self, BoundedContext};
        assert_eq!(kind::SUBJECT_PREFIX, "ordermesh");
        let contexts: Vec<&str> = BoundedContext::ALL.iter().map(|c| c.token()).collect();
        assert_eq!(contexts, CONTEXTS);
        for context in BoundedContext::ALL {
            assert_eq!(context.subjects(), format!("ordermesh.{}.v1.>", context.token()));
        }
        let taken = |filter: &str| {
            filter.is_empty()
                || (kind::validate_filter(filter).is_ok()
                    && BoundedContext::ALL
                        .iter()
                        .any(|c| kind::subjects_overlap(filter, &c.subjects())))
        };
        let pattern = regex(&subject_filter());
        let tokens = [
            "ordermesh",
            "orders",
            "inventory",
            "payments",
            "v1",
            "v2",
            "confirmed",
            "*",
            ">",
            "",
            " ",
            "a b",
            "x",
        ];
        let mut rng = fastrand::Rng::with_seed(11);
        let mut matched = 0;
        for _ in 0..20_000 {
            let filter = (0..rng.usize(1..6))
                .map(|_| tokens[rng.usize(0..tokens.len())])
                .collect::<Vec<_>>()
                .join(".");
            if pattern.is_match(&filter) {
                matched += 1;
                assert!(taken(&filter), "{filter:?}");
            }
        }
        assert!(matched > 100, "{matched}");
        for good in [
            "",
            ">",
            "ordermesh.>",
            "*.>",
            "ordermesh.orders.v1.>",
            "ordermesh.*.v1.confirmed",
        ] {
            assert!(pattern.is_match(good) && taken(good), "{good}");
        }
        for bad in [
            "ordermesh",
            "orders.>",
            "ordermesh.orders",
            "ordermesh..v1.>",
            "ordermesh.>.v1",
        ] {
            assert!(!pattern.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn dead_letter_ids_are_u64s() {
        let id = regex(&dead_letter_id());
        assert!(id.is_match("0") && id.is_match("9999999999999999999"));
        assert!("9999999999999999999".parse::<u64>().is_ok());
        assert!(!id.is_match("") && !id.is_match("-1") && !id.is_match("1a"));
    }
}
