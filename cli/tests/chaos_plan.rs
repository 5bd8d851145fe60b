//! `ordermesh chaos --plan-only`: the seed's fault schedule as JSON lines,
//! without starting anything. The same seed prints the same schedule (a run
//! is replayed by its seed), and a ten-minute run has every kind of fault.
//! The full run is CI's chaos step (`.ci/chaos.sh`).

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

fn plan(seed: &str, duration: &str) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .args(["chaos", "--plan-only", "--seed", seed, "--duration", duration])
        .output()
        .expect("ordermesh chaos runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[test]
fn a_seed_prints_the_same_schedule_every_time() {
    let first = plan("11", "10m");
    assert_eq!(first, plan("11", "10m"));
    assert_ne!(first, plan("12", "10m"));
    let kinds: BTreeSet<String> = first
        .iter()
        .map(|p| p["fault"]["kind"].as_str().expect("a kind").to_owned())
        .collect();
    for kind in [
        "kill",
        "pause",
        "nats-stop",
        "nats-wipe",
        "pg-restart",
        "pg-outage",
        "mesh-delay",
        "mesh-abort",
    ] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    let starts: Vec<u64> = first
        .iter()
        .map(|p| p["at_ms"].as_u64().expect("at_ms"))
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "in start order: {starts:?}"
    );
}
