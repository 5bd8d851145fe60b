use serde_json::{Value, json};

use crate::{descriptors, rules};

fn generated() -> (Value, usize) {
    let pool = descriptors::pool();
    let bindings = rules::bindings(pool, descriptors::PUBLIC_SERVICES).expect("every http rule is valid");
    (super::built_in_document(), bindings.len())
}

const VERBS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "options", "head", "trace",
];

fn operations(doc: &Value) -> Vec<(&str, &str, &Value)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut out = Vec::new();
    for (path, item) in paths {
        for (verb, operation) in item.as_object().expect("a path item is an object") {
            assert!(
                VERBS.contains(&verb.as_str()),
                "{path}: {verb} is not an HTTP method"
            );
            out.push((path.as_str(), verb.as_str(), operation));
        }
    }
    out
}

fn operation<'a>(doc: &'a Value, id: &str) -> &'a Value {
    operations(doc)
        .into_iter()
        .find(|(_, _, operation)| operation["operationId"] == id)
        .map(|(_, _, operation)| operation)
        .unwrap_or_else(|| panic!("no operation {id}"))
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    schema
}

fn parameter_names(operation: &Value, location: &str) -> Vec<String> {
    operation["parameters"]
        .as_array()
        .map(|parameters| {
            parameters
                .iter()
                .filter(|p| p["in"] == location)
                .map(|p| p["name"].as_str().expect("a parameter has a name").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn header_and_one_operation_per_binding() {
    let (doc, bindings) = generated();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "ordermesh");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["servers"][0]["url"], "/");
    let operations = operations(&doc);
    assert_eq!(
        operations.len(),
        bindings + 1,
        "every binding is an operation, and the composed details route"
    );
    let mut ids: Vec<&str> = operations
        .iter()
        .map(|(_, _, operation)| operation["operationId"].as_str().expect("an operationId"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), bindings + 1, "operationIds are unique");
    // The additional binding of VoidAuthorization.
    let void = operation(&doc, "PaymentService_VoidAuthorization_2");
    assert_eq!(parameter_names(void, "path"), ["authorize_request_id"]);
    for (path, verb, operation) in operations {
        assert!(
            operation["responses"]["200"]["description"].is_string(),
            "{verb} {path}"
        );
        assert_eq!(
            operation["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/google.rpc.Status",
            "{verb} {path}"
        );
    }
}

#[test]
fn cancel_order_is_a_post_with_path_param_and_body() {
    let (doc, _) = generated();
    let cancel = &doc["paths"]["/v1/orders/{order_id}:cancel"]["post"];
    assert_eq!(cancel["operationId"], "OrderService_CancelOrder");
    assert_eq!(cancel["tags"][0], "OrderService");
    let parameter = &cancel["parameters"][0];
    assert_eq!(parameter["name"], "order_id");
    assert_eq!(parameter["in"], "path");
    assert_eq!(parameter["required"], true);
    assert_eq!(parameter["schema"]["type"], "string");
    assert_eq!(
        parameter_names(cancel, "query"),
        Vec::<String>::new(),
        "body * takes the rest"
    );
    let body = &cancel["requestBody"]["content"]["application/json"]["schema"];
    assert!(body.is_object(), "CancelOrder has a request body");
    assert!(
        body["properties"].get("orderId").is_none(),
        "the path sets order_id: {body}"
    );
    assert_eq!(
        cancel["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ordermesh.order.v1.CancelOrderResponse"
    );
    // A nested path variable keeps its name as written.
    let flag = &doc["paths"]["/v1/mesh/flags/{flag.name}"]["post"];
    assert_eq!(parameter_names(flag, "path"), ["flag.name"]);
}

#[test]
fn gets_have_no_body_and_list_their_query_parameters() {
    let (doc, _) = generated();
    let get = operation(&doc, "OrderService_GetOrder");
    assert!(get.get("requestBody").is_none());
    assert_eq!(parameter_names(get, "path"), ["order_id"]);
    assert_eq!(parameter_names(get, "query"), Vec::<String>::new());
    let list = operation(&doc, "OrderService_ListOrders");
    assert!(list.get("requestBody").is_none());
    assert_eq!(
        parameter_names(list, "query"),
        ["customer_id", "page_size", "page_token"]
    );
    let page_size = &list["parameters"][1];
    assert_eq!(page_size["schema"]["type"], "integer");
    assert!(page_size["schema"].get("description").is_none(), "described once");
    assert!(
        page_size["description"]
            .as_str()
            .is_some_and(|d| d.contains("0 means 50")),
        "{page_size}"
    );
    let sagas = operation(&doc, "OrderAdminService_ListSagas");
    assert_eq!(sagas["parameters"][0]["schema"]["type"], "boolean");
}

#[test]
fn schemas_follow_the_proto3_json_mapping() {
    let (doc, _) = generated();
    let line = schema(&doc, "ordermesh.order.v1.OrderLine");
    assert_eq!(
        line["properties"]["quantity"]["type"], "string",
        "int64 is a string"
    );
    assert_eq!(line["properties"]["quantity"]["format"], "int64");
    assert_eq!(
        line["properties"]["unitPrice"]["$ref"], "#/components/schemas/ordermesh.common.v1.Money",
        "JSON names"
    );
    let order = schema(&doc, "ordermesh.order.v1.Order");
    assert_eq!(order["properties"]["createTime"]["type"], "string");
    assert_eq!(order["properties"]["createTime"]["format"], "date-time");
    assert_eq!(order["properties"]["lines"]["type"], "array");
    assert_eq!(
        order["properties"]["lines"]["items"]["$ref"],
        "#/components/schemas/ordermesh.order.v1.OrderLine"
    );
    assert_eq!(
        order["properties"]["status"]["$ref"],
        "#/components/schemas/ordermesh.order.v1.OrderStatus"
    );
    let status = schema(&doc, "ordermesh.order.v1.OrderStatus");
    assert_eq!(status["type"], "string");
    let names: Vec<&str> = status["enum"]
        .as_array()
        .expect("an enum lists its values")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(names.len(), 10);
    assert!(names.contains(&"ORDER_STATUS_CONFIRMED") && names.contains(&"ORDER_STATUS_UNSPECIFIED"));
    let description = status["description"].as_str().expect("OrderStatus is documented");
    assert!(
        description.starts_with("Where an order is in its life."),
        "{description}"
    );
    assert!(
        description.contains("- `ORDER_STATUS_CONFIRMED`: Terminal: stock sold and paid."),
        "{description}"
    );
    // A body-* request less its path field, inline; proto3 `optional` is no oneof.
    let update = &operation(&doc, "InventoryService_UpdateProduct")["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(update["properties"]["lowStockThreshold"]["type"], "string");
    assert!(update["properties"].get("sku").is_none(), "{update}");
    assert!(
        update
            .get("description")
            .is_none_or(|d| !d.to_string().contains("Oneof")),
        "{update}"
    );
    let rpc = schema(&doc, "google.rpc.Status");
    assert_eq!(rpc["properties"]["code"]["type"], "integer");
    assert!(rpc["description"].is_string());
    assert_eq!(
        rpc["properties"]["details"]["items"]["properties"]["@type"]["type"],
        "string"
    );
}

#[test]
fn comments_become_descriptions() {
    let (doc, _) = generated();
    assert_eq!(
        schema(&doc, "ordermesh.order.v1.Order")["description"],
        "An order."
    );
    assert_eq!(
        schema(&doc, "ordermesh.order.v1.Order")["properties"]["total"]["description"],
        "Sum of the line totals; unset until stock is reserved."
    );
    let create = operation(&doc, "OrderService_CreateOrder");
    assert_eq!(create["summary"], "Places an order.");
    assert_eq!(
        create["description"],
        "Places an order. Idempotent by request_id: a repeat returns the same order."
    );
    let cancel = operation(&doc, "OrderService_CancelOrder");
    assert!(
        cancel["description"].as_str().is_some_and(|d| d.contains('\n')),
        "multi-line comments keep their lines"
    );
    let tag = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .find(|tag| tag["name"] == "OrderService")
        .expect("an OrderService tag");
    assert!(
        tag["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Orders and the saga"))
    );
}

#[test]
fn watch_order_streams_ndjson_and_sse() {
    let (doc, _) = generated();
    let watch = &doc["paths"]["/v1/orders/{order_id}:watch"]["get"];
    let content = &watch["responses"]["200"]["content"];
    let item = "#/components/schemas/ordermesh.order.v1.WatchOrderResponse";
    // Each line is {"result": item} or, ending the stream, {"error": Status}.
    let line = &content["application/x-ndjson"]["schema"]["oneOf"];
    assert_eq!(line[0]["properties"]["result"]["$ref"], item);
    assert_eq!(line[0]["required"], json!(["result"]));
    assert_eq!(line[0]["additionalProperties"], false);
    assert_eq!(
        line[1]["properties"]["error"]["$ref"],
        "#/components/schemas/google.rpc.Status"
    );
    assert_eq!(line[1]["required"], json!(["error"]));
    assert_eq!(content["text/event-stream"]["schema"]["type"], "string");
    assert!(content.get("application/json").is_none());
    let unary = &doc["paths"]["/v1/orders/{order_id}"]["get"]["responses"]["200"]["content"];
    assert!(unary.get("application/x-ndjson").is_none());
}

#[test]
fn every_ref_resolves_and_the_output_is_deterministic() {
    let (doc, _) = generated();
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 50, "refs are used: {}", refs.len());
    for reference in refs {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{reference} is not a schema reference"));
        assert!(
            schemas.get(name).is_some_and(Value::is_object),
            "{reference} dangles"
        );
    }
    for (name, schema) in schemas {
        assert!(schema.is_object(), "{name} is a schema");
        assert!(
            !name.starts_with("google.protobuf."),
            "{name}: well-known types are inline"
        );
    }
    let (again, _) = generated();
    assert_eq!(
        serde_json::to_string(&doc).expect("serializes"),
        serde_json::to_string(&again).expect("serializes")
    );
}

fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref" {
                    out.push(value.as_str().expect("a $ref is a string"));
                } else {
                    collect_refs(value, out);
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|value| collect_refs(value, out)),
        _ => {}
    }
}

#[test]
fn bearer_tokens_and_each_routes_scopes_are_declared() {
    let (doc, _) = generated();
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");
    assert_eq!(doc["security"], json!([{ "bearer": [] }]));
    assert_eq!(
        operation(&doc, "OrderService_CreateOrder")["security"],
        json!([{ "bearer": ["orders:write"] }])
    );
    assert_eq!(
        operation(&doc, "OrderService_GetOrder")["security"],
        json!([{ "bearer": ["orders:read"] }])
    );
    for (path, verb, operation) in operations(&doc) {
        let security = operation["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{verb} {path}: security"));
        assert!(!security.is_empty(), "{verb} {path}");
    }
}

#[test]
fn the_composed_details_route_is_documented_from_its_parts() {
    let (doc, _) = generated();
    let details = &doc["paths"]["/v1/orders/{order_id}/details"]["get"];
    assert_eq!(details["operationId"], "OrderDetails");
    assert_eq!(details["parameters"][0]["name"], "order_id");
    assert_eq!(details["security"], json!([{ "bearer": ["orders:read"] }]));
    let body = &details["responses"]["200"]["content"]["application/json"]["schema"];
    let properties = &body["properties"];
    for (part, schema) in [
        ("order", "ordermesh.order.v1.Order"),
        ("payment", "ordermesh.payment.v1.Payment"),
        ("reservation", "ordermesh.inventory.v1.Reservation"),
    ] {
        assert_eq!(
            properties[part]["oneOf"][0]["$ref"],
            format!("#/components/schemas/{schema}"),
            "{part}"
        );
        assert_eq!(properties[part]["oneOf"][1]["type"], "null", "{part}");
    }
    assert_eq!(properties["timeline"]["oneOf"][0]["type"], "array");
    assert_eq!(properties["partial"]["type"], "boolean");
    assert_eq!(
        properties["unavailable"]["additionalProperties"]["$ref"],
        "#/components/schemas/google.rpc.Status"
    );
    assert_eq!(body["additionalProperties"], false);
    assert_eq!(body["required"].as_array().map(Vec::len), Some(6));
}

#[test]
fn messages_admit_no_other_properties() {
    let (doc, _) = generated();
    for name in [
        "ordermesh.order.v1.CreateOrderRequest",
        "ordermesh.order.v1.Order",
    ] {
        assert_eq!(schema(&doc, name)["additionalProperties"], false, "{name}");
    }
}

fn body_schema(operation: &Value) -> &Value {
    &operation["requestBody"]["content"]["application/json"]["schema"]
}

#[test]
fn requests_carry_what_the_services_refuse() {
    use ordermesh_runtime::validate::{MAX_ID_LEN, MAX_LINES};
    let (doc, _) = generated();
    let create = schema(&doc, "ordermesh.order.v1.CreateOrderRequest");
    assert_eq!(create["required"], json!(["requestId", "customerId", "lines"]));
    assert_eq!(create["properties"]["requestId"]["maxLength"], MAX_ID_LEN);
    assert_eq!(create["properties"]["requestId"]["minLength"], 1);
    let lines = &create["properties"]["lines"];
    assert_eq!(
        (&lines["minItems"], &lines["maxItems"]),
        (&json!(1), &json!(MAX_LINES))
    );
    // A message field's constraint wraps its reference: the shared
    // message stays as responses have it.
    assert_eq!(
        lines["items"]["allOf"][0]["$ref"],
        "#/components/schemas/ordermesh.order.v1.CreateOrderLine"
    );
    assert_eq!(lines["items"]["required"], json!(["sku", "quantity"]));
    let amount = &schema(&doc, "ordermesh.payment.v1.AuthorizePaymentRequest")["properties"]["amount"];
    assert_eq!(
        amount["allOf"][0]["$ref"],
        "#/components/schemas/ordermesh.common.v1.Money"
    );
    assert_eq!(amount["required"], json!(["amountMinor", "currencyCode"]));
    assert_eq!(amount["properties"]["currencyCode"]["pattern"], "^[A-Z]{3}$");
    let money = schema(&doc, "ordermesh.common.v1.Money");
    assert!(money.get("required").is_none(), "{money}");
    assert!(
        money["properties"]["currencyCode"].get("pattern").is_none(),
        "{money}"
    );

    // Bodies are required where the request needs one.
    assert_eq!(
        operation(&doc, "OrderService_CreateOrder")["requestBody"]["required"],
        true
    );
    assert_eq!(
        operation(&doc, "PaymentService_CapturePayment")["requestBody"]["required"],
        true
    );
    assert!(
        operation(&doc, "OrderService_CancelOrder")["requestBody"]
            .get("required")
            .is_none()
    );
    // Path and query parameters take the same constraints.
    let get = operation(&doc, "OrderService_GetOrder");
    assert_eq!(get["parameters"][0]["schema"]["maxLength"], MAX_ID_LEN);
    let details = &doc["paths"]["/v1/orders/{order_id}/details"]["get"];
    assert_eq!(details["parameters"][0]["schema"]["maxLength"], MAX_ID_LEN);
    for (path, _, operation) in operations(&doc) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["name"] == "page_size" {
                assert_eq!(parameter["schema"]["minimum"], 0, "{path}");
            }
            if parameter["name"] == "page_token" {
                assert!(parameter["schema"]["pattern"].is_string(), "{path}");
            }
        }
    }
}

#[test]
fn rules_across_fields_follow_what_the_path_sets() {
    let (doc, _) = generated();
    // VoidAuthorization names the payment one way: by the path's.
    let by_id = body_schema(operation(&doc, "PaymentService_VoidAuthorization"));
    assert_eq!(by_id["properties"]["authorizeRequestId"], false);
    assert!(by_id["properties"].get("paymentId").is_none());
    assert_eq!(by_id["required"], json!(["requestId"]));
    let by_key = body_schema(operation(&doc, "PaymentService_VoidAuthorization_2"));
    assert_eq!(by_key["properties"]["paymentId"], false);
    let by_key_path = &operation(&doc, "PaymentService_VoidAuthorization_2")["parameters"][0];
    assert_eq!(by_key_path["name"], "authorize_request_id");
    assert_eq!(by_key_path["schema"]["minLength"], 1);
    // UpdateProduct changes something.
    let update = body_schema(operation(&doc, "InventoryService_UpdateProduct"));
    assert_eq!(update["anyOf"].as_array().map(Vec::len), Some(3), "{update}");
}
