//! `ordermesh token`: a development token for the gateway, signed with the
//! key a development-mode gateway uses (the one `up` generates in its data
//! directory), so the README's curl and grpcurl calls work as written.
//! Production gateways verify tokens from a real issuer's JWKS instead.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// The scopes a shop front needs, when none are asked for.
const DEFAULT_SCOPES: &[&str] = &["orders:read", "orders:write", "inventory:read", "payments:read"];

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Scopes to grant (repeatable), e.g. orders:write, inventory:admin, admin;
    /// default: orders:read orders:write inventory:read payments:read.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// The token's subject (`sub`): the customer it acts for (services let a
    /// customer's token read and order for that customer only). Printable
    /// ASCII. The default is the demo's customer alice.
    #[arg(long, default_value = "alice")]
    pub subject: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
    /// The data directory of the `up` (or development gateway) that verifies it.
    #[arg(long, env = "ORDERMESH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `iss` to set (match the gateway's ORDERMESH_JWT_ISSUER, if any).
    #[arg(long, env = "ORDERMESH_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` to set (match the gateway's ORDERMESH_JWT_AUDIENCE, if any).
    #[arg(long, env = "ORDERMESH_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let scopes: Vec<String> = if args.scopes.is_empty() {
        DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scopes
    };
    let token = ordermesh_gateway::auth::mint_dev_token(
        &args.data_dir,
        &args.subject,
        &scopes,
        Duration::from_secs(args.ttl_secs),
        args.issuer.as_deref(),
        args.audience.as_deref(),
    )?;
    println!("{token}");
    Ok(())
}
