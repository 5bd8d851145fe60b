//! `ordermesh up` as a user runs it: the real binary, its ready line, the
//! grpcurl walkthrough of docs/services.md through reflection against every service,
//! and a graceful stop on SIGTERM.
//!
//! grpcurl comes from `GRPCURL`, else `target/tools/bin/grpcurl` (installed by
//! `.ci/tools.sh`), else `PATH`. Without it the test prints a SKIP line,
//! except under `CI`, where it fails.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{Up, tool};

fn run(grpcurl: &Path, args: &[&str]) -> String {
    let output = Command::new(grpcurl).args(args).output().expect("grpcurl runs");
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn up_serves_every_service_through_reflection_and_stops_on_sigterm() {
    let Some(grpcurl) = tool("GRPCURL", "grpcurl", "up walkthrough") else {
        return;
    };
    let mut up = Up::start(&[]);
    let (order, inventory, payment) = (up.order, up.inventory, up.payment);
    let printed = up.started.join("\n");
    assert!(printed.contains(&format!("127.0.0.1:{order}")), "{printed}");
    assert!(
        printed.contains(&format!("grpcurl -plaintext 127.0.0.1:{order} list")),
        "{printed}"
    );

    let order_addr = format!("127.0.0.1:{order}");
    for (port, service) in [
        (order, "ordermesh.order.v1.OrderService"),
        (inventory, "ordermesh.inventory.v1.InventoryService"),
        (payment, "ordermesh.payment.v1.PaymentService"),
    ] {
        let addr = format!("127.0.0.1:{port}");
        let listed = run(&grpcurl, &["-plaintext", &addr, "list"]);
        assert!(listed.contains(service), "{addr} lists {service}: {listed}");
        assert!(listed.contains("grpc.health.v1.Health"), "{listed}");
        let described = run(&grpcurl, &["-plaintext", &addr, "describe", service]);
        assert!(described.contains("rpc "), "{described}");
        let health = run(
            &grpcurl,
            &[
                "-plaintext",
                "-d",
                &format!(r#"{{"service":"{service}"}}"#),
                &addr,
                "grpc.health.v1.Health/Check",
            ],
        );
        assert!(health.contains("SERVING"), "{health}");
    }
    let stock = run(
        &grpcurl,
        &[
            "-plaintext",
            "-d",
            r#"{"sku":"KB-001"}"#,
            &format!("127.0.0.1:{inventory}"),
            "ordermesh.inventory.v1.InventoryService/GetStock",
        ],
    );
    assert!(stock.contains("Mechanical keyboard"), "{stock}");
    let account = run(
        &grpcurl,
        &[
            "-plaintext",
            "-d",
            r#"{"account_id":"alice"}"#,
            &format!("127.0.0.1:{payment}"),
            "ordermesh.payment.v1.PaymentService/GetAccount",
        ],
    );
    assert!(account.contains("alice"), "{account}");

    // The walkthrough of docs/services.md: create, get, watch, cancel.
    let created = run(
        &grpcurl,
        &[
            "-plaintext",
            "-d",
            r#"{"request_id":"readme-1","customer_id":"alice","lines":[{"sku":"KB-001","quantity":1}]}"#,
            &order_addr,
            "ordermesh.order.v1.OrderService/CreateOrder",
        ],
    );
    let order_id = created
        .split('"')
        .skip_while(|part| *part != "orderId")
        .nth(2)
        .expect("orderId in CreateOrder output")
        .to_owned();
    let watched = run(
        &grpcurl,
        &[
            "-plaintext",
            "-d",
            &format!(r#"{{"order_id":"{order_id}"}}"#),
            &order_addr,
            "ordermesh.order.v1.OrderService/WatchOrder",
        ],
    );
    assert!(watched.contains("ORDER_STATUS_CONFIRMED"), "{watched}");
    let got = run(
        &grpcurl,
        &[
            "-plaintext",
            "-d",
            &format!(r#"{{"order_id":"{order_id}"}}"#),
            &order_addr,
            "ordermesh.order.v1.OrderService/GetOrder",
        ],
    );
    assert!(got.contains("\"amountMinor\": \"8999\""), "{got}");
    let cancelled = run(
        &grpcurl,
        &[
            "-plaintext",
            "-d",
            &format!(r#"{{"order_id":"{order_id}"}}"#),
            &order_addr,
            "ordermesh.order.v1.OrderService/CancelOrder",
        ],
    );
    assert!(cancelled.contains("ORDER_STATUS_CANCELLING"), "{cancelled}");
    let watched = run(
        &grpcurl,
        &[
            "-plaintext",
            "-d",
            &format!(r#"{{"order_id":"{order_id}"}}"#),
            &order_addr,
            "ordermesh.order.v1.OrderService/WatchOrder",
        ],
    );
    assert!(watched.contains("ORDER_STATUS_CANCELLED"), "{watched}");

    // SIGTERM drains and exits cleanly.
    let pid = up.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = up.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ordermesh did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}

#[test]
fn an_invalid_policy_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[downstream.payment.breaker]\nfailure_rate_threshold = 2.0\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .args(["serve", "order", "--listen", "127.0.0.1:0", "--policy"])
        .arg(&policy)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(!output.status.success(), "must refuse to start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("downstream.payment.breaker.failure_rate_threshold"),
        "{stderr}"
    );
}

/// Logs written to a pipe or a file are plain text: no colour escape codes
/// around every field (they are for a terminal only).
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .args(["serve", "inventory", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let serving = loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("serving") => break line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no serving line within 30 s: {seen:#?}"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    seen.push(serving.clone());
    assert!(serving.contains("INFO"), "{serving}");
    assert!(
        seen.iter().all(|line| !line.contains('\u{1b}')),
        "escape codes in a piped log: {seen:#?}"
    );
}

/// `up --host 0.0.0.0` (the chart's SingleBinary mode) opens the gateway to
/// the network and nothing else: the services, which believe the identity
/// their callers forward, listen on loopback only.
#[test]
fn up_faces_the_network_with_the_gateway_only() {
    let up = Up::start(&["--host".to_owned(), "0.0.0.0".to_owned()]);
    // This machine's address on its default route (no packet is sent).
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
    socket.connect("192.0.2.1:9").expect("a default route");
    let outside = socket.local_addr().expect("local addr").ip();
    assert!(!outside.is_loopback(), "{outside}");
    let reach = |ip: std::net::IpAddr, port: u16| {
        std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2)).is_ok()
    };
    assert!(
        reach(outside, up.gateway),
        "the gateway faces the network at {outside}"
    );
    for port in [up.order, up.inventory, up.payment] {
        assert!(
            !reach(outside, port),
            "a service port {port} answers on {outside}"
        );
        assert!(
            reach(std::net::Ipv4Addr::LOCALHOST.into(), port),
            "and serves on loopback"
        );
    }
}
