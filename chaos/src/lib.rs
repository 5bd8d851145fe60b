//! `ordermesh chaos` (this crate; the binary keeps the subcommand): the
//! distributed mode under a seeded fault schedule, and a checker that reads
//! what happened and says which promise broke, for which order, with which
//! faults around it.
//!
//! One run: start PostgreSQL, NATS and one `ordermesh serve` per service
//! (two order replicas) as children ([`cluster`]); open accounts and
//! restock ([`traffic::setup`]); drive mixed traffic for the duration
//! ([`traffic`]) while the schedule ([`schedule`], a pure function of the
//! seed) kills, pauses, stops and restarts things ([`faults`]); append every
//! operation and fault to the history ([`history`]); let the system settle
//! and read its state through the public APIs and NATS ([`collect`]); judge
//! the history and that state with pure functions ([`check`]); report
//! ([`report`]). Exit 1 when a promise broke.
//!
//! # Layout
//! - [`args`]: the flags. [`settings`]: the saga timing the run uses.
//! - [`schedule`]: faults from the seed. [`faults`]: applying them; the watchdog.
//! - [`cluster`]: the child processes (PostgreSQL via `ordermesh_runtime::pgcluster`).
//! - [`traffic`]: workloads; [`traffic::ops`] records each call.
//! - [`history`]: the JSON-lines history, written and read back.
//! - [`collect`]: the end state; [`collect::settle`] waits for it.
//! - [`check`]: the rules, pure and unit-tested. [`report`]: text and JSON.

pub mod args;
pub mod check;
pub mod cluster;
pub mod collect;
pub mod faults;
pub mod history;
pub mod report;
pub mod schedule;
pub mod settings;
pub mod traffic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;

pub use args::ChaosArgs;
use cluster::{Cluster, Layout};
use history::{HistoryWriter, Record, RunHeader};
use schedule::Proc;
use settings::RunSettings;
use traffic::Traffic;
use traffic::ops::{Recorder, Target};

/// Runs `ordermesh chaos`. On SIGINT or SIGTERM the run stops and its
/// children are killed (they die with the cluster's handles).
pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    tokio::select! {
        outcome = run_to_end(args) => outcome,
        () = ordermesh_runtime::shutdown::signal() => {
            anyhow::bail!("interrupted; the run's processes are stopped")
        }
    }
}

async fn run_to_end(args: ChaosArgs) -> anyhow::Result<()> {
    let settings = RunSettings::default();
    let plan = schedule::schedule(args.seed, args.duration, &settings);
    if args.plan_only {
        for planned in &plan {
            println!("{}", serde_json::to_string(planned)?);
        }
        return Ok(());
    }
    let began = Instant::now();
    let dir = run_dir(&args)?;
    let history_path = args.history.clone().unwrap_or_else(|| dir.join("history.jsonl"));
    println!(
        "chaos: seed {} for {} s, {} faults planned; run directory {}",
        args.seed,
        args.duration.as_secs(),
        plan.len(),
        dir.display()
    );
    let bin = match &args.bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe().context("finding this binary (pass --bin)")?,
    };
    let nats_server = cluster::nats::find(args.nats_server.as_deref())?;
    let cluster = Cluster::start(Layout {
        dir: &dir,
        bin: &bin,
        nats_server,
        settings: &settings,
    })
    .await
    .with_context(|| format!("starting the cluster (logs under {})", dir.join("logs").display()))?;
    let started_ms = began.elapsed().as_millis();

    let history = Arc::new(HistoryWriter::create(&history_path)?);
    history.append(&Record::Run(RunHeader {
        seed: args.seed,
        duration_ms: u64::try_from(args.duration.as_millis())?,
        started_unix_ms: i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?,
        settings,
        schedule: plan.clone(),
    }))?;
    let channels: Vec<(Proc, Channel)> = Proc::ALL
        .into_iter()
        .map(|p| Ok((p, channel(&cluster.procs.url(p))?)))
        .collect::<anyhow::Result<_>>()?;
    let channel_of = |p: Proc| {
        channels
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| unreachable!())
    };
    let token = traffic::ops::bearer(&cluster.jwt_secret, args.duration + Duration::from_secs(3600))?;
    let targets = vec![
        Target {
            name: "order-0",
            client: OrderServiceClient::new(channel_of(Proc::Order0)),
            token: None,
        },
        Target {
            name: "order-1",
            client: OrderServiceClient::new(channel_of(Proc::Order1)),
            token: None,
        },
        Target {
            name: "gateway",
            client: OrderServiceClient::new(channel_of(Proc::Gateway)),
            token: Some(token),
        },
    ];
    let traffic = Arc::new(Traffic::new(
        args.seed,
        targets,
        InventoryServiceClient::new(channel_of(Proc::Inventory)),
        Recorder {
            history: history.clone(),
        },
        traffic::setup::customers(),
        traffic::setup::broke(),
    ));
    let setup = traffic::setup::prepare(&traffic, &PaymentServiceClient::new(channel_of(Proc::Payment)))
        .await
        .context("preparing accounts and stock")?;
    history.append(&Record::Setup(setup.clone()))?;
    let logs = cluster.logs();
    let cluster = Arc::new(Mutex::new(cluster));

    let (stop_watchdog, stopped) = tokio::sync::watch::channel(false);
    let watchdog = tokio::spawn(faults::watchdog(cluster.clone(), history.clone(), stopped));
    let traffic_start = Instant::now();
    let traffic_end = traffic_start + args.duration;
    let driver = tokio::spawn(faults::drive(
        cluster.clone(),
        plan,
        history.clone(),
        faults::mesh_admins(&channels),
        traffic_start,
        traffic_end,
    ));
    let actions = traffic.clone().run(args.concurrency, traffic_end).await;
    let applied = driver.await.context("the fault driver")?;
    let traffic_ms = traffic_start.elapsed().as_millis();
    println!(
        "chaos: traffic done ({actions} actions, {} faults applied); settling (at most {} s)",
        applied.len(),
        args.settle.as_secs()
    );

    let sources = collect::Sources {
        order: channel_of(Proc::Order0),
        inventory: channel_of(Proc::Inventory),
        payment: channel_of(Proc::Payment),
        services: [Proc::Inventory, Proc::Payment, Proc::Order0, Proc::Order1]
            .into_iter()
            .map(|p| (p.name().to_owned(), channel_of(p)))
            .collect(),
        nats_url: cluster.lock().await.nats.url(),
        logs,
    };
    let settle_start = Instant::now();
    let settled = collect::settle::settle(&sources, &traffic, args.settle).await;
    let collect_start = Instant::now();
    let snapshot = collect::snapshot(&sources, &setup.accounts)
        .await
        .context("reading the end state")?;
    let collect_ms = collect_start.elapsed().as_millis();
    let _ = stop_watchdog.send(true);
    let _ = watchdog.await;
    {
        let mut cluster = cluster.lock().await;
        cluster.procs.kill_all();
        cluster.nats.stop().await?;
    }
    drop(cluster);

    let history = history::read(&history_path)?;
    let findings = check::check(&history, &snapshot);
    std::fs::write(dir.join("snapshot.json"), serde_json::to_vec(&snapshot)?)?;
    let timings_ms = BTreeMap::from([
        ("start".to_owned(), ms(started_ms)),
        ("traffic".to_owned(), ms(traffic_ms)),
        (
            "settle".to_owned(),
            ms(collect_start.duration_since(settle_start).as_millis()),
        ),
        ("collect".to_owned(), ms(collect_ms)),
        ("total".to_owned(), ms(began.elapsed().as_millis())),
    ]);
    let report = report::build(report::Inputs {
        history: &history,
        snapshot: &snapshot,
        findings: &findings,
        settled,
        run_dir: dir.display().to_string(),
        history_path: history_path.display().to_string(),
        timings_ms,
    });
    print!("{}", report.text());
    let json = serde_json::to_vec_pretty(&report)?;
    std::fs::write(dir.join("report.json"), &json)?;
    if let Some(path) = &args.report {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    anyhow::ensure!(
        report.passed,
        "chaos seed {}: {} violations, {} faults not applied (report: {})",
        args.seed,
        report.violations.len(),
        report.fault_errors.len(),
        dir.join("report.json").display()
    );
    Ok(())
}

fn ms(ms: u128) -> u64 {
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// `--dir`, else a new directory under the temporary directory; created
/// readable by others, since PostgreSQL runs as its own user inside it.
fn run_dir(args: &ChaosArgs) -> anyhow::Result<PathBuf> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            std::env::temp_dir()
                .join("ordermesh-chaos")
                .join(format!("seed-{}-{now}", args.seed))
        }
    };
    if dir.exists() {
        anyhow::ensure!(
            is_empty_dir(&dir),
            "the run directory {} is not empty (a run needs a fresh one)",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}
