use prost_reflect::{DynamicMessage, Value};

use super::*;
use crate::descriptors::{PUBLIC_SERVICES, pool};
use crate::rules::bindings;

fn binding(method: &str) -> Binding {
    bindings(pool(), PUBLIC_SERVICES)
        .expect("rules")
        .into_iter()
        .find(|b| b.method.name() == method)
        .expect("bound")
}

fn field<'a>(message: &'a DynamicMessage, name: &str) -> std::borrow::Cow<'a, Value> {
    message.get_field_by_name(name).expect("field exists")
}

fn violation(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let bad = status.get_details_bad_request().expect("BadRequest detail");
    bad.field_violations[0].field.clone()
}

#[test]
fn body_accepts_proto_and_json_names_and_int64_as_strings_or_numbers() {
    let body = br#"{"request_id": "r-1", "customerId": "alice",
        "lines": [{"sku": "KB-001", "quantity": "2"}, {"sku": "MS-002", "quantity": 3}]}"#;
    let message = request(
        &binding("CreateOrder"),
        vec![],
        None,
        body,
        JsonOptions::default(),
    )
    .expect("valid");
    assert_eq!(field(&message, "request_id").as_str(), Some("r-1"));
    assert_eq!(field(&message, "customer_id").as_str(), Some("alice"));
    let lines = field(&message, "lines");
    let lines = lines.as_list().expect("list");
    assert_eq!(lines.len(), 2);
    let quantity = |i: usize| {
        lines[i]
            .as_message()
            .expect("line")
            .get_field_by_name("quantity")
            .expect("q")
            .as_i64()
    };
    assert_eq!(quantity(0), Some(2));
    assert_eq!(quantity(1), Some(3));
}

#[test]
fn bad_values_name_their_field() {
    let create = binding("CreateOrder");
    let wrong_type = request(
        &create,
        vec![],
        None,
        br#"{"lines": [{"sku": "x", "quantity": "many"}]}"#,
        JsonOptions::default(),
    )
    .expect_err("not a number");
    assert_eq!(violation(&wrong_type), "lines[0].quantity");
    let unknown =
        request(&create, vec![], None, br#"{"bogus": 1}"#, JsonOptions::default()).expect_err("unknown");
    assert_eq!(violation(&unknown), "bogus");
    let lenient = request(
        &create,
        vec![],
        None,
        br#"{"bogus": 1, "customer_id": "bob"}"#,
        JsonOptions {
            deny_unknown_fields: false,
        },
    )
    .expect("unknown fields dropped when allowed");
    assert_eq!(field(&lenient, "customer_id").as_str(), Some("bob"));
    let not_json = request(&create, vec![], None, b"{", JsonOptions::default()).expect_err("not json");
    assert_eq!(not_json.code(), tonic::Code::InvalidArgument);
    let array = request(&create, vec![], None, b"[]", JsonOptions::default()).expect_err("not an object");
    assert_eq!(array.code(), tonic::Code::InvalidArgument);
}

#[test]
fn query_parameters_map_to_fields_by_type() {
    let list = binding("ListOrders");
    let message = request(
        &list,
        vec![],
        Some("customer_id=alice&pageSize=5&page_token=abc%3D"),
        b"",
        JsonOptions::default(),
    )
    .expect("valid");
    assert_eq!(field(&message, "customer_id").as_str(), Some("alice"));
    assert_eq!(field(&message, "page_size").as_i32(), Some(5));
    assert_eq!(field(&message, "page_token").as_str(), Some("abc="), "decoded");
    let bad =
        request(&list, vec![], Some("page_size=ten"), b"", JsonOptions::default()).expect_err("not a number");
    assert_eq!(violation(&bad), "page_size");
    let unknown =
        request(&list, vec![], Some("colour=red"), b"", JsonOptions::default()).expect_err("unknown");
    assert_eq!(violation(&unknown), "colour");
    let body = request(
        &list,
        vec![],
        None,
        br#"{"customer_id": "x"}"#,
        JsonOptions::default(),
    )
    .expect_err("no body");
    assert_eq!(body.code(), tonic::Code::InvalidArgument);
}

#[test]
fn path_variables_win_over_the_body_and_nested_paths_are_set() {
    let cancel = binding("CancelOrder");
    let message = request(
        &cancel,
        vec![(vec!["order_id".to_owned()], "from-path".to_owned())],
        None,
        br#"{"order_id": "from-body"}"#,
        JsonOptions::default(),
    )
    .expect("valid");
    assert_eq!(field(&message, "order_id").as_str(), Some("from-path"));
    let query_on_body_star = request(&cancel, vec![], Some("order_id=x"), b"", JsonOptions::default())
        .expect_err("body * takes no query parameters");
    assert_eq!(violation(&query_on_body_star), "order_id");

    let set_flag = binding("SetFlag");
    let message = request(
        &set_flag,
        vec![(
            vec!["flag".to_owned(), "name".to_owned()],
            "new-checkout".to_owned(),
        )],
        None,
        br#"{"flag": {"enabled": true}}"#,
        JsonOptions::default(),
    )
    .expect("valid");
    let flag = field(&message, "flag");
    let flag = flag.as_message().expect("flag message");
    assert_eq!(
        flag.get_field_by_name("name").expect("name").as_str(),
        Some("new-checkout")
    );
    assert_eq!(
        flag.get_field_by_name("enabled").expect("enabled").as_bool(),
        Some(true),
        "body merged"
    );
}

#[test]
fn responses_are_camel_case_with_int64_strings_enums_by_name_and_timestamps() {
    let pool = pool();
    let descriptor = pool
        .get_message_by_name("ordermesh.order.v1.GetOrderResponse")
        .expect("type");
    let message = decode(
        descriptor,
        serde_json::json!({"order": {"order_id": "o-1", "status": "ORDER_STATUS_CONFIRMED",
            "total": {"amount_minor": 1998, "currency_code": "USD"},
            "create_time": "2026-11-26T10:00:00Z"}}),
        JsonOptions::default(),
    )
    .expect("decodes");
    let json = response(&message, None).expect("serializes");
    let order = &json["order"];
    assert_eq!(order["orderId"], "o-1");
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED");
    assert_eq!(order["total"]["amountMinor"], "1998", "int64 as a string");
    assert_eq!(order["createTime"], "2026-11-26T10:00:00Z");
    assert_eq!(order["rejectDetail"], "", "unpopulated fields are written");
    let only = response(&message, Some("order")).expect("response_body");
    assert_eq!(only["orderId"], "o-1");
    let bad_enum = decode(
        pool.get_message_by_name("ordermesh.order.v1.Order")
            .expect("type"),
        serde_json::json!({"status": "ORDER_STATUS_NOPE"}),
        JsonOptions::default(),
    )
    .expect_err("unknown enum name");
    assert_eq!(violation(&bad_enum), "status");
    let bad_time = decode(
        pool.get_message_by_name("ordermesh.order.v1.Order")
            .expect("type"),
        serde_json::json!({"create_time": "yesterday"}),
        JsonOptions::default(),
    )
    .expect_err("not RFC 3339");
    assert_eq!(violation(&bad_time), "create_time");
}

#[test]
fn a_body_field_binding_takes_the_body_as_that_field_and_the_rest_from_the_query() {
    // No contract uses `body: "<field>"` yet; the rule is the same binding
    // with another body, so build one: SetFlag with `body: "flag"`.
    let mut set_flag = binding("SetFlag");
    set_flag.body = Some("flag".to_owned());
    let message = request(
        &set_flag,
        vec![],
        None,
        br#"{"name": "new-checkout", "enabled": true, "rolloutPercent": 25}"#,
        JsonOptions::default(),
    )
    .expect("valid");
    let flag = field(&message, "flag");
    let flag = flag.as_message().expect("flag message");
    assert_eq!(
        flag.get_field_by_name("name").expect("name").as_str(),
        Some("new-checkout")
    );
    assert_eq!(
        flag.get_field_by_name("rollout_percent")
            .expect("rollout")
            .as_f64(),
        Some(25.0)
    );
    let wrong = request(
        &set_flag,
        vec![],
        None,
        br#"{"enabled": "yes"}"#,
        JsonOptions::default(),
    )
    .expect_err("not a boolean");
    assert_eq!(violation(&wrong), "flag.enabled");
}

#[test]
fn a_single_valued_query_parameter_given_twice_is_refused() {
    let list = binding("ListOrders");
    for query in [
        "page_size=1&page_size=2",
        "pageSize=1&page_size=2",
        "customer_id=alice&customerId=bob",
    ] {
        let error = request(&list, vec![], Some(query), b"", JsonOptions::default()).expect_err(query);
        let field = violation(&error);
        assert!(
            ["page_size", "pageSize", "customer_id", "customerId"].contains(&field.as_str()),
            "{query}: {field}"
        );
    }
    // Once each is fine.
    request(
        &list,
        vec![],
        Some("page_size=1&customer_id=alice"),
        b"",
        JsonOptions::default(),
    )
    .expect("valid");
}

#[test]
fn booleans_in_the_query_take_the_spellings_grpc_gateway_takes() {
    let list = binding("ListSagas");
    for (text, want) in [
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("t", true),
        ("T", true),
        ("1", true),
        ("false", false),
        ("False", false),
        ("FALSE", false),
        ("f", false),
        ("F", false),
        ("0", false),
    ] {
        let message = request(
            &list,
            vec![],
            Some(&format!("needs_attention_only={text}")),
            b"",
            JsonOptions::default(),
        )
        .expect(text);
        assert_eq!(
            field(&message, "needs_attention_only").as_bool(),
            Some(want),
            "{text}"
        );
    }
    for text in ["yes", "2", "tru", ""] {
        let error = request(
            &list,
            vec![],
            Some(&format!("needs_attention_only={text}")),
            b"",
            JsonOptions::default(),
        )
        .expect_err(text);
        assert_eq!(violation(&error), "needs_attention_only");
    }
}

#[test]
fn a_body_key_given_twice_or_a_field_under_both_names_is_refused() {
    let create = binding("CreateOrder");
    let lines = r#""lines": [{"sku": "KB-001", "quantity": 1}]"#;
    let refused = |body: String| {
        request(&create, vec![], None, body.as_bytes(), JsonOptions::default()).expect_err(&body)
    };
    let twice = refused(format!(r#"{{"request_id": "a", "request_id": "b", {lines}}}"#));
    violation(&twice);
    assert!(
        twice.message().contains("\"request_id\" appears twice"),
        "{twice:?}"
    );
    let nested = refused(r#"{"lines": [{"sku": "A", "sku": "B", "quantity": 1}]}"#.to_owned());
    assert!(nested.message().contains("\"sku\" appears twice"), "{nested:?}");

    let both = refused(format!(
        r#"{{"customerId": "alice", "customer_id": "bob", {lines}}}"#
    ));
    assert_eq!(violation(&both), "customer_id");
    assert!(both.message().contains("\"customerId\""), "{both:?}");

    // A path variable replaces the body's value whichever name the body used.
    let message = request(
        &binding("CancelOrder"),
        vec![(vec!["order_id".to_owned()], "from-path".to_owned())],
        None,
        br#"{"orderId": "from-body"}"#,
        JsonOptions::default(),
    )
    .expect("valid");
    assert_eq!(field(&message, "order_id").as_str(), Some("from-path"));
}

#[test]
fn integers_in_the_body_are_read_as_protojson_reads_them() {
    let create = binding("CreateOrder");
    let quantity = |quantity: &str| {
        let body = format!(r#"{{"request_id": "r", "lines": [{{"sku": "A", "quantity": {quantity}}}]}}"#);
        request(&create, vec![], None, body.as_bytes(), JsonOptions::default()).map(|message| {
            field(&message, "lines").as_list().expect("lines")[0]
                .as_message()
                .expect("line")
                .get_field_by_name("quantity")
                .expect("quantity")
                .as_i64()
                .expect("int64")
        })
    };
    for (given, read) in [
        ("2", 2),
        ("\"2\"", 2),
        ("\"1e2\"", 100),
        ("1e2", 100),
        ("\"100.0\"", 100),
        ("100.0", 100),
        ("\"-3\"", -3),
        ("\"9223372036854775807\"", i64::MAX),
    ] {
        assert_eq!(quantity(given).expect(given), read, "{given}");
    }
    for given in [
        "\"+1\"",
        "\" 1\"",
        "\"01\"",
        "\"1.5\"",
        "1.5",
        "\"1e-1\"",
        "\"0x10\"",
        "\"9223372036854775808\"",
    ] {
        let error = quantity(given).expect_err(given);
        assert_eq!(violation(&error), "lines[0].quantity", "{given}: {error:?}");
    }
}

#[test]
fn integers_in_the_query_take_the_spellings_grpc_gateway_takes() {
    let list = binding("ListOrders");
    let page_size = |query: &str| {
        request(&list, vec![], Some(query), b"", JsonOptions::default())
            .map(|message| field(&message, "page_size").as_i32().expect("int32"))
    };
    assert_eq!(page_size("page_size=7").expect("plain"), 7);
    // `%2B` is a `+` (a bare `+` is a space in a query string).
    assert_eq!(page_size("page_size=%2B7").expect("Go's ParseInt takes +7"), 7);
    for query in [
        "page_size=1e2",
        "page_size=+7",
        "page_size=7.0",
        "page_size=seven",
    ] {
        let error = page_size(query).expect_err(query);
        assert_eq!(violation(&error), "page_size", "{query}");
    }
}
