//! `ordermesh bench` flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::scenarios::Follow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// grpc.health Check of the order service's server: the RPC floor.
    Echo,
    /// GetOrder of orders placed before the window.
    GetOrder,
    /// `GET /v1/orders/{order_id}` of the same orders over HTTP/1.1
    /// keep-alive (the gateway's REST route; --rest-url, else the target).
    RestGetOrder,
    /// CreateOrder followed to CONFIRMED (the whole saga).
    CreateOrder,
    /// Orders flowing (each held a few seconds) and many concurrent
    /// WatchOrder streams; the database work and CPU the watchers add.
    WatchOrder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Start {
    /// `ordermesh up`: everything in one process, SQLite.
    Up,
    /// Three `ordermesh serve` processes, each on its own PostgreSQL database.
    Serve,
}

/// The client stack of the echo scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// A bare tonic Channel.
    Bare,
    /// The mesh client stack (deadline, retry, breaker, faults, balancer).
    Mesh,
    /// Both, alternating call by call on each worker, in one histogram each.
    Both,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::CreateOrder)]
    pub scenario: Scenario,
    /// A running mesh's order service (`http://host:port`); without it the
    /// bench starts its own (--start).
    #[arg(long, conflicts_with = "start")]
    pub target: Option<String>,
    /// The running mesh's inventory service (with --target).
    #[arg(long, default_value = "http://127.0.0.1:50052", requires = "target")]
    pub inventory_url: String,
    /// The running mesh's payment service (with --target).
    #[arg(long, default_value = "http://127.0.0.1:50053", requires = "target")]
    pub payment_url: String,
    /// What the bench starts in a temporary directory (default: up).
    #[arg(long, value_enum)]
    pub start: Option<Start>,
    /// PostgreSQL server for --start serve (a URL whose user may CREATE
    /// DATABASE); without it the bench starts a cluster of its own
    /// (initdb, pg_stat_statements). With --target: the server whose
    /// databases are counted.
    #[arg(long, env = "ORDERMESH_BENCH_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// Start the bench's own PostgreSQL with fsync off (not durable; for
    /// comparing with CI's throwaway clusters).
    #[arg(long)]
    pub pg_fsync_off: bool,
    /// --start serve: how many order service processes share the order
    /// database (the workers' connections alternate between them); e.g. 2
    /// against 1 for what a second replica adds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=super::target::MAX_ORDER_REPLICAS as i64))]
    pub order_replicas: u8,
    /// The binary a started mesh runs (default: this one); e.g. a build of
    /// an older commit for before/after figures.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Mesh policy file for the servers a run starts (`--policy` of `up` and
    /// `serve`), e.g. a higher `[server] concurrency_limit` for many
    /// concurrent watchers.
    #[arg(long)]
    pub server_policy: Option<PathBuf>,
    /// ordermesh processes of a --target mesh (default: whoever listens on
    /// its ports).
    #[arg(long = "pids", alias = "pid", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Further processes to measure, by name (repeatable): e.g.
    /// `--measure-pid gateway=4242 --measure-pid nginx=4243`. With it (or
    /// --pids), a --target mesh's processes are these, not the listeners on
    /// its ports; a name given twice is summed.
    #[arg(long = "measure-pid", value_name = "NAME=PID", value_parser = parse_named_pid)]
    pub measure_pids: Vec<(String, u32)>,
    /// Sent as `authorization: Bearer <TOKEN>` on every gRPC call and REST
    /// request (e.g. `ordermesh token` for a gateway).
    #[arg(long, env = "ORDERMESH_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// rest-get-order: the HTTP server (`http://host:port`); default: the
    /// target (a gateway serves REST and gRPC on one port).
    #[arg(long)]
    pub rest_url: Option<String>,
    /// Database server processes of a --target mesh (default: every
    /// `postgres` process).
    #[arg(long, value_delimiter = ',')]
    pub db_pids: Vec<u32>,
    /// Closed loop: requests in flight at once.
    #[arg(long, short = 'c', default_value_t = 8)]
    pub concurrency: usize,
    /// Open loop: requests per second (latency measured from each request's
    /// intended send time). Overrides --concurrency.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: most requests in flight (beyond it, requests wait, and
    /// their waiting counts).
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Measured window, e.g. 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before the window (not counted).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// echo: the client stack.
    #[arg(long, value_enum, default_value_t = ClientKind::Bare)]
    pub client: ClientKind,
    /// create-order: how each order is followed to its end.
    #[arg(long, value_enum, default_value_t = Follow::Watch)]
    pub follow: Follow,
    /// watch-order: concurrent watchers besides the orders' own.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// watch-order: how long each order is held (an injected delay of
    /// CapturePayment) so that watchers have open orders to watch.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub watch_hold: Duration,
    /// The SKUs ordered, one unit per order, each order the next SKU in
    /// turn (comma-separated or repeated). Default: the catalogue's first
    /// 64 SKUs (`ListStock`), so orders spread over products as real
    /// traffic does; `--sku CB-004 --accounts 1` is the hot-row worst case
    /// (every order on one stock row and one balance).
    #[arg(long = "sku", value_delimiter = ',')]
    pub skus: Vec<String>,
    /// Accounts opened (and funded) for the run; each order is charged to
    /// the next one in turn.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub accounts: u16,
    /// Order as this existing customer (limited to its balance) instead of
    /// accounts opened for the run.
    #[arg(long)]
    pub customer: Option<String>,
    /// create-order: skip measuring the machine's limit (echo floor and
    /// database commit floor).
    #[arg(long)]
    pub no_limit: bool,
    /// Database statements and commits per order from an earlier run's JSON
    /// (e.g. the PostgreSQL run of the same binary), for a limit on SQLite,
    /// whose statements cannot be counted from outside.
    #[arg(long)]
    pub db_counts_from: Option<PathBuf>,
    /// Keep the started mesh's temporary directory (servers' logs, SQLite
    /// files) and print where it is.
    #[arg(long)]
    pub keep_dir: bool,
    /// A name for the run in the JSON and the summary line.
    #[arg(long)]
    pub label: Option<String>,
    /// Write the full report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `NAME=PID`.
pub fn parse_named_pid(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=PID"))?;
    let pid = pid.trim().parse().map_err(|e| format!("pid of {text:?}: {e}"))?;
    if name.trim().is_empty() {
        return Err(format!("{text:?} has no name before '='"));
    }
    Ok((name.trim().to_owned(), pid))
}

/// `10s`, `500ms`, `2m`, `1.5s`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (ms, s, m, h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn named_pids_parse() {
        assert_eq!(parse_named_pid("nginx=42"), Ok(("nginx".into(), 42)));
        assert!(parse_named_pid("42").is_err());
        assert!(parse_named_pid("=42").is_err());
        assert!(parse_named_pid("gw=x").is_err());
    }
}
