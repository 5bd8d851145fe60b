//! A REST client generated from the gateway's own `/openapi.json`, as a
//! team without the protos would make one: openapi-typescript turns the
//! document into types, TypeScript checks clients/openapi/order_client.ts
//! against them (the bodies it sends, the routes and path parameters it
//! uses, the composed details route included), and the compiled client,
//! on openapi-fetch, places an order with a bearer token and follows it to
//! CONFIRMED through a real `ordermesh up`. Without a token it gets the
//! document's error body with 401.
//!
//! Tools: Node.js 20+ and clients/openapi/node_modules (`.ci/tools.sh` runs
//! `npm ci` there); missing, the test prints a SKIP line, except under `CI`.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{Up, missing, node, repo};

fn run(program: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", program.display()))
}

/// The step lines the client printed, by name.
fn step(stdout: &str, name: &str) -> serde_json::Value {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["step"] == name)
        .unwrap_or_else(|| panic!("no {name} step in:\n{stdout}"))
}

#[test]
fn a_client_generated_from_the_openapi_document_places_an_order_with_a_token() {
    let test = "OpenAPI-generated TypeScript client";
    let Some(node) = node(test) else {
        return;
    };
    let dir = repo().join("clients/openapi");
    let bin = dir.join("node_modules/.bin");
    if !bin.join("openapi-typescript").exists() || !dir.join("node_modules/openapi-fetch").is_dir() {
        missing(
            test,
            "clients/openapi/node_modules (npm ci --prefix clients/openapi)",
        );
        return;
    }
    let up = Up::start(&[]);
    let base = format!("http://127.0.0.1:{}", up.gateway);

    // The document as the gateway serves it, then types and a type-checked build.
    std::fs::create_dir_all(dir.join("gen")).expect("gen/");
    let fetched = run(
        &node,
        &dir,
        &[
            "-e",
            &format!(
                "fetch('{base}/openapi.json').then(r => r.text()).then(t => require('fs').writeFileSync('gen/openapi.json', t))"
            ),
        ],
    );
    assert!(
        fetched.status.success(),
        "fetching the document: {}",
        support::output_text(&fetched)
    );
    let generated = run(
        &bin.join("openapi-typescript"),
        &dir,
        &["gen/openapi.json", "-o", "gen/ordermesh.d.ts"],
    );
    assert!(
        generated.status.success(),
        "openapi-typescript: {}",
        support::output_text(&generated)
    );
    let built = run(&bin.join("tsc"), &dir, &["-p", "."]);
    assert!(
        built.status.success(),
        "order_client.ts does not type-check against the generated types: {}",
        support::output_text(&built)
    );

    let token = {
        let output = Command::new(env!("CARGO_BIN_EXE_ordermesh"))
            .args(["token", "--data-dir"])
            .arg(up.data_dir())
            .output()
            .expect("ordermesh token runs");
        assert!(output.status.success(), "{}", support::output_text(&output));
        String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
    };
    let placed = run(
        &node,
        &dir,
        &["dist/order_client.js", "--base", &base, "--token", &token],
    );
    let stdout = String::from_utf8_lossy(&placed.stdout).into_owned();
    assert!(placed.status.success(), "{}", support::output_text(&placed));
    let created = step(&stdout, "created");
    let order_id = created["orderId"].as_str().expect("an order id");
    assert_eq!(created["status"], "ORDER_STATUS_PENDING");
    let ended = step(&stdout, "ended");
    assert_eq!(ended["orderId"], order_id);
    assert_eq!(ended["status"], "ORDER_STATUS_CONFIRMED", "{stdout}");
    let details = step(&stdout, "details");
    assert_eq!(details["orderId"], order_id);
    assert_eq!(details["payment"], "PAYMENT_STATUS_CAPTURED");
    assert_eq!(details["reservation"], "RESERVATION_STATUS_COMMITTED");
    assert_eq!(details["partial"], false);

    // No token: the error body the document describes, with 401.
    let refused = run(&node, &dir, &["dist/order_client.js", "--base", &base]);
    assert!(!refused.status.success(), "{}", support::output_text(&refused));
    let error = step(&String::from_utf8_lossy(&refused.stdout), "error");
    assert_eq!(error["status"], 401, "{error}");
    assert_eq!(error["error"]["code"], 16, "UNAUTHENTICATED: {error}");
}
