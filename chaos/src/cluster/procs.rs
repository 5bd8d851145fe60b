//! The `ordermesh serve` children: one per service, two order replicas on
//! one database, and the gateway. Each keeps its port, flags and log file
//! across restarts (a restarted pod), so a kill -9 and a start again is the
//! whole of a crash. Signals other than SIGKILL go through `kill(1)`, as
//! the binary's own tests send them: the workspace forbids `unsafe`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cluster::ClusterError;
use crate::schedule::Proc;

/// How to start one process.
#[derive(Debug, Clone)]
pub struct Spec {
    pub port: u16,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The running children, by process.
pub struct Procs {
    bin: PathBuf,
    logs: PathBuf,
    specs: BTreeMap<Proc, Spec>,
    children: BTreeMap<Proc, Child>,
}

/// The longest wait for a (re)started process to report SERVING: a debug
/// binary migrating its database on a busy machine.
const START_WITHIN: Duration = Duration::from_secs(90);

impl Procs {
    pub fn new(bin: &Path, logs: &Path, specs: BTreeMap<Proc, Spec>) -> Self {
        Procs {
            bin: bin.to_owned(),
            logs: logs.to_owned(),
            specs,
            children: BTreeMap::new(),
        }
    }

    pub fn url(&self, proc: Proc) -> String {
        format!("http://127.0.0.1:{}", self.specs[&proc].port)
    }

    pub fn log_path(&self, proc: Proc) -> PathBuf {
        self.logs.join(format!("{}.log", proc.name()))
    }

    /// Starts `proc` and waits until it reports SERVING.
    pub async fn start(&mut self, proc: Proc) -> Result<(), ClusterError> {
        if self.children.contains_key(&proc) {
            return Ok(());
        }
        let spec = &self.specs[&proc];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(proc))
            .map_err(|source| ClusterError::io(format!("log of {}", proc.name()), source))?;
        let err = log
            .try_clone()
            .map_err(|source| ClusterError::io(format!("log of {}", proc.name()), source))?;
        let mut command = Command::new(&self.bin);
        command.args(["serve", proc.target()]).args(&spec.args);
        for (key, _) in std::env::vars() {
            if key.starts_with("ORDERMESH_") {
                command.env_remove(key);
            }
        }
        command.env("RUST_LOG", "info,sqlx=warn,h2=warn,tower=warn");
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                what: proc.name().to_owned(),
                source,
            })?;
        self.children.insert(proc, child);
        self.wait_serving(proc).await
    }

    async fn wait_serving(&mut self, proc: Proc) -> Result<(), ClusterError> {
        let url = self.url(proc);
        let deadline = tokio::time::Instant::now() + START_WITHIN;
        loop {
            if let Some(child) = self.children.get_mut(&proc)
                && let Ok(Some(status)) = child.try_wait()
            {
                self.children.remove(&proc);
                return Err(ClusterError::NotServing {
                    what: proc.name().to_owned(),
                    why: format!("exited with {status}; see {}", self.log_path(proc).display()),
                });
            }
            let answer =
                tokio::time::timeout(Duration::from_secs(2), ordermesh_runtime::health::check(&url, ""));
            if let Ok(Ok(ordermesh_runtime::health::Answer::Serving)) = answer.await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ClusterError::NotServing {
                    what: proc.name().to_owned(),
                    why: format!(
                        "not SERVING within {START_WITHIN:?}; see {}",
                        self.log_path(proc).display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, proc: Proc) -> Result<(), ClusterError> {
        if let Some(mut child) = self.children.remove(&proc) {
            child
                .kill()
                .and_then(|()| child.wait().map(drop))
                .map_err(|source| ClusterError::io(format!("kill -9 {}", proc.name()), source))?;
        }
        Ok(())
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`) with kill(1).
    pub fn signal(&self, proc: Proc, signal: &str) -> Result<(), ClusterError> {
        let child = self.children.get(&proc).ok_or_else(|| ClusterError::NotServing {
            what: proc.name().to_owned(),
            why: format!("not running, cannot send SIG{signal}"),
        })?;
        send_signal(child.id(), signal)
    }

    /// The children that exited on their own since the last look, removed.
    pub fn reap_exited(&mut self) -> Vec<(Proc, String)> {
        let mut exited = Vec::new();
        for (proc, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                exited.push((*proc, status.to_string()));
            }
        }
        for (proc, _) in &exited {
            self.children.remove(proc);
        }
        exited
    }

    /// SIGKILL every child (the end of the run).
    pub fn kill_all(&mut self) {
        let procs: Vec<Proc> = self.children.keys().copied().collect();
        for proc in procs {
            // Resumed first: a stopped process still dies of SIGKILL, but
            // leaves no stopped job behind if the kill is lost.
            let _ = self.signal(proc, "CONT");
            let _ = self.kill(proc);
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.kill_all();
    }
}

pub fn send_signal(pid: u32, signal: &str) -> Result<(), ClusterError> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map_err(|source| ClusterError::io(format!("kill -{signal} {pid}"), source))?;
    if status.success() {
        Ok(())
    } else {
        Err(ClusterError::NotServing {
            what: pid.to_string(),
            why: format!("kill -{signal} exited {status}"),
        })
    }
}
