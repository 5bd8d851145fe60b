//! The gateway's configuration: upstream addresses, JWT settings, timeouts
//! and limits come from flags and `ORDERMESH_*` variables (parsed by the CLI,
//! like every target's); the per-route tables (required scopes, public
//! routes, rate limits) and CORS origins come from one TOML file
//! (`ORDERMESH_GATEWAY_CONFIG`), because a table per RPC does not fit in
//! environment variables.
//!
//! Every RPC of the public services gets a [`RouteAccess`] at start: the
//! built-in default (below), then the file's entries, most specific last
//! (`/pkg.Service/*` before `/pkg.Service/Method`). A key naming no RPC, an
//! unknown field or a zero rate stops the gateway at start, naming the key.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost_reflect::DescriptorPool;
use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::limit::RateLimit;

/// Everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub order_url: String,
    pub inventory_url: String,
    pub payment_url: String,
    pub auth: AuthConfig,
    /// The per-route tables; `None`: the built-in defaults.
    pub file: Option<PathBuf>,
    /// Downstream deadline when the caller sets none.
    pub default_timeout: Duration,
    /// Longest deadline a caller may ask for.
    pub max_timeout: Duration,
    /// Largest accepted REST request body, and gRPC or grpc-web request
    /// message, in bytes.
    pub max_body_bytes: usize,
    /// Accept (and drop) JSON fields the request message does not have.
    pub allow_unknown_fields: bool,
    /// Bounds on client connections: read timeouts, connections per address.
    pub connections: crate::listen::ConnectionLimits,
    /// The mesh policy for the gateway's own downstream calls.
    pub mesh: ordermesh_runtime::server::MeshSettings,
}

impl GatewayConfig {
    /// The gateway of the order, inventory and payment services at `urls`,
    /// with `mode` auth, no route file, and the default timeouts and limits
    /// (the binary's flags read theirs from here).
    pub fn new([order_url, inventory_url, payment_url]: [String; 3], mode: crate::auth::AuthMode) -> Self {
        Self {
            order_url,
            inventory_url,
            payment_url,
            auth: AuthConfig::new(mode),
            file: None,
            default_timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(60),
            max_body_bytes: 4 * 1024 * 1024,
            allow_unknown_fields: false,
            connections: crate::listen::ConnectionLimits::DEFAULT,
            mesh: Default::default(),
        }
    }
}

/// The TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Rate limit per principal for every route without its own.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub cors: CorsConfig,
    #[serde(default)]
    pub routes: Vec<RouteEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call from a browser (grpc-web, REST); `["*"]`: any.
    #[serde(default)]
    pub origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// `/package.Service/Method` or `/package.Service/*`.
    pub rpc: String,
    /// Scopes a token must carry (all of them).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Callable without a token.
    #[serde(default)]
    pub public: Option<bool>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// What one RPC requires at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteAccess {
    pub scopes: Vec<String>,
    pub public: bool,
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("gateway config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gateway config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("gateway config {path}: routes[{index}].rpc = {rpc:?} names no RPC of the public services")]
    UnknownRpc {
        path: PathBuf,
        index: usize,
        rpc: String,
    },
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The file's text, read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })
    }
}

/// The built-in scopes: reads and writes per bounded context, and `admin`
/// for the operator and service-to-service RPCs (reservations, payment
/// steps, sagas, events, the mesh), which a shop front never calls.
pub fn default_scope(service: &str, method: &str) -> &'static str {
    let read = method.starts_with("Get")
        || method.starts_with("List")
        || method.starts_with("Watch")
        || method.starts_with("Check");
    match service {
        "ordermesh.order.v1.OrderService" if read => "orders:read",
        "ordermesh.order.v1.OrderService" => "orders:write",
        "ordermesh.inventory.v1.InventoryService" => match method {
            "GetStock" | "ListStock" | "CheckAvailability" | "GetReservation" => "inventory:read",
            "UpdateProduct" | "AdjustStock" | "ListRestockAlerts" => "inventory:admin",
            _ => "admin",
        },
        "ordermesh.payment.v1.PaymentService" => match method {
            "GetAccount" | "GetPayment" | "ListPayments" => "payments:read",
            _ => "admin",
        },
        _ => "admin",
    }
}

/// Every public RPC's access: defaults, then the file's entries.
pub fn route_access(
    pool: &DescriptorPool,
    services: &[&str],
    file: &FileConfig,
    path: &Path,
) -> Result<HashMap<String, RouteAccess>, ConfigError> {
    let mut access: BTreeMap<String, RouteAccess> = BTreeMap::new();
    for service in pool.services().filter(|s| services.contains(&s.full_name())) {
        for method in service.methods() {
            access.insert(
                crate::rules::rpc_path(&method),
                RouteAccess {
                    scopes: vec![default_scope(service.full_name(), method.name()).to_owned()],
                    public: false,
                    // The file's default limit is not copied here: routes
                    // without their own share its one bucket per caller.
                    rate_limit: None,
                },
            );
        }
    }
    // Service wildcards first, then single methods, so the specific wins.
    let mut entries: Vec<(usize, &RouteEntry)> = file.routes.iter().enumerate().collect();
    entries.sort_by_key(|(_, entry)| !entry.rpc.ends_with("/*"));
    for (index, entry) in entries {
        let matching: Vec<&String> = match entry.rpc.strip_suffix("/*") {
            Some(service) => access
                .keys()
                .filter(|rpc| rpc.rsplit_once('/').is_some_and(|(s, _)| s == service))
                .collect(),
            None => access.keys().filter(|rpc| **rpc == entry.rpc).collect(),
        };
        if matching.is_empty() {
            return Err(ConfigError::UnknownRpc {
                path: path.to_owned(),
                index,
                rpc: entry.rpc.clone(),
            });
        }
        let matching: Vec<String> = matching.into_iter().cloned().collect();
        for rpc in matching {
            let route = access.get_mut(&rpc).expect("matched from the map's keys");
            if let Some(scopes) = &entry.scopes {
                route.scopes.clone_from(scopes);
            }
            if let Some(public) = entry.public {
                route.public = public;
            }
            if entry.rate_limit.is_some() {
                route.rate_limit = entry.rate_limit;
            }
        }
    }
    Ok(access.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptors::{PUBLIC_SERVICES, pool};

    fn load(text: &str) -> Result<HashMap<String, RouteAccess>, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).expect("write");
        let file = FileConfig::load(&path)?;
        route_access(pool(), PUBLIC_SERVICES, &file, &path)
    }

    #[test]
    fn defaults_split_reads_writes_and_admin() {
        let access = load("").expect("empty file is valid");
        let scopes = |rpc: &str| access[rpc].scopes.clone();
        assert_eq!(
            scopes("/ordermesh.order.v1.OrderService/GetOrder"),
            ["orders:read"]
        );
        assert_eq!(
            scopes("/ordermesh.order.v1.OrderService/WatchOrder"),
            ["orders:read"]
        );
        assert_eq!(
            scopes("/ordermesh.order.v1.OrderService/CreateOrder"),
            ["orders:write"]
        );
        assert_eq!(
            scopes("/ordermesh.inventory.v1.InventoryService/ListStock"),
            ["inventory:read"]
        );
        assert_eq!(
            scopes("/ordermesh.inventory.v1.InventoryService/UpdateProduct"),
            ["inventory:admin"]
        );
        assert_eq!(
            scopes("/ordermesh.inventory.v1.InventoryService/ReserveStock"),
            ["admin"]
        );
        assert_eq!(
            scopes("/ordermesh.payment.v1.PaymentService/CapturePayment"),
            ["admin"]
        );
        assert_eq!(scopes("/ordermesh.mesh.v1.MeshAdminService/SetFaults"), ["admin"]);
        assert!(access.values().all(|p| !p.public && p.rate_limit.is_none()));
    }

    #[test]
    fn file_entries_override_wildcard_then_method() {
        let access = load(
            r#"
rate_limit = { per_second = 10, burst = 20 }
[[routes]]
rpc = "/ordermesh.order.v1.OrderService/GetOrder"
public = true
rate_limit = { per_second = 1, burst = 2 }
[[routes]]
rpc = "/ordermesh.order.v1.OrderService/*"
scopes = ["shop"]
"#,
        )
        .expect("valid");
        let get = &access["/ordermesh.order.v1.OrderService/GetOrder"];
        assert_eq!(get.scopes, ["shop"]);
        assert!(get.public);
        assert_eq!(
            get.rate_limit,
            Some(RateLimit {
                per_second: 1,
                burst: 2
            })
        );
        let create = &access["/ordermesh.order.v1.OrderService/CreateOrder"];
        assert_eq!(create.scopes, ["shop"]);
        assert!(!create.public);
        assert_eq!(
            create.rate_limit, None,
            "the default limit stays one shared bucket, not a copy per route"
        );
    }

    #[test]
    fn bad_files_name_the_key() {
        let unknown = load("[[routes]]\nrpc = \"/ordermesh.order.v1.OrderService/Nope\"\n")
            .expect_err("unknown rpc refused")
            .to_string();
        assert!(unknown.contains("routes[0].rpc"), "{unknown}");
        let zero = load("[[routes]]\nrpc = \"/ordermesh.order.v1.OrderService/*\"\nrate_limit = { per_second = 0, burst = 1 }\n")
            .expect_err("zero rate refused")
            .to_string();
        // The TOML error points at the line of the key, and says why.
        assert!(zero.contains("rate_limit = { per_second = 0"), "{zero}");
        assert!(zero.contains("per_second` must be greater than 0"), "{zero}");
        let typo = load("rate_limt = { per_second = 1, burst = 1 }\n")
            .expect_err("unknown key refused")
            .to_string();
        assert!(typo.contains("rate_limt"), "{typo}");
    }
}
