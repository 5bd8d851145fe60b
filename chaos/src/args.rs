//! The flags of `ordermesh chaos`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// Seed of the fault schedule and of the traffic's choices; the same
    /// seed replays the same schedule and the same requests.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long traffic runs, with faults throughout (e.g. 90s, 2m, 30m).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub duration: Duration,
    /// The longest wait after the traffic for every order to be terminal
    /// and every consumer to catch up (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub settle: Duration,
    /// The history file (JSON lines); default: history.jsonl in the run directory.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Also write the report as JSON here (always written as report.json in the run directory).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The run directory (databases, NATS store, logs, history); default: a
    /// new directory under the system's temporary directory, printed at start.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The ordermesh binary to run the services with; default: this one.
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// nats-server; default: target/tools/bin/nats-server, else PATH.
    #[arg(long, env = "NATS_SERVER")]
    pub nats_server: Option<PathBuf>,
    /// Concurrent traffic workers.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Print the fault schedule of this seed and duration as JSON lines, and exit.
    #[arg(long)]
    pub plan_only: bool,
}

/// `90s`, `2m`, `1h`, `500ms`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with s, m, h or ms, e.g. 2m"))?;
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" | "min" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        other => Err(format!("{text:?}: unknown unit {other:?} (s, m, h or ms)")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("m").is_err());
    }
}
