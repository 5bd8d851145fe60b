//! What the bench measures: a mesh it starts itself in a temporary
//! directory (`ordermesh up` on SQLite, or three `ordermesh serve` processes
//! on fresh PostgreSQL databases), or one already running (`--target`).
//!
//! A started mesh runs the given binary (this one by default, or an older
//! build for a before/after comparison) on free ports; the time from spawn
//! to every health check answering SERVING and the idle RSS of each process
//! are measured on the way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::postgres::{self, Cluster};
use super::procstat::{self, Members};

/// The PostgreSQL databases of a mesh, and how to count their work.
pub struct Database {
    pub admin_url: String,
    /// Where the counters are read (a database with pg_stat_statements).
    pub stats_url: String,
    pub databases: Vec<String>,
    /// pg_stat_statements is loaded.
    pub statements: bool,
    /// The server's processes on this machine, if it runs here.
    pub processes: Option<Members>,
}

pub struct Mesh {
    pub kind: &'static str,
    pub backend: &'static str,
    pub order_url: String,
    /// Every order service process's address (`order_url` first): the
    /// workers' connections spread over them (`--order-replicas`).
    pub order_urls: Vec<String>,
    pub inventory_url: String,
    pub payment_url: String,
    /// (name, pid) of every ordermesh process.
    pub processes: Vec<(String, u32)>,
    /// The process that serves the order service (the echo floor's server).
    pub order_pid: Option<u32>,
    pub database: Option<Database>,
    pub start_to_healthy_ms: Option<f64>,
    pub idle_rss_kib: Vec<(String, u64)>,
    /// Of which anonymous (heap, stacks), per process.
    pub idle_rss_anon_kib: Vec<(String, u64)>,
    /// Scratch space for the SQLite calibration and the servers' logs.
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
    _cluster: Option<Cluster>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

/// Asks every address's health until all say SERVING, polling quickly so
/// the start-up time is measured to a few milliseconds; a server that exits
/// meanwhile ends the wait.
async fn wait_serving(urls: &[String], children: &mut [Child], within: Duration) -> anyhow::Result<()> {
    ordermesh_runtime::health::wait_until_serving(urls, within, Duration::from_millis(5), || {
        for child in children.iter_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("a server exited during start-up ({status}); see its log in the bench's temporary directory");
            }
        }
        Ok(())
    })
    .await
    .map_err(|error| match error {
        ordermesh_runtime::health::WaitError::Stopped(error) => error,
        timeout => anyhow::anyhow!(timeout),
    })
}

fn with_policy(mut args: Vec<String>, policy: Option<&Path>) -> Vec<String> {
    if let Some(policy) = policy {
        args.push("--policy".into());
        args.push(policy.display().to_string());
    }
    args
}

/// Whether `bin <command>` takes `flag` (per its `--help`).
fn takes_flag(bin: &Path, command: &str, flag: &str) -> anyhow::Result<bool> {
    let help = std::process::Command::new(bin)
        .args([command, "--help"])
        .output()?;
    Ok(String::from_utf8_lossy(&help.stdout).contains(flag))
}

/// `ordermesh up` on free ports and SQLite files in a temporary directory.
pub async fn start_up(bin: &Path, policy: Option<&Path>) -> anyhow::Result<Mesh> {
    let dir = tempfile::Builder::new().prefix("ordermesh-bench").tempdir()?;
    let ports = ordermesh_runtime::net::free_ports::<5>()?;
    let args: Vec<String> = [
        "up",
        "--data-dir",
        &dir.path().join("data").display().to_string(),
        "--order-port",
        &ports[0].to_string(),
        "--inventory-port",
        &ports[1].to_string(),
        "--payment-port",
        &ports[2].to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut args = with_policy(args, policy);
    // The gateway's port too, on a free port, unless the binary predates the
    // gateway (a baseline build), which would refuse the flag.
    if takes_flag(bin, "up", "--gateway-port")? {
        args.extend(["--gateway-port".to_owned(), ports[3].to_string()]);
    }
    // Metrics as `up` serves them by default, on a free port, where the
    // binary has them.
    if takes_flag(bin, "up", "--metrics-listen")? {
        args.extend(["--metrics-listen".to_owned(), format!("127.0.0.1:{}", ports[4])]);
    }
    let urls: Vec<String> = ports[..3]
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let began = Instant::now();
    let mut children = vec![spawn(bin, &args, &dir.path().join("up.log"))?];
    wait_serving(&urls, &mut children, Duration::from_secs(60)).await?;
    let healthy = began.elapsed();
    let pid = children[0].id();
    let mut mesh = Mesh {
        kind: "up",
        backend: "sqlite",
        order_url: urls[0].clone(),
        order_urls: vec![urls[0].clone()],
        inventory_url: urls[1].clone(),
        payment_url: urls[2].clone(),
        processes: vec![("up".into(), pid)],
        order_pid: Some(pid),
        database: None,
        start_to_healthy_ms: Some(healthy.as_secs_f64() * 1000.0),
        idle_rss_kib: Vec::new(),
        idle_rss_anon_kib: Vec::new(),
        dir,
        children,
        _cluster: None,
    };
    (mesh.idle_rss_kib, mesh.idle_rss_anon_kib) = idle_rss(&mesh.processes).await;
    Ok(mesh)
}

/// The most order service processes a started `serve` mesh runs.
pub const MAX_ORDER_REPLICAS: usize = 6;

/// Three `ordermesh serve` processes, each on its own fresh database on the
/// PostgreSQL server at `postgres_url`, or on a cluster the bench starts;
/// with `order_replicas` > 1, that many order service processes on the one
/// order database (replicas as a Deployment scales them: their relays elect
/// one publisher, each drives the sagas of the orders it accepted).
pub async fn start_serve(
    bin: &Path,
    postgres_url: Option<&str>,
    fsync: bool,
    policy: Option<&Path>,
    order_replicas: usize,
) -> anyhow::Result<Mesh> {
    anyhow::ensure!(
        (1..=MAX_ORDER_REPLICAS).contains(&order_replicas),
        "--order-replicas is 1 to {MAX_ORDER_REPLICAS}, not {order_replicas}"
    );
    let dir = tempfile::Builder::new().prefix("ordermesh-bench").tempdir()?;
    let (cluster, admin_url) = match postgres_url {
        Some(url) => (None, url.to_owned()),
        None => {
            let cluster = Cluster::start(fsync).context("starting a PostgreSQL cluster for the bench")?;
            let url = cluster.admin_url();
            (Some(cluster), url)
        }
    };
    let processes = match &cluster {
        Some(cluster) => Some(Members::Trees(vec![cluster.postmaster()?])),
        None => postgres::server_processes(&admin_url),
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let names = ["inventory", "payment", "order"];
    let mut databases = Vec::new();
    let mut statements = true;
    for name in names {
        let db = format!("om_bench_{}_{name}", &run[..12]);
        statements &= postgres::create_database(&admin_url, &db).await?;
        databases.push(db);
    }
    // inventory, payment, then each order replica.
    let ports = ordermesh_runtime::net::free_ports::<{ 2 + MAX_ORDER_REPLICAS }>()?;
    let ports = &ports[..2 + order_replicas];
    let urls: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let process_names: Vec<String> = names[..2]
        .iter()
        .map(|n| (*n).to_owned())
        .chain((1..=order_replicas).map(|r| match r {
            1 => "order".to_owned(),
            r => format!("order-{r}"),
        }))
        .collect();
    let began = Instant::now();
    let mut children = Vec::new();
    for (i, process) in process_names.iter().enumerate() {
        let name = names[i.min(2)];
        let mut args: Vec<String> = vec![
            "serve".into(),
            name.into(),
            "--listen".into(),
            format!("127.0.0.1:{}", ports[i]),
            "--database-url".into(),
            postgres::database_url(&admin_url, &databases[i.min(2)]),
        ];
        match name {
            "order" => args.extend([
                "--inventory-url".into(),
                urls[0].clone(),
                "--payment-url".into(),
                urls[1].clone(),
            ]),
            _ => args.push("--seed-demo".into()),
        }
        let args = with_policy(args, policy);
        children.push(spawn(bin, &args, &dir.path().join(format!("{process}.log")))?);
    }
    wait_serving(&urls, &mut children, Duration::from_secs(60)).await?;
    let healthy = began.elapsed();
    let processes_list: Vec<(String, u32)> = process_names
        .into_iter()
        .zip(&children)
        .map(|(n, c)| (n, c.id()))
        .collect();
    let order_pid = children.get(2).map(Child::id);
    let mut mesh = Mesh {
        kind: "serve",
        backend: "postgres",
        order_url: urls[2].clone(),
        order_urls: urls[2..].to_vec(),
        inventory_url: urls[0].clone(),
        payment_url: urls[1].clone(),
        processes: processes_list,
        order_pid,
        database: Some(Database {
            stats_url: postgres::database_url(&admin_url, &databases[0]),
            admin_url,
            databases,
            statements,
            processes,
        }),
        start_to_healthy_ms: Some(healthy.as_secs_f64() * 1000.0),
        idle_rss_kib: Vec::new(),
        idle_rss_anon_kib: Vec::new(),
        dir,
        children,
        _cluster: cluster,
    };
    (mesh.idle_rss_kib, mesh.idle_rss_anon_kib) = idle_rss(&mesh.processes).await;
    Ok(mesh)
}

/// RSS, and its anonymous part, once start-up work has settled (half a
/// second after healthy).
async fn idle_rss(processes: &[(String, u32)]) -> (Vec<(String, u64)>, Vec<(String, u64)>) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let of = |read: fn(u32) -> Option<u64>| {
        processes
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), read(*pid)?)))
            .collect()
    };
    (of(procstat::rss_kib), of(procstat::rss_anon_kib))
}

fn port_of(url: &str) -> Option<u16> {
    url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

/// A mesh already running. Its processes are `pids` and the named
/// `measured` when given (e.g. a gateway or a proxy in front of the mesh),
/// else the processes listening on the three services' ports; the database
/// server's are `db_pids`, else every `postgres` process on the machine.
pub async fn existing(
    order_url: &str,
    inventory_url: &str,
    payment_url: &str,
    pids: &[u32],
    measured: &[(String, u32)],
    db_pids: &[u32],
    postgres_url: Option<&str>,
) -> anyhow::Result<Mesh> {
    // A mesh just started may still be opening its databases (health says
    // NOT_SERVING and other calls UNAVAILABLE): the run starts once all
    // three serve, as it does for a mesh the bench started itself.
    let urls = [order_url, inventory_url, payment_url].map(str::to_owned);
    wait_serving(&urls, &mut [], Duration::from_secs(30)).await?;
    let mut processes: Vec<(String, u32)> = Vec::new();
    if pids.is_empty() && measured.is_empty() {
        for (name, url) in [
            ("order", order_url),
            ("inventory", inventory_url),
            ("payment", payment_url),
        ] {
            for pid in port_of(url).map(procstat::listening_on).unwrap_or_default() {
                match processes.iter_mut().find(|(_, p)| *p == pid) {
                    Some((n, _)) => *n = format!("{n}+{name}"),
                    None => processes.push((name.to_owned(), pid)),
                }
            }
        }
    } else {
        processes = pids.iter().map(|p| (format!("pid {p}"), *p)).collect();
        processes.extend(measured.iter().cloned());
    }
    let order_pid = port_of(order_url)
        .and_then(|p| procstat::listening_on(p).first().copied())
        .or_else(|| pids.first().copied());
    let db_members = if db_pids.is_empty() {
        Members::Comm("postgres".into())
    } else {
        Members::Trees(db_pids.to_vec())
    };
    let database = match postgres_url {
        Some(admin_url) => {
            let databases = postgres::all_databases(admin_url).await?;
            let statements = postgres::statements_available(admin_url).await;
            Some(Database {
                admin_url: admin_url.to_owned(),
                stats_url: admin_url.to_owned(),
                databases,
                statements,
                processes: Some(db_members),
            })
        }
        None => Some(Database {
            admin_url: String::new(),
            stats_url: String::new(),
            databases: Vec::new(),
            statements: false,
            processes: Some(db_members),
        }),
    };
    Ok(Mesh {
        kind: "target",
        backend: if postgres_url.is_some() {
            "postgres"
        } else {
            "unknown"
        },
        order_url: order_url.to_owned(),
        order_urls: vec![order_url.to_owned()],
        inventory_url: inventory_url.to_owned(),
        payment_url: payment_url.to_owned(),
        processes,
        order_pid,
        database,
        start_to_healthy_ms: None,
        idle_rss_kib: Vec::new(),
        idle_rss_anon_kib: Vec::new(),
        dir: tempfile::Builder::new().prefix("ordermesh-bench").tempdir()?,
        children: Vec::new(),
        _cluster: None,
    })
}

/// The binary a started mesh runs: `--server-bin`, else this one.
pub fn server_bin(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(path) => Ok(path.clone()),
        None => std::env::current_exe().context("finding this binary to start the mesh with"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_urls() {
        assert_eq!(port_of("http://127.0.0.1:50051"), Some(50051));
        assert_eq!(port_of("http://localhost:8080/"), Some(8080));
        assert_eq!(port_of("http://localhost"), None);
    }
}
