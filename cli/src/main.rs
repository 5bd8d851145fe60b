//! The `ordermesh` binary. One binary, two modes (the Loki/Mimir model):
//! `ordermesh up` runs every service in one process, each on its own port
//! with real gRPC between them, on embedded SQLite; `ordermesh serve
//! <service>` runs one service per process (one per pod in Kubernetes).
//!
//! Configuration is parsed here once (flags, each with an environment
//! variable) and passed down as plain config structs.

mod bench;
mod cli;
mod config;
mod events;
mod health;
mod token;
mod up;

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

use cli::{Cli, Command, ServeArgs, Target};
use ordermesh_mesh::policy::Policy;
use ordermesh_runtime::server::MeshSettings;
use ordermesh_runtime::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format.into());
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Health(args) => health::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Events(args) => events::run(args).await,
        Command::Token(args) => token::run(args),
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--listen / ORDERMESH_LISTEN)"))
}

/// Loads and checks the mesh policy once, here: an invalid policy stops the
/// process with a message naming the key.
pub fn mesh_settings(path: Option<&std::path::Path>) -> anyhow::Result<MeshSettings> {
    let policy = Policy::load(path, std::env::vars()).context("mesh policy (--policy / ORDERMESH_POLICY)")?;
    Ok(MeshSettings {
        policy,
        policy_file: path.map(std::path::Path::to_path_buf),
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mesh = mesh_settings(args.policy.as_deref())?;
    if args.target == Target::Gateway {
        // No database and no events: the gateway keeps no state of its own.
        let urls = [
            args.order_url.clone(),
            args.inventory_url.clone(),
            args.payment_url.clone(),
        ];
        let config = config::gateway(&args.gateway, urls, &args.data_dir, false, mesh)?;
        let gateway = ordermesh_gateway::build(config)
            .await
            .context("starting the gateway")?;
        let listener = bind(args.listen).await?;
        return gateway
            .serve(listener, ordermesh_runtime::shutdown::signal())
            .await;
    }
    let bus = args.events.bus().await?;
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => ordermesh_runtime::db::sqlite_url(&args.data_dir, args.target.name())?,
    };
    let listener = bind(args.listen).await?;
    let shutdown = ordermesh_runtime::shutdown::signal();
    match args.target {
        Target::Gateway => unreachable!("served above"),
        Target::Inventory => {
            let config = config::inventory(database_url, &args.inventory, args.seed_demo, (mesh, bus));
            ordermesh_inventory::build(config)
                .await?
                .serve(listener, shutdown)
                .await?;
        }
        Target::Payment => {
            let config = config::payment(database_url, &args.payment, args.seed_demo, (mesh, bus));
            ordermesh_payment::build(config)
                .await?
                .serve(listener, shutdown)
                .await?;
        }
        Target::Order => {
            let config = config::order(
                database_url,
                args.inventory_url,
                args.payment_url,
                &args.saga,
                (mesh, bus),
            );
            ordermesh_order::build(config)
                .await?
                .serve(listener, shutdown)
                .await?;
        }
    }
    Ok(())
}
