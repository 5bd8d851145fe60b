//! What the container image and the Helm chart rely on from the binary:
//! `ordermesh health` (the chart's `helm test` pod and container health
//! checks run it; the image has no shell), and the mesh policy plus the
//! environment overrides the chart renders being accepted by the binary's own
//! policy loader, with every downstream resolved through its headless Service.
//!
//! helm comes from `HELM`, else `target/tools/bin/helm` (`.ci/tools.sh`);
//! missing, the chart test prints a SKIP line, except under `CI`.

mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ordermesh_mesh::balance::EndpointSource;
use ordermesh_mesh::policy::MeshPolicy;
use support::{free_port, repo, tool};

fn health(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .arg("health")
        .args(args)
        .output()
        .expect("ordermesh health runs")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `ordermesh health` until the server at `addr` reports SERVING
/// (within 30 s), returning that output. While it is not, health must exit 1;
/// a server that exits meanwhile fails the test with its stderr (if piped).
fn wait_serving(server: &mut Server, addr: &str) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = server.0.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = server.0.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            panic!("the server exited ({status}) before SERVING:\n{stderr}");
        }
        let output = health(&[addr, "--timeout-secs", "2"]);
        if output.status.success() {
            return output;
        }
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert!(Instant::now() < deadline, "never SERVING: {output:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn health_exits_zero_only_when_the_server_reports_serving() {
    let data = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_ordermesh"))
            .args(["serve", "inventory", "--listen", &addr, "--data-dir"])
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve inventory starts"),
    );

    // Not listening yet or not yet SERVING: exit 1. Wait for exit 0 with a deadline.
    let serving = wait_serving(&mut server, &addr);
    let stdout = String::from_utf8_lossy(&serving.stdout);
    assert!(stdout.contains("SERVING"), "{stdout}");

    // A named service, with the scheme spelt out.
    let named = health(&[
        &format!("http://{addr}"),
        "--service",
        "ordermesh.inventory.v1.InventoryService",
    ]);
    assert!(named.status.success(), "{named:?}");

    // A service the server does not know: NOT_FOUND, exit 1, named in the message.
    let unknown = health(&[&addr, "--service", "no.such.Service"]);
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("no.such.Service") && stderr.contains("not found"),
        "{stderr}"
    );

    // Nothing listening: exit 1, naming the address.
    server.0.kill().expect("kill");
    server.0.wait().expect("reaped");
    let gone = health(&[&addr]);
    assert_eq!(gone.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to http://{addr}")),
        "{stderr}"
    );

    // A malformed address is refused with a message, not a panic.
    let bad = health(&["not an address"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid address"));
}

fn helm_template(helm: &Path, values: &str, show_only: &str) -> String {
    let chart = repo().join("helm/ordermesh");
    let output = Command::new(helm)
        .args(["template", "ordermesh", "--namespace", "shop"])
        .arg(&chart)
        .arg("-f")
        .arg(chart.join("examples").join(values))
        .args(["--show-only", show_only])
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "helm template -f {values}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `mesh-policy.toml: |` block of the rendered ConfigMap.
fn rendered_policy(configmap: &str) -> String {
    configmap_file(configmap, "mesh-policy.toml")
}

/// The ORDERMESH_MESH__* variables of each rendered Deployment, by name.
fn rendered_overrides(deployments: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut found: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut pending: Option<String> = None;
    for line in deployments.lines() {
        let line = line.trim();
        if line == "kind: Deployment" {
            found.push((String::new(), Vec::new()));
        } else if let (Some(name), Some(last)) = (line.strip_prefix("name: "), found.last_mut())
            && last.0.is_empty()
        {
            last.0 = name.to_owned();
        } else if let Some(name) = line.strip_prefix("- name: ORDERMESH_MESH__") {
            pending = Some(format!("ORDERMESH_MESH__{name}"));
        } else if let (Some(value), Some(name)) = (line.strip_prefix("value: "), pending.take())
            && let Some(last) = found.last_mut()
        {
            last.1.push((name, value.trim_matches('"').to_owned()));
        }
    }
    found
}

#[test]
fn the_charts_mesh_policies_load_with_its_overrides_and_resolve_headless_services() {
    let Some(helm) = tool("HELM", "helm", "chart mesh policies") else {
        return;
    };
    for values in ["minimal.yaml", "production.yaml", "demo.yaml"] {
        let policy = rendered_policy(&helm_template(&helm, values, "templates/configmap.yaml"));
        let deployments = rendered_overrides(&helm_template(&helm, values, "templates/deployment.yaml"));
        assert_eq!(deployments.len(), 4, "{values}: a Deployment per target");
        for (deployment, overrides) in deployments {
            let loaded = MeshPolicy::parse(&policy, overrides.clone())
                .unwrap_or_else(|e| panic!("{values}, {deployment}: the binary refuses the policy: {e}"));
            let callees: &[&str] = match deployment.rsplit('-').next() {
                Some("gateway") => &["order", "inventory", "payment"],
                Some("order") => &["inventory", "payment"],
                _ => &[],
            };
            assert_eq!(
                overrides.len(),
                callees.len(),
                "{values}, {deployment}: {overrides:?}"
            );
            for callee in callees {
                let settings = loaded
                    .downstream_settings(callee, "http://unused:1")
                    .expect("downstream settings");
                match settings.balancer.source {
                    EndpointSource::Dns { host, port, .. } => {
                        // Absolute (trailing dot): no search-domain lookups first.
                        assert_eq!(host, format!("ordermesh-{callee}.shop.svc.cluster.local."));
                        assert!(port >= 50051, "{callee} port {port}");
                    }
                    other => panic!("{values}, {deployment} -> {callee}: not DNS discovery: {other:?}"),
                }
            }
        }
    }
    // SingleBinary: one policy, calls stay inside the process.
    let policy = rendered_policy(&helm_template(
        &helm,
        "single-binary.yaml",
        "templates/configmap.yaml",
    ));
    MeshPolicy::parse(&policy, Vec::new()).expect("the SingleBinary policy loads");
}

/// The container of one rendered Deployment: its `args` and its plain
/// (`value:`) environment variables; `valueFrom` ones (Secrets) are skipped.
fn rendered_container(deployments: &str, name: &str) -> (Vec<String>, Vec<(String, String)>) {
    let mut args = Vec::new();
    let mut env = Vec::new();
    let mut inside = false;
    let mut in_args = false;
    let mut pending: Option<String> = None;
    for line in deployments.lines() {
        let trimmed = line.trim();
        if trimmed == "kind: Deployment" {
            inside = false;
        } else if trimmed == format!("name: {name}") {
            inside = true;
        }
        if !inside {
            continue;
        }
        if trimmed == "args:" {
            in_args = true;
            continue;
        }
        if in_args {
            match trimmed.strip_prefix("- ") {
                Some(arg) if !trimmed.starts_with("- name:") => {
                    args.push(arg.trim_matches('"').to_owned());
                    continue;
                }
                _ => in_args = false,
            }
        }
        if let Some(var) = trimmed.strip_prefix("- name: ORDERMESH_") {
            pending = Some(format!("ORDERMESH_{var}"));
        } else if let (Some(value), Some(var)) = (trimmed.strip_prefix("value: "), pending.take()) {
            env.push((var, value.trim_matches('"').to_owned()));
        }
    }
    (args, env)
}

/// The rendered ConfigMap's `key: |` block.
fn configmap_file(configmap: &str, key: &str) -> String {
    let mut lines = configmap
        .lines()
        .skip_while(|line| line.trim() != format!("{key}: |"));
    lines.next().unwrap_or_else(|| panic!("the ConfigMap has {key}"));
    lines
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_charts_gateway_starts_from_its_rendered_args_and_env_and_answers_health() {
    let Some(helm) = tool("HELM", "helm", "chart gateway") else {
        return;
    };
    let values = "production.yaml";
    let deployments = helm_template(&helm, values, "templates/deployment.yaml");
    let configmap = helm_template(&helm, values, "templates/configmap.yaml");
    let (args, env) = rendered_container(&deployments, "ordermesh-gateway");
    assert_eq!(args, ["serve", "gateway"], "{deployments}");
    let dir = tempfile::tempdir().expect("tempdir");
    // The pod's mounts, as local files: the ConfigMap's files and the JWKS
    // Secret (the test keys stand in for the identity provider's).
    let mounted = |path: &str| -> Option<String> {
        if let Some(file) = path.strip_prefix("/etc/ordermesh/config/") {
            let local = dir.path().join(file);
            std::fs::write(&local, configmap_file(&configmap, file)).expect("write config");
            return Some(local.display().to_string());
        }
        path.starts_with("/etc/ordermesh/jwks/")
            .then(|| repo().join("gateway/tests/keys/jwks.json").display().to_string())
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordermesh"));
    command
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    let mut names = Vec::new();
    for (var, value) in env {
        let value = match var.as_str() {
            "ORDERMESH_LISTEN" => addr.clone(),
            // The pod's metrics address (0.0.0.0:<metrics.port>), moved to a free loopback port.
            "ORDERMESH_METRICS_LISTEN" => format!("127.0.0.1:{}", free_port()),
            "ORDERMESH_DATA_DIR" => dir.path().display().to_string(),
            _ => mounted(&value).unwrap_or(value),
        };
        names.push(var.clone());
        command.env(var, value);
    }
    for expected in [
        "ORDERMESH_AUTH_MODE",
        "ORDERMESH_JWT_JWKS_FILE",
        "ORDERMESH_GATEWAY_CONFIG",
        "ORDERMESH_ORDER_URL",
        "ORDERMESH_METRICS_LISTEN",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} rendered: {names:?}"
        );
    }
    let mut server = Server(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve gateway starts"),
    );
    wait_serving(&mut server, &addr);
}

/// The chart's `values.yaml` as JSON (read with the PyYAML of `.ci/tools.sh`'s
/// Python, the parser Helm's own tooling tests use).
fn chart_values(python: &Path) -> serde_json::Value {
    let output = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(repo().join("helm/ordermesh/values.yaml"))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("values.yaml as JSON")
}

/// The `[default: ...]` clap prints for `flag` in `ordermesh <command> --help`.
fn binary_default(command: &str, flag: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .args([command, "--help"])
        .output()
        .expect("ordermesh --help runs");
    let help = String::from_utf8_lossy(&output.stdout);
    let mut lines = help
        .lines()
        .skip_while(|line| !line.trim_start().starts_with(&format!("{flag} ")));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{command} --help has {flag}"));
    // Short help puts the default on the flag's line, long help below it.
    std::iter::once(first)
        .chain(lines.take_while(|line| !line.trim_start().starts_with("--")))
        .find_map(|line| {
            let (_, default) = line.split_once("[default: ")?;
            default.split_once(']').map(|(value, _)| value.to_owned())
        })
        .unwrap_or_else(|| panic!("{flag} shows a default"))
}

#[test]
fn the_charts_values_agree_with_the_binarys_defaults() {
    let Some(python) = tool("PYTHON_WITH_YAML", "python", "chart defaults") else {
        return;
    };
    let values = chart_values(&python);
    let chart = |path: &str| -> String {
        let value = path.split('.').fold(&values, |node, key| &node[key]);
        assert!(!value.is_null(), "values.yaml has {path}");
        value.to_string()
    };
    // The chart's own mesh policy (what `meshPolicy` replaces) sets nothing
    // the binary does not already default to.
    let policy = std::fs::read_to_string(repo().join("helm/ordermesh/files/mesh-policy.toml")).expect("read");
    assert_eq!(
        MeshPolicy::parse(&policy, Vec::new()).expect("the chart's policy loads"),
        MeshPolicy::default()
    );
    for (path, command, flag) in [
        ("gateway.port", "up", "--gateway-port"),
        ("order.port", "up", "--order-port"),
        ("inventory.port", "up", "--inventory-port"),
        ("payment.port", "up", "--payment-port"),
        ("inventory.reservationTtlSecs", "serve", "--reservation-ttl-secs"),
    ] {
        assert_eq!(
            chart(path),
            binary_default(command, flag),
            "values.yaml {path} disagrees with `ordermesh {command}` {flag}"
        );
    }
    // The schema refuses a reservation TTL the binary would refuse at start:
    // not longer than 3 x patience + the forward window.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("helm/ordermesh/values.schema.json")).expect("schema"),
    )
    .expect("schema JSON");
    let secs = |flag: &str| -> u64 { binary_default("serve", flag).parse().expect("seconds") };
    let needed = 3 * secs("--saga-patience-secs") + secs("--saga-forward-window-secs");
    assert_eq!(
        schema["properties"]["inventory"]["properties"]["reservationTtlSecs"]["minimum"],
        serde_json::json!(needed + 1),
        "values.schema.json's minimum reservation TTL is the binary's"
    );
}

/// The flag table of `docs/deployment.md` restates defaults for readers; each
/// one it gives as a literal (`` `900` ``) must be what `ordermesh serve
/// --help` says, so the page cannot drift from the binary.
#[test]
fn the_deployment_pages_flag_defaults_are_the_binarys() {
    let page = std::fs::read_to_string(repo().join("docs/deployment.md")).expect("docs/deployment.md");
    let mut checked = 0;
    for row in page.lines().filter(|line| line.starts_with("| `--")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let flag = cells[0]
            .trim_start_matches("| `")
            .split([' ', '`'])
            .next()
            .expect("a flag");
        let Some(default) = cells
            .get(2)
            .and_then(|c| c.strip_prefix('`'))
            .and_then(|c| c.split('`').next())
        else {
            continue;
        };
        let command = if flag == "--log-format" { "up" } else { "serve" };
        assert_eq!(
            binary_default(command, flag),
            default,
            "docs/deployment.md's default of {flag}"
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "the table's literal defaults were found ({checked})"
    );
}

/// A service whose PostgreSQL refuses connections at start waits for it,
/// live and not ready (the pod is kept, and sent nothing), past the 10 s a
/// connection attempt may take, and turns ready by itself when the database
/// answers: no exit, so no CrashLoopBackOff to wait out.
#[tokio::test]
async fn a_service_waits_for_its_database_live_and_not_ready() {
    use ordermesh_runtime::health::{Answer, LIVENESS, check};
    let Some(database_url) = ordermesh_tests::postgres_database("serve_waits").await else {
        return;
    };
    ordermesh_tests::allow_connections(&database_url, false).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let data = tempfile::tempdir().expect("tempdir");
    let log = data.path().join("payment.log");
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordermesh"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ORDERMESH_") {
            command.env_remove(key);
        }
    }
    let mut server = Server(
        command
            .args([
                "serve",
                "payment",
                "--listen",
                &addr,
                "--database-url",
                &database_url,
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("serve payment starts"),
    );
    let url = format!("http://{addr}");
    // Listening, and live, within seconds (it binds before it connects).
    loop {
        if check(&url, LIVENESS).await.ok() == Some(Answer::Serving) {
            break;
        }
        assert!(
            server.0.try_wait().expect("status").is_none(),
            "exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(started.elapsed() < Duration::from_secs(20), "never live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for service in ["", "ordermesh.payment.v1.PaymentService"] {
        assert_eq!(
            check(&url, service).await.expect("answers"),
            Answer::NotServing,
            "not ready without its database: {service:?}"
        );
    }
    // A caller that connects meanwhile is told to come back (UNAVAILABLE,
    // which it retries), not UNIMPLEMENTED; on that same connection it
    // reaches the service once it is up.
    use ordermesh_proto::payment::v1::GetAccountRequest;
    use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
    let mut payments = PaymentServiceClient::new(
        tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connects"),
    );
    let get = GetAccountRequest {
        account_id: "nobody".into(),
    };
    let early = payments.get_account(get.clone()).await.expect_err("starting");
    assert_eq!(early.code(), tonic::Code::Unavailable, "{early:?}");
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(started.elapsed())).await;
    assert!(
        server.0.try_wait().expect("status").is_none(),
        "still running after 12 s: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(check(&url, LIVENESS).await.expect("answers"), Answer::Serving);
    assert_eq!(check(&url, "").await.expect("answers"), Answer::NotServing);
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        logged.contains("cannot connect to the database"),
        "the wait is logged with its cause: {logged}"
    );

    ordermesh_tests::allow_connections(&database_url, true).await;
    ordermesh_tests::until_health(&url, "", Answer::Serving, Duration::from_secs(30)).await;
    assert_eq!(check(&url, LIVENESS).await.expect("answers"), Answer::Serving);
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match payments.get_account(get.clone()).await {
            Err(status) if status.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => break answer,
        }
    };
    assert_eq!(
        answer.expect_err("no such account").code(),
        tonic::Code::NotFound,
        "the service itself answers on the early caller's channel"
    );
}
