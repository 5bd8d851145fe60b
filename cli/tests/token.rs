//! `ordermesh token` signs with the key the gateway it is meant for
//! verifies: the HS256 secret from `ORDERMESH_JWT_HS256_SECRET` when set
//! (as in the chart's pods), else the data directory's development key; it
//! says which on stderr and prints the token alone on stdout.

use std::process::{Command, Output};

use ordermesh_gateway::auth::{AuthConfig, AuthMode, Authenticator, DEV_KEY_FILE};

const SECRET: &str = "a-shared-development-secret-of-40-bytes!";

fn mint(dir: &std::path::Path, secret: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordermesh"));
    command
        .args(["token", "--subject", "carol", "--data-dir"])
        .arg(dir)
        .env_remove("ORDERMESH_JWT_HS256_SECRET")
        .env_remove("ORDERMESH_JWT_ISSUER")
        .env_remove("ORDERMESH_JWT_AUDIENCE");
    if let Some(secret) = secret {
        command.env("ORDERMESH_JWT_HS256_SECRET", secret);
    }
    let output = command.output().expect("ordermesh token runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

async fn verifies(config: AuthConfig, token: &str) -> bool {
    let auth = Authenticator::new(config).await.expect("authenticator");
    let header = http::HeaderValue::from_str(&format!("Bearer {token}")).expect("ascii");
    matches!(auth.authenticate(Some(&header)).await, Ok(Some(principal)) if principal.subject == "carol")
}

#[tokio::test]
async fn the_token_is_signed_with_the_gateways_secret_when_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = mint(dir.path(), Some(SECRET));
    let token = String::from_utf8(output.stdout).expect("utf-8");
    let token = token.trim();
    assert!(String::from_utf8_lossy(&output.stderr).contains("ORDERMESH_JWT_HS256_SECRET"));
    assert!(!dir.path().join(DEV_KEY_FILE).exists(), "no key file is made");

    let mut with_secret = AuthConfig::new(AuthMode::Development);
    with_secret.hs256_secret = Some(SECRET.to_owned());
    assert!(
        verifies(with_secret, token).await,
        "the gateway with the secret accepts it"
    );
    let mut with_key_file = AuthConfig::new(AuthMode::Development);
    with_key_file.dev_key_dir = Some(dir.path().to_owned());
    assert!(
        !verifies(with_key_file, token).await,
        "a gateway with another key refuses it"
    );

    // Without the variable: the data directory's key, and said so.
    let output = mint(dir.path(), None);
    let token = String::from_utf8(output.stdout).expect("utf-8");
    assert!(String::from_utf8_lossy(&output.stderr).contains(DEV_KEY_FILE));
    let mut with_key_file = AuthConfig::new(AuthMode::Development);
    with_key_file.dev_key_dir = Some(dir.path().to_owned());
    assert!(verifies(with_key_file, token.trim()).await);
}
