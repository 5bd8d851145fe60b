//! The `ordermesh` binary. One binary, two modes (the Loki/Mimir model):
//! `ordermesh up` runs every target in one process, each on its own port
//! with real gRPC between them, on embedded SQLite; `ordermesh serve
//! <target>` runs one target per process (one per pod in Kubernetes). Both
//! go through one assembly path ([`assemble`]).
//!
//! Configuration is parsed here once ([`args`]: flags, each with an
//! environment variable) and passed down as plain config structs.

mod args;
mod assemble;
mod certs;
mod events;
mod health;
mod token;

use clap::Parser;

use args::{Cli, Command};
use assemble::Plan;
use ordermesh_runtime::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Traces leave the long-running processes only.
    let traces = match &cli.command {
        Command::Up(args) => args.process.traces("ordermesh"),
        Command::Serve(args) => args.process.traces(&format!("ordermesh-{}", args.target.name())),
        _ => None,
    };
    let telemetry = telemetry::init(cli.log_format.into(), traces)?;
    match cli.command {
        Command::Up(args) => {
            let result = assemble::run(Plan::up(args)?).await;
            telemetry.shutdown();
            result
        }
        Command::Serve(args) => {
            let result = assemble::run(Plan::serve(args)?).await;
            telemetry.shutdown();
            result
        }
        Command::Health(args) => health::run(args).await,
        Command::Bench(args) => ordermesh_bench::run(args).await,
        Command::Chaos(args) => ordermesh_chaos::run(args).await,
        Command::Events(args) => events::run(args).await,
        Command::Token(args) => token::run(args),
        Command::Certs(args) => certs::run(&args),
    }
}
