//! API composition for a frontend: `GET /v1/orders/{order_id}/details` is one
//! document built from the order, its payment, its stock reservation and its
//! timeline, fetched from three services in parallel within the caller's
//! deadline.
//!
//! The call is admitted as GetOrder (its scopes and rate limit); each other
//! part also needs its own RPC's scopes (ListPayments `payments:read`,
//! GetReservation and the timeline theirs), so the document never shows what
//! the caller could not read part by part.
//!
//! A part that cannot be had (its service is down, slow or refusing, or the
//! token lacks its scope) is left out and listed under `unavailable` with its
//! status, and the rest is returned with 200: a page that shows an order
//! without its payment beats an error page. An order that does not exist is
//! the answer's 404 (an id the order service refuses, its 400); an order
//! service that is down makes the order part unavailable like any other.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::error::{self, EdgeError};
use crate::json;
use crate::rest::{deadline, json_response, outgoing};

/// The rpc the composed read is admitted as (its scopes and rate limit).
pub const ADMITTED_AS: &str = "/ordermesh.order.v1.OrderService/GetOrder";

/// The route, as the router and the OpenAPI document write it.
pub const ROUTE: &str = "/v1/orders/{order_id}/details";

/// One part of the document: its name, the RPC that reads it, the response
/// field that holds it, and whether that field is a list of which the part
/// is the first item.
pub struct Part {
    pub name: &'static str,
    pub method: &'static str,
    pub field: &'static str,
    pub first_of_list: bool,
}

/// The parts, in the document's order.
pub const PARTS: [Part; 4] = [
    Part {
        name: "order",
        method: "ordermesh.order.v1.OrderService/GetOrder",
        field: "order",
        first_of_list: false,
    },
    // The saga authorizes with this request id (one per order), so the
    // payment is found without waiting for the order's payment_id.
    Part {
        name: "payment",
        method: "ordermesh.payment.v1.PaymentService/ListPayments",
        field: "payments",
        first_of_list: true,
    },
    Part {
        name: "reservation",
        method: "ordermesh.inventory.v1.InventoryService/GetReservation",
        field: "reservation",
        first_of_list: false,
    },
    Part {
        name: "timeline",
        method: "ordermesh.order.v1.OrderService/GetOrderTimeline",
        field: "entries",
        first_of_list: false,
    },
];

/// The method descriptor of `method` (`package.Service/Method`).
pub fn method(method: &str) -> Option<prost_reflect::MethodDescriptor> {
    let (service, name) = method.split_once('/')?;
    crate::descriptors::pool()
        .get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == name)
}

/// The request of `part` for `order_id`.
fn part_request(part: &Part, order_id: &str) -> Value {
    match part.name {
        "payment" => json!({ "authorize_request_id": format!("{order_id}:authorize") }),
        _ => json!({ "order_id": order_id }),
    }
}

pub async fn details(
    State(shared): State<Arc<Shared>>,
    Path(order_id): Path<String>,
    parts: http::request::Parts,
) -> Result<Response<Body>, EdgeError> {
    let peer = crate::rest::peer(&parts.extensions);
    let document = compose(&shared, peer, &order_id, &parts.headers).await?;
    Ok(json_response(StatusCode::OK, &document))
}

async fn compose(
    shared: &Shared,
    peer: Option<std::net::IpAddr>,
    order_id: &str,
    headers: &HeaderMap,
) -> Result<Value, tonic::Status> {
    let admitted = shared.guard.admit(ADMITTED_AS, headers, peer).await?;
    let timeout = deadline(headers, shared.default_timeout, shared.max_timeout)?;
    let call = |part: &'static Part| {
        let admitted = admitted.clone();
        async move {
            // Each part is admitted by its own RPC's scopes: the composed
            // read shows no more than the caller could read part by part.
            shared
                .guard
                .allows(&format!("/{}", part.method), admitted.principal.as_ref())?;
            let descriptor = method(part.method)
                .ok_or_else(|| tonic::Status::internal(format!("{} is not in the contracts", part.method)))?;
            let message = json::decode(
                descriptor.input(),
                part_request(part, order_id),
                json::JsonOptions::default(),
            )?;
            let request = outgoing(message, headers, &admitted, timeout);
            // The deadline travels with the call; this is the safety net.
            let response = tokio::time::timeout(
                timeout + Duration::from_millis(50),
                shared.upstreams.unary(&descriptor, request),
            )
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("no answer within the request deadline"))??;
            let value = json::response(response.get_ref(), Some(part.field))?;
            Ok::<Value, tonic::Status>(match part.first_of_list {
                true => value
                    .as_array()
                    .and_then(|items| items.first().cloned())
                    .unwrap_or(Value::Null),
                false => value,
            })
        }
    };
    let (order, payment, reservation, timeline) =
        tokio::join!(call(&PARTS[0]), call(&PARTS[1]), call(&PARTS[2]), call(&PARTS[3]));
    // The order decides the answer when the order service refused the
    // request itself: an id it will not read (400, as `GET /v1/orders/{id}`
    // answers), an order that does not exist (404) or is not the caller's.
    if let Err(status) = &order
        && matches!(
            status.code(),
            tonic::Code::NotFound | tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
        )
    {
        return Err(status.clone());
    }
    let mut document = Map::new();
    let mut unavailable = Map::new();
    let mut part = |name: &str, result: Result<Value, tonic::Status>| match result {
        Ok(value) => {
            document.insert(name.to_owned(), value);
        }
        // Nothing there yet (no reservation for a rejected order): not an outage.
        Err(status) if status.code() == tonic::Code::NotFound => {
            document.insert(name.to_owned(), Value::Null);
        }
        Err(status) => {
            document.insert(name.to_owned(), Value::Null);
            unavailable.insert(name.to_owned(), error::status_json(&status));
        }
    };
    for (Part { name, .. }, result) in PARTS.iter().zip([order, payment, reservation, timeline]) {
        part(name, result);
    }
    document.insert("partial".to_owned(), Value::Bool(!unavailable.is_empty()));
    document.insert("unavailable".to_owned(), Value::Object(unavailable));
    Ok(Value::Object(document))
}
