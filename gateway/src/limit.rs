//! Per-principal rate limits at the edge: one GCRA token bucket per (limit, key).
//!
//! Why it is built this way:
//!
//! - **Keyed by who, not by connection.** The key is the authenticated principal's subject, or
//!   `ip:<addr>` for anonymous callers (the caller decides). A client that opens many connections
//!   or spreads calls over several gateway-facing channels still draws from one bucket, and one
//!   noisy tenant cannot starve the others.
//! - **`governor` (GCRA) rather than a hand-rolled counter.** GCRA keeps one timestamp per key
//!   (no background refill task, no per-key timer), updates it with a single compare-and-swap,
//!   and tells us exactly when the next call would conform, which becomes `Retry-After`.
//! - **One limiter per routed limit, plus one for the default.** A route with its own entry gets
//!   its own keyed limiter, so traffic on it never consumes the default budget and vice versa.
//!   Every route *without* an entry shares the single default limiter: the default is a
//!   per-principal budget across all those routes (a client cannot multiply its allowance by
//!   spreading calls over many methods). No default means those routes are unlimited.
//! - **Exact wait, rounding left to the caller.** [`RateLimits::check`] returns the exact
//!   [`Duration`] until the next call would be allowed; HTTP wants whole seconds
//!   (`Retry-After`), gRPC metadata may want milliseconds, so rounding belongs to the transport.
//! - **Bounded memory.** Keys include client addresses, so the key space is attacker-controlled.
//!   [`RateLimits::sweep`] drops every key whose bucket is full again (indistinguishable from a
//!   fresh key, so forgetting it changes no decision) and shrinks the maps; call it periodically.
//! - **Validated limits.** A zero rate or zero burst cannot be expressed as a quota (and would
//!   silently mean "block everything"); deserialising a [`RateLimit`] rejects it, and
//!   [`RateLimits::try_new`] reports it instead of guessing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// A token-bucket limit: `per_second` calls refill per second, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "RawRateLimit")]
pub struct RateLimit {
    /// Sustained rate: tokens added per second (> 0).
    pub per_second: u32,
    /// Bucket size: how many calls may arrive at once (> 0).
    pub burst: u32,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per_second: u32,
    burst: u32,
}

impl TryFrom<RawRateLimit> for RateLimit {
    type Error = InvalidRateLimit;

    fn try_from(raw: RawRateLimit) -> Result<Self, Self::Error> {
        RateLimit::new(raw.per_second, raw.burst)
    }
}

/// A limit with a zero rate or burst.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRateLimit {
    #[error("rate limit `per_second` must be greater than 0")]
    ZeroRate,
    #[error("rate limit `burst` must be greater than 0")]
    ZeroBurst,
    #[error("rate limit for route `{route}`: {source}")]
    Route {
        route: String,
        #[source]
        source: Box<InvalidRateLimit>,
    },
}

impl RateLimit {
    /// A validated limit: both values must be greater than zero.
    pub fn new(per_second: u32, burst: u32) -> Result<Self, InvalidRateLimit> {
        let limit = Self { per_second, burst };
        limit.validate()?;
        Ok(limit)
    }

    /// Checks both values are greater than zero.
    pub fn validate(&self) -> Result<(), InvalidRateLimit> {
        self.quota().map(|_| ())
    }

    fn quota(&self) -> Result<Quota, InvalidRateLimit> {
        let rate = NonZeroU32::new(self.per_second).ok_or(InvalidRateLimit::ZeroRate)?;
        let burst = NonZeroU32::new(self.burst).ok_or(InvalidRateLimit::ZeroBurst)?;
        Ok(Quota::per_second(rate).allow_burst(burst))
    }
}

type KeyedLimiter<C> =
    RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

struct Inner<C: Clock> {
    clock: C,
    default: Option<KeyedLimiter<C>>,
    routes: HashMap<String, KeyedLimiter<C>>,
}

/// The gateway's rate limits: a default plus per-route overrides, each keyed by principal.
///
/// Cheap to clone (an `Arc` inside); all clones share the same buckets.
pub struct RateLimits<C: Clock = DefaultClock> {
    inner: Arc<Inner<C>>,
}

impl<C: Clock> Clone for RateLimits<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Clock> std::fmt::Debug for RateLimits<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut routes: Vec<&String> = self.inner.routes.keys().collect();
        routes.sort();
        f.debug_struct("RateLimits")
            .field("default", &self.inner.default.is_some())
            .field("routes", &routes)
            .finish()
    }
}

impl RateLimits<DefaultClock> {
    /// `default` applies to every route without its own entry (one per-principal bucket shared by
    /// all of them); `None` leaves those routes unlimited. `routes` keys are route ids (the full
    /// gRPC method path, e.g. `/ordermesh.order.v1.OrderService/CreateOrder`).
    ///
    /// # Panics
    /// If a limit has a zero rate or burst. Limits deserialised from configuration are already
    /// validated; use [`RateLimits::try_new`] for limits from anywhere else.
    pub fn new(default: Option<RateLimit>, routes: impl IntoIterator<Item = (String, RateLimit)>) -> Self {
        match Self::try_new(default, routes) {
            Ok(limits) => limits,
            Err(err) => panic!("invalid rate limit: {err}"),
        }
    }

    /// Like [`RateLimits::new`], reporting a zero rate or burst instead of panicking.
    pub fn try_new(
        default: Option<RateLimit>,
        routes: impl IntoIterator<Item = (String, RateLimit)>,
    ) -> Result<Self, InvalidRateLimit> {
        Self::with_clock(default, routes, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    /// Like [`RateLimits::try_new`] with an explicit clock (tests use
    /// [`governor::clock::FakeRelativeClock`]).
    pub fn with_clock(
        default: Option<RateLimit>,
        routes: impl IntoIterator<Item = (String, RateLimit)>,
        clock: C,
    ) -> Result<Self, InvalidRateLimit> {
        let default = match default {
            Some(limit) => Some(RateLimiter::dashmap_with_clock(limit.quota()?, clock.clone())),
            None => None,
        };
        let mut map = HashMap::new();
        for (route, limit) in routes {
            let quota = limit.quota().map_err(|source| InvalidRateLimit::Route {
                route: route.clone(),
                source: Box::new(source),
            })?;
            map.insert(route, RateLimiter::dashmap_with_clock(quota, clock.clone()));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                clock,
                default,
                routes: map,
            }),
        })
    }

    /// Takes one token from `key`'s bucket for `route` (the route's own limit, else the default).
    ///
    /// `key` is the principal's subject, or `ip:<addr>` when anonymous. `Err(retry_after)` when
    /// over the limit: the exact time until a call would be allowed, never zero (at least 1 ns, so
    /// rounding it up to whole seconds always yields a positive `Retry-After`). A refused call
    /// consumes nothing.
    pub fn check(&self, route: &str, key: &str) -> Result<(), Duration> {
        let limiter = match self.inner.routes.get(route) {
            Some(limiter) => limiter,
            None => match &self.inner.default {
                Some(limiter) => limiter,
                None => return Ok(()),
            },
        };
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            not_until
                .wait_time_from(self.inner.clock.now())
                .max(Duration::from_nanos(1))
        })
    }

    /// Drops keys whose buckets are full again (they would behave exactly like new keys) and
    /// releases the freed capacity. Call periodically to bound memory.
    pub fn sweep(&self) {
        for limiter in self.limiters() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many (limit, key) buckets are currently tracked, across all limiters.
    pub fn tracked_keys(&self) -> usize {
        self.limiters().map(|limiter| limiter.len()).sum()
    }

    fn limiters(&self) -> impl Iterator<Item = &KeyedLimiter<C>> {
        self.inner.default.iter().chain(self.inner.routes.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    const CREATE: &str = "/ordermesh.order.v1.OrderService/CreateOrder";
    const GET: &str = "/ordermesh.order.v1.OrderService/GetOrder";
    const LIST: &str = "/ordermesh.order.v1.OrderService/ListOrders";

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit::new(per_second, burst).expect("valid limit")
    }

    fn fake(
        default: Option<RateLimit>,
        routes: Vec<(&str, RateLimit)>,
    ) -> (RateLimits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(
            default,
            routes.into_iter().map(|(r, l)| (r.to_owned(), l)),
            clock.clone(),
        )
        .expect("valid limits");
        (limits, clock)
    }

    #[test]
    fn burst_within_limit_passes() {
        let (limits, _clock) = fake(Some(limit(1, 5)), vec![]);
        for i in 0..5 {
            assert_eq!(limits.check(GET, "alice"), Ok(()), "call {i} within the burst");
        }
    }

    #[test]
    fn burst_above_limit_is_refused_with_positive_retry_after() {
        let (limits, _clock) = fake(Some(limit(2, 3)), vec![]);
        for _ in 0..3 {
            assert_eq!(limits.check(GET, "alice"), Ok(()));
        }
        let retry = limits
            .check(GET, "alice")
            .expect_err("fourth call is over the burst");
        // 2 per second: one token every 500 ms, and the clock has not moved.
        assert_eq!(retry, Duration::from_millis(500));
        // Refused calls consume nothing: the wait does not grow.
        assert_eq!(limits.check(GET, "alice"), Err(Duration::from_millis(500)));
    }

    #[test]
    fn retry_after_is_exact_and_shrinks_as_time_passes() {
        let (limits, clock) = fake(Some(limit(1, 1)), vec![]);
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert_eq!(limits.check(GET, "alice"), Err(Duration::from_secs(1)));
        clock.advance(Duration::from_millis(300));
        assert_eq!(limits.check(GET, "alice"), Err(Duration::from_millis(700)));
    }

    #[test]
    fn another_key_is_unaffected() {
        let (limits, _clock) = fake(Some(limit(1, 2)), vec![]);
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert!(limits.check(GET, "alice").is_err());
        assert_eq!(limits.check(GET, "bob"), Ok(()));
        assert_eq!(limits.check(GET, "ip:10.0.0.1"), Ok(()));
        assert_eq!(limits.check(GET, "bob"), Ok(()));
        assert!(limits.check(GET, "bob").is_err());
        assert!(limits.check(GET, "alice").is_err());
    }

    #[test]
    fn route_with_its_own_limit_does_not_consume_the_default_bucket() {
        let (limits, _clock) = fake(Some(limit(1, 2)), vec![(CREATE, limit(1, 1))]);
        // Exhaust the route's own bucket.
        assert_eq!(limits.check(CREATE, "alice"), Ok(()));
        assert!(limits.check(CREATE, "alice").is_err());
        // The default bucket is still full for the same principal.
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert!(limits.check(GET, "alice").is_err());
    }

    #[test]
    fn default_bucket_does_not_consume_a_routes_own_bucket() {
        let (limits, _clock) = fake(Some(limit(1, 1)), vec![(CREATE, limit(1, 2))]);
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert!(limits.check(GET, "alice").is_err());
        assert_eq!(limits.check(CREATE, "alice"), Ok(()));
        assert_eq!(limits.check(CREATE, "alice"), Ok(()));
        assert!(limits.check(CREATE, "alice").is_err());
    }

    #[test]
    fn routes_without_their_own_entry_share_the_principals_default_bucket() {
        let (limits, _clock) = fake(Some(limit(1, 2)), vec![]);
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert_eq!(limits.check(LIST, "alice"), Ok(()));
        assert!(limits.check(GET, "alice").is_err());
        assert!(limits.check(LIST, "alice").is_err());
    }

    #[test]
    fn unlimited_without_a_default() {
        let (limits, _clock) = fake(None, vec![(CREATE, limit(1, 1))]);
        for _ in 0..10_000 {
            assert_eq!(limits.check(GET, "alice"), Ok(()));
        }
        // Unlimited routes track no state at all.
        assert_eq!(limits.tracked_keys(), 0);
        // ...while a route with its own entry is still limited.
        assert_eq!(limits.check(CREATE, "alice"), Ok(()));
        assert!(limits.check(CREATE, "alice").is_err());
    }

    #[test]
    fn refills_after_waiting() {
        let (limits, clock) = fake(Some(limit(10, 2)), vec![]);
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        let retry = limits.check(GET, "alice").expect_err("empty bucket");
        assert_eq!(retry, Duration::from_millis(100));
        clock.advance(retry);
        assert_eq!(
            limits.check(GET, "alice"),
            Ok(()),
            "one token back after the wait"
        );
        assert!(limits.check(GET, "alice").is_err(), "only one token came back");
        clock.advance(Duration::from_secs(10));
        // A long wait refills only up to the burst, never beyond.
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert!(limits.check(GET, "alice").is_err());
    }

    #[test]
    fn refills_with_the_real_clock() {
        // 2 per second: a token every 500 ms, so the second check (right after
        // the first) finds the bucket empty even on a loaded machine; then
        // waiting out the reported delay is enough.
        let limits = RateLimits::new(Some(limit(2, 1)), Vec::new());
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        let retry = limits.check(GET, "alice").expect_err("empty bucket");
        assert!(retry > Duration::ZERO && retry <= Duration::from_millis(500));
        std::thread::sleep(retry + Duration::from_millis(100));
        assert_eq!(limits.check(GET, "alice"), Ok(()));
    }

    #[test]
    fn clones_share_buckets() {
        let (limits, _clock) = fake(Some(limit(1, 1)), vec![]);
        let other = limits.clone();
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert!(other.check(GET, "alice").is_err());
    }

    #[test]
    fn sweep_drops_only_idle_keys() {
        let (limits, clock) = fake(Some(limit(1, 2)), vec![(CREATE, limit(1, 1))]);
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert_eq!(limits.check(CREATE, "bob"), Ok(()));
        assert_eq!(limits.tracked_keys(), 2);
        // Buckets still refilling: nothing can be dropped without changing decisions.
        limits.sweep();
        assert_eq!(limits.tracked_keys(), 2);
        clock.advance(Duration::from_secs(5));
        assert_eq!(limits.check(GET, "carol"), Ok(()));
        limits.sweep();
        assert_eq!(limits.tracked_keys(), 1, "only carol's fresh bucket remains");
        // A swept key starts again with a full bucket.
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert_eq!(limits.check(GET, "alice"), Ok(()));
        assert!(limits.check(GET, "alice").is_err());
    }

    #[test]
    fn zero_values_are_rejected() {
        assert_eq!(RateLimit::new(0, 1), Err(InvalidRateLimit::ZeroRate));
        assert_eq!(RateLimit::new(1, 0), Err(InvalidRateLimit::ZeroBurst));
        assert!(
            RateLimits::try_new(
                Some(RateLimit {
                    per_second: 0,
                    burst: 1
                }),
                Vec::new()
            )
            .is_err()
        );
        let err = RateLimits::try_new(
            None,
            vec![(
                CREATE.to_owned(),
                RateLimit {
                    per_second: 1,
                    burst: 0,
                },
            )],
        )
        .expect_err("zero burst on a route");
        assert!(err.to_string().contains(CREATE), "{err}");
        assert!(err.to_string().contains("burst"), "{err}");
    }

    #[test]
    #[should_panic(expected = "invalid rate limit")]
    fn new_panics_on_a_zero_limit() {
        let _ = RateLimits::new(
            Some(RateLimit {
                per_second: 1,
                burst: 0,
            }),
            Vec::new(),
        );
    }

    #[test]
    fn deserialises_and_validates() {
        let ok: RateLimit = toml::from_str("per_second = 5\nburst = 10").expect("valid");
        assert_eq!(ok, limit(5, 10));
        let zero = toml::from_str::<RateLimit>("per_second = 0\nburst = 10").expect_err("zero rate");
        assert!(zero.to_string().contains("per_second"), "{zero}");
        assert!(
            toml::from_str::<RateLimit>("per_second = 5").is_err(),
            "burst is required"
        );
        assert!(
            toml::from_str::<RateLimit>("per_second = 5\nburst = 1\nbrust = 2").is_err(),
            "typos are not silently ignored"
        );
        assert!(toml::from_str::<RateLimit>("per_second = -1\nburst = 1").is_err());
    }
}
