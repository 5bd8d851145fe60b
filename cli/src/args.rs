//! Command-line and environment configuration of the `ordermesh` binary:
//! every flag has its `ORDERMESH_*` variable, parsed once here and passed
//! down as plain config.
//!
//! One struct per concern, flattened into each command that takes it: `up`
//! and `serve` share [`ProcessArgs`] (every service's settings) and differ
//! only in where each target listens and finds its peers and databases
//! ([`UpArgs`], [`ServeArgs`]). No default is written here: each flag's
//! default is read from the config field it sets (`SagaConfig::default()`,
//! `ordermesh_inventory::Config::DEFAULT_RESERVATION_TTL`, ...), so a default
//! lives once, beside its field, and `--help` shows it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use ordermesh_gateway::GatewayConfig;
use ordermesh_gateway::auth::{self, AuthMode};
use ordermesh_order::{CrashPoint, SagaConfig};
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
    Bench(ordermesh_bench::BenchArgs),
    /// Run the distributed mode under a seeded fault schedule and check the
    /// history (exit 1 on a broken promise; see docs/reliability.md).
    Chaos(ordermesh_chaos::ChaosArgs),
    /// Watch domain events and handle dead letters (`events tail`, `events dlq list|replay`).
    Events(crate::events::EventsArgs),
    /// Mint a development token for the gateway (`up`, or a gateway in development mode).
    Token(crate::token::TokenArgs),
    /// Mint a development CA and a certificate per process (gateway, order,
    /// inventory, payment, admin) for mutual TLS (`serve --tls-*`).
    Certs(crate::certs::CertsArgs),
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

/// What a process runs: one of these with `serve`, all of them with `up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Gateway,
    Order,
    Inventory,
    Payment,
}

impl Target {
    /// In the order they are built: participants before the order service
    /// that calls them, the gateway last.
    pub const ALL: [Target; 4] = [Target::Inventory, Target::Payment, Target::Order, Target::Gateway];

    pub fn name(self) -> &'static str {
        match self {
            Target::Gateway => "gateway",
            Target::Order => "order",
            Target::Inventory => "inventory",
            Target::Payment => "payment",
        }
    }

    /// The port `up` gives it, and the chart's default.
    pub fn default_port(self) -> u16 {
        match self {
            Target::Gateway => 8080,
            Target::Order => 50051,
            Target::Inventory => 50052,
            Target::Payment => 50053,
        }
    }

    /// Whether it keeps state (a database, an outbox).
    pub fn is_service(self) -> bool {
        self != Target::Gateway
    }
}

/// The data directory: SQLite files, and the development signing key.
#[derive(Debug, Clone, Args)]
pub struct DataDirArgs {
    /// Directory for the services' SQLite files (created if missing) and the
    /// development gateway's signing key.
    #[arg(long, env = "ORDERMESH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Everything a process takes whatever it runs: `up` and `serve` flatten
/// this, so each setting has one flag, one variable and one default.
#[derive(Debug, Clone, Args)]
pub struct ProcessArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Mesh policy file (TOML; see docs/mesh-policy.example.toml), watched for changes.
    #[arg(long, env = "ORDERMESH_POLICY")]
    pub policy: Option<PathBuf>,
    /// Seed the demo catalogue and demo customers when missing (inventory,
    /// payment); `--seed-demo false` to turn off. Default: on for `up`, off
    /// for `serve`.
    #[arg(
        long,
        env = "ORDERMESH_SEED_DEMO",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub seed_demo: Option<bool>,
    /// Serve Prometheus metrics at http://ADDR/metrics ('' for none; see
    /// docs/metrics.md). Default: 127.0.0.1:9464 for `up`, none for `serve`.
    #[arg(long, env = "ORDERMESH_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Export traces to this OTLP/gRPC collector, e.g. http://127.0.0.1:4317
    /// (none: no traces leave the process). OTEL_SERVICE_NAME,
    /// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG) and OTEL_BSP_*
    /// apply as the OpenTelemetry SDKs define them.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(flatten, next_help_heading = "Events")]
    pub events: EventArgs,
    #[command(flatten, next_help_heading = "Inventory")]
    pub inventory: InventoryArgs,
    #[command(flatten, next_help_heading = "Payment")]
    pub payment: PaymentArgs,
    #[command(flatten, next_help_heading = "Order saga")]
    pub saga: SagaArgs,
    #[command(flatten, next_help_heading = "Gateway")]
    pub gateway: GatewayArgs,
}

/// Where `up` serves metrics unless `--metrics-listen` says otherwise (the
/// port OpenTelemetry's Prometheus exporters use).
pub const UP_METRICS_LISTEN: &str = "127.0.0.1:9464";

impl ProcessArgs {
    /// Where traces go, as `service_name` unless the environment names it.
    pub fn traces(&self, service_name: &str) -> Option<ordermesh_runtime::telemetry::TraceExport> {
        let endpoint = self.otlp_endpoint.as_deref()?.trim();
        (!endpoint.is_empty()).then(|| ordermesh_runtime::telemetry::TraceExport {
            endpoint: endpoint.to_owned(),
            default_service_name: service_name.to_owned(),
        })
    }

    /// The metrics address: the flag, else `mode_default`; empty is none.
    pub fn metrics_listen(&self, mode_default: Option<&str>) -> anyhow::Result<Option<SocketAddr>> {
        let value = self
            .metrics_listen
            .as_deref()
            .or(mode_default)
            .unwrap_or("")
            .trim();
        if value.is_empty() {
            return Ok(None);
        }
        value
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--metrics-listen {value:?} is not an address (host:port): {e}"))
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Address the gateway listens on; the services listen on loopback only.
    #[arg(long, env = "ORDERMESH_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    #[arg(long, env = "ORDERMESH_ORDER_PORT", default_value_t = Target::Order.default_port())]
    pub order_port: u16,
    #[arg(long, env = "ORDERMESH_INVENTORY_PORT", default_value_t = Target::Inventory.default_port())]
    pub inventory_port: u16,
    #[arg(long, env = "ORDERMESH_PAYMENT_PORT", default_value_t = Target::Payment.default_port())]
    pub payment_port: u16,
    /// The gateway: REST/JSON, grpc-web and gRPC on one port.
    #[arg(long, env = "ORDERMESH_GATEWAY_PORT", default_value_t = Target::Gateway.default_port())]
    pub gateway_port: u16,
    /// The order service's database (`postgres://...`); default: SQLite under --data-dir.
    #[arg(long, env = "ORDERMESH_ORDER_DATABASE_URL")]
    pub order_database_url: Option<String>,
    /// The inventory service's database; default: SQLite under --data-dir.
    #[arg(long, env = "ORDERMESH_INVENTORY_DATABASE_URL")]
    pub inventory_database_url: Option<String>,
    /// The payment service's database; default: SQLite under --data-dir.
    #[arg(long, env = "ORDERMESH_PAYMENT_DATABASE_URL")]
    pub payment_database_url: Option<String>,
    #[command(flatten)]
    pub process: ProcessArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The target to run.
    #[arg(value_enum)]
    pub target: Target,
    /// Address to listen on.
    #[arg(long, env = "ORDERMESH_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], Target::Order.default_port())))]
    pub listen: SocketAddr,
    /// `postgres://...` or `sqlite://...`; defaults to a SQLite file under --data-dir.
    #[arg(long, env = "ORDERMESH_DATABASE_URL")]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub peers: PeerArgs,
    #[command(flatten, next_help_heading = "Mutual TLS")]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub process: ProcessArgs,
}

/// Mutual TLS between processes (`serve`; `up` talks plaintext on loopback).
/// All three files or none; see docs/security.md.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// This process's certificate (PEM), naming it `<target>.ordermesh`;
    /// with it the process serves TLS only, requires client certificates
    /// from the CA, and connects to its peers over TLS. Reloaded on change.
    #[arg(long, env = "ORDERMESH_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "ORDERMESH_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The CA every ordermesh certificate is signed by (PEM).
    #[arg(long, env = "ORDERMESH_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Also answer grpc.health.v1 (only) in plaintext on this address, for
    /// probes that hold no certificate (Kubernetes gRPC probes).
    #[arg(long, env = "ORDERMESH_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

impl TlsArgs {
    /// The files, when all three are given.
    pub fn files(&self) -> Option<ordermesh_mesh::tls::TlsFiles> {
        Some(ordermesh_mesh::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            ca: self.tls_ca.clone()?,
        })
    }
}

/// Where the services are reached from another process.
#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    /// The order service (gateway).
    #[arg(long, env = "ORDERMESH_ORDER_URL", default_value_t = loopback_url(Target::Order))]
    pub order_url: String,
    /// The inventory service (order, gateway).
    #[arg(long, env = "ORDERMESH_INVENTORY_URL", default_value_t = loopback_url(Target::Inventory))]
    pub inventory_url: String,
    /// The payment service (order, gateway).
    #[arg(long, env = "ORDERMESH_PAYMENT_URL", default_value_t = loopback_url(Target::Payment))]
    pub payment_url: String,
}

fn loopback_url(target: Target) -> String {
    format!("http://127.0.0.1:{}", target.default_port())
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

/// Where events go: NATS JetStream, or the process's in-process broker.
#[derive(Debug, Clone, Args)]
pub struct EventArgs {
    /// NATS JetStream for domain events, e.g. nats://127.0.0.1:4222; without
    /// it, an in-process broker (one per process, shared by `up`'s services).
    #[arg(long, env = "ORDERMESH_NATS_URL")]
    pub nats_url: Option<String>,
}

/// Inventory settings.
#[derive(Debug, Clone, Args)]
pub struct InventoryArgs {
    /// Seconds a stock reservation may stay uncommitted; it must outlast the
    /// saga's windows (3 x patience + forward window).
    #[arg(
        long,
        env = "ORDERMESH_RESERVATION_TTL_SECS",
        default_value_t = ordermesh_inventory::Config::DEFAULT_RESERVATION_TTL.as_secs()
    )]
    pub reservation_ttl_secs: u64,
}

/// Payment settings.
#[derive(Debug, Clone, Args)]
pub struct PaymentArgs {
    /// Seconds an uncaptured authorization holds its amount before it lapses
    /// and the funds are released.
    #[arg(
        long,
        env = "ORDERMESH_AUTHORIZATION_HOLD_SECS",
        default_value_t = ordermesh_payment::Config::DEFAULT_AUTHORIZATION_HOLD.as_secs()
    )]
    pub authorization_hold_secs: u64,
}

fn saga_default() -> SagaConfig {
    SagaConfig::default()
}

/// Order saga settings.
#[derive(Debug, Clone, Args)]
pub struct SagaArgs {
    /// Seconds a step before the payment is captured waits out an outage of
    /// inventory or payment before the order is rejected.
    #[arg(long, env = "ORDERMESH_SAGA_PATIENCE_SECS", default_value_t = saga_default().limits.patience.as_secs())]
    pub saga_patience_secs: u64,
    /// Seconds a step after the capture retries an outage before the saga
    /// stops for an operator (never refunded for an outage).
    #[arg(
        long,
        env = "ORDERMESH_SAGA_FORWARD_WINDOW_SECS",
        default_value_t = saga_default().limits.forward_window.as_secs()
    )]
    pub saga_forward_window_secs: u64,
    /// Attempts of a compensating step before the saga stops for an operator
    /// (OrderAdminService/ListSagas, RetrySaga).
    #[arg(
        long,
        env = "ORDERMESH_SAGA_MAX_COMPENSATION_ATTEMPTS",
        default_value_t = saga_default().limits.max_compensation_attempts
    )]
    pub saga_max_compensation_attempts: i64,
    /// Deadline of each call the saga makes to inventory or payment.
    #[arg(long, env = "ORDERMESH_SAGA_CALL_TIMEOUT_MS", default_value_t = millis(saga_default().call_timeout))]
    pub saga_call_timeout_ms: u64,
    /// How long a worker's claim on a saga lasts unrenewed: after a crash,
    /// another process resumes the saga this long after its last write. Must
    /// exceed the call timeout by the clock-skew margin (1 s).
    #[arg(long, env = "ORDERMESH_SAGA_LEASE_MS", default_value_t = millis(saga_default().lease))]
    pub saga_lease_ms: u64,
    /// How often the recovery worker looks for sagas whose lease lapsed.
    #[arg(
        long,
        env = "ORDERMESH_SAGA_RECOVERY_INTERVAL_MS",
        default_value_t = millis(saga_default().recovery_interval)
    )]
    pub saga_recovery_interval_ms: u64,
    /// Crash-test hook: freeze at this saga point (e.g. after-authorize) so a
    /// test can kill -9 the process there. Never set in production.
    #[arg(long, env = "ORDERMESH_CRASH_AT", hide = true, value_parser = parse_crash_point)]
    pub crash_at: Option<CrashPoint>,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn parse_crash_point(name: &str) -> Result<CrashPoint, String> {
    CrashPoint::parse(name).ok_or_else(|| {
        let names: Vec<String> = CrashPoint::ALL.iter().map(|p| p.name()).collect();
        format!("unknown crash point {name:?}; one of {}", names.join(", "))
    })
}

impl SagaArgs {
    pub fn saga(&self) -> SagaConfig {
        let mut saga = SagaConfig::default();
        saga.limits.patience = Duration::from_secs(self.saga_patience_secs);
        saga.limits.forward_window = Duration::from_secs(self.saga_forward_window_secs);
        saga.limits.max_compensation_attempts = self.saga_max_compensation_attempts;
        saga.call_timeout = Duration::from_millis(self.saga_call_timeout_ms);
        saga.lease = Duration::from_millis(self.saga_lease_ms);
        saga.recovery_interval = Duration::from_millis(self.saga_recovery_interval_ms);
        saga.crash_at = self.crash_at;
        saga
    }
}

fn gateway_default() -> GatewayConfig {
    GatewayConfig::new(
        [String::new(), String::new(), String::new()],
        AuthMode::Production,
    )
}

/// Gateway settings.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// The per-route tables: required scopes, public routes, rate limits, CORS
    /// origins (TOML; see gateway/README.md).
    #[arg(long, env = "ORDERMESH_GATEWAY_CONFIG")]
    pub gateway_config: Option<PathBuf>,
    /// `production` refuses to start without JWT keys (a JWKS file or URL);
    /// `development` also takes an HS256 secret, or makes one in the data
    /// directory for `ordermesh token`. Default: development for `up`,
    /// production for `serve gateway`.
    #[arg(long, env = "ORDERMESH_AUTH_MODE")]
    pub auth_mode: Option<AuthMode>,
    /// Required `iss` of tokens, when set.
    #[arg(long, env = auth::ENV_ISSUER)]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of tokens, when set.
    #[arg(long, env = auth::ENV_AUDIENCE)]
    pub jwt_audience: Option<String>,
    /// A JWKS document with the token-signing public keys (RS256, ES256, EdDSA).
    #[arg(long, env = auth::ENV_JWKS_FILE)]
    pub jwt_jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched at start and refreshed.
    #[arg(long, env = auth::ENV_JWKS_URL)]
    pub jwt_jwks_url: Option<String>,
    /// An HS256 secret (development mode only); from the environment only, so
    /// it never shows in a process list.
    #[arg(
        long = "jwt-hs256-secret-from-env-only",
        env = auth::ENV_HS256_SECRET,
        hide = true,
        hide_env_values = true
    )]
    pub jwt_hs256_secret: Option<String>,
    /// Downstream deadline (ms) for calls that set none (REST `X-Request-Timeout`, gRPC `grpc-timeout`).
    #[arg(long, env = "ORDERMESH_GATEWAY_TIMEOUT_MS", default_value_t = millis(gateway_default().default_timeout))]
    pub gateway_timeout_ms: u64,
    /// Longest deadline (ms) a caller may ask for.
    #[arg(long, env = "ORDERMESH_GATEWAY_MAX_TIMEOUT_MS", default_value_t = millis(gateway_default().max_timeout))]
    pub gateway_max_timeout_ms: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "ORDERMESH_GATEWAY_MAX_BODY_BYTES", default_value_t = gateway_default().max_body_bytes)]
    pub gateway_max_body_bytes: usize,
    /// Accept (and drop) JSON fields a request message does not have, instead of 400.
    #[arg(long, env = "ORDERMESH_GATEWAY_ALLOW_UNKNOWN_FIELDS")]
    pub gateway_allow_unknown_fields: bool,
    /// Time (ms) a client has to send its first byte and each HTTP/1 request
    /// head; also how long an idle keep-alive connection is kept.
    #[arg(long, env = "ORDERMESH_GATEWAY_HEADER_READ_TIMEOUT_MS", default_value_t = millis(gateway_default().connections.header_read_timeout))]
    pub gateway_header_read_timeout_ms: u64,
    /// Time (ms) a client has to send a whole REST request body (408 after).
    #[arg(long, env = "ORDERMESH_GATEWAY_BODY_READ_TIMEOUT_MS", default_value_t = millis(gateway_default().connections.body_read_timeout))]
    pub gateway_body_read_timeout_ms: u64,
    /// Open connections one client address may hold; 0: no cap (behind a
    /// proxy or ingress every client has the proxy's address).
    #[arg(long, env = "ORDERMESH_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = gateway_default().connections.max_connections_per_address)]
    pub gateway_max_connections_per_address: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(args: &[&str]) -> UpArgs {
        let cli = Cli::try_parse_from(["ordermesh", "up"].iter().chain(args)).expect("parses");
        match cli.command {
            Command::Up(up) => up,
            other => panic!("not up: {other:?}"),
        }
    }

    #[test]
    fn flag_defaults_are_the_configs_defaults() {
        let args = up(&[]);
        let saga = args.process.saga.saga();
        let default = SagaConfig::default();
        assert_eq!(saga.limits, default.limits);
        assert_eq!(
            (saga.call_timeout, saga.lease, saga.recovery_interval),
            (default.call_timeout, default.lease, default.recovery_interval)
        );
        assert_eq!(
            Duration::from_secs(args.process.inventory.reservation_ttl_secs),
            ordermesh_inventory::Config::DEFAULT_RESERVATION_TTL
        );
        assert_eq!(
            Duration::from_secs(args.process.payment.authorization_hold_secs),
            ordermesh_payment::Config::DEFAULT_AUTHORIZATION_HOLD
        );
        let gateway = gateway_default();
        let flags = &args.process.gateway;
        assert_eq!(
            Duration::from_millis(flags.gateway_timeout_ms),
            gateway.default_timeout
        );
        assert_eq!(
            Duration::from_millis(flags.gateway_max_timeout_ms),
            gateway.max_timeout
        );
        assert_eq!(flags.gateway_max_body_bytes, gateway.max_body_bytes);
        assert_eq!(args.order_port, 50051);
    }

    #[test]
    fn seeding_and_auth_mode_are_unset_unless_given() {
        let args = up(&[]);
        assert_eq!(args.process.seed_demo, None);
        assert_eq!(args.process.gateway.auth_mode, None);
        let args = up(&["--seed-demo", "--auth-mode", "production"]);
        assert_eq!(args.process.seed_demo, Some(true));
        assert_eq!(args.process.gateway.auth_mode, Some(AuthMode::Production));
        assert_eq!(up(&["--seed-demo", "false"]).process.seed_demo, Some(false));
    }

    #[test]
    fn every_target_parses_and_is_built_once() {
        for target in Target::ALL {
            assert_eq!(Target::from_str(target.name(), false), Ok(target));
        }
        let mut names: Vec<_> = Target::ALL.iter().map(|t| t.name()).collect();
        names.dedup();
        assert_eq!(names.len(), 4);
    }
}
