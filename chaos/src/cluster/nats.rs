//! The run's own nats-server (JetStream on, its own store directory and
//! port). Stopped with SIGTERM, so JetStream flushes its store and a stop
//! loses nothing; the empty-store restart deletes the store while stopped.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cluster::ClusterError;
use crate::cluster::procs::send_signal;

pub struct NatsServer {
    bin: PathBuf,
    port: u16,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// nats-server from `explicit`, else `target/tools/bin/nats-server` under
/// the current directory (where `.ci/tools.sh` installs it), else `PATH`.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let local = PathBuf::from("target/tools/bin/nats-server");
    if local.exists() {
        return Ok(local);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.exists());
    on_path.ok_or_else(|| ClusterError::NotServing {
        what: "nats-server".into(),
        why: "not found: pass --nats-server, set NATS_SERVER, or run .ci/tools.sh".into(),
    })
}

impl NatsServer {
    pub fn new(bin: PathBuf, port: u16, dir: &Path) -> Self {
        NatsServer {
            bin,
            port,
            store: dir.join("nats-store"),
            log: dir.join("logs").join("nats.log"),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn start(&mut self) -> Result<(), ClusterError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|source| ClusterError::io("nats log", source))?;
        let err = log
            .try_clone()
            .map_err(|source| ClusterError::io("nats log", source))?;
        let child = Command::new(&self.bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                what: "nats-server".into(),
                source,
            })?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(ClusterError::NotServing {
                    what: "nats-server".into(),
                    why: format!("exited with {status}; see {}", self.log.display()),
                });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ClusterError::NotServing {
                    what: "nats-server".into(),
                    why: "not accepting connections within 20 s".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after 10 s.
    pub async fn stop(&mut self) -> Result<(), ClusterError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        send_signal(child.id(), "TERM")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a crashed server or a lost node: nothing is flushed or
    /// handed over, and no publish is acknowledged after this returns.
    pub fn kill(&mut self) -> Result<(), ClusterError> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Deletes the store (only while stopped).
    pub fn wipe(&self) -> Result<(), ClusterError> {
        if self.child.is_some() {
            return Err(ClusterError::NotServing {
                what: "nats-server".into(),
                why: "still running; stop it before wiping its store".into(),
            });
        }
        match std::fs::remove_dir_all(&self.store) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ClusterError::io("wiping the NATS store", e))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
