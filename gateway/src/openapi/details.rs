//! The composed `GET /v1/orders/{order_id}/details` in the document. It is
//! no binding of one RPC, so its operation is written here, from the same
//! parts table the route composes ([`crate::compose::PARTS`]): each part's
//! schema is its RPC's response field, or `null` when the part is missing
//! or unavailable.

use prost_reflect::Kind;
use serde_json::{Map, Value, json};

use super::schema::{self, Schemas};
use super::{STATUS, constraints, error_response};
use crate::compose::{self, PARTS};

/// The operation, or `None` when the contracts lack one of its RPCs.
pub(super) fn operation(schemas: &mut Schemas, security: Value) -> Option<Value> {
    let mut properties = Map::new();
    for part in &PARTS {
        let method = compose::method(part.method)?;
        let field = method.output().get_field_by_name(part.field)?;
        let one = match (part.first_of_list, field.kind()) {
            (true, Kind::Message(item)) => schemas.message_ref(&item),
            _ => schemas.field(&field),
        };
        let mut one = one;
        if let Some(object) = one.as_object_mut() {
            object.remove("description");
        }
        properties.insert(
            part.name.to_owned(),
            json!({
                "description": format!(
                    "The `{}` of {}{}; null when there is none or it is unavailable.",
                    field.json_name(),
                    part.method,
                    if part.first_of_list { " (its first item)" } else { "" },
                ),
                "oneOf": [one, { "type": "null" }],
            }),
        );
    }
    properties.insert(
        "partial".to_owned(),
        json!({ "type": "boolean", "description": "True when a part is unavailable." }),
    );
    properties.insert(
        "unavailable".to_owned(),
        json!({
            "type": "object",
            "description": "Each unavailable part by name, with the status its service (or the token's scopes) gave.",
            "additionalProperties": schema::reference(STATUS),
        }),
    );
    // The order id as GetOrder takes it.
    let mut order_id = json!({ "type": "string" });
    constraints::merge(&mut order_id, &constraints::id());
    let mut required: Vec<&str> = PARTS.iter().map(|part| part.name).collect();
    required.extend(["partial", "unavailable"]);
    Some(json!({
        "operationId": "OrderDetails",
        "tags": ["OrderService"],
        "summary": "An order with its payment, reservation and timeline, read in parallel.",
        "description": "One document for a frontend, composed by the gateway from four reads \
            (GetOrder, ListPayments, GetReservation, GetOrderTimeline). Each part needs its own \
            RPC's scopes; a part whose service is down or whose scope the token lacks is null and \
            listed under `unavailable` (200, `partial: true`). An unknown order is a 404, an id \
            the order service refuses a 400.",
        "parameters": [{
            "name": "order_id",
            "in": "path",
            "required": true,
            "schema": order_id,
        }],
        "security": security,
        "responses": {
            "200": {
                "description": "The order's details.",
                "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": false,
                } } },
            },
            "default": error_response(),
        },
    }))
}
