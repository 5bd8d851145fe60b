//! `components.schemas` from the messages, as the proto3 JSON mapping writes
//! them (what the gateway sends and reads):
//!
//! - properties by `json_name` (lowerCamelCase);
//! - 64-bit integers as strings (`format: int64`/`uint64`): protobuf's JSON
//!   quotes them, since JSON numbers lose precision past 2^53;
//! - enums as strings naming the values; bytes as base64 strings;
//! - well-known types inline in their JSON forms: Timestamp an RFC 3339
//!   string, Duration `"1.5s"`, wrappers the wrapped scalar or `null`
//!   (JSON Schema 2020-12's `type: [.., "null"]`: 3.1 has no `nullable`),
//!   Struct an object, Value anything, FieldMask a string, Any an object
//!   with `@type`;
//! - a oneof documented in its message's and members' descriptions;
//! - no properties but the fields (`additionalProperties: false`): unknown
//!   fields are a 400.
//!
//! Messages and enums are components keyed by full name
//! (`ordermesh.order.v1.Order`) and referenced; a `$ref` may carry the
//! field's description beside it (3.1 allows siblings).

use std::collections::BTreeMap;

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::{comments, constraints};

pub(super) fn reference(full_name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{full_name}") })
}

/// The JSON form of a well-known type, inline; `None` for other messages.
fn well_known(message: &MessageDescriptor) -> Option<Value> {
    let name = message.full_name().strip_prefix("google.protobuf.")?;
    Some(match name {
        "Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "Duration" => json!({ "type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$" }),
        "FieldMask" => json!({ "type": "string" }),
        "Empty" => json!({ "type": "object" }),
        "Struct" => json!({ "type": "object", "additionalProperties": true }),
        "Value" => json!({}),
        "ListValue" => json!({ "type": "array" }),
        "Any" => json!({
            "type": "object",
            "properties": { "@type": { "type": "string" } },
            "required": ["@type"],
            "additionalProperties": true,
        }),
        "DoubleValue" => json!({ "type": ["number", "null"], "format": "double" }),
        "FloatValue" => json!({ "type": ["number", "null"], "format": "float" }),
        "Int64Value" => json!({ "type": ["string", "null"], "format": "int64" }),
        "UInt64Value" => json!({ "type": ["string", "null"], "format": "uint64" }),
        "Int32Value" => json!({ "type": ["integer", "null"], "format": "int32" }),
        "UInt32Value" => json!({ "type": ["integer", "null"], "format": "uint32", "minimum": 0 }),
        "BoolValue" => json!({ "type": ["boolean", "null"] }),
        "StringValue" => json!({ "type": ["string", "null"] }),
        "BytesValue" => json!({ "type": ["string", "null"], "format": "byte", "contentEncoding": "base64" }),
        _ => return None,
    })
}

pub(super) fn is_well_known(message: &MessageDescriptor) -> bool {
    well_known(message).is_some()
}

/// A well-known type whose JSON form is a scalar, so it can be a query parameter.
pub(super) fn is_query_scalar(message: &MessageDescriptor) -> bool {
    well_known(message)
        .is_some_and(|schema| schema.get("type").is_some_and(|t| t != "object" && t != "array"))
}

/// `google.rpc.Status` by hand, for a pool without it.
pub(super) fn status_fallback() -> Value {
    json!({
        "type": "object",
        "properties": {
            "code": { "type": "integer", "format": "int32" },
            "message": { "type": "string" },
            "details": {
                "type": "array",
                "items": { "type": "object", "properties": { "@type": { "type": "string" } }, "required": ["@type"] },
            },
        },
    })
}

/// The schemas collected so far, by full name.
#[derive(Default)]
pub(super) struct Schemas {
    map: BTreeMap<String, Value>,
}

impl Schemas {
    pub(super) fn into_map(self) -> Map<String, Value> {
        self.map.into_iter().collect()
    }

    pub(super) fn insert(&mut self, name: &str, schema: Value) {
        self.map.insert(name.to_owned(), schema);
    }

    /// Sets `name`'s description unless the protos gave it one.
    pub(super) fn describe(&mut self, name: &str, description: &str) {
        if let Some(Value::Object(schema)) = self.map.get_mut(name) {
            schema.entry("description").or_insert_with(|| description.into());
        }
    }

    /// A reference to `message`'s component (added on first use), or a
    /// well-known type's JSON form.
    pub(super) fn message_ref(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(schema) = well_known(message) {
            return schema;
        }
        let name = message.full_name();
        if !self.map.contains_key(name) {
            // A placeholder first: messages may refer to themselves.
            self.map.insert(name.to_owned(), Value::Null);
            let schema = self.message_schema(message, &[]);
            self.map.insert(name.to_owned(), schema);
        }
        reference(name)
    }

    /// `message`'s schema inline, without the fields named in `skip` (proto
    /// names): a `body: "*"` request less what its path sets.
    pub(super) fn message_without(&mut self, message: &MessageDescriptor, skip: &[&str]) -> Value {
        self.message_schema(message, skip)
    }

    fn message_schema(&mut self, message: &MessageDescriptor, skip: &[&str]) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields().filter(|field| !skip.contains(&field.name())) {
            properties.insert(field.json_name().to_owned(), self.field(&field));
            if constraints::of(field.full_name()).is_some_and(|c| c.required) {
                required.push(field.json_name().to_owned());
            }
        }
        // The gateway refuses fields a message does not have (400), and
        // writes none: the document says so.
        let mut schema = json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        });
        if !required.is_empty() {
            schema["required"] = required.into();
        }
        if let Some(rule) = constraints::of_message(message.full_name(), skip) {
            constraints::merge(&mut schema, &rule);
        }
        let mut description: Vec<String> = comments(&message.parent_file(), message.path())
            .into_iter()
            .collect();
        for oneof in message.oneofs().filter(|oneof| !oneof.is_synthetic()) {
            let members: Vec<String> = oneof.fields().map(|f| format!("`{}`", f.json_name())).collect();
            description.push(format!(
                "Oneof `{}`: at most one of {}.",
                oneof.name(),
                members.join(", ")
            ));
        }
        if !description.is_empty() {
            schema["description"] = description.join("\n\n").into();
        }
        schema
    }

    /// A field's schema (repeated and map included), with its description.
    pub(super) fn field(&mut self, field: &FieldDescriptor) -> Value {
        let mut schema = match field.kind() {
            Kind::Message(entry) if field.is_map() => json!({
                "type": "object",
                "additionalProperties": self.single(&entry.map_entry_value_field()),
            }),
            _ if field.is_list() => json!({ "type": "array", "items": self.single(field) }),
            _ => self.single(field),
        };
        let mut description: Vec<String> = comments(&field.parent_file(), field.path()).into_iter().collect();
        if let Some(oneof) = field.containing_oneof().filter(|oneof| !oneof.is_synthetic()) {
            description.push(format!("Member of oneof `{}`.", oneof.name()));
        }
        if let Some(mut constraint) = constraints::of(field.full_name()) {
            if let Some(Value::String(text)) = constraint
                .schema
                .as_object_mut()
                .and_then(|keywords| keywords.remove("description"))
            {
                description.push(text);
            }
            constraints::merge(&mut schema, &constraint.schema);
        }
        if !description.is_empty() {
            schema["description"] = description.join("\n\n").into();
        }
        schema
    }

    /// The schema of one value of `field` (an element, for a repeated field).
    fn single(&mut self, field: &FieldDescriptor) -> Value {
        match field.kind() {
            Kind::Double => json!({ "type": "number", "format": "double" }),
            Kind::Float => json!({ "type": "number", "format": "float" }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({ "type": "integer", "format": "int32" }),
            Kind::Uint32 | Kind::Fixed32 => json!({ "type": "integer", "format": "uint32", "minimum": 0 }),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({ "type": "string", "format": "int64" }),
            Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "format": "uint64" }),
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => json!({ "type": "string", "format": "byte", "contentEncoding": "base64" }),
            Kind::Message(message) => self.message_ref(&message),
            Kind::Enum(enumeration) => self.enum_ref(&enumeration),
        }
    }

    fn enum_ref(&mut self, enumeration: &EnumDescriptor) -> Value {
        let name = enumeration.full_name();
        if name == "google.protobuf.NullValue" {
            return json!({ "type": "null" });
        }
        if !self.map.contains_key(name) {
            let names: Vec<String> = enumeration
                .values()
                .map(|value| value.name().to_owned())
                .collect();
            let mut description: Vec<String> = comments(&enumeration.parent_file(), enumeration.path())
                .into_iter()
                .collect();
            let values: Vec<String> = enumeration
                .values()
                .filter_map(|value| {
                    comments(&value.parent_file(), value.path())
                        .map(|text| format!("- `{}`: {}", value.name(), text.replace('\n', " ")))
                })
                .collect();
            if !values.is_empty() {
                description.push(values.join("\n"));
            }
            let mut schema = json!({ "type": "string", "enum": names });
            if !description.is_empty() {
                schema["description"] = description.join("\n\n").into();
            }
            self.map.insert(name.to_owned(), schema);
        }
        reference(name)
    }
}
