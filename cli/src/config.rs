//! One configuration path for `up` and `serve`: the flags every service
//! takes (grouped per service, each with its environment variable), and the
//! one function per service that turns them into its `Config`. `up` and
//! `serve` differ only in where the database URLs and peer addresses come
//! from.

use std::time::Duration;

use clap::Args;

use ordermesh_events::Bus;
use ordermesh_order::{CrashPoint, SagaConfig};
use ordermesh_runtime::server::MeshSettings;

/// Where events go: NATS JetStream, or the process's in-process broker.
#[derive(Debug, Clone, Args)]
pub struct EventArgs {
    /// NATS JetStream for domain events, e.g. nats://127.0.0.1:4222; without
    /// it, an in-process broker (one per process, shared by `up`'s services).
    #[arg(long, env = "ORDERMESH_NATS_URL")]
    pub nats_url: Option<String>,
}

impl EventArgs {
    /// The bus: JetStream at the URL, or a fresh in-process broker (each
    /// service creates the streams it needs when it starts).
    pub async fn bus(&self) -> anyhow::Result<ordermesh_events::Bus> {
        use anyhow::Context;
        let settings = ordermesh_events::BusSettings::default();
        ordermesh_events::Bus::from_url(self.nats_url.as_deref(), settings)
            .await
            .context("events bus (--nats-url / ORDERMESH_NATS_URL)")
    }
}

/// Inventory settings.
#[derive(Debug, Clone, Args)]
pub struct InventoryArgs {
    /// Seconds a stock reservation may stay uncommitted; it must outlast the
    /// saga's windows (3 x patience + forward window).
    #[arg(long, env = "ORDERMESH_RESERVATION_TTL_SECS", default_value_t = 900)]
    pub reservation_ttl_secs: u64,
}

/// Payment settings.
#[derive(Debug, Clone, Args)]
pub struct PaymentArgs {
    /// Seconds an uncaptured authorization holds its amount before it lapses
    /// and the funds are released.
    #[arg(long, env = "ORDERMESH_AUTHORIZATION_HOLD_SECS", default_value_t = 7 * 24 * 3600)]
    pub authorization_hold_secs: u64,
}

/// Order saga settings.
#[derive(Debug, Clone, Args)]
pub struct SagaArgs {
    /// Seconds a step before the payment is captured waits out an outage of
    /// inventory or payment before the order is rejected.
    #[arg(long, env = "ORDERMESH_SAGA_PATIENCE_SECS", default_value_t = 30)]
    pub saga_patience_secs: u64,
    /// Seconds a step after the capture retries an outage before the saga
    /// stops for an operator (never refunded for an outage).
    #[arg(long, env = "ORDERMESH_SAGA_FORWARD_WINDOW_SECS", default_value_t = 600)]
    pub saga_forward_window_secs: u64,
    /// Attempts of a compensating step before the saga stops for an operator
    /// (OrderAdminService/ListSagas, RetrySaga).
    #[arg(long, env = "ORDERMESH_SAGA_MAX_COMPENSATION_ATTEMPTS", default_value_t = 12)]
    pub saga_max_compensation_attempts: i64,
    /// Deadline of each call the saga makes to inventory or payment.
    #[arg(long, env = "ORDERMESH_SAGA_CALL_TIMEOUT_MS", default_value_t = 5_000)]
    pub saga_call_timeout_ms: u64,
    /// How long a worker's claim on a saga lasts unrenewed: after a crash,
    /// another process resumes the saga this long after its last write. Must
    /// exceed the call timeout by the clock-skew margin (1 s).
    #[arg(long, env = "ORDERMESH_SAGA_LEASE_MS", default_value_t = 15_000)]
    pub saga_lease_ms: u64,
    /// How often the recovery worker looks for sagas whose lease lapsed.
    #[arg(long, env = "ORDERMESH_SAGA_RECOVERY_INTERVAL_MS", default_value_t = 5_000)]
    pub saga_recovery_interval_ms: u64,
    /// Crash-test hook: freeze at this saga point (e.g. after-authorize) so a
    /// test can kill -9 the process there. Never set in production.
    #[arg(long, env = "ORDERMESH_CRASH_AT", hide = true, value_parser = parse_crash_point)]
    pub crash_at: Option<CrashPoint>,
}

fn parse_crash_point(name: &str) -> Result<CrashPoint, String> {
    CrashPoint::parse(name).ok_or_else(|| {
        let names: Vec<String> = CrashPoint::ALL.iter().map(|p| p.name()).collect();
        format!("unknown crash point {name:?}; one of {}", names.join(", "))
    })
}

impl SagaArgs {
    pub fn saga(&self) -> SagaConfig {
        SagaConfig {
            patience: Duration::from_secs(self.saga_patience_secs),
            forward_window: Duration::from_secs(self.saga_forward_window_secs),
            max_compensation_attempts: self.saga_max_compensation_attempts,
            call_timeout: Duration::from_millis(self.saga_call_timeout_ms),
            lease: Duration::from_millis(self.saga_lease_ms),
            recovery_interval: Duration::from_millis(self.saga_recovery_interval_ms),
            crash_at: self.crash_at,
            ..SagaConfig::default()
        }
    }
}

pub fn inventory(
    database_url: String,
    args: &InventoryArgs,
    seed_demo: bool,
    (mesh, bus): (MeshSettings, Bus),
) -> ordermesh_inventory::Config {
    let mut config = ordermesh_inventory::Config::new(database_url);
    config.bus = bus;
    config.reservation_ttl = Duration::from_secs(args.reservation_ttl_secs);
    if seed_demo {
        config.seed = ordermesh_inventory::demo::catalogue();
    }
    config.mesh = mesh;
    config
}

pub fn payment(
    database_url: String,
    args: &PaymentArgs,
    seed_demo: bool,
    (mesh, bus): (MeshSettings, Bus),
) -> ordermesh_payment::Config {
    let mut config = ordermesh_payment::Config::new(database_url);
    config.bus = bus;
    config.authorization_hold = Duration::from_secs(args.authorization_hold_secs);
    if seed_demo {
        config.seed = ordermesh_payment::demo::accounts();
    }
    config.mesh = mesh;
    config
}

pub fn order(
    database_url: String,
    inventory_url: String,
    payment_url: String,
    args: &SagaArgs,
    (mesh, bus): (MeshSettings, Bus),
) -> ordermesh_order::Config {
    let mut config = ordermesh_order::Config::new(database_url, inventory_url, payment_url);
    config.bus = bus;
    config.saga = args.saga();
    config.mesh = mesh;
    config
}

/// When inventory and the saga are configured together (`up`): a
/// reservation must outlive every window the saga may wait before COMMIT,
/// or a paid order could find its stock expired.
pub fn check_reservation_outlives_saga(inventory: &InventoryArgs, saga: &SagaArgs) -> anyhow::Result<()> {
    let needed = saga.saga().reservation_needed();
    let ttl = Duration::from_secs(inventory.reservation_ttl_secs);
    if ttl <= needed {
        anyhow::bail!(
            "--reservation-ttl-secs ({}) must be longer than 3 x --saga-patience-secs + --saga-forward-window-secs ({})",
            ttl.as_secs(),
            needed.as_secs()
        );
    }
    Ok(())
}

/// Gateway settings (`serve gateway`, and the gateway `up` runs).
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// The per-route tables: required scopes, public routes, rate limits, CORS
    /// origins (TOML; see gateway/README.md).
    #[arg(long, env = "ORDERMESH_GATEWAY_CONFIG")]
    pub gateway_config: Option<std::path::PathBuf>,
    /// `production` refuses to start without JWT keys (a JWKS file or URL);
    /// `development` also takes an HS256 secret, or makes one in the data
    /// directory for `ordermesh token`. `up` always runs in development mode.
    #[arg(long, env = "ORDERMESH_AUTH_MODE", default_value = "production")]
    pub auth_mode: String,
    /// Required `iss` of tokens, when set.
    #[arg(long, env = "ORDERMESH_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of tokens, when set.
    #[arg(long, env = "ORDERMESH_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// A JWKS document with the token-signing public keys (RS256, ES256, EdDSA).
    #[arg(long, env = "ORDERMESH_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<std::path::PathBuf>,
    /// A JWKS URL, fetched at start and refreshed.
    #[arg(long, env = "ORDERMESH_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// An HS256 secret (development mode only); from the environment only, so
    /// it never shows in a process list.
    #[arg(
        long = "jwt-hs256-secret-from-env-only",
        env = "ORDERMESH_JWT_HS256_SECRET",
        hide = true,
        hide_env_values = true
    )]
    pub jwt_hs256_secret: Option<String>,
    /// Downstream deadline (ms) for calls that set none (REST `X-Request-Timeout`, gRPC `grpc-timeout`).
    #[arg(long, env = "ORDERMESH_GATEWAY_TIMEOUT_MS", default_value_t = 10_000)]
    pub gateway_timeout_ms: u64,
    /// Longest deadline (ms) a caller may ask for.
    #[arg(long, env = "ORDERMESH_GATEWAY_MAX_TIMEOUT_MS", default_value_t = 60_000)]
    pub gateway_max_timeout_ms: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "ORDERMESH_GATEWAY_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub gateway_max_body_bytes: usize,
    /// Accept (and drop) JSON fields a request message does not have, instead of 400.
    #[arg(long, env = "ORDERMESH_GATEWAY_ALLOW_UNKNOWN_FIELDS")]
    pub gateway_allow_unknown_fields: bool,
}

/// The gateway's config; `development` forces development auth (`up`).
pub fn gateway(
    args: &GatewayArgs,
    urls: [String; 3],
    data_dir: &std::path::Path,
    development: bool,
    mesh: MeshSettings,
) -> anyhow::Result<ordermesh_gateway::GatewayConfig> {
    use anyhow::Context;
    use ordermesh_gateway::auth::{AuthConfig, AuthMode};
    let mode = if development {
        AuthMode::Development
    } else {
        args.auth_mode
            .parse::<AuthMode>()
            .map_err(|error| anyhow::anyhow!("{error}"))
            .context("--auth-mode / ORDERMESH_AUTH_MODE")?
    };
    let [order_url, inventory_url, payment_url] = urls;
    Ok(ordermesh_gateway::GatewayConfig {
        order_url,
        inventory_url,
        payment_url,
        auth: AuthConfig {
            mode,
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            jwks_file: args.jwt_jwks_file.clone(),
            jwks_url: args.jwt_jwks_url.clone(),
            hs256_secret: args.jwt_hs256_secret.clone(),
            dev_key_dir: Some(data_dir.to_owned()),
            ..AuthConfig::new(mode)
        },
        file: args.gateway_config.clone(),
        default_timeout: Duration::from_millis(args.gateway_timeout_ms),
        max_timeout: Duration::from_millis(args.gateway_max_timeout_ms),
        max_body_bytes: args.gateway_max_body_bytes,
        allow_unknown_fields: args.gateway_allow_unknown_fields,
        mesh,
    })
}
