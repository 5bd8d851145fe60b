//! Who may act on whose data, enforced by the services that own it: through
//! the gateway (REST and native gRPC) a customer's token acts for its own
//! customer only; an operator's (the `admin` scope) for anyone; and on a
//! service's own port the same forwarded identity gets the same answers,
//! so the gateway's scope check is not the only guard. Admin RPCs answer
//! operators only.

use std::time::{Duration, Instant};

use ordermesh_proto::mesh::v1 as mesh_pb;
use ordermesh_proto::mesh::v1::mesh_admin_service_client::MeshAdminServiceClient;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::payment::v1 as payment_pb;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh_runtime::actor::{SCOPES_HEADER, SUBJECT_HEADER};
use ordermesh_tests::gateway::{Gateway, http_client};
use ordermesh_tests::mesh::Mesh;
use ordermesh_tests::{Backend, MeshOptions};
use serde_json::{Value, json};

const SHOP: &[&str] = &["orders:read", "orders:write", "inventory:read", "payments:read"];

struct Edge {
    gateway: Gateway,
    http: reqwest::Client,
}

impl Edge {
    async fn start(mesh: &Mesh) -> Edge {
        let urls = ["order", "inventory", "payment"]
            .map(|name| format!("http://{}", mesh.addr(name).expect("runs")));
        Edge {
            gateway: Gateway::start(urls, None).await,
            http: http_client(),
        }
    }

    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.gateway.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        self.call(token, reqwest::Method::GET, path, None).await
    }

    async fn order(&self, token: &str, request_id: &str, customer: &str) -> (u16, Value) {
        self.call(
            token,
            reqwest::Method::POST,
            "/v1/orders",
            Some(json!({"requestId": request_id, "customerId": customer,
                "lines": [{"sku": "CB-004", "quantity": 1}]})),
        )
        .await
    }

    async fn until_confirmed(&self, token: &str, order_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, body) = self.get(token, &format!("/v1/orders/{order_id}")).await;
            assert_eq!(status, 200, "{body}");
            if body["order"]["status"] == "ORDER_STATUS_CONFIRMED" {
                return;
            }
            assert!(Instant::now() < deadline, "never confirmed: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn mesh() -> Mesh {
    Mesh::start(MeshOptions::new(Backend::Sqlite))
        .await
        .expect("sqlite mesh")
}

#[tokio::test]
async fn a_customer_token_acts_for_its_own_customer_only() {
    let mesh = mesh().await;
    let edge = Edge::start(&mesh).await;
    let alice = edge.gateway.token("alice", SHOP);
    let bob = edge.gateway.token("bob", SHOP);
    let operator = edge.gateway.token("ops-1", &["admin"]);

    // Ordering for someone else is refused, naming the field; nothing is written.
    let (status, body) = edge.order(&bob, "bob-as-alice", "alice").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().expect("message").contains("customer_id"),
        "{body}"
    );
    let (_, listed) = edge.get(&alice, "/v1/orders?customer_id=alice").await;
    assert!(listed["orders"].as_array().is_none_or(Vec::is_empty), "{listed}");

    let (status, placed) = edge.order(&alice, "alice-1", "alice").await;
    assert_eq!(status, 200, "{placed}");
    let order_id = placed["order"]["orderId"].as_str().expect("id").to_owned();
    edge.until_confirmed(&alice, &order_id).await;
    let payment_id = {
        let (status, details) = edge.get(&alice, &format!("/v1/orders/{order_id}/details")).await;
        assert_eq!(status, 200, "{details}");
        assert_eq!(details["partial"], false, "the owner sees every part: {details}");
        details["payment"]["paymentId"]
            .as_str()
            .expect("payment")
            .to_owned()
    };

    // Alice's data, read with bob's token: as if it did not exist.
    for path in [
        "/v1/accounts/alice".to_owned(),
        format!("/v1/orders/{order_id}"),
        format!("/v1/orders/{order_id}/timeline"),
        format!("/v1/orders/{order_id}/details"),
        format!("/v1/payments/{payment_id}"),
        format!("/v1/reservations/{order_id}"),
    ] {
        let (status, body) = edge.get(&bob, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        let (status, body) = edge.get(&alice, &path).await;
        assert_eq!(status, 200, "{path} for its owner: {body}");
        let (status, body) = edge.get(&operator, &path).await;
        assert_eq!(status, 200, "{path} for an operator: {body}");
    }
    let (status, body) = edge
        .call(
            &bob,
            reqwest::Method::POST,
            &format!("/v1/orders/{order_id}:cancel"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404, "bob cannot cancel alice's order: {body}");
    let (_, still) = edge.get(&alice, &format!("/v1/orders/{order_id}")).await;
    assert_eq!(still["order"]["status"], "ORDER_STATUS_CONFIRMED", "{still}");

    // Lists: another customer's is refused; an unfiltered one is the caller's own.
    let (status, body) = edge.get(&bob, "/v1/orders?customer_id=alice").await;
    assert_eq!(status, 403, "{body}");
    let (status, own) = edge.get(&bob, "/v1/orders").await;
    assert_eq!(status, 200, "{own}");
    assert!(
        own["orders"].as_array().is_none_or(Vec::is_empty),
        "bob has none: {own}"
    );
    let (status, own) = edge.get(&alice, "/v1/orders").await;
    assert_eq!(status, 200);
    assert_eq!(own["orders"][0]["orderId"], order_id.as_str(), "{own}");
    let (status, body) = edge.get(&bob, "/v1/payments?account_id=alice").await;
    assert_eq!(status, 403, "{body}");
    let (status, payments) = edge.get(&bob, "/v1/payments").await;
    assert_eq!(status, 200, "{payments}");
    assert!(
        payments["payments"].as_array().is_none_or(Vec::is_empty),
        "{payments}"
    );
    let (_, payments) = edge.get(&operator, "/v1/payments?account_id=alice").await;
    assert_eq!(
        payments["payments"][0]["paymentId"],
        payment_id.as_str(),
        "{payments}"
    );

    // A token whose customer_id claim names another customer acts for that one.
    let claimed = edge.gateway.token_with("u-77", SHOP, Some("bob"));
    let (status, body) = edge.get(&claimed, "/v1/accounts/bob").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = edge.get(&claimed, "/v1/accounts/u-77").await;
    assert_eq!(status, 404);

    // Native gRPC through the gateway gets the same answers.
    let channel = tonic::transport::Channel::from_shared(edge.gateway.url(""))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut orders = OrderServiceClient::new(channel);
    let mut get = tonic::Request::new(order_pb::GetOrderRequest {
        order_id: order_id.clone(),
    });
    get.metadata_mut()
        .insert("authorization", format!("Bearer {bob}").parse().expect("ascii"));
    let refused = orders.get_order(get).await.expect_err("not bob's");
    assert_eq!(refused.code(), tonic::Code::NotFound);
}

/// The identity a gateway forwards, as metadata on a direct call.
fn as_caller<T>(message: T, subject: &str, scopes: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(SUBJECT_HEADER, subject.parse().expect("ascii"));
    request
        .metadata_mut()
        .insert(SCOPES_HEADER, scopes.parse().expect("ascii"));
    request
}

#[tokio::test]
async fn services_enforce_it_on_their_own_ports() {
    let mesh = mesh().await;
    let payment = format!("http://{}", mesh.addr("payment").expect("runs"));
    let mut payments = PaymentServiceClient::connect(payment).await.expect("connect");

    let refused = payments
        .get_account(as_caller(
            payment_pb::GetAccountRequest {
                account_id: "alice".into(),
            },
            "bob",
            "payments:read",
        ))
        .await
        .expect_err("not bob's");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let own = payments
        .get_account(as_caller(
            payment_pb::GetAccountRequest {
                account_id: "bob".into(),
            },
            "bob",
            "payments:read",
        ))
        .await
        .expect("bob's own");
    assert_eq!(own.into_inner().account.expect("account").account_id, "bob");

    // Moving money is the saga's and operators' business, whatever scopes a
    // customer's token claims.
    let before = mesh.balance("alice").await;
    let refused = payments
        .authorize_payment(as_caller(
            payment_pb::AuthorizePaymentRequest {
                request_id: "bob-charges-alice".into(),
                account_id: "alice".into(),
                amount: Some(ordermesh_proto::common::v1::Money::new(100, "USD")),
                reference: "x".into(),
            },
            "bob",
            "payments:read payments:write",
        ))
        .await
        .expect_err("a customer does not authorize payments");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(mesh.balance("alice").await, before, "nothing moved");

    // Admin RPCs: a customer's forwarded identity is refused; an operator's works.
    let order = format!("http://{}", mesh.addr("order").expect("runs"));
    let mut admin = MeshAdminServiceClient::connect(order).await.expect("connect");
    let flag = || mesh_pb::SetFlagRequest {
        flag: Some(mesh_pb::Flag {
            name: "fault_injection".into(),
            enabled: true,
            ..Default::default()
        }),
    };
    let refused = admin
        .set_flag(as_caller(flag(), "bob", "orders:write"))
        .await
        .expect_err("customer");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    admin
        .set_flag(as_caller(flag(), "ops-1", "admin"))
        .await
        .expect("operator");
}
