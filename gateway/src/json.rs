//! REST request → protobuf request, and protobuf response → JSON, by the
//! proto3 canonical JSON mapping (prost-reflect's serde support does the
//! mapping itself: lowerCamelCase out, proto names accepted in, 64-bit
//! integers as strings, enums by name, well-known types in their JSON forms).
//!
//! A request is assembled as one JSON object (the body, then query
//! parameters, then path variables, each placed at its field path) and
//! deserialized once, so every value, wherever it came from, goes through the
//! same parser and a bad one is reported the same way: 400 with a
//! `BadRequest` field violation naming the field (`serde_path_to_error`
//! tracks where the parser was). The body is first read as protojson reads
//! it ([`strict`]): a key given twice is refused, and so are integer strings
//! protojson would not take.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions,
};
use serde_json::{Map, Value};

use crate::error::bad_field;
use crate::fields;
use crate::rules::Binding;

/// How strictly JSON input is read.
#[derive(Debug, Clone, Copy)]
pub struct JsonOptions {
    /// Refuse fields the message does not have (400), the default.
    pub deny_unknown_fields: bool,
}

impl Default for JsonOptions {
    fn default() -> Self {
        Self {
            deny_unknown_fields: true,
        }
    }
}

/// The request message for `binding` from its path variables, query string
/// and body.
pub fn request(
    binding: &Binding,
    variables: crate::template::Captures,
    query: Option<&str>,
    body: &[u8],
    options: JsonOptions,
) -> Result<DynamicMessage, tonic::Status> {
    let input = binding.method.input();
    let mut body = body_value(body)?;
    if let Some(value) = body.as_mut() {
        match binding.body.as_deref() {
            Some("*") => strict::message(&input, value, ""),
            Some(name) => match input.get_field_by_name(name) {
                Some(field) => strict::field_value(&field, value, name),
                None => Ok(()),
            },
            None => Ok(()),
        }
        .map_err(|refused| bad_field(&refused.field, refused.reason))?;
    }
    let mut root = match (binding.body.as_deref(), body) {
        (Some("*"), Some(Value::Object(object))) => object,
        (Some("*"), Some(_)) => return Err(bad_field("", "the request body must be a JSON object")),
        (Some("*"), None) | (_, None) => Map::new(),
        (Some(field), Some(value)) => Map::from_iter([(field.to_owned(), value)]),
        (None, Some(_)) => return Err(bad_field("", "this route takes no request body")),
    };
    // Fields set from the query (by proto name), so that a field given
    // twice, or under both of its names, is refused rather than one value
    // silently winning (grpc-gateway answers 400 too).
    let mut from_query = std::collections::HashSet::new();
    for (key, value) in query_pairs(query) {
        if binding.body.as_deref() == Some("*") {
            return Err(bad_field(
                &key,
                "query parameters are not accepted here: send fields in the body",
            ));
        }
        let path: Vec<&str> = key.split('.').collect();
        let Some(field) = fields::resolve(&input, &path) else {
            if options.deny_unknown_fields {
                return Err(bad_field(&key, format!("no such field in {}", input.full_name())));
            }
            continue;
        };
        if !field.is_list() && !from_query.insert(canonical_path(&input, &path)) {
            return Err(bad_field(
                &key,
                "given more than once (this field takes one value)",
            ));
        }
        let value = scalar(&field, &value).map_err(|reason| bad_field(&key, reason))?;
        place(&mut root, &path, value, field.is_list()).map_err(|reason| bad_field(&key, reason))?;
    }
    for (path, value) in variables {
        let name = path.join(".");
        let field =
            fields::resolve(&input, &path).ok_or_else(|| bad_field(&name, "path variable is not a field"))?;
        let value = scalar(&field, &value).map_err(|reason| bad_field(&name, reason))?;
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        // The path wins over the same field sent in the body.
        place(&mut root, &path, value, false).map_err(|reason| bad_field(&name, reason))?;
    }
    decode(input, Value::Object(root), options)
}

fn body_value(body: &[u8]) -> Result<Option<Value>, tonic::Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<strict::Strict>(body)
        .map(|strict| Some(strict.0))
        .map_err(|error| bad_field("", format!("the request body is not valid JSON: {error}")))
}

/// A field path by proto names, whichever names it was written with.
fn canonical_path(input: &MessageDescriptor, path: &[&str]) -> Vec<String> {
    (1..=path.len())
        .map(|len| {
            fields::resolve(input, &path[..len])
                .map_or_else(|| path[len - 1].to_owned(), |f| f.name().to_owned())
        })
        .collect()
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// A text value (from a path or a query string) as the JSON the field's type
/// takes; the parser checks the rest (ranges, enum names, timestamps).
fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    Ok(match field.kind() {
        // The spellings grpc-gateway takes (Go's strconv.ParseBool).
        Kind::Bool => match text {
            "true" | "True" | "TRUE" | "t" | "T" | "1" => Value::Bool(true),
            "false" | "False" | "FALSE" | "f" | "F" | "0" => Value::Bool(false),
            _ => {
                return Err(format!(
                    "{text:?} is not a boolean (true or false, 1 or 0, t or f)"
                ));
            }
        },
        Kind::Double | Kind::Float => match text.parse::<f64>() {
            Ok(number) if number.is_finite() => serde_json::Number::from_f64(number)
                .map_or_else(|| Value::String(text.to_owned()), Value::Number),
            _ => Value::String(text.to_owned()),
        },
        Kind::Message(message) if !is_scalar_like(&message) => {
            return Err(format!(
                "{} is a message: set its fields one by one (name.field=value)",
                field.name()
            ));
        }
        // Integers as strings are valid JSON for every integer type, and
        // enums, strings, bytes and the scalar-like well-known types are strings.
        _ => Value::String(text.to_owned()),
    })
}

fn is_scalar_like(message: &MessageDescriptor) -> bool {
    let name = message.full_name();
    name.starts_with("google.protobuf.")
        && (name.ends_with("Value")
            || matches!(
                name,
                "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask"
            ))
        && !matches!(name, "google.protobuf.Value" | "google.protobuf.ListValue")
}

/// Puts `value` at `path` in `root`, creating objects on the way; a repeated
/// field collects values into an array.
fn place(root: &mut Map<String, Value>, path: &[&str], value: Value, repeated: bool) -> Result<(), String>
where
{
    let (last, parents) = path.split_last().ok_or("empty field path")?;
    let mut current = root;
    for part in parents {
        let entry = current
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        current = entry
            .as_object_mut()
            .ok_or("set both as a value and as a message")?;
    }
    if repeated {
        match current
            .entry((*last).to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) => items.push(value),
            _ => return Err("set both as a list and as a value".to_owned()),
        }
    } else {
        current.insert((*last).to_owned(), value);
    }
    Ok(())
}

/// Deserializes with the field path of any error.
pub fn decode(
    descriptor: MessageDescriptor,
    value: Value,
    options: JsonOptions,
) -> Result<DynamicMessage, tonic::Status> {
    let options = DeserializeOptions::new().deny_unknown_fields(options.deny_unknown_fields);
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(value, &mut track);
    DynamicMessage::deserialize_with_options(descriptor, deserializer, &options).map_err(|error| {
        let path = track.path().to_string();
        let description = error.to_string();
        let field = match unknown_field_name(&description) {
            Some(unknown) if path == "." => unknown.to_owned(),
            Some(unknown) => format!("{path}.{unknown}"),
            None if path == "." => String::new(),
            None => path,
        };
        bad_field(&field, description)
    })
}

/// The field named by prost-reflect's "unrecognized field name 'x'" (or
/// serde's "unknown field `x`").
fn unknown_field_name(description: &str) -> Option<&str> {
    let (rest, close) = if let Some(rest) = description.strip_prefix("unrecognized field name '") {
        (rest, '\'')
    } else {
        (description.strip_prefix("unknown field `")?, '`')
    };
    rest.split(close).next()
}

/// How responses are written.
pub fn serialize_options() -> SerializeOptions {
    // Unpopulated fields are written with their defaults (grpc-gateway's
    // EmitUnpopulated): a REST client sees `"status": "ORDER_STATUS_PENDING"`
    // or `"items": []` rather than an absent key it must know to default.
    SerializeOptions::new().skip_default_fields(false)
}

/// A response message as JSON, or only its `response_body` field.
pub fn response(message: &DynamicMessage, response_body: Option<&str>) -> Result<Value, tonic::Status> {
    let value = message
        .serialize_with_options(serde_json::value::Serializer, &serialize_options())
        .map_err(|error| tonic::Status::internal(format!("writing the response as JSON: {error}")))?;
    match response_body {
        None => Ok(value),
        Some(field) => {
            let json_name = message
                .descriptor()
                .get_field_by_name(field)
                .map(|f| f.json_name().to_owned())
                .unwrap_or_else(|| field.to_owned());
            Ok(value.get(&json_name).cloned().unwrap_or(Value::Null))
        }
    }
}

mod strict;

#[cfg(test)]
mod tests;
