//! `ordermesh token`: a development token for the gateway, signed with the
//! key a development-mode gateway uses: `ORDERMESH_JWT_HS256_SECRET` when
//! set (the chart's `auth.hs256Secret`, so the token minted in a pod is the
//! one its gateway verifies), else the key file `up` generates in its data
//! directory, so the README's curl and grpcurl calls work as written. It
//! says on stderr which it used. Production gateways verify tokens from a
//! real issuer's JWKS instead.

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
    /// The gateway's HS256 secret: when set, the token is signed with it
    /// (what a gateway given the same variable verifies) instead of the key
    /// file in the data directory. From the environment only, so it never
    /// shows in a process list.
    #[arg(
        long = "jwt-hs256-secret-from-env-only",
        env = ordermesh_gateway::auth::ENV_HS256_SECRET,
        hide = true,
        hide_env_values = true
    )]
    pub hs256_secret: Option<String>,
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let scopes: Vec<String> = if args.scopes.is_empty() {
        DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scopes
    };
    let ttl = Duration::from_secs(args.ttl_secs);
    let (issuer, audience) = (args.issuer.as_deref(), args.audience.as_deref());
    // Which key signed it goes to stderr, so `TOKEN=$(ordermesh token)` keeps the token alone.
    let token = match args.hs256_secret.as_deref().filter(|s| !s.is_empty()) {
        Some(secret) => {
            let token = ordermesh_gateway::auth::mint_with_secret(
                secret,
                &args.subject,
                &scopes,
                ttl,
                issuer,
                audience,
            )?;
            eprintln!("signed with {}", ordermesh_gateway::auth::ENV_HS256_SECRET);
            token
        }
        None => {
            let token = ordermesh_gateway::auth::mint_dev_token(
                &args.data_dir,
                &args.subject,
                &scopes,
                ttl,
                issuer,
                audience,
            )?;
            eprintln!(
                "signed with the development key {}",
                args.data_dir
                    .join(ordermesh_gateway::auth::DEV_KEY_FILE)
                    .display()
            );
            token
        }
    };
    println!("{token}");
    Ok(())
}
