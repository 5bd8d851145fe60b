//! The OpenAPI 3.1 document of the REST routes, served at `/openapi.json`.
//!
//! Generated once at start from the same descriptor pool and [`Binding`]s the
//! router is built from, so the document cannot drift from what is served,
//! and a new annotated RPC is documented without a change here:
//!
//! - paths and verbs come from the `google.api.http` annotations: one
//!   operation per binding, `additional_bindings` included (operationId
//!   `Service_Method`, then `_2`, `_3`, ... for the additional ones), tagged
//!   by service;
//! - path parameters from the template's variables (named by the field path
//!   as the template writes it); query parameters, for bindings whose body is
//!   not `*`, from the request's other fields, by proto name (`page.size` for
//!   a nested one); bodies and `components.schemas` from the messages (see
//!   [`schema`] for the proto3 JSON mapping: lowerCamelCase names, 64-bit
//!   integers as strings, enums by name, well-known types in their JSON forms);
//! - summaries and descriptions from the protos' comments (the descriptor set
//!   is compiled with source info).
//!
//! Every error is one shape, whatever the route: the gRPC status as a
//! `google.rpc.Status` in JSON (`code`, `message`, `details` as `Any`s with an
//! `@type`), so each operation's `default` response references it, and the
//! `google.rpc` detail messages are in the components for decoding `details`.
//!
//! Security is the gateway's own: a bearer JWT (`components.securitySchemes`),
//! and on each operation the scopes its RPC requires (OpenAPI 3.1 lets a
//! non-OAuth scheme list them), or no requirement for a public route, from
//! the same route table the gateway admits calls by. A streamed response is
//! documented as what each NDJSON line is: `{"result": ...}` or, ending the
//! stream, `{"error": Status}`.

pub mod constraints;
mod details;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use prost_reflect::{DescriptorPool, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::config::RouteAccess;
use crate::fields;
use crate::rules::Binding;
use schema::Schemas;

const STATUS: &str = "google.rpc.Status";

const DESCRIPTION: &str = "REST/JSON for ordermesh's public gRPC services, \
transcoded by the edge gateway from the contracts' google.api.http annotations. \
Bodies follow the proto3 JSON mapping: lowerCamelCase property names, 64-bit \
integers as strings, enums by value name, timestamps as RFC 3339 strings. \
Every error is a google.rpc.Status as JSON.";

const STATUS_DESCRIPTION: &str = "The body of every error: the gRPC status code \
(google.rpc.Code), a message for developers, and details, each an Any whose \
`@type` names one of the google.rpc schemas here (BadRequest, ErrorInfo, ...).";

const BEARER: &str = "bearer";

const BEARER_DESCRIPTION: &str = "A JWT in `Authorization: Bearer <token>`, signed by a key \
the gateway trusts (its JWKS; `ordermesh token` mints one in development). Its scopes \
(`scope` or `scp`) must include those each operation lists.";

/// The document a gateway with no route file serves: the public services'
/// bindings and the built-in route table (what tests and tools check).
pub fn built_in_document() -> Value {
    let pool = crate::descriptors::pool();
    let bindings =
        crate::rules::bindings(pool, crate::descriptors::PUBLIC_SERVICES).expect("every http rule is valid");
    let access = crate::config::route_access(
        pool,
        crate::descriptors::PUBLIC_SERVICES,
        &crate::config::FileConfig::default(),
        std::path::Path::new("(built-in defaults)"),
    )
    .expect("the built-in route table");
    document(pool, &bindings, &access)
}

/// The OpenAPI 3.1 document for these bindings, built once at start and
/// served at /openapi.json; `access` is the gateway's route table (by RPC
/// path, `/package.Service/Method`), for each operation's security.
pub fn document(pool: &DescriptorPool, bindings: &[Binding], access: &HashMap<String, RouteAccess>) -> Value {
    let mut schemas = Schemas::default();
    let mut paths = Map::new();
    let mut ids = HashSet::new();
    let mut tags = Vec::new();
    let mut tagged = HashSet::new();
    for binding in bindings {
        let service = binding.method.parent_service();
        if tagged.insert(service.name().to_owned()) {
            let mut tag = json!({ "name": service.name() });
            if let Some(text) = comments(&service.parent_file(), service.path()) {
                tag["description"] = text.into();
            }
            tags.push(tag);
        }
        let id = operation_id(binding, &mut ids);
        let mut operation = operation(binding, id, &mut schemas);
        operation["security"] = security(access.get(&rpc_path(&binding.method)));
        let item = paths
            .entry(binding.template.openapi_path())
            .or_insert_with(|| json!({}));
        item[binding.verb.as_str().to_ascii_lowercase()] = operation;
    }
    let admitted_as = access.get(crate::compose::ADMITTED_AS);
    if let Some(operation) = details::operation(&mut schemas, security(admitted_as)) {
        paths.insert(crate::compose::ROUTE.to_owned(), json!({ "get": operation }));
    }
    match pool.get_message_by_name(STATUS) {
        Some(status) => {
            schemas.message_ref(&status);
        }
        None => schemas.insert(STATUS, schema::status_fallback()),
    }
    schemas.describe(STATUS, STATUS_DESCRIPTION);
    // The detail types a status's `details` carry, by their `@type`.
    for message in pool.all_messages() {
        if message.package_name() == "google.rpc" && message.parent_message().is_none() {
            schemas.message_ref(&message);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ordermesh",
            "version": env!("CARGO_PKG_VERSION"),
            "description": DESCRIPTION,
        },
        "servers": [{ "url": "/" }],
        "tags": tags,
        "security": [{ BEARER: [] }],
        "paths": paths,
        "components": {
            "schemas": schemas.into_map(),
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": BEARER_DESCRIPTION,
                },
            },
        },
    })
}

/// `/package.Service/Method`, the key of the gateway's route table.
fn rpc_path(method: &prost_reflect::MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

/// An operation's security: none for a public route (a token is still
/// read when sent), else the bearer token with the route's scopes.
fn security(access: Option<&RouteAccess>) -> Value {
    match access {
        Some(access) if access.public => json!([{}, { BEARER: [] }]),
        Some(access) => json!([{ BEARER: access.scopes }]),
        None => json!([{ BEARER: [] }]),
    }
}

/// Every operation's `default` response: the error body.
fn error_response() -> Value {
    json!({
        "description": "An error: the gRPC status as a google.rpc.Status in JSON.",
        "content": {
            "application/json": { "schema": schema::reference(STATUS) },
        },
    })
}

/// `Service_Method`, suffixed `_2`, `_3`, ... when taken (additional bindings).
fn operation_id(binding: &Binding, ids: &mut HashSet<String>) -> String {
    let method = &binding.method;
    let base = format!("{}_{}", method.parent_service().name(), method.name());
    let mut id = base.clone();
    let mut n = 1;
    while !ids.insert(id.clone()) {
        n += 1;
        id = format!("{base}_{n}");
    }
    id
}

fn operation(binding: &Binding, id: String, schemas: &mut Schemas) -> Value {
    let method = &binding.method;
    let input = method.input();
    let mut operation = json!({
        "operationId": id,
        "tags": [method.parent_service().name()],
    });
    if let Some(text) = comments(&method.parent_file(), method.path()) {
        operation["summary"] = summary(&text).into();
        operation["description"] = text.into();
    }

    let mut parameters = Vec::new();
    // The fields the path sets, by proto names.
    let mut bound: Vec<Vec<String>> = Vec::new();
    for variable in &binding.template.variables {
        let Some(field) = fields::resolve(&input, &variable.field_path) else {
            continue; // rules::bindings rejects these
        };
        bound.push(proto_names(&input, &variable.field_path));
        let (schema, description) = parameter_schema(schemas, &field);
        let mut parameter = json!({
            "name": variable.field(),
            "in": "path",
            "required": true,
            "schema": schema,
        });
        if let Some(text) = description {
            parameter["description"] = text;
        }
        parameters.push(parameter);
    }
    if binding.body.as_deref() != Some("*") {
        let query = Query {
            bound: &bound,
            body: binding.body.as_deref(),
        };
        query.collect(&input, &[], schemas, &mut parameters);
    }
    if !parameters.is_empty() {
        operation["parameters"] = parameters.into();
    }
    if let Some(body) = binding.body.as_deref() {
        operation["requestBody"] = request_body(&input, body, &bound, schemas);
    }
    operation["responses"] = responses(binding, schemas);
    operation
}

/// A field's schema and, apart, its description (the parameter's own).
fn parameter_schema(schemas: &mut Schemas, field: &FieldDescriptor) -> (Value, Option<Value>) {
    let mut schema = schemas.field(field);
    let description = schema
        .as_object_mut()
        .and_then(|object| object.remove("description"));
    (schema, description)
}

/// `path` (proto or JSON names) as proto names.
fn proto_names(message: &MessageDescriptor, path: &[String]) -> Vec<String> {
    (1..=path.len())
        .filter_map(|n| fields::resolve(message, &path[..n]).map(|f| f.name().to_owned()))
        .collect()
}

/// Query parameters: every field the path and the body leave, descending
/// through singular message fields; maps, repeated messages and the JSON-only
/// well-known types (Struct, Any, ...) cannot be written as a query.
struct Query<'a> {
    bound: &'a [Vec<String>],
    body: Option<&'a str>,
}

impl Query<'_> {
    const MAX_DEPTH: usize = 8;

    fn collect(
        &self,
        message: &MessageDescriptor,
        prefix: &[String],
        schemas: &mut Schemas,
        out: &mut Vec<Value>,
    ) {
        for field in message.fields() {
            let mut path = prefix.to_vec();
            path.push(field.name().to_owned());
            if field.is_map()
                || self.bound.contains(&path)
                || (prefix.is_empty() && self.body == Some(field.name()))
            {
                continue;
            }
            if let Kind::Message(inner) = field.kind()
                && !schema::is_query_scalar(&inner)
            {
                if !field.is_list() && !schema::is_well_known(&inner) && prefix.len() < Self::MAX_DEPTH {
                    self.collect(&inner, &path, schemas, out);
                }
                continue;
            }
            let (schema, description) = parameter_schema(schemas, &field);
            let mut parameter = json!({
                "name": path.join("."),
                "in": "query",
                "schema": schema,
            });
            if constraints::of(field.full_name()).is_some_and(|c| c.required) {
                parameter["required"] = true.into();
            }
            if field.is_list() {
                parameter["style"] = "form".into();
                parameter["explode"] = true.into();
            }
            if let Some(text) = description {
                parameter["description"] = text;
            }
            out.push(parameter);
        }
    }
}

fn request_body(
    input: &MessageDescriptor,
    body: &str,
    bound: &[Vec<String>],
    schemas: &mut Schemas,
) -> Value {
    // Required when the request without it lacks what it must set.
    let (schema, description, required) = match input.get_field_by_name(body).filter(|_| body != "*") {
        Some(field) => (
            schemas.field(&field),
            format!("The request's `{}` field.", field.json_name()),
            constraints::of(field.full_name()).is_some_and(|c| c.required),
        ),
        None => {
            let from_path: Vec<&str> = bound
                .iter()
                .filter(|path| path.len() == 1)
                .map(|path| path[0].as_str())
                .collect();
            let required = input
                .fields()
                .filter(|field| !from_path.contains(&field.name()))
                .any(|field| constraints::of(field.full_name()).is_some_and(|c| c.required))
                || constraints::of_message(input.full_name(), &from_path).is_some_and(|rule| {
                    ["required", "anyOf", "oneOf"]
                        .iter()
                        .any(|k| rule.get(k).is_some())
                });
            let (schema, description) = if from_path.is_empty() {
                (
                    schemas.message_ref(input),
                    format!("The request, {}.", input.full_name()),
                )
            } else {
                (
                    schemas.message_without(input, &from_path),
                    format!(
                        "The request, {}, less the fields the path sets ({}).",
                        input.full_name(),
                        from_path.join(", ")
                    ),
                )
            };
            (schema, description, required)
        }
    };
    let mut body = json!({
        "description": description,
        "content": { "application/json": { "schema": schema } },
    });
    if required {
        body["required"] = true.into();
    }
    body
}

fn responses(binding: &Binding, schemas: &mut Schemas) -> Value {
    let method = &binding.method;
    let output = method.output();
    let field = binding
        .response_body
        .as_deref()
        .and_then(|name| output.get_field_by_name(name));
    let (schema, what) = match field {
        Some(field) => (
            schemas.field(&field),
            format!("the `{}` field of {}", field.json_name(), output.full_name()),
        ),
        None => (schemas.message_ref(&output), output.full_name().to_owned()),
    };
    let ok = if method.is_server_streaming() {
        // grpc-gateway's stream shape: each line wraps its item, and an error
        // after the first item arrives in-band and ends the stream.
        let line = json!({
            "oneOf": [
                {
                    "type": "object",
                    "properties": { "result": schema },
                    "required": ["result"],
                    "additionalProperties": false,
                },
                {
                    "type": "object",
                    "properties": { "error": schema::reference(STATUS) },
                    "required": ["error"],
                    "additionalProperties": false,
                },
            ],
        });
        json!({
            "description": format!(
                "A stream of items, each {what}: as application/x-ndjson one JSON object \
                 per line, `{{\"result\": item}}`, or `{{\"error\": Status}}` as the last line \
                 when the stream fails; as text/event-stream one `data:` event per item, \
                 and an `event: error` whose data is the Status."
            ),
            "content": {
                "application/x-ndjson": { "schema": line },
                "text/event-stream": { "schema": { "type": "string" } },
            },
        })
    } else {
        json!({
            "description": format!("The response, {what}."),
            "content": { "application/json": { "schema": schema } },
        })
    };
    json!({
        "200": ok,
        "default": error_response(),
    })
}

/// The leading (else trailing) comment of the element at `path` in `file`
/// (a `SourceCodeInfo` path: `[4, message, 2, field]`, `[6, service, 2, method]`, ...).
pub(crate) fn comments(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|location| location.path == path)?;
    let raw = location
        .leading_comments
        .as_deref()
        .or(location.trailing_comments.as_deref())?;
    let text = raw
        .lines()
        .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// The first sentence of the first paragraph, on one line.
fn summary(text: &str) -> String {
    let paragraph = text.split("\n\n").next().unwrap_or(text);
    let line = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.find(". ") {
        Some(end) => line[..=end].to_owned(),
        None => line,
    }
}
