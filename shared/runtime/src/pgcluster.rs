//! A throwaway PostgreSQL cluster on this machine, for the processes the
//! bench and the chaos run start: `initdb` into a directory the caller owns,
//! start on a given loopback port, stop, start again, restart, and stop on
//! drop. The tools come from the newest `/usr/lib/postgresql/*/bin`, run as
//! the `postgres` user when we are root (initdb refuses root).
//!
//! Why here: `ordermesh bench` measures a cluster of its own and `ordermesh
//! chaos` restarts one (`pg_ctl restart -m immediate`, a stop held for a
//! while); both are library crates under the binary, and neither should
//! import the other. This crate already holds [`crate::net`] for the same
//! callers, needs nothing new for it (std processes only), and the services
//! never call it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PgClusterError {
    #[error("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")]
    NotInstalled,
    #[error("running {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed: {output}")]
    Failed { tool: String, output: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("postmaster.pid: {0}")]
    Pid(String),
}

/// How `pg_ctl` stops the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients and shut down cleanly.
    Fast,
    /// Abort at once, as a crash (recovery replays the WAL at the next start).
    Immediate,
}

impl StopMode {
    fn arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A cluster whose data, socket and log live under `root`; stopped (not
/// deleted: the caller owns `root`) on drop.
pub struct PgCluster {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    options: String,
}

/// The newest installed PostgreSQL's `bin` directory.
pub fn pg_bin() -> Result<PathBuf, PgClusterError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| PgClusterError::NotInstalled)?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().ok_or(PgClusterError::NotInstalled)
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

impl PgCluster {
    /// `initdb` into `root/data` (trust auth, user `postgres`) and start on
    /// 127.0.0.1:`port` with `settings` (`-c name=value` each). `root` must
    /// exist; when we are root it is handed to the `postgres` user.
    pub fn init(root: &Path, port: u16, settings: &[(&str, &str)]) -> Result<Self, PgClusterError> {
        let bin = pg_bin()?;
        if is_root() {
            let mut chown = Command::new("chown");
            chown.arg("postgres").arg(root);
            run(chown, "chown postgres")?;
        }
        let mut options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", root.display());
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let cluster = PgCluster {
            bin,
            root: root.to_owned(),
            port,
            options,
        };
        let mut initdb = cluster.tool("initdb");
        initdb
            .arg("-D")
            .arg(cluster.data())
            .args(["-A", "trust", "-U", "postgres"]);
        run(initdb, "initdb")?;
        cluster.start()?;
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server's log (appended across restarts).
    pub fn log(&self) -> PathBuf {
        self.root.join("log")
    }

    pub fn admin_url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `name` on this cluster.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<(), PgClusterError> {
        let mut start = self.tool("pg_ctl");
        start
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .args(["-w", "-o", &self.options, "start"]);
        run(start, "pg_ctl start")
    }

    /// Stops the server and waits until it is gone.
    pub fn stop(&self, mode: StopMode) -> Result<(), PgClusterError> {
        let mut stop = self.tool("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-w", "-m", mode.arg(), "stop"]);
        run(stop, "pg_ctl stop")
    }

    /// `pg_ctl restart`: stop in `mode`, then start with the same options.
    pub fn restart(&self, mode: StopMode) -> Result<(), PgClusterError> {
        let mut restart = self.tool("pg_ctl");
        restart
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .args(["-w", "-m", mode.arg(), "-o", &self.options, "restart"]);
        run(restart, "pg_ctl restart")
    }

    /// `createdb name` on the running server.
    pub fn create_database(&self, name: &str) -> Result<(), PgClusterError> {
        let mut create = self.tool("createdb");
        create
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
            .arg(name);
        run(create, "createdb")
    }

    /// The postmaster's pid (first line of `postmaster.pid`).
    pub fn postmaster(&self) -> Result<u32, PgClusterError> {
        let path = self.data().join("postmaster.pid");
        let text = std::fs::read_to_string(&path).map_err(|source| PgClusterError::Io {
            what: path.display().to_string(),
            source,
        })?;
        let first = text.lines().next().unwrap_or("").trim();
        first
            .parse()
            .map_err(|_| PgClusterError::Pid(format!("not a pid: {first:?}")))
    }

    /// A PostgreSQL tool, as the `postgres` user when we are root.
    fn tool(&self, tool: &str) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            Command::new(self.bin.join(tool))
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop(StopMode::Immediate);
    }
}

fn run(mut command: Command, tool: &str) -> Result<(), PgClusterError> {
    let output = command.output().map_err(|source| PgClusterError::Spawn {
        tool: tool.to_owned(),
        source,
    })?;
    if !output.status.success() {
        return Err(PgClusterError::Failed {
            tool: tool.to_owned(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
            .trim()
            .to_owned(),
        });
    }
    Ok(())
}
