//! A service reaches PostgreSQL over TLS, verifying the server against a CA
//! it is given (`?sslmode=verify-ca&sslrootcert=/path/ca.crt` in the
//! database URL, as a managed database with its own CA needs, the CA
//! mounted with the chart's `extraVolumes`), and refuses a server whose
//! certificate that CA did not sign: it waits, not ready, rather than
//! talking to it. The cluster is one of the test's own (initdb), with
//! `ssl=on` and a certificate from a throwaway CA.

use std::path::Path;
use std::time::Duration;

use ordermesh_mesh::tls::mint::Ca;
use ordermesh_runtime::pgcluster::PgCluster;
use sqlx::Connection;

fn write(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Hands `path` to the `postgres` user when we are root (the server runs as
/// it then, and reads its key only when it owns it).
fn give_to_postgres(path: &Path) {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if root {
        let status = std::process::Command::new("chown")
            .arg("postgres")
            .arg(path)
            .status()
            .expect("chown runs");
        assert!(status.success(), "chown postgres {}", path.display());
    }
}

#[tokio::test]
async fn a_service_verifies_its_postgresql_over_tls_with_the_ca_it_is_given() {
    if ordermesh_runtime::pgcluster::pg_bin().is_err() {
        assert!(!ordermesh_tests::in_ci(), "CI needs PostgreSQL's initdb");
        eprintln!("\n*** SKIP postgres_tls: no PostgreSQL under /usr/lib/postgresql ***\n");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("pg");
    std::fs::create_dir(&root).expect("pg root");
    let ca = Ca::new("test database CA").expect("CA");
    let (cert, key) = ca.issue("order").expect("server certificate");
    let (cert_path, key_path) = (root.join("server.crt"), root.join("server.key"));
    write(&cert_path, &cert, 0o644);
    write(&key_path, &key, 0o600);
    give_to_postgres(&cert_path);
    give_to_postgres(&key_path);
    let trusted = dir.path().join("ca.crt");
    write(&trusted, ca.cert_pem(), 0o644);
    let stranger = dir.path().join("other-ca.crt");
    write(&stranger, Ca::new("another CA").expect("CA").cert_pem(), 0o644);

    let port = ordermesh_runtime::net::free_port().expect("a port");
    let cert_setting = cert_path.display().to_string();
    let key_setting = key_path.display().to_string();
    let cluster = PgCluster::init(
        &root,
        port,
        &[
            ("ssl", "on"),
            ("ssl_cert_file", &cert_setting),
            ("ssl_key_file", &key_setting),
        ],
    )
    .expect("a PostgreSQL cluster with TLS");
    cluster.create_database("payments").expect("createdb");
    let url = |ca: &Path| {
        format!(
            "{}?sslmode=verify-ca&sslrootcert={}",
            cluster.database_url("payments"),
            ca.display()
        )
    };

    let service = tokio::time::timeout(
        Duration::from_secs(30),
        ordermesh_payment::build(ordermesh_payment::Config::new(url(&trusted))),
    )
    .await
    .expect("connects within 30 s")
    .expect("payment builds over TLS");
    // Every connection the service holds is encrypted.
    let mut admin = sqlx::PgConnection::connect(&cluster.admin_url())
        .await
        .expect("admin");
    let (connections, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'payments'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("pg_stat_ssl");
    assert!(connections > 0, "the service holds a connection");
    assert_eq!(encrypted, connections, "every one over TLS");
    drop(service);

    // A CA that did not sign the server's certificate: no connection, the
    // service keeps waiting (live, not ready) instead.
    let refused = tokio::time::timeout(
        Duration::from_secs(3),
        ordermesh_payment::build(ordermesh_payment::Config::new(url(&stranger))),
    )
    .await;
    assert!(
        refused.is_err(),
        "a server the given CA did not sign is not trusted"
    );
}
