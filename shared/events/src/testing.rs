//! Test support (also for the services' system tests and benches): a real
//! `nats-server -js` on a loopback port of its own with its own store
//! directory, restartable on the same port (with its store, or with an empty
//! one), killed when dropped.
//!
//! nats-server 2.10+ comes from `NATS_SERVER`, else `target/tools/bin`
//! (`bash .ci/tools.sh`), else `PATH`. When none is found, [`NatsServer::start`]
//! prints a SKIP line and returns `None`, except under `CI`, where it panics:
//! CI must run what needs NATS.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

fn skip(what: &str, why: &str) {
    assert!(!in_ci(), "CI needs {what}: {why}");
    eprintln!("\n*** SKIP: no {what} ({why}) ***\n");
}

fn version_at_least_2_10(binary: &Path) -> bool {
    let Ok(output) = std::process::Command::new(binary).arg("--version").output() else {
        return false;
    };
    // "nats-server: v2.15.1"
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(version) = text.trim().rsplit('v').next() else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

/// The nats-server binary to test with, if one (2.10 or newer) is found.
pub fn nats_server_binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("NATS_SERVER").map(PathBuf::from),
        Some(workspace_root().join("target/tools/bin/nats-server")),
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nats-server"))
                .find(|p| p.is_file())
        }),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file() && version_at_least_2_10(p))
}

/// A nats-server with JetStream, on a port of its own.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server, or `None` (after a SKIP line) when none is installed
    /// outside CI.
    pub async fn start() -> Option<Self> {
        let Some(binary) = nats_server_binary() else {
            skip("nats-server 2.10+", "run `bash .ci/tools.sh` or set NATS_SERVER");
            return None;
        };
        let mut server = Self {
            binary,
            port: ordermesh_runtime::net::free_port().expect("a free port"),
            store: tempfile::tempdir().expect("store dir"),
            child: None,
        };
        server.run().await;
        Some(server)
    }

    async fn run(&mut self) {
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not listen on {} within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's process id (the benchmark reads its CPU time).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, as a crash) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }

    /// Starts it again on the same port with a fresh, empty store: NATS has
    /// lost every stream, consumer and message (a disk lost, a volume not
    /// mounted), while clients reconnect to the same address.
    pub async fn restart_empty(&mut self) {
        self.stop().await;
        self.store = tempfile::tempdir().expect("store dir");
        self.run().await;
    }

    /// A plain client (for reading streams directly).
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.expect("connect to nats")
    }
}
