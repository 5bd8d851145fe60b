//! A REST body read as protojson reads it, before prost-reflect maps it onto
//! the message: so that a validator in front of the gateway, a grpc-gateway
//! deployment and this gateway never read different values from the same
//! bytes.
//!
//! - The same key twice in one JSON object is refused. serde_json keeps the
//!   last; protojson refuses, and a front-end that keeps the first would see
//!   another value than the gateway acts on. serde_json has no switch for
//!   this, so the body is parsed by [`Strict`], a `Deserialize` that builds
//!   the same `Value` and fails on a repeated key.
//! - One field under both of its names (`customerId` and `customer_id`) is
//!   refused for the same reason, and every key that names a field is
//!   rewritten to the field's proto name, so a path variable placed later
//!   (by proto name) replaces the body's value instead of sitting beside it.
//! - An integer given as a string is read as protojson reads it: the string
//!   must be a JSON number (`"1e2"` and `"100.0"` are 100; `"+1"`, `" 1"`
//!   and `"01"` are refused) whose value is a whole number. prost-reflect
//!   parses such strings with Rust's `str::parse`, which differs on exactly
//!   these, so they are rewritten here to plain digits (and range-checked by
//!   prost-reflect afterwards).

use std::fmt;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A JSON value in which no object holds a key twice.
pub struct Strict(pub Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }
    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }
    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }
    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }
    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }
    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Strict::deserialize(deserializer).map(|strict| strict.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A body value refused, with the field path it sits at.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub field: String,
    pub reason: String,
}

fn refused(field: &str, reason: impl Into<String>) -> Refused {
    Refused {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Rewrites the object `value` for `message` as described in the module
/// docs; `at` is its field path (empty at the root).
pub fn message(message: &MessageDescriptor, value: &mut Value, at: &str) -> Result<(), Refused> {
    let Value::Object(object) = value else {
        // Not an object: prost-reflect names the type mismatch.
        return Ok(());
    };
    let mut canonical = Map::new();
    let mut written_as = std::collections::HashMap::new();
    for (key, mut item) in std::mem::take(object) {
        let Some(field) = message
            .get_field_by_name(&key)
            .or_else(|| message.get_field_by_json_name(&key))
        else {
            // Unknown: refused (or dropped) by the mapping, by this name.
            canonical.insert(key, item);
            continue;
        };
        let path = join(at, field.name());
        if let Some(first) = written_as.insert(field.name().to_owned(), key.clone()) {
            return Err(refused(
                &path,
                format!("given twice in one object, as {first:?} and as {key:?}"),
            ));
        }
        field_value(&field, &mut item, &path)?;
        canonical.insert(field.name().to_owned(), item);
    }
    *object = canonical;
    Ok(())
}

/// Rewrites `value` as the JSON of `field` (a list, a map or one value).
pub fn field_value(field: &FieldDescriptor, value: &mut Value, at: &str) -> Result<(), Refused> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Ok(());
        };
        if let Value::Object(entries) = value {
            let item = entry.map_entry_value_field();
            for (key, value) in entries.iter_mut() {
                single(&item.kind(), value, &format!("{at}[{key:?}]"))?;
            }
        }
        return Ok(());
    }
    if field.is_list() {
        if let Value::Array(items) = value {
            for (index, item) in items.iter_mut().enumerate() {
                single(&field.kind(), item, &format!("{at}[{index}]"))?;
            }
        }
        return Ok(());
    }
    single(&field.kind(), value, at)
}

fn single(kind: &Kind, value: &mut Value, at: &str) -> Result<(), Refused> {
    match kind {
        Kind::Message(inner) => match wrapped(inner) {
            Some(kind) => single(&kind, value, at),
            // The other well-known types have JSON forms of their own
            // (Struct takes any keys, Any takes "@type"): left to the mapping.
            None if inner.full_name().starts_with("google.protobuf.") => Ok(()),
            None => message(inner, value, at),
        },
        kind if is_integer(kind) => integer(value).map_err(|reason| refused(at, reason)),
        _ => Ok(()),
    }
}

/// The kind a wrapper type (`google.protobuf.Int64Value`, ...) holds.
fn wrapped(message: &MessageDescriptor) -> Option<Kind> {
    let name = message.full_name();
    if name.starts_with("google.protobuf.") && name.ends_with("Value") {
        let value = message.get_field_by_name("value")?;
        (message.fields().len() == 1 && is_integer(&value.kind())).then(|| value.kind())
    } else {
        None
    }
}

fn is_integer(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Int32
            | Kind::Int64
            | Kind::Uint32
            | Kind::Uint64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Fixed32
            | Kind::Fixed64
            | Kind::Sfixed32
            | Kind::Sfixed64
    )
}

/// An integer field's value as plain digits where protojson reads a whole
/// number (the range is prost-reflect's to check).
fn integer(value: &mut Value) -> Result<(), String> {
    match value {
        Value::String(text) => {
            let digits = whole_number(text).ok_or_else(|| {
                format!("{text:?} is not an integer (a JSON number in a string, like \"42\")")
            })?;
            *text = digits;
        }
        // 1e2 and 100.0 in the JSON itself: whole numbers written as floats.
        Value::Number(number) if number.is_f64() => {
            let float = number.as_f64().unwrap_or(f64::NAN);
            if float.fract() != 0.0 || !float.is_finite() {
                return Err(format!("{number} is not a whole number"));
            }
            *value = Value::String(format!("{float:.0}"));
        }
        _ => {}
    }
    Ok(())
}

/// The longest digit string worth writing out: more is out of every
/// integer type's range, and the exponent must not make it huge.
const MAX_DIGITS: usize = 40;

/// `text` as plain decimal digits (with a leading `-`) when it is a JSON
/// number literal whose value is whole: `1e2` → `100`, `-1.50e1` → `-15`.
/// Exact (no floating point), as protojson's own parse is.
fn whole_number(text: &str) -> Option<String> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    // JSON's grammar: no leading zeros, digits on both sides of the point.
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (whole.len() > 1 && whole.starts_with('0')) {
        return None;
    }
    if fraction.is_some_and(|f| !digits(f)) {
        return None;
    }
    let exponent: i64 = match exponent {
        None => 0,
        Some(e) => {
            let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
            if !digits(unsigned) || unsigned.len() > 4 {
                return None;
            }
            e.parse().ok()?
        }
    };
    let fraction = fraction.unwrap_or("");
    let mut significant = format!("{whole}{fraction}");
    let mut shift = exponent - fraction.len() as i64;
    while shift < 0 {
        // Dropping a digit below the point: only zeros may go.
        if !significant.ends_with('0') {
            return None;
        }
        significant.pop();
        shift += 1;
    }
    let significant = significant.trim_start_matches('0');
    if significant.is_empty() {
        return Some("0".to_owned());
    }
    if significant.len() as i64 + shift > MAX_DIGITS as i64 {
        return None;
    }
    let mut out = String::with_capacity(MAX_DIGITS + 1);
    if negative {
        out.push('-');
    }
    out.push_str(significant);
    out.extend(std::iter::repeat_n('0', shift as usize));
    Some(out)
}

fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_owned()
    } else {
        format!("{at}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_read_as_protojson_reads_them() {
        for (text, digits) in [
            ("0", "0"),
            ("-0", "0"),
            ("42", "42"),
            ("-7", "-7"),
            ("1e2", "100"),
            ("1E2", "100"),
            ("1e+2", "100"),
            ("100.0", "100"),
            ("-1.50e1", "-15"),
            ("1500e-2", "15"),
            ("0.0", "0"),
            ("9223372036854775807", "9223372036854775807"),
            ("18446744073709551616", "18446744073709551616"),
        ] {
            assert_eq!(whole_number(text).as_deref(), Some(digits), "{text}");
        }
        for text in [
            "", "+1", " 1", "1 ", "01", "-", "1.", ".5", "1.5", "1e-1", "15e-2", "1e", "1e+", "0x10",
            "1_000", "NaN", "Infinity", "1e99999", "1e50", "--1",
        ] {
            assert_eq!(whole_number(text), None, "{text:?} is refused");
        }
    }

    #[test]
    fn a_key_twice_in_one_object_is_refused_at_any_depth() {
        let parse = |text: &str| serde_json::from_str::<Strict>(text).map(|s| s.0);
        assert_eq!(
            parse(r#"{"a": 1, "b": [{"c": 2}]}"#).expect("no repeats"),
            serde_json::json!({"a": 1, "b": [{"c": 2}]})
        );
        for text in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"x": {"a": 1, "a": 1}}"#,
            r#"[{"a": null, "a": null}]"#,
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains("\"a\" appears twice"), "{text}: {error}");
        }
    }
}
