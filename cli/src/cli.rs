//! Command-line and environment configuration of the `ordermesh` binary.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ordermesh_runtime::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "ordermesh",
    version,
    about = "Order, inventory and payment services over gRPC"
)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, env = "ORDERMESH_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every service in one process, each on its own port, on embedded SQLite.
    Up(UpArgs),
    /// Run one service (the Kubernetes mode).
    Serve(ServeArgs),
    /// Watch domain events and handle dead letters (`events tail`, `events dlq list|replay`).
    Events(crate::events::EventsArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// What `ordermesh serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Order,
    Inventory,
    Payment,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Order => "order",
            Target::Inventory => "inventory",
            Target::Payment => "payment",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Directory for the services' SQLite files (created if missing).
    #[arg(long, env = "ORDERMESH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address every service listens on.
    #[arg(long, env = "ORDERMESH_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    #[arg(long, env = "ORDERMESH_ORDER_PORT", default_value_t = 50051)]
    pub order_port: u16,
    #[arg(long, env = "ORDERMESH_INVENTORY_PORT", default_value_t = 50052)]
    pub inventory_port: u16,
    #[arg(long, env = "ORDERMESH_PAYMENT_PORT", default_value_t = 50053)]
    pub payment_port: u16,
    /// Seconds a stock reservation may stay uncommitted.
    #[arg(long, env = "ORDERMESH_RESERVATION_TTL_SECS", default_value_t = 900)]
    pub reservation_ttl_secs: u64,
    /// Mesh policy file (TOML; see docs/mesh-policy.example.toml), watched for changes.
    #[arg(long, env = "ORDERMESH_POLICY")]
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The service to run.
    #[arg(value_enum)]
    pub target: Target,
    /// Address to listen on.
    #[arg(long, env = "ORDERMESH_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], 50051)))]
    pub listen: SocketAddr,
    /// `postgres://...` or `sqlite://...`; defaults to a SQLite file under --data-dir.
    #[arg(long, env = "ORDERMESH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for the SQLite file when no --database-url is given.
    #[arg(long, env = "ORDERMESH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The inventory service (order only).
    #[arg(
        long,
        env = "ORDERMESH_INVENTORY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub inventory_url: String,
    /// The payment service (order only).
    #[arg(long, env = "ORDERMESH_PAYMENT_URL", default_value = "http://127.0.0.1:50053")]
    pub payment_url: String,
    /// Seed the demo catalogue or demo customers when missing (inventory, payment).
    #[arg(long, env = "ORDERMESH_SEED_DEMO")]
    pub seed_demo: bool,
    /// Seconds a stock reservation may stay uncommitted (inventory only).
    #[arg(long, env = "ORDERMESH_RESERVATION_TTL_SECS", default_value_t = 900)]
    pub reservation_ttl_secs: u64,
    /// Mesh policy file (TOML; see docs/mesh-policy.example.toml), watched for changes.
    #[arg(long, env = "ORDERMESH_POLICY")]
    pub policy: Option<PathBuf>,
}
