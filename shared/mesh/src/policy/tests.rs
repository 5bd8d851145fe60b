use super::*;

const EXAMPLE: &str = include_str!("../../../../docs/mesh-policy.example.toml");

#[test]
fn the_documented_example_is_valid() {
    let policy = MeshPolicy::parse(EXAMPLE, []).expect("the example in docs/ parses");
    let payment = policy
        .downstream_settings("payment", "http://127.0.0.1:50053")
        .expect("payment");
    assert_eq!(payment.breaker.name, "payment");
    assert!(policy.flags().contains_key("fault_injection"));
    // The example writes every key with its default (but for what it marks
    // as an example): it cannot drift from the binary's defaults.
    let documented = &policy.downstream["payment"];
    let defaults = DownstreamSection::default();
    assert_eq!(documented.breaker, defaults.breaker);
    assert_eq!(documented.ejection, defaults.ejection);
    assert_eq!(
        RetrySection {
            methods: BTreeMap::new(),
            ..documented.retry.clone()
        },
        defaults.retry
    );
    assert_eq!(
        (documented.dns_refresh_ms, documented.connect_timeout_ms),
        (defaults.dns_refresh_ms, defaults.connect_timeout_ms)
    );
    assert_eq!(policy.defaults, DefaultsSection::default());
    assert_eq!(policy.server, ServerSection::default());
}

#[test]
fn no_file_gives_defaults() {
    let policy = MeshPolicy::parse("", []).expect("defaults");
    let s = policy
        .downstream_settings("inventory", "http://127.0.0.1:50052")
        .expect("defaults");
    assert_eq!(
        s.balancer.source,
        EndpointSource::Static(vec!["http://127.0.0.1:50052".into()])
    );
    assert_eq!(s.retry.default.max_attempts, 3);
}

#[test]
fn invalid_values_name_their_key() {
    let cases = [
        (
            "[downstream.payment.breaker]\nfailure_rate_threshold = 1.5",
            "downstream.payment.breaker.failure_rate_threshold",
        ),
        (
            "[downstream.payment.retry]\nmax_attempts = 9",
            "downstream.payment.retry.max_attempts",
        ),
        (
            "[downstream.payment.retry]\nretryable_codes = [\"NOPE\"]",
            "downstream.payment.retry.retryable_codes",
        ),
        (
            "[downstream.payment.breaker]\nwindow = \"sliding\"",
            "downstream.payment.breaker.window",
        ),
        (
            "[[downstream.payment.faults]]\nabort_percent = 120.0",
            "downstream.payment.faults[0].abort_percent",
        ),
        (
            "[flags.x]\nenabled = true\nrollout_percent = 101.0",
            "flags.x.rollout_percent",
        ),
    ];
    for (text, key) in cases {
        let err = MeshPolicy::parse(text, []).expect_err(text).to_string();
        assert!(err.contains(key), "{text:?} -> {err}");
    }
    let err = MeshPolicy::parse("[downstream.payment.breaker]\nfailure_rate = 0.5", [])
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("failure_rate"), "{err}");
}

#[test]
fn environment_overrides_win_and_are_validated() {
    let env = [(
        "ORDERMESH_MESH__DOWNSTREAM__PAYMENT__RETRY__MAX_ATTEMPTS".to_string(),
        "4".to_string(),
    )];
    let policy = MeshPolicy::parse("[downstream.payment.retry]\nmax_attempts = 2", env).expect("override");
    let s = policy
        .downstream_settings("payment", "http://x:1")
        .expect("payment");
    assert_eq!(s.retry.default.max_attempts, 4);
    let env = [(
        "ORDERMESH_MESH__DOWNSTREAM__PAYMENT__RETRY__MAX_ATTEMPTS".to_string(),
        "0".to_string(),
    )];
    let err = MeshPolicy::parse("", env).expect_err("0 attempts").to_string();
    assert!(err.contains("downstream.payment.retry.max_attempts"), "{err}");
}
