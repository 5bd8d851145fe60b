//! The README's gateway walkthrough, run as written: the shell block after
//! the `gateway-walkthrough` marker runs under bash against a real
//! `ordermesh up`, with `ordermesh`, curl and grpcurl on PATH, the gateway's
//! port in place of 8080, and `ORDERMESH_DATA_DIR` pointing at the data
//! directory (so `ordermesh token` signs with the key `up` made there).

mod support;

use std::path::Path;
use std::process::Command;

use support::{Up, in_ci, repo, tool};

fn walkthrough() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let (_, after) = readme
        .split_once("<!-- gateway-walkthrough")
        .expect("the README marks its gateway walkthrough");
    let (_, block) = after
        .split_once("```sh\n")
        .expect("a shell block follows the marker");
    let (block, _) = block.split_once("\n```").expect("the block ends");
    block.to_owned()
}

#[test]
fn the_readme_gateway_walkthrough_runs_as_written() {
    let Some(grpcurl) = tool("GRPCURL", "grpcurl", "README gateway walkthrough") else {
        return;
    };
    let curl_found = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !curl_found {
        assert!(!in_ci(), "CI needs curl");
        eprintln!("\n*** SKIP README gateway walkthrough: curl not found ***\n");
        return;
    }
    let up = Up::start(&[]);
    let script = walkthrough().replace("127.0.0.1:8080", &format!("127.0.0.1:{}", up.gateway));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ordermesh"))
        .parent()
        .expect("bin dir");
    let grpcurl_dir = grpcurl
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let path = format!(
        "{}:{}:{}",
        bin_dir.display(),
        grpcurl_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Run from an empty directory, so `$PWD/target/release` (the block's
    // first line) holds no stale binary and this build's ordermesh is used.
    let cwd = tempfile::tempdir().expect("tempdir");
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(cwd.path())
        .env("PATH", path)
        .env("ORDERMESH_DATA_DIR", up.data_dir())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the walkthrough failed:\n{stdout}\n{stderr}"
    );
    for expected in [
        "\"sku\":\"CB-004\"",      // the catalogue
        "\"openapi\": \"3.1.0\"",  // the document
        "ORDER_STATUS_CONFIRMED",  // watch and details
        "data: {\"order\"",        // SSE
        "PAYMENT_STATUS_CAPTURED", // the composed details
        "\"partial\":false",
        "HTTP/1.1 400", // the bad quantity
        "lines[0].quantity",
        "HTTP/1.1 401",
        "HTTP/1.1 403",
        "HTTP/1.1 404",                    // bob reading alice's order
        "ordermesh.order.v1.OrderService", // grpcurl list
        "\"orderId\"",                     // grpcurl GetOrder
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}\n{stderr}"
        );
    }
}
