use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

fn settings() -> RunSettings {
    RunSettings::default()
}

#[test]
fn the_same_seed_gives_the_same_schedule() {
    let d = Duration::from_secs(120);
    for seed in 0..20 {
        assert_eq!(schedule(seed, d, &settings()), schedule(seed, d, &settings()));
    }
    let distinct: BTreeSet<String> = (0..20)
        .map(|seed| format!("{:?}", schedule(seed, d, &settings())))
        .collect();
    assert!(distinct.len() > 15, "seeds give different schedules");
}

#[test]
fn every_kind_appears_in_a_long_enough_run() {
    for seed in 0..50 {
        let kinds: BTreeSet<FaultKind> = schedule(seed, Duration::from_secs(600), &settings())
            .iter()
            .map(|p| p.fault.kind())
            .collect();
        assert_eq!(kinds.len(), FaultKind::ALL.len(), "seed {seed}: {kinds:?}");
    }
}

#[test]
fn faults_leave_room_to_recover() {
    let s = settings();
    for seed in 0..50 {
        for minutes in [1, 2, 10, 30] {
            let duration = Duration::from_secs(60 * minutes);
            let planned = schedule(seed, duration, &s);
            assert!(!planned.is_empty(), "seed {seed}, {minutes} min");
            assert!(Duration::from_millis(planned[0].at_ms) >= WARMUP);
            for pair in planned.windows(2) {
                let end = pair[0].at_ms + millis(pair[0].fault.span());
                assert!(
                    pair[1].at_ms >= end + millis(MIN_GAP),
                    "seed {seed}: {pair:?} overlap or follow too closely"
                );
            }
            for p in &planned {
                let end = Duration::from_millis(p.at_ms) + p.fault.span();
                assert!(
                    end + QUIET_TAIL <= duration,
                    "seed {seed}: {p:?} ends in the quiet tail"
                );
                // One fault alone never outlasts the saga's patience, even with
                // the time to recover from it.
                assert!(p.fault.span() + s.recovery_grace() < s.patience(), "{p:?}");
                match &p.fault {
                    Fault::Pause { proc, ms } => {
                        assert!(*ms > s.saga_lease_ms, "a pause outlasts the lease");
                        assert!(
                            matches!(proc, Proc::Order0 | Proc::Order1),
                            "only order replicas pause"
                        );
                    }
                    Fault::PgOutage { ms } => {
                        assert!(
                            *ms > s.consumer_backoff_ms,
                            "an outage outlasts the consumers' back-off"
                        )
                    }
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn the_empty_store_restart_comes_once_and_only_in_a_long_enough_run() {
    for seed in 0..50 {
        let wipes = |secs: u64| {
            schedule(seed, Duration::from_secs(secs), &settings())
                .iter()
                .filter(|p| p.fault.kind() == FaultKind::NatsWipe)
                .count()
        };
        assert_eq!(wipes(60), 0, "seed {seed}");
        assert_eq!(wipes(120), 1, "seed {seed}: a two-minute run has it");
        assert_eq!(wipes(1800), 1, "seed {seed}: once per run");
    }
}

#[test]
fn a_two_minute_run_has_several_faults() {
    for seed in 0..50 {
        let n = schedule(seed, Duration::from_secs(120), &settings()).len();
        assert!((5..=12).contains(&n), "seed {seed}: {n} faults");
    }
}

#[test]
fn faults_read_as_json_and_back() {
    for p in schedule(7, Duration::from_secs(600), &settings()) {
        let text = serde_json::to_string(&p).expect("json");
        assert_eq!(serde_json::from_str::<Planned>(&text).expect("parses"), p);
    }
}
