//! `ordermesh bench` (this crate; the binary keeps the subcommand): load over gRPC against a mesh the bench starts (or one
//! already running), with the CPU of every process and the database's work
//! measured over the same window, and the machine's lower limit for an
//! order measured in the same run.
//!
//! One run is one scenario at one load (closed loop at a concurrency, or
//! open loop at a rate); `bench/run.sh` runs the comparison set and writes
//! `BENCHMARKS.md`. The report is one summary line on stdout and, with
//! `--json`, every figure as JSON.
//!
//! # Layout
//! - [`args`]: the flags.
//! - [`load`]: the closed/open-loop engine, HDR histograms, percentiles.
//! - [`target`]: starting `up` or three `serve` processes, or finding a
//!   running mesh's processes.
//! - [`postgres`]: the bench's own PostgreSQL cluster and its counters.
//! - [`procstat`]: CPU and RSS from `/proc`.
//! - [`measure`]: what is read at the window's edges.
//! - [`scenarios`]: the requests and their setup.
//! - [`watch`]: the watch-order scenario's two phases.
//! - [`limit`]: the machine's lower limit per order.
//! - [`report`]: the JSON and the summary line.

mod args;
mod limit;
mod load;
mod measure;
mod postgres;
mod procstat;
mod report;
mod scenarios;
mod target;
mod watch;

use std::time::Duration;

use anyhow::Context;
use tonic_health::pb::health_client::HealthClient;

use ordermesh_mesh::policy::MeshPolicy;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::mesh::v1::mesh_admin_service_client::MeshAdminServiceClient;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;

use args::{ClientKind, Scenario, Start};
use load::{Mode, Plan};
use measure::Probe;
use procstat::Members;
use target::Mesh;

pub use args::BenchArgs;

/// Connections the load spreads over (as several clients would).
const CONNECTIONS: usize = 8;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut mesh = start(&args).await?;
    if args.keep_dir {
        mesh.dir.disable_cleanup(true);
        eprintln!(
            "bench: keeping {} (servers' logs and data)",
            mesh.dir.path().display()
        );
    }
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let mode = match args.rate {
        Some(rate) => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            Mode::Open {
                rate,
                max_in_flight: args.max_in_flight,
            }
        }
        None => {
            anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
            Mode::Closed {
                concurrency: args.concurrency,
            }
        }
    };
    let connections = match mode {
        Mode::Closed { concurrency } => concurrency.min(CONNECTIONS),
        Mode::Open { .. } => CONNECTIONS,
    };
    let bearer = scenarios::Bearer::new(args.token.as_deref())?;
    let order_channels = scenarios::connections(&mesh.order_urls, connections, &bearer).await?;
    let mut inventory = InventoryServiceClient::new(scenarios::connect(&mesh.inventory_url, &bearer).await?);
    let mut payment = PaymentServiceClient::new(scenarios::connect(&mesh.payment_url, &bearer).await?);

    let spread = if args.scenario == Scenario::Echo {
        None
    } else {
        let (skus, dearest) = scenarios::skus(&mut inventory, &args.skus).await?;
        scenarios::restock(&mut inventory, &skus, &run_id).await?;
        let customers = scenarios::customers(
            &mut payment,
            &dearest,
            &run_id,
            args.accounts,
            args.customer.as_deref(),
        )
        .await?;
        Some(scenarios::Spread { skus, customers })
    };

    // The limit first, on a quiet mesh.
    let floor = if args.scenario == Scenario::CreateOrder && !args.no_limit {
        Some(
            calibrate(&mesh, &bearer)
                .await
                .context("measuring the machine's limit")?,
        )
    } else {
        None
    };

    let mut plan = Plan {
        mode,
        warmup: args.warmup,
        duration: args.duration,
        budget: spread.as_ref().and_then(|s| s.customers.budget_orders),
    };
    let mut probe = Probe::new(&mesh);
    let rss = RssSampler::start(&mesh.processes, Duration::from_secs(1));
    let mut watch_report = serde_json::Value::Null;
    let outcome = match args.scenario {
        Scenario::Echo => echo(&mesh, &plan, args.client, &order_channels, &mut probe).await?,
        Scenario::GetOrder => {
            let seeded = 20;
            plan.budget = None;
            let client = OrderServiceClient::new(order_channels[0].clone());
            let ids = scenarios::seed_orders(&client, spread_of(&spread)?, &run_id, seeded).await?;
            let clients: Vec<_> = order_channels
                .iter()
                .cloned()
                .map(OrderServiceClient::new)
                .collect();
            load::run(
                &plan,
                move |seq| {
                    let i = usize::try_from(seq).unwrap_or(0);
                    scenarios::get_order(clients[i % clients.len()].clone(), ids[i % ids.len()].clone())
                },
                &mut probe,
            )
            .await
        }
        Scenario::RestGetOrder => {
            let client = OrderServiceClient::new(order_channels[0].clone());
            let ids = scenarios::seed_orders(&client, spread_of(&spread)?, &run_id, 20).await?;
            plan.budget = None;
            let http = scenarios::http_client()?;
            let base = args.rest_url.clone().unwrap_or_else(|| mesh.order_url.clone());
            let bearer = bearer.clone();
            load::run(
                &plan,
                move |seq| {
                    let i = usize::try_from(seq).unwrap_or(0);
                    scenarios::rest_get_order(
                        http.clone(),
                        base.clone(),
                        ids[i % ids.len()].clone(),
                        bearer.clone(),
                    )
                },
                &mut probe,
            )
            .await
        }
        Scenario::CreateOrder => {
            let clients: Vec<_> = order_channels
                .iter()
                .cloned()
                .map(OrderServiceClient::new)
                .collect();
            let (spread, follow, run) = (spread_of(&spread)?.clone(), args.follow, run_id.clone());
            load::run(
                &plan,
                move |seq| {
                    let i = usize::try_from(seq).unwrap_or(0);
                    let (sku, customer) = spread.pick(seq);
                    scenarios::create_order(
                        clients[i % clients.len()].clone(),
                        format!("bench-{run}-{seq}"),
                        customer,
                        sku,
                        follow,
                        None,
                    )
                },
                &mut probe,
            )
            .await
        }
        Scenario::WatchOrder => {
            let (outcome, report) = watch_order(
                &args,
                &mesh,
                &plan,
                &order_channels,
                &bearer,
                spread_of(&spread)?,
                &run_id,
            )
            .await?;
            watch_report = report.0;
            probe = report.1;
            outcome
        }
    };

    let rss_series = rss.stop().await;
    let db_counts_from = match &args.db_counts_from {
        Some(path) => Some(report::db_counts_from(path)?),
        None => None,
    };
    let json = report::build(report::Inputs {
        args: &args,
        mesh: &mesh,
        outcome: &outcome,
        probe: &probe,
        floor: floor.as_ref(),
        spread: spread.as_ref(),
        watch: watch_report,
        db_counts_from,
        rss_series,
    });
    println!("{}", report::summary(&json));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The spread of a scenario that orders (every one but echo sets it up).
fn spread_of(spread: &Option<scenarios::Spread>) -> anyhow::Result<&scenarios::Spread> {
    spread
        .as_ref()
        .context("the scenario orders but no SKUs and customers were set up")
}

/// RSS of every ordermesh process, sampled from the start of the load
/// (warm-up included) to its end: the memory run's curve.
struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::collections::BTreeMap<String, Vec<u64>>>,
}

impl RssSampler {
    fn start(processes: &[(String, u32)], every: Duration) -> Self {
        let processes = processes.to_vec();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut series: std::collections::BTreeMap<String, Vec<u64>> = std::collections::BTreeMap::new();
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        for (name, pid) in &processes {
                            series.entry(name.clone()).or_default().push(procstat::rss_kib(*pid).unwrap_or(0));
                        }
                    }
                    _ = &mut stopped => return series,
                }
            }
        });
        RssSampler { stop, task }
    }

    async fn stop(self) -> std::collections::BTreeMap<String, Vec<u64>> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

async fn start(args: &BenchArgs) -> anyhow::Result<Mesh> {
    if let Some(order_url) = &args.target {
        return target::existing(
            order_url,
            &args.inventory_url,
            &args.payment_url,
            &args.pids,
            &args.measure_pids,
            &args.db_pids,
            args.postgres_url.as_deref(),
        )
        .await;
    }
    let bin = target::server_bin(args.server_bin.as_ref())?;
    match args.start.unwrap_or(Start::Up) {
        Start::Up => target::start_up(&bin, args.server_policy.as_deref()).await,
        Start::Serve => {
            target::start_serve(
                &bin,
                args.postgres_url.as_deref(),
                !args.pg_fsync_off,
                args.server_policy.as_deref(),
                args.order_replicas.into(),
            )
            .await
        }
    }
}

async fn echo(
    mesh: &Mesh,
    plan: &Plan,
    kind: ClientKind,
    channels: &[scenarios::Conn],
    probe: &mut Probe,
) -> anyhow::Result<load::Outcome> {
    let bare: Vec<_> = channels.iter().cloned().map(HealthClient::new).collect();
    let stack = ordermesh_mesh::stack::Mesh::new(MeshPolicy::default());
    let meshed = HealthClient::new(
        stack
            .client("echo", &mesh.order_url)
            .map_err(|e| anyhow::anyhow!("mesh client stack: {e}"))?,
    );
    Ok(load::run(
        plan,
        move |seq| {
            let i = usize::try_from(seq).unwrap_or(0);
            let use_mesh = match kind {
                ClientKind::Bare => false,
                ClientKind::Mesh => true,
                ClientKind::Both => seq % 2 == 1,
            };
            let (bare, meshed) = (bare[i % bare.len()].clone(), meshed.clone());
            async move {
                if use_mesh {
                    scenarios::echo(meshed, "mesh").await
                } else {
                    scenarios::echo(bare, "bare").await
                }
            }
        },
        probe,
    )
    .await)
}

/// The floors of the machine's limit: the echo RPC's CPU on the order
/// service's server and in the bench, then the database's simplest commit
/// and statement.
async fn calibrate(mesh: &Mesh, bearer: &scenarios::Bearer) -> anyhow::Result<limit::Floor> {
    let server = mesh.order_pid.map(|p| Members::Fixed(vec![p]));
    struct EchoWindow {
        server: Option<Members>,
        at: [(u64, u64); 2],
    }
    impl load::Window for EchoWindow {
        fn start(&mut self) -> futures::future::BoxFuture<'_, ()> {
            Box::pin(async {
                self.at[0] = (
                    self.server
                        .as_ref()
                        .map_or(0, |m| procstat::CpuSnapshot::take(m).ticks.values().sum()),
                    procstat::self_ticks(),
                );
            })
        }
        fn end(&mut self) -> futures::future::BoxFuture<'_, ()> {
            Box::pin(async {
                self.at[1] = (
                    self.server
                        .as_ref()
                        .map_or(0, |m| procstat::CpuSnapshot::take(m).ticks.values().sum()),
                    procstat::self_ticks(),
                );
            })
        }
    }
    let mut window = EchoWindow {
        server,
        at: [(0, 0); 2],
    };
    let channels = scenarios::connections(&mesh.order_urls, 4, bearer).await?;
    let clients: Vec<_> = channels.into_iter().map(HealthClient::new).collect();
    let plan = Plan {
        mode: Mode::Closed { concurrency: 8 },
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(2),
        budget: None,
    };
    let echo = load::run(
        &plan,
        move |seq| {
            let client = clients[usize::try_from(seq).unwrap_or(0) % clients.len()].clone();
            async move { scenarios::echo(client, "").await }
        },
        &mut window,
    )
    .await;
    anyhow::ensure!(echo.ok > 0, "no echo call succeeded: {:?}", echo.errors);
    let n = echo.ok as f64;
    let mut floor = limit::Floor {
        rpc_server_ms: procstat::ticks_to_ms(window.at[1].0.saturating_sub(window.at[0].0)) / n,
        rpc_client_ms: procstat::ticks_to_ms(window.at[1].1.saturating_sub(window.at[0].1)) / n,
        rpc_per_s: echo.throughput(),
        ..limit::Floor::default()
    };
    let scratch = match (mesh.backend, &mesh.database) {
        ("sqlite", _) => Some(limit::ScratchDb::Sqlite {
            dir: mesh.dir.path().join("scratch"),
        }),
        ("postgres", Some(db)) if !db.admin_url.is_empty() => Some(limit::ScratchDb::Postgres {
            admin_url: db.admin_url.clone(),
            name: format!(
                "om_bench_{}_scratch",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            server: db.processes.clone(),
        }),
        _ => None,
    };
    if let Some(scratch) = scratch {
        let (commit_client, commit_server, commits_per_s, statement_client, statement_server) =
            limit::database_floor(&scratch, Duration::from_millis(1500)).await?;
        floor.commit_client_ms = Some(commit_client);
        floor.commit_server_ms = Some(commit_server);
        floor.commits_per_s = Some(commits_per_s);
        floor.statement_client_ms = Some(statement_client);
        floor.statement_server_ms = Some(statement_server);
    }
    Ok(floor)
}

/// The watch-order scenario (see [`watch`]): returns the flow's outcome,
/// the watch report and the probe of phase B.
async fn watch_order(
    args: &BenchArgs,
    mesh: &Mesh,
    plan: &Plan,
    channels: &[scenarios::Conn],
    bearer: &scenarios::Bearer,
    spread: &scenarios::Spread,
    run_id: &str,
) -> anyhow::Result<(load::Outcome, (serde_json::Value, Probe))> {
    // One GetOrder's statements: what a subscription's first read costs.
    let client = OrderServiceClient::new(channels[0].clone());
    let ids = scenarios::seed_orders(&client, spread, run_id, 3).await?;
    let statements_per_get = match &mesh.database {
        Some(db) if db.statements && !db.databases.is_empty() => {
            let before = postgres::counters(&db.stats_url, &db.databases, true).await?;
            let n = 200;
            for i in 0..n {
                let _ = scenarios::get_order(client.clone(), ids[i % ids.len()].clone()).await;
            }
            let after = postgres::counters(&db.stats_url, &db.databases, true).await?;
            postgres::delta(&before, &after)
                .statements
                .map(|s| s as f64 / n as f64)
        }
        _ => None,
    };
    let mut admin = MeshAdminServiceClient::new(channels[0].clone());
    let flag_before = watch::hold_orders(&mut admin, args.watch_hold).await?;
    let watcher_channels = scenarios::connections(&mesh.order_urls, 16, bearer).await?;
    let (newest_tx, newest_rx) = tokio::sync::watch::channel(String::new());
    let mut window = watch::WatchWindow::new(
        mesh,
        args.duration,
        args.watchers,
        watcher_channels,
        newest_rx,
        statements_per_get,
        args.watch_hold,
    );
    // The flow: open loop (50 orders/s unless --rate says otherwise).
    let flow = Plan {
        mode: match plan.mode {
            Mode::Open { .. } => plan.mode,
            Mode::Closed { .. } => Mode::Open {
                rate: 50.0,
                max_in_flight: 10_000,
            },
        },
        ..plan.clone()
    };
    let clients: Vec<_> = channels.iter().cloned().map(OrderServiceClient::new).collect();
    let (spread, run) = (spread.clone(), run_id.to_owned());
    let outcome = load::run(
        &flow,
        move |seq| {
            let i = usize::try_from(seq).unwrap_or(0);
            let (sku, customer) = spread.pick(seq);
            scenarios::create_order(
                clients[i % clients.len()].clone(),
                format!("bench-{run}-{seq}"),
                customer,
                sku,
                scenarios::Follow::Watch,
                Some(newest_tx.clone()),
            )
        },
        &mut window,
    )
    .await;
    watch::release_hold(&mut admin, flag_before).await?;
    let report = std::mem::take(&mut window.report);
    Ok((outcome, (report, window.b)))
}
