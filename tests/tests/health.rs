//! Readiness follows the database, liveness does not: with PostgreSQL
//! refusing the service's connections, the whole server (and the service's
//! own name) turns NOT_SERVING so balancers stop sending it calls, while
//! `liveness` stays SERVING so the kubelet does not restart a pod that a
//! restart cannot fix; both recover with the database.

use std::time::Duration;

use ordermesh_runtime::health::{Answer, LIVENESS, check};

async fn until(url: &str, service: &str, want: Answer) {
    ordermesh_tests::until_health(url, service, want, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn liveness_does_not_follow_the_database() {
    let Some(database_url) = ordermesh_tests::postgres_database("health").await else {
        return;
    };
    let service = ordermesh_payment::build(ordermesh_payment::Config::new(&database_url))
        .await
        .expect("payment starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));
    until(&url, "", Answer::Serving).await;
    until(&url, LIVENESS, Answer::Serving).await;

    ordermesh_tests::allow_connections(&database_url, false).await;
    until(&url, "", Answer::NotServing).await;
    until(&url, "ordermesh.payment.v1.PaymentService", Answer::NotServing).await;
    assert_eq!(
        check(&url, LIVENESS).await.expect("health"),
        Answer::Serving,
        "alive all along"
    );

    ordermesh_tests::allow_connections(&database_url, true).await;
    until(&url, "", Answer::Serving).await;
    let _ = stop.send(());
}
