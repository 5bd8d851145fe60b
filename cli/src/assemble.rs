//! The one way a process is put together, for `serve` (one target) and `up`
//! (every target), as quickwit's `run --service` goes through one
//! `serve_quickwit`: a [`Plan`] says which targets this process runs, where
//! each listens and keeps its data, and where it finds the others; [`run`]
//! loads the mesh policy, makes the event bus, binds, builds and serves them
//! all, and reports the first that stops.
//!
//! `up` and `serve` differ only in their plan: `up` places every target on
//! loopback ports with SQLite under the data directory, seeds the demo data
//! and runs the gateway in development mode unless told otherwise; `serve`
//! places one target and takes its peers' URLs from flags.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use ordermesh_events::Bus;
use ordermesh_gateway::GatewayConfig;
use ordermesh_gateway::auth::AuthMode;
use ordermesh_mesh::policy::MeshPolicy;
use ordermesh_runtime::server::MeshSettings;
use ordermesh_runtime::starting::answer_health_while;

use crate::args::{PeerArgs, ProcessArgs, ServeArgs, Target, UpArgs};

/// Where one target of the process listens and keeps its data.
#[derive(Debug, Clone)]
pub struct Placement {
    pub target: Target,
    pub listen: SocketAddr,
    /// `postgres://...` or `sqlite://...`; `None`: a SQLite file named after
    /// the target under the data directory.
    pub database_url: Option<String>,
}

/// What one process runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub placements: Vec<Placement>,
    pub peers: PeerArgs,
    pub process: ProcessArgs,
    /// Whether demo data is seeded (the flag, else this mode's default).
    pub seed_demo: bool,
    /// The gateway's auth mode (the flag, else this mode's default).
    pub auth_mode: AuthMode,
    /// `up`: print each endpoint, then a ready line once every target
    /// answers SERVING.
    pub announce: bool,
    /// Mutual TLS (`serve` only), and the plaintext health address beside it.
    pub tls: crate::args::TlsArgs,
    /// Where the process serves Prometheus metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

impl Plan {
    /// `serve TARGET`: one target, peers from flags; no demo data and
    /// production auth unless asked.
    pub fn serve(args: ServeArgs) -> anyhow::Result<Self> {
        Ok(Plan {
            placements: vec![Placement {
                target: args.target,
                listen: args.listen,
                database_url: args.database_url,
            }],
            peers: args.peers,
            tls: args.tls,
            seed_demo: args.process.seed_demo.unwrap_or(false),
            auth_mode: args.process.gateway.auth_mode.unwrap_or(AuthMode::Production),
            metrics_listen: args.process.metrics_listen(None)?,
            process: args.process,
            announce: false,
        })
    }

    /// `up`: every target in this process, each on its own port: the
    /// gateway on `--host`, the services on loopback whatever `--host` says
    /// (they trust the network they listen on: only the gateway, which
    /// checks tokens, faces it); demo data and development auth unless
    /// asked otherwise.
    pub fn up(args: UpArgs) -> anyhow::Result<Self> {
        let placements: Vec<Placement> = Target::ALL
            .into_iter()
            .map(|target| {
                let (port, database_url) = match target {
                    Target::Inventory => (args.inventory_port, args.inventory_database_url.clone()),
                    Target::Payment => (args.payment_port, args.payment_database_url.clone()),
                    Target::Order => (args.order_port, args.order_database_url.clone()),
                    Target::Gateway => (args.gateway_port, None),
                };
                let host = match (target, args.host) {
                    (Target::Gateway, host) => host,
                    (_, std::net::IpAddr::V4(_)) => std::net::Ipv4Addr::LOCALHOST.into(),
                    (_, std::net::IpAddr::V6(_)) => std::net::Ipv6Addr::LOCALHOST.into(),
                };
                Placement {
                    target,
                    listen: SocketAddr::new(host, port),
                    database_url,
                }
            })
            .collect();
        let url = |target| {
            let placement: &Placement = placements
                .iter()
                .find(|p| p.target == target)
                .expect("up places every target");
            format!("http://{}", placement.listen)
        };
        let peers = PeerArgs {
            order_url: url(Target::Order),
            inventory_url: url(Target::Inventory),
            payment_url: url(Target::Payment),
        };
        Ok(Plan {
            placements,
            peers,
            tls: crate::args::TlsArgs::default(),
            seed_demo: args.process.seed_demo.unwrap_or(true),
            auth_mode: args.process.gateway.auth_mode.unwrap_or(AuthMode::Development),
            metrics_listen: args
                .process
                .metrics_listen(Some(crate::args::UP_METRICS_LISTEN))?,
            process: args.process,
            announce: true,
        })
    }

    fn runs(&self, target: Target) -> bool {
        self.placements.iter().any(|p| p.target == target)
    }

    fn data_dir(&self) -> &Path {
        &self.process.data.data_dir
    }
}

/// A target built and ready to serve on its listener.
type Serving = BoxFuture<'static, anyhow::Result<()>>;

/// Runs the plan until a shutdown signal (then drains every target) or
/// until a target fails.
pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let mut mesh = mesh_settings(plan.process.policy.as_deref())?;
    if let Some(files) = plan.tls.files() {
        mesh.tls = Some(
            ordermesh_mesh::tls::MeshTls::load(files)
                .context("mutual TLS (--tls-cert, --tls-key, --tls-ca)")?,
        );
    }
    mesh.probe_listen = plan.tls.health_listen;
    if plan.runs(Target::Inventory) {
        check_reservation_outlives_saga(&plan.process)?;
    }
    // One bus for the process: with no NATS, `up`'s services share one
    // in-process broker, so each sees the others' events.
    let bus = match plan.placements.iter().any(|p| p.target.is_service()) {
        true => Some(events_bus(&plan.process).await?),
        false => None,
    };
    // The recorder first, so every target records from its start.
    let metrics = match plan.metrics_listen {
        Some(addr) => {
            ordermesh_runtime::metrics::install()?;
            Some(bind(addr).await.context("--metrics-listen")?)
        }
        None => None,
    };
    let mut listeners = Vec::new();
    for placement in &plan.placements {
        listeners.push(bind(placement.listen).await?);
    }
    let shutdown: Shared<BoxFuture<'static, ()>> = ordermesh_runtime::shutdown::signal().boxed().shared();
    let mut targets = JoinSet::new();
    if let Some(listener) = metrics {
        let serving = ordermesh_runtime::metrics::serve(listener, shutdown.clone());
        targets.spawn(async move { ("metrics", serving.await.map_err(anyhow::Error::from)) });
    }
    // Built side by side: a service waiting for its database answers health
    // meanwhile, and so does every other target of the process.
    let builds = plan
        .placements
        .iter()
        .zip(listeners)
        .map(|(placement, listener)| {
            let name = placement.target.name();
            build(&plan, placement, &mesh, bus.clone(), listener, shutdown.clone())
                .map(move |built| built.map(|serving| (name, serving)))
                .map(move |built| built.with_context(|| format!("starting {name}")))
        });
    for (name, serving) in futures::future::try_join_all(builds).await? {
        targets.spawn(serving.map(move |result| (name, result)));
    }
    if plan.announce {
        announce_endpoints(&plan);
        let urls: Vec<String> = plan
            .placements
            .iter()
            .map(|p| format!("http://{}", p.listen))
            .collect();
        let ready = ordermesh_runtime::health::wait_until_serving(
            &urls,
            Duration::from_secs(30),
            Duration::from_millis(100),
            || Ok::<(), std::convert::Infallible>(()),
        );
        tokio::select! {
            ready = ready => {
                ready?;
                announce_ready(&plan);
            }
            Some(exited) = targets.join_next() => return report_exit(exited),
        }
    }
    while let Some(exited) = targets.join_next().await {
        report_exit(exited)?;
    }
    Ok(())
}

/// Loads and checks the mesh policy once, here: an invalid policy stops the
/// process with a message naming the key.
pub fn mesh_settings(path: Option<&Path>) -> anyhow::Result<MeshSettings> {
    let policy =
        MeshPolicy::load(path, std::env::vars()).context("mesh policy (--policy / ORDERMESH_POLICY)")?;
    Ok(MeshSettings {
        policy,
        policy_file: path.map(Path::to_path_buf),
        ..MeshSettings::default()
    })
}

/// The bus: JetStream at the URL, or a fresh in-process broker (each
/// service creates the streams it needs when it starts).
async fn events_bus(process: &ProcessArgs) -> anyhow::Result<Bus> {
    Bus::from_url(
        process.events.nats_url.as_deref(),
        ordermesh_events::BusSettings::default(),
    )
    .await
    .context("events bus (--nats-url / ORDERMESH_NATS_URL)")
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// A reservation must outlive every window the saga may wait before COMMIT,
/// or a paid order could find its stock expired.
fn check_reservation_outlives_saga(process: &ProcessArgs) -> anyhow::Result<()> {
    let needed = process.saga.saga().limits.reservation_needed();
    let ttl = Duration::from_secs(process.inventory.reservation_ttl_secs);
    if ttl <= needed {
        anyhow::bail!(
            "--reservation-ttl-secs ({}) must be longer than 3 x --saga-patience-secs + --saga-forward-window-secs ({})",
            ttl.as_secs(),
            needed.as_secs()
        );
    }
    Ok(())
}

/// Builds one target from the plan and returns it serving on `listener`.
async fn build(
    plan: &Plan,
    placement: &Placement,
    mesh: &MeshSettings,
    bus: Option<Bus>,
    listener: TcpListener,
    shutdown: Shared<BoxFuture<'static, ()>>,
) -> anyhow::Result<Serving> {
    let process = &plan.process;
    let database_url = || -> anyhow::Result<String> {
        Ok(match &placement.database_url {
            Some(url) => url.clone(),
            None => ordermesh_runtime::db::sqlite_url(plan.data_dir(), placement.target.name())?,
        })
    };
    let bus = || bus.clone().expect("a bus is made when the plan runs a service");
    Ok(match placement.target {
        Target::Inventory => {
            let mut config = ordermesh_inventory::Config::new(database_url()?);
            config.reservation_ttl = Duration::from_secs(process.inventory.reservation_ttl_secs);
            if plan.seed_demo {
                config.seed = ordermesh_inventory::demo::catalogue();
            }
            config.bus = bus();
            config.mesh = mesh.clone();
            let (listener, service) = answer_health_while(
                listener,
                ordermesh_proto::inventory::v1::inventory_service_server::SERVICE_NAME,
                mesh,
                ordermesh_inventory::build(config),
            )
            .await?;
            let service = service?;
            async move { Ok(service.serve(listener, shutdown).await?) }.boxed()
        }
        Target::Payment => {
            let mut config = ordermesh_payment::Config::new(database_url()?);
            config.authorization_hold = Duration::from_secs(process.payment.authorization_hold_secs);
            if plan.seed_demo {
                config.seed = ordermesh_payment::demo::accounts();
            }
            config.bus = bus();
            config.mesh = mesh.clone();
            let (listener, service) = answer_health_while(
                listener,
                ordermesh_proto::payment::v1::payment_service_server::SERVICE_NAME,
                mesh,
                ordermesh_payment::build(config),
            )
            .await?;
            let service = service?;
            async move { Ok(service.serve(listener, shutdown).await?) }.boxed()
        }
        Target::Order => {
            let mut config = ordermesh_order::Config::new(
                database_url()?,
                &plan.peers.inventory_url,
                &plan.peers.payment_url,
            );
            config.saga = process.saga.saga();
            config.bus = bus();
            config.mesh = mesh.clone();
            let (listener, service) = answer_health_while(
                listener,
                ordermesh_proto::order::v1::order_service_server::SERVICE_NAME,
                mesh,
                ordermesh_order::build(config),
            )
            .await?;
            let service = service?;
            async move { Ok(service.serve(listener, shutdown).await?) }.boxed()
        }
        Target::Gateway => {
            let gateway = ordermesh_gateway::build(gateway_config(plan, mesh.clone())?).await?;
            async move { Ok(gateway.serve(listener, shutdown).await?) }.boxed()
        }
    })
}

/// The gateway's config: the flags, the plan's auth mode, and the data
/// directory for the development signing key (created private if missing,
/// where `ordermesh token` finds it). An empty value is an unset one, as the
/// chart may render `ORDERMESH_JWT_ISSUER=""`.
fn gateway_config(plan: &Plan, mesh: MeshSettings) -> anyhow::Result<GatewayConfig> {
    let args = &plan.process.gateway;
    let set = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
    let peers = &plan.peers;
    let mut config = GatewayConfig::new(
        [
            peers.order_url.clone(),
            peers.inventory_url.clone(),
            peers.payment_url.clone(),
        ],
        plan.auth_mode,
    );
    config.auth.issuer = set(&args.jwt_issuer);
    config.auth.audience = set(&args.jwt_audience);
    config.auth.jwks_file = args.jwt_jwks_file.clone().filter(|p| !p.as_os_str().is_empty());
    config.auth.jwks_url = set(&args.jwt_jwks_url).map(|url| url.trim().to_owned());
    config.auth.hs256_secret = set(&args.jwt_hs256_secret);
    config.auth.dev_key_dir = Some(plan.data_dir().to_owned());
    config.file = args.gateway_config.clone();
    config.default_timeout = Duration::from_millis(args.gateway_timeout_ms);
    config.max_timeout = Duration::from_millis(args.gateway_max_timeout_ms);
    config.max_body_bytes = args.gateway_max_body_bytes;
    config.allow_unknown_fields = args.gateway_allow_unknown_fields;
    config.connections = ordermesh_gateway::listen::ConnectionLimits {
        header_read_timeout: Duration::from_millis(args.gateway_header_read_timeout_ms),
        body_read_timeout: Duration::from_millis(args.gateway_body_read_timeout_ms),
        max_connections_per_address: args.gateway_max_connections_per_address,
    };
    config.mesh = mesh;
    Ok(config)
}

fn announce_endpoints(plan: &Plan) {
    println!("ordermesh is starting (data in {})", plan.data_dir().display());
    for placement in &plan.placements {
        let addr = placement.listen;
        match placement.target {
            Target::Gateway => println!(
                "  gateway    {addr}    REST/JSON, grpc-web and gRPC (openapi: http://{addr}/openapi.json)"
            ),
            Target::Order => println!("  order      {addr}   ordermesh.order.v1.OrderService"),
            Target::Inventory => println!("  inventory  {addr}   ordermesh.inventory.v1.InventoryService"),
            Target::Payment => println!("  payment    {addr}   ordermesh.payment.v1.PaymentService"),
        }
    }
    if let Some(addr) = plan.metrics_listen {
        println!("  metrics    {addr}   Prometheus: http://{addr}/metrics");
    }
}

fn announce_ready(plan: &Plan) {
    let at = |target| {
        plan.placements
            .iter()
            .find(|p| p.target == target)
            .map(|p| p.listen)
    };
    if let Some(order) = at(Target::Order) {
        println!("try: grpcurl -plaintext {order} list");
    }
    if let Some(gateway) = at(Target::Gateway) {
        println!(
            "try: curl -H \"Authorization: Bearer $(ordermesh token --data-dir {})\" http://{gateway}/v1/orders",
            plan.data_dir().display()
        );
    }
    println!("ordermesh is ready: every service reports SERVING");
}

fn report_exit(
    exited: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> anyhow::Result<()> {
    let (name, result) = exited.context("a target's task panicked")?;
    result.with_context(|| format!("{name} failed"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn plan(args: &[&str]) -> Plan {
        match Cli::try_parse_from(args).expect("parses").command {
            Command::Up(up) => Plan::up(up).expect("plan"),
            Command::Serve(serve) => Plan::serve(serve).expect("plan"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn up_places_every_target_and_points_each_at_the_others() {
        let plan = plan(&["ordermesh", "up", "--host", "127.0.0.2", "--order-port", "7001"]);
        let targets: Vec<Target> = plan.placements.iter().map(|p| p.target).collect();
        assert_eq!(targets, Target::ALL);
        // The services on loopback, the gateway on --host.
        assert_eq!(plan.peers.order_url, "http://127.0.0.1:7001");
        assert_eq!(plan.peers.inventory_url, "http://127.0.0.1:50052");
        let gateway = plan
            .placements
            .iter()
            .find(|p| p.target == Target::Gateway)
            .expect("gateway");
        assert_eq!(gateway.listen, "127.0.0.2:8080".parse().expect("addr"));
        assert!(plan.seed_demo && plan.announce);
        assert_eq!(plan.auth_mode, AuthMode::Development);
    }

    #[test]
    fn up_takes_the_same_security_settings_as_serve() {
        let plan = plan(&[
            "ordermesh",
            "up",
            "--auth-mode",
            "production",
            "--seed-demo",
            "false",
        ]);
        assert_eq!(plan.auth_mode, AuthMode::Production);
        assert!(!plan.seed_demo);
        let serve = super::tests::plan(&["ordermesh", "serve", "inventory"]);
        assert_eq!(serve.placements.len(), 1);
        assert!(!serve.seed_demo && !serve.announce);
        assert_eq!(serve.auth_mode, AuthMode::Production);
    }

    #[test]
    fn up_serves_metrics_unless_told_not_to_and_serve_only_when_told() {
        let at = |args: &[&str]| plan(args).metrics_listen.map(|a| a.to_string());
        assert_eq!(at(&["ordermesh", "up"]).as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(at(&["ordermesh", "up", "--metrics-listen", ""]), None);
        assert_eq!(at(&["ordermesh", "serve", "order"]), None);
        assert_eq!(
            at(&["ordermesh", "serve", "order", "--metrics-listen", "0.0.0.0:9090"]).as_deref(),
            Some("0.0.0.0:9090")
        );
        let Command::Serve(serve) =
            Cli::try_parse_from(["ordermesh", "serve", "order", "--metrics-listen", "9090"])
                .expect("parses")
                .command
        else {
            panic!("serve")
        };
        let error = Plan::serve(serve).expect_err("a port alone is no address");
        assert!(error.to_string().contains("--metrics-listen \"9090\""), "{error}");
    }

    #[test]
    fn an_empty_jwt_setting_is_an_unset_one() {
        let plan = plan(&[
            "ordermesh",
            "serve",
            "gateway",
            "--jwt-issuer",
            "",
            "--jwt-audience",
            "api",
            "--jwt-jwks-url",
            " ",
        ]);
        let config = gateway_config(&plan, MeshSettings::default()).expect("config");
        assert_eq!(config.auth.issuer, None);
        assert_eq!(config.auth.audience.as_deref(), Some("api"));
        assert_eq!(config.auth.jwks_url, None);
    }

    #[test]
    fn a_reservation_shorter_than_the_sagas_windows_is_refused() {
        let plan = plan(&["ordermesh", "serve", "inventory", "--reservation-ttl-secs", "60"]);
        let error = check_reservation_outlives_saga(&plan.process).expect_err("60 s is too short");
        assert!(
            error.to_string().contains("--reservation-ttl-secs (60)"),
            "{error}"
        );
        let plan = super::tests::plan(&["ordermesh", "serve", "inventory"]);
        check_reservation_outlives_saga(&plan.process).expect("the defaults agree");
    }
}
