//! Command-line and environment configuration of the `ordermesh` binary.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{EventArgs, GatewayArgs, InventoryArgs, PaymentArgs, SagaArgs};
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
    /// Ask a server's grpc.health.v1 whether it is SERVING (exit 0) or not (exit 1);
    /// for container health checks and `helm test`, where the image has no shell.
    Health(HealthArgs),
    /// Load over gRPC with CPU, database work and the machine's limit
    /// measured in the same run (see bench/run.sh for the comparison set).
    Bench(crate::bench::BenchArgs),
    /// Watch domain events and handle dead letters (`events tail`, `events dlq list|replay`).
    Events(crate::events::EventsArgs),
    /// Mint a development token for the gateway (`up`, or a gateway in development mode).
    Token(crate::token::TokenArgs),
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
    Gateway,
    Order,
    Inventory,
    Payment,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Gateway => "gateway",
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
    /// The gateway: REST/JSON, grpc-web and gRPC on one port.
    #[arg(long, env = "ORDERMESH_GATEWAY_PORT", default_value_t = 8080)]
    pub gateway_port: u16,
    #[command(flatten, next_help_heading = "Gateway")]
    pub gateway: GatewayArgs,
    #[command(flatten, next_help_heading = "Inventory")]
    pub inventory: InventoryArgs,
    #[command(flatten, next_help_heading = "Payment")]
    pub payment: PaymentArgs,
    #[command(flatten, next_help_heading = "Order saga")]
    pub saga: SagaArgs,
    #[command(flatten, next_help_heading = "Events")]
    pub events: EventArgs,
    /// Mesh policy file (TOML; see docs/mesh-policy.example.toml), watched for changes.
    #[arg(long, env = "ORDERMESH_POLICY")]
    pub policy: Option<PathBuf>,
    /// The order service's database (`postgres://...`); default: SQLite under --data-dir.
    #[arg(long, env = "ORDERMESH_ORDER_DATABASE_URL")]
    pub order_database_url: Option<String>,
    /// The inventory service's database; default: SQLite under --data-dir.
    #[arg(long, env = "ORDERMESH_INVENTORY_DATABASE_URL")]
    pub inventory_database_url: Option<String>,
    /// The payment service's database; default: SQLite under --data-dir.
    #[arg(long, env = "ORDERMESH_PAYMENT_DATABASE_URL")]
    pub payment_database_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The server, `http://host:port` or `host:port`.
    pub address: String,
    /// The health service name to ask about; "" is the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this many seconds (connecting included).
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
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
    /// The order service (gateway only).
    #[arg(long, env = "ORDERMESH_ORDER_URL", default_value = "http://127.0.0.1:50051")]
    pub order_url: String,
    /// The inventory service (order, gateway).
    #[arg(
        long,
        env = "ORDERMESH_INVENTORY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub inventory_url: String,
    /// The payment service (order, gateway).
    #[arg(long, env = "ORDERMESH_PAYMENT_URL", default_value = "http://127.0.0.1:50053")]
    pub payment_url: String,
    /// Seed the demo catalogue or demo customers when missing (inventory, payment).
    #[arg(long, env = "ORDERMESH_SEED_DEMO")]
    pub seed_demo: bool,
    #[command(flatten, next_help_heading = "Inventory")]
    pub inventory: InventoryArgs,
    #[command(flatten, next_help_heading = "Payment")]
    pub payment: PaymentArgs,
    #[command(flatten, next_help_heading = "Order saga")]
    pub saga: SagaArgs,
    #[command(flatten, next_help_heading = "Events")]
    pub events: EventArgs,
    #[command(flatten, next_help_heading = "Gateway")]
    pub gateway: GatewayArgs,
    /// Mesh policy file (TOML; see docs/mesh-policy.example.toml), watched for changes.
    #[arg(long, env = "ORDERMESH_POLICY")]
    pub policy: Option<PathBuf>,
}
