//! Mutual TLS between processes: a service with certificates serves TLS
//! only, refuses a plaintext client, a client without a certificate and one
//! whose certificate another CA signed; names each caller by its
//! certificate, believes forwarded identity from the gateway's certificate
//! only, lets the order service's certificate move money and the admin
//! certificate call admin RPCs; answers plaintext health on its probe port;
//! and takes rotated certificates without a restart. The gateway reaches it
//! over TLS end to end.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ordermesh_mesh::tls::mint::Ca;
use ordermesh_mesh::tls::{MeshTls, TARGETS, TlsFiles};
use ordermesh_proto::common::v1::Money;
use ordermesh_proto::mesh::v1 as mesh_pb;
use ordermesh_proto::mesh::v1::mesh_admin_service_client::MeshAdminServiceClient;
use ordermesh_proto::payment::v1 as pb;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh_runtime::actor::{SCOPES_HEADER, SUBJECT_HEADER};
use ordermesh_runtime::server::MeshSettings;
use ordermesh_tests::gateway::{Gateway, http_client};
use tokio::sync::oneshot;

struct TlsPayment {
    addr: SocketAddr,
    probe: SocketAddr,
    _stop: oneshot::Sender<()>,
    _db: tempfile::TempDir,
}

async fn start_payment(certs: &Path) -> TlsPayment {
    let db = tempfile::tempdir().expect("tempdir");
    let url = ordermesh_runtime::db::sqlite_url(db.path(), "payment").expect("url");
    let mut config = ordermesh_payment::Config::new(url);
    config.seed = ordermesh_payment::demo::accounts();
    let [probe_port] = ordermesh_runtime::net::free_ports().expect("port");
    let probe = SocketAddr::from(([127, 0, 0, 1], probe_port));
    config.mesh = MeshSettings {
        tls: Some(MeshTls::load(TlsFiles::in_dir(certs, "payment")).expect("payment's certificates")),
        probe_listen: Some(probe),
        ..MeshSettings::default()
    };
    let service = ordermesh_payment::build(config).await.expect("payment starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));
    // Up once the probe port answers.
    let url = format!("http://{probe}");
    ordermesh_runtime::health::wait_until_serving(
        &[url],
        Duration::from_secs(10),
        Duration::from_millis(50),
        || Ok::<(), std::convert::Infallible>(()),
    )
    .await
    .expect("payment serves");
    TlsPayment {
        addr,
        probe,
        _stop: stop,
        _db: db,
    }
}

/// A payment client over mutual TLS with `files`, through the mesh stack
/// (expecting the server's certificate to name `payment`).
fn client(files: TlsFiles, addr: SocketAddr) -> PaymentServiceClient<ordermesh_mesh::stack::MeshChannel> {
    let tls = MeshTls::load(files).expect("client certificates");
    let mesh = ordermesh_mesh::stack::Mesh::with_tls(ordermesh_tests::test_policy(), Some(tls));
    PaymentServiceClient::new(mesh.client("payment", &format!("http://{addr}")).expect("client"))
}

fn get_account(account: &str, forwarded: Option<(&str, &str)>) -> tonic::Request<pb::GetAccountRequest> {
    let mut request = tonic::Request::new(pb::GetAccountRequest {
        account_id: account.into(),
    });
    if let Some((subject, scopes)) = forwarded {
        request
            .metadata_mut()
            .insert(SUBJECT_HEADER, subject.parse().expect("ascii"));
        request
            .metadata_mut()
            .insert(SCOPES_HEADER, scopes.parse().expect("ascii"));
    }
    request
}

fn authorize(request_id: &str) -> pb::AuthorizePaymentRequest {
    pb::AuthorizePaymentRequest {
        request_id: request_id.into(),
        account_id: "alice".into(),
        amount: Some(Money::new(100, "USD")),
        reference: "mtls".into(),
    }
}

fn certs(dir: &Path, ca_name: &str, targets: &[&str]) -> Ca {
    let ca = Ca::new(ca_name).expect("CA");
    ca.write(dir, targets).expect("write certificates");
    ca
}

#[tokio::test]
async fn only_certified_peers_connect_and_each_is_named_by_its_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut names: Vec<&str> = TARGETS.to_vec();
    names.push("intruder");
    certs(dir.path(), "ordermesh test CA", &names);
    let payment = start_payment(dir.path()).await;
    let in_dir = |name: &str| TlsFiles::in_dir(dir.path(), name);

    // The gateway's certificate carries forwarded identity: bob is bob.
    let mut gateway = client(in_dir("gateway"), payment.addr);
    let refused = gateway
        .get_account(get_account("alice", Some(("bob", "payments:read"))))
        .await
        .expect_err("not bob's");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let own = gateway
        .get_account(get_account("bob", Some(("bob", "payments:read"))))
        .await
        .expect("bob's own");
    assert_eq!(own.into_inner().account.expect("account").account_id, "bob");
    // The gateway acting for nobody moves no money.
    let refused = gateway
        .authorize_payment(authorize("gw-1"))
        .await
        .expect_err("anonymous");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // A certificate from the CA that names no ordermesh process is nobody,
    // whatever identity it claims.
    let mut intruder = client(in_dir("intruder"), payment.addr);
    let refused = intruder
        .get_account(get_account("bob", Some(("bob", "admin"))))
        .await
        .expect_err("intruder");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let refused = intruder
        .authorize_payment(authorize("intruder-1"))
        .await
        .expect_err("intruder");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // The order service's certificate is the saga's: it moves money.
    let mut order = client(in_dir("order"), payment.addr);
    let authorized = order.authorize_payment(authorize("order-1")).await.expect("saga");
    assert!(authorized.into_inner().payment.is_some());

    // Admin RPCs: the admin certificate, not another service's.
    let admin_channel = |name: &str| {
        let tls = MeshTls::load(in_dir(name)).expect("certs");
        let mesh = ordermesh_mesh::stack::Mesh::with_tls(ordermesh_tests::test_policy(), Some(tls));
        MeshAdminServiceClient::new(
            mesh.client("payment", &format!("http://{}", payment.addr))
                .expect("client"),
        )
    };
    let flag = || mesh_pb::SetFlagRequest {
        flag: Some(mesh_pb::Flag {
            name: "fault_injection".into(),
            enabled: true,
            ..Default::default()
        }),
    };
    let refused = admin_channel("order")
        .set_flag(flag())
        .await
        .expect_err("a service");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    admin_channel("admin")
        .set_flag(flag())
        .await
        .expect("the admin certificate");

    // The client checks the server is the target it meant: payment's
    // certificate does not pass for inventory.
    let tls = MeshTls::load(in_dir("order")).expect("certs");
    let mesh = ordermesh_mesh::stack::Mesh::with_tls(ordermesh_tests::test_policy(), Some(tls));
    let mut wrong = PaymentServiceClient::new(
        mesh.client("inventory", &format!("http://{}", payment.addr))
            .expect("client"),
    );
    let failed = wrong
        .get_account(get_account("bob", None))
        .await
        .expect_err("wrong name");
    assert_eq!(failed.code(), tonic::Code::Unavailable, "{failed:?}");

    // Probes without certificates get health, and only health.
    let probe = format!("http://{}", payment.probe);
    assert_eq!(
        ordermesh_runtime::health::check(&probe, "")
            .await
            .expect("health"),
        ordermesh_runtime::health::Answer::Serving
    );
    let mut plain_on_probe = PaymentServiceClient::connect(probe).await.expect("connect");
    let refused = plain_on_probe
        .get_account(get_account("bob", None))
        .await
        .expect_err("health only");
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
}

#[tokio::test]
async fn plaintext_certless_and_foreign_clients_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path(), "ordermesh test CA", TARGETS);
    let payment = start_payment(dir.path()).await;

    // Plaintext HTTP/2 to the TLS port.
    let mut plain = PaymentServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", payment.addr))
            .expect("url")
            .connect_lazy(),
    );
    let refused = plain
        .get_account(get_account("bob", None))
        .await
        .expect_err("plaintext");
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
        ),
        "{refused:?}"
    );

    // A certificate from another CA (the client trusts the right CA, so
    // only the server's refusal can stop it).
    let foreign = tempfile::tempdir().expect("tempdir");
    certs(foreign.path(), "someone else's CA", &["gateway"]);
    let files = TlsFiles {
        ca: dir.path().join("ca.crt"),
        ..TlsFiles::in_dir(foreign.path(), "gateway")
    };
    let mut forged = client(files, payment.addr);
    let refused = forged
        .get_account(get_account("bob", Some(("bob", "payments:read"))))
        .await
        .expect_err("foreign CA");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    // TLS without a client certificate: the handshake or the first read fails.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(dir.path().join("ca.crt")).expect("ca") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(payment.addr).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("payment.ordermesh").expect("name");
    let outcome = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = connector.connect(name, tcp).await?;
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await?;
        Ok::<usize, std::io::Error>(n)
    }
    .await;
    assert!(
        matches!(outcome, Err(_) | Ok(0)),
        "a client without a certificate got an answer: {outcome:?}"
    );
}

#[tokio::test]
async fn rotated_certificates_are_taken_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path(), "first CA", TARGETS);
    let payment = start_payment(dir.path()).await;
    let before = tempfile::tempdir().expect("tempdir");
    for name in ["ca.crt", "gateway.crt", "gateway.key"] {
        std::fs::copy(dir.path().join(name), before.path().join(name)).expect("copy");
    }
    let mut old = client(TlsFiles::in_dir(before.path(), "gateway"), payment.addr);
    old.get_account(get_account("bob", Some(("bob", "payments:read"))))
        .await
        .expect("the first CA works");

    // A new CA and new certificates for everyone, in place.
    certs(dir.path(), "second CA", TARGETS);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut fresh = client(TlsFiles::in_dir(dir.path(), "gateway"), payment.addr);
        if fresh
            .get_account(get_account("bob", Some(("bob", "payments:read"))))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificates were never taken"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A new connection with the first CA's certificate is refused now.
    let mut stale = client(TlsFiles::in_dir(before.path(), "gateway"), payment.addr);
    let refused = stale
        .get_account(get_account("bob", Some(("bob", "payments:read"))))
        .await
        .expect_err("the first CA is gone");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
}

#[tokio::test]
async fn the_gateway_reaches_services_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path(), "ordermesh test CA", TARGETS);
    let payment = start_payment(dir.path()).await;
    let url = format!("http://{}", payment.addr);
    let tls = MeshTls::load(TlsFiles::in_dir(dir.path(), "gateway")).expect("gateway certs");
    let gateway = Gateway::start_with(
        [url.clone(), url.clone(), url],
        None,
        Some(tls),
        ordermesh_gateway::listen::ConnectionLimits::DEFAULT,
    )
    .await;
    let alice = gateway.token("alice", &["payments:read"]);
    let bob = gateway.token("bob", &["payments:read"]);
    let get = |token: String| {
        let url = gateway.url("/v1/accounts/alice");
        async move {
            http_client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(alice).await, 200);
    assert_eq!(get(bob).await, 404);
}
