//! The gateway with its token keys at a JWKS URL that does not answer at
//! start: it starts anyway, live but not ready (the whole server NOT_SERVING,
//! `liveness` SERVING), refuses every token with 401, and turns ready by
//! itself once the issuer answers, without a restart. Exiting instead would
//! crash-loop the pod until the identity provider came back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use ordermesh_gateway::auth::{AuthConfig, AuthMode};
use ordermesh_gateway::{GatewayConfig, build};
use ordermesh_runtime::health::{Answer, LIVENESS};

const JWKS: &str = include_str!("../../gateway/tests/keys/jwks.json");

/// A JWKS endpoint whose answer the test switches.
async fn issuer(up: Arc<Mutex<bool>>) -> String {
    async fn jwks(State(up): State<Arc<Mutex<bool>>>) -> (StatusCode, String) {
        if *up.lock().expect("lock") {
            (StatusCode::OK, JWKS.to_owned())
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "down".to_owned())
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .route("/jwks.json", axum::routing::get(jwks))
        .with_state(up);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_issuer_is_down_at_start_waits_for_it_not_ready() {
    let up = Arc::new(Mutex::new(false));
    let jwks_url = issuer(Arc::clone(&up)).await;
    let mut auth = AuthConfig::new(AuthMode::Production);
    auth.jwks_url = Some(jwks_url);
    // No service behind it: the upstreams connect lazily, and this test
    // asks only the gateway's own health and auth.
    let nowhere = "http://127.0.0.1:9".to_owned();
    let mut config = GatewayConfig::new([nowhere.clone(), nowhere.clone(), nowhere], AuthMode::Production);
    config.auth = auth;
    config.mesh.policy = ordermesh_tests::test_policy();
    let gateway = build(config).await.expect("the gateway starts without keys");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(gateway.serve(listener, std::future::pending()));

    ordermesh_tests::until_health(&url, "", Answer::NotServing, Duration::from_secs(5)).await;
    ordermesh_tests::until_health(&url, LIVENESS, Answer::Serving, Duration::from_secs(5)).await;
    let http = ordermesh_tests::gateway::http_client();
    let refused = http
        .get(format!("{url}/v1/orders/o-1"))
        .bearer_auth("eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.e30.c2ln")
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), 401);

    // The issuer comes back: ready within the start-up back-off (1 s, 2 s, 4 s, ...).
    *up.lock().expect("lock") = true;
    ordermesh_tests::until_health(&url, "", Answer::Serving, Duration::from_secs(15)).await;
    ordermesh_tests::until_health(&url, LIVENESS, Answer::Serving, Duration::from_secs(1)).await;
}
