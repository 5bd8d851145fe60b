//! What the binary-level tests share: free ports, a running `ordermesh up`
//! that is killed on drop, and finding third-party tools (skipped when
//! missing, except under `CI`, where a missing tool fails the test).

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

/// A tool from `env_var`, else `target/tools/bin/<name>` (installed by
/// `.ci/tools.sh`). `None` after a SKIP line when missing outside CI; a panic
/// under CI.
pub fn tool(env_var: &str, name: &str, test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Some(path.into());
    }
    let local = repo().join("target/tools/bin").join(name);
    if local.exists() {
        return Some(local);
    }
    if in_ci() {
        panic!("CI needs {name} for {test}: run .ci/tools.sh (or set {env_var})");
    }
    eprintln!("\n*** SKIP {test}: {name} not found (run .ci/tools.sh or set {env_var}) ***\n");
    None
}

pub fn free_port() -> u16 {
    ordermesh_runtime::net::free_port().expect("a free port")
}

/// `ordermesh up` on free loopback ports and its own data directory, killed
/// (and reaped) on drop.
pub struct Up {
    pub child: Child,
    pub order: u16,
    pub inventory: u16,
    pub payment: u16,
    pub gateway: u16,
    /// Where it serves Prometheus metrics.
    pub metrics: u16,
    /// What it printed up to its ready line.
    pub started: Vec<String>,
    lines: mpsc::Receiver<String>,
    data: tempfile::TempDir,
}

impl Up {
    /// Starts `ordermesh up` with `extra` arguments and waits (with a
    /// deadline) for its ready line.
    pub fn start(extra: &[String]) -> Up {
        let data = tempfile::tempdir().expect("tempdir");
        let [order, inventory, payment, gateway, metrics] =
            ordermesh_runtime::net::free_ports().expect("free ports");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ordermesh"))
            .args(["up", "--data-dir"])
            .arg(data.path())
            .args(["--order-port", &order.to_string()])
            .args(["--inventory-port", &inventory.to_string()])
            .args(["--payment-port", &payment.to_string()])
            .args(["--gateway-port", &gateway.to_string()])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(data.path().join("stderr.log")).expect("stderr file"))
            .spawn()
            .expect("ordermesh up starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let up = Up {
            child,
            order,
            inventory,
            payment,
            gateway,
            metrics,
            started: Vec::new(),
            lines,
            data,
        };
        let mut up = up;
        up.started = up.wait_for_line("ready", Duration::from_secs(60));
        up
    }

    /// The `--data-dir` it runs with.
    /// What it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.data.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => {
                    panic!("no line containing {needle:?} within {timeout:?}; output so far: {seen:#?}")
                }
            }
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python with grpcio-tools and grpcio-status, or `None` (skip) outside CI.
pub fn python(test: &str) -> Option<PathBuf> {
    let python = tool("ORDERMESH_PYTHON", "python", test)?;
    let probe = Command::new(&python)
        .args(["-c", "import grpc_tools.protoc, grpc_status"])
        .output()
        .expect("python runs");
    if probe.status.success() {
        return Some(python);
    }
    let why = String::from_utf8_lossy(&probe.stderr);
    if in_ci() {
        panic!(
            "CI needs grpcio-tools and grpcio-status in {}: run .ci/tools.sh\n{why}",
            python.display()
        );
    }
    eprintln!(
        "\n*** SKIP {test}: {} lacks grpcio-tools/grpcio-status (run .ci/tools.sh) ***\n",
        python.display()
    );
    None
}

/// Generates the Python client for every package under proto/ordermesh into
/// `out`, as the README's command does.
pub fn generate_python(python: &Path, out: &Path) {
    let proto = repo().join("proto");
    let mut files = Vec::new();
    let mut dirs = vec![proto.join("ordermesh")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read proto dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 5, "found the protos: {files:?}");
    let out_arg = out.display().to_string();
    let generated = Command::new(python)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto.display()))
        .arg(format!("--python_out={out_arg}"))
        .arg(format!("--pyi_out={out_arg}"))
        .arg(format!("--grpc_python_out={out_arg}"))
        .args(&files)
        .output()
        .expect("grpc_tools.protoc runs");
    assert!(
        generated.status.success(),
        "generating the Python client failed: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    assert!(out.join("ordermesh/order/v1/order_pb2_grpc.py").exists());
}

/// Skips (outside CI) or fails (under CI) with `why`.
pub fn missing(test: &str, why: &str) {
    if in_ci() {
        panic!("CI needs {why} for {test}: run .ci/tools.sh");
    }
    eprintln!("\n*** SKIP {test}: {why} (run .ci/tools.sh) ***\n");
}

/// Node.js 20 or later, or `None` (skip) outside CI.
pub fn node(test: &str) -> Option<PathBuf> {
    let node = std::env::var_os("ORDERMESH_NODE").map_or_else(|| PathBuf::from("node"), PathBuf::from);
    let major = Command::new(&node)
        .args(["-p", "process.versions.node.split('.')[0]"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse::<u32>().ok());
    match major {
        Some(major) if major >= 20 => Some(node),
        found => {
            missing(
                test,
                &format!(
                    "Node.js 20 or later as {} (found major {found:?})",
                    node.display()
                ),
            );
            None
        }
    }
}

/// A finished command's status and both streams, for assertion messages.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
