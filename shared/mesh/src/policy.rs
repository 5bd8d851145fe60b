//! The mesh policy file (TOML) and its environment overrides: one place for
//! every downstream's breaker, retry, ejection and fault settings, the server
//! limits, and the feature flags. Invalid policy is refused at start with a
//! message that names the key.
//!
//! Environment overrides use the key path with `__` between parts, after
//! the prefix `ORDERMESH_MESH__`, e.g.
//! `ORDERMESH_MESH__DOWNSTREAM__PAYMENT__RETRY__MAX_ATTEMPTS=4`; the value is
//! read as TOML (`4`, `true`, `["UNAVAILABLE"]`), else as a string.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tonic::Code;

use crate::balance::{BalancerConfig, EjectionPolicy, EndpointSource};
use crate::breaker::{BreakerConfig, Window};
use crate::classify::{Classifier, code_name, parse_code};
use crate::deadline::DeadlineConfig;
use crate::fault::FaultRule;
use crate::flags::Flag;
use crate::retry::{RetryPolicies, RetryPolicy};

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "ORDERMESH_MESH__";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("invalid policy: {0}")]
    Parse(String),
    #[error("invalid policy key `{key}`: {reason}")]
    Key { key: String, reason: String },
}

fn key_error(key: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError::Key {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole policy, as written in the file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MeshPolicy {
    #[serde(default)]
    pub defaults: DefaultsSection,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub downstream: BTreeMap<String, DownstreamSection>,
    #[serde(default)]
    pub flags: BTreeMap<String, FlagSection>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultsSection {
    /// Timeout of an outgoing call with no deadline of its own or inherited.
    pub timeout_ms: u64,
    /// Kept back from an inherited deadline for the caller's own answer.
    pub deadline_margin_ms: u64,
}

impl Default for DefaultsSection {
    /// The deadline layer's own defaults ([`DeadlineConfig::default`]).
    fn default() -> Self {
        let d = DeadlineConfig::default();
        Self {
            timeout_ms: as_ms(d.default_timeout),
            deadline_margin_ms: as_ms(d.margin),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Calls served at once; more are shed with RESOURCE_EXHAUSTED.
    pub concurrency_limit: usize,
    /// Largest accepted request message.
    pub max_request_bytes: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            concurrency_limit: 256,
            max_request_bytes: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DownstreamSection {
    /// Static endpoints (`http://host:port`); when empty and no `dns`, the
    /// address given on the command line is used.
    pub endpoints: Vec<String>,
    /// `host:port` resolved every `dns_refresh_ms` (a headless Service).
    pub dns: Option<String>,
    pub dns_refresh_ms: u64,
    pub connect_timeout_ms: u64,
    /// Status codes that count as server faults.
    pub fault_codes: Vec<String>,
    pub breaker: BreakerSection,
    pub retry: RetrySection,
    pub ejection: EjectionSection,
    pub faults: Vec<FaultSection>,
}

impl Default for DownstreamSection {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            dns: None,
            dns_refresh_ms: 5000,
            connect_timeout_ms: 2000,
            fault_codes: Classifier::default()
                .codes()
                .iter()
                .map(|c| code_name(*c).to_owned())
                .collect(),
            breaker: BreakerSection::default(),
            retry: RetrySection::default(),
            ejection: EjectionSection::default(),
            faults: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// `count` (the last `window_size` calls) or `time` (`window_seconds`).
    pub window: String,
    pub window_size: u32,
    pub window_seconds: u64,
    pub failure_rate_threshold: f64,
    pub slow_call_rate_threshold: f64,
    pub slow_call_ms: u64,
    pub minimum_calls: u32,
    /// Distinct callers whose failures it takes to open (1 to 8).
    pub minimum_callers: u32,
    /// A timeout counts as a fault only when the call had this long.
    pub deadline_fault_after_ms: u64,
    pub wait_in_open_ms: u64,
    pub permitted_in_half_open: u32,
}

impl Default for BreakerSection {
    /// The breaker's own defaults ([`BreakerConfig::default`]), as the file
    /// writes them.
    fn default() -> Self {
        let d = BreakerConfig::default();
        let (window, window_size, window_seconds) = match d.window {
            Window::Count(size) => ("count", size, 30),
            Window::Time(span) => ("time", 20, span.as_secs()),
        };
        Self {
            window: window.into(),
            window_size,
            window_seconds,
            failure_rate_threshold: d.failure_rate_threshold,
            slow_call_rate_threshold: d.slow_call_rate_threshold,
            slow_call_ms: as_ms(d.slow_call_duration),
            minimum_calls: d.minimum_calls,
            minimum_callers: d.minimum_callers,
            deadline_fault_after_ms: as_ms(d.deadline_fault_after),
            wait_in_open_ms: as_ms(d.wait_in_open),
            permitted_in_half_open: d.permitted_in_half_open,
        }
    }
}

fn as_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub backoff_multiplier: f64,
    pub retryable_codes: Vec<String>,
    pub budget_max_tokens: f64,
    pub budget_token_ratio: f64,
    /// Per-method overrides of the attempt and back-off settings.
    pub methods: BTreeMap<String, MethodRetrySection>,
}

impl Default for RetrySection {
    /// The retry layer's own defaults ([`RetryPolicy::default`] and
    /// [`RetryBudget`]'s).
    fn default() -> Self {
        let d = RetryPolicy::default();
        Self {
            max_attempts: d.max_attempts,
            initial_backoff_ms: as_ms(d.initial_backoff),
            max_backoff_ms: as_ms(d.max_backoff),
            backoff_multiplier: d.backoff_multiplier,
            retryable_codes: d
                .retryable_codes
                .iter()
                .map(|c| code_name(*c).to_owned())
                .collect(),
            budget_max_tokens: crate::retry::DEFAULT_BUDGET_MAX_TOKENS,
            budget_token_ratio: crate::retry::DEFAULT_BUDGET_TOKEN_RATIO,
            methods: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MethodRetrySection {
    pub max_attempts: Option<u32>,
    pub initial_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub retryable_codes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EjectionSection {
    /// 0 turns ejection off.
    pub consecutive_failures: u32,
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
    pub max_ejected_percent: u8,
}

impl Default for EjectionSection {
    /// Outlier ejection's own defaults ([`EjectionPolicy::default`]).
    fn default() -> Self {
        let d = EjectionPolicy::default();
        Self {
            consecutive_failures: d.consecutive_failures,
            base_ejection_ms: as_ms(d.base_ejection),
            max_ejection_ms: as_ms(d.max_ejection),
            max_ejected_percent: d.max_ejected_percent,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FaultSection {
    pub method: Option<String>,
    pub delay_percent: f64,
    pub delay_ms: u64,
    pub abort_percent: f64,
    pub abort_code: String,
}

impl Default for FaultSection {
    fn default() -> Self {
        Self {
            method: None,
            delay_percent: 0.0,
            delay_ms: 0,
            abort_percent: 0.0,
            abort_code: "UNAVAILABLE".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlagSection {
    pub enabled: bool,
    #[serde(default = "hundred")]
    pub rollout_percent: f64,
    #[serde(default)]
    pub description: String,
}

fn hundred() -> f64 {
    100.0
}

/// One downstream's settings, checked and converted for the layers.
#[derive(Debug, Clone)]
pub struct DownstreamSettings {
    pub classifier: Classifier,
    pub breaker: BreakerConfig,
    pub retry: RetryPolicies,
    pub budget_max_tokens: f64,
    pub budget_token_ratio: f64,
    pub deadline: DeadlineConfig,
    pub balancer: BalancerConfig,
    pub faults: Vec<FaultRule>,
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

fn codes(key: &str, names: &[String]) -> Result<Vec<Code>, PolicyError> {
    names
        .iter()
        .map(|name| {
            parse_code(name).ok_or_else(|| key_error(key, format!("{name:?} is not a gRPC status code name")))
        })
        .collect()
}

fn rate(key: &str, value: f64) -> Result<f64, PolicyError> {
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(key_error(key, "must be in (0, 1]"))
    }
}

pub(crate) fn percent(key: &str, value: f64) -> Result<f64, PolicyError> {
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(key_error(key, "must be between 0 and 100"))
    }
}

fn attempts(key: &str, value: u32) -> Result<u32, PolicyError> {
    // gRFC A6 caps attempts at 5: more only multiplies load on an outage.
    if (1..=5).contains(&value) {
        Ok(value)
    } else {
        Err(key_error(key, "must be between 1 and 5"))
    }
}

fn positive(key: &str, value: u64) -> Result<u64, PolicyError> {
    if value > 0 {
        Ok(value)
    } else {
        Err(key_error(key, "must be greater than 0"))
    }
}

impl FaultSection {
    pub fn to_rule(&self, key: &str) -> Result<FaultRule, PolicyError> {
        Ok(FaultRule {
            method: self.method.clone().filter(|m| !m.is_empty()),
            delay_percent: percent(&format!("{key}.delay_percent"), self.delay_percent)?,
            delay: ms(self.delay_ms),
            abort_percent: percent(&format!("{key}.abort_percent"), self.abort_percent)?,
            abort_code: parse_code(&self.abort_code)
                .filter(|c| *c != Code::Ok)
                .ok_or_else(|| {
                    key_error(
                        format!("{key}.abort_code"),
                        format!("{:?} is not an error code name", self.abort_code),
                    )
                })?,
        })
    }
}

impl MeshPolicy {
    /// Reads the file (if any), applies `ORDERMESH_MESH__*` overrides from
    /// `env`, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<MeshPolicy, PolicyError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?,
            None => String::new(),
        };
        Self::parse(&text, env)
    }

    /// Parses policy text with overrides, and validates.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<MeshPolicy, PolicyError> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        for (name, raw) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(raw.clone()));
            set_path(&mut value, &parts, parsed).map_err(|reason| key_error(parts.join("."), reason))?;
        }
        let policy: MeshPolicy = toml::Value::Table(value)
            .try_into()
            .map_err(|e: toml::de::Error| PolicyError::Parse(e.to_string()))?;
        for name in policy.downstream.keys() {
            policy.downstream_settings(name, "http://127.0.0.1:1")?;
        }
        for (name, flag) in &policy.flags {
            percent(&format!("flags.{name}.rollout_percent"), flag.rollout_percent)?;
        }
        if policy.server.concurrency_limit == 0 {
            return Err(key_error("server.concurrency_limit", "must be greater than 0"));
        }
        Ok(policy)
    }

    /// The flags defined by the policy.
    pub fn flags(&self) -> BTreeMap<String, Flag> {
        self.flags
            .iter()
            .map(|(name, f)| {
                (
                    name.clone(),
                    Flag {
                        enabled: f.enabled,
                        rollout_percent: f.rollout_percent,
                        description: f.description.clone(),
                    },
                )
            })
            .collect()
    }

    /// The settings for downstream `name`, whose address defaults to
    /// `default_url` when the policy names no endpoints.
    pub fn downstream_settings(
        &self,
        name: &str,
        default_url: &str,
    ) -> Result<DownstreamSettings, PolicyError> {
        let d = self.downstream.get(name).cloned().unwrap_or_default();
        let key = |k: &str| format!("downstream.{name}.{k}");
        let b = &d.breaker;
        let window = match b.window.as_str() {
            "count" => Window::Count(
                u32::try_from(positive(&key("breaker.window_size"), u64::from(b.window_size))?)
                    .unwrap_or(u32::MAX),
            ),
            "time" => Window::Time(Duration::from_secs(positive(
                &key("breaker.window_seconds"),
                b.window_seconds,
            )?)),
            other => {
                return Err(key_error(
                    key("breaker.window"),
                    format!("{other:?} is neither \"count\" nor \"time\""),
                ));
            }
        };
        let breaker = BreakerConfig {
            name: name.to_owned(),
            window,
            failure_rate_threshold: rate(&key("breaker.failure_rate_threshold"), b.failure_rate_threshold)?,
            slow_call_rate_threshold: rate(
                &key("breaker.slow_call_rate_threshold"),
                b.slow_call_rate_threshold,
            )?,
            slow_call_duration: ms(positive(&key("breaker.slow_call_ms"), b.slow_call_ms)?),
            minimum_calls: u32::try_from(positive(
                &key("breaker.minimum_calls"),
                u64::from(b.minimum_calls),
            )?)
            .unwrap_or(1),
            minimum_callers: match b.minimum_callers {
                n @ 1..=crate::breaker::MAX_MINIMUM_CALLERS => n,
                _ => {
                    return Err(key_error(
                        key("breaker.minimum_callers"),
                        format!("must be between 1 and {}", crate::breaker::MAX_MINIMUM_CALLERS),
                    ));
                }
            },
            deadline_fault_after: ms(b.deadline_fault_after_ms),
            wait_in_open: ms(positive(&key("breaker.wait_in_open_ms"), b.wait_in_open_ms)?),
            permitted_in_half_open: u32::try_from(positive(
                &key("breaker.permitted_in_half_open"),
                u64::from(b.permitted_in_half_open),
            )?)
            .unwrap_or(1),
        };
        let r = &d.retry;
        if r.backoff_multiplier < 1.0 {
            return Err(key_error(key("retry.backoff_multiplier"), "must be at least 1"));
        }
        if r.budget_max_tokens < 1.0 || r.budget_token_ratio <= 0.0 {
            return Err(key_error(
                key("retry.budget_max_tokens"),
                "needs budget_max_tokens >= 1 and budget_token_ratio > 0",
            ));
        }
        let default = RetryPolicy {
            max_attempts: attempts(&key("retry.max_attempts"), r.max_attempts)?,
            initial_backoff: ms(r.initial_backoff_ms),
            max_backoff: ms(r.max_backoff_ms),
            backoff_multiplier: r.backoff_multiplier,
            retryable_codes: codes(&key("retry.retryable_codes"), &r.retryable_codes)?,
        };
        let mut methods = BTreeMap::new();
        for (method, m) in &r.methods {
            let mkey = |k: &str| key(&format!("retry.methods.{method}.{k}"));
            methods.insert(
                method.clone(),
                RetryPolicy {
                    max_attempts: attempts(
                        &mkey("max_attempts"),
                        m.max_attempts.unwrap_or(default.max_attempts),
                    )?,
                    initial_backoff: m.initial_backoff_ms.map(ms).unwrap_or(default.initial_backoff),
                    max_backoff: m.max_backoff_ms.map(ms).unwrap_or(default.max_backoff),
                    backoff_multiplier: default.backoff_multiplier,
                    retryable_codes: match &m.retryable_codes {
                        Some(names) => codes(&mkey("retryable_codes"), names)?,
                        None => default.retryable_codes.clone(),
                    },
                },
            );
        }
        let source = match (&d.dns, d.endpoints.is_empty()) {
            (Some(_), false) => return Err(key_error(key("dns"), "set either dns or endpoints, not both")),
            (Some(dns), true) => {
                let (host, port) = dns
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                    .ok_or_else(|| key_error(key("dns"), "must be host:port"))?;
                EndpointSource::Dns {
                    host,
                    port,
                    refresh: ms(positive(&key("dns_refresh_ms"), d.dns_refresh_ms)?),
                }
            }
            (None, true) => EndpointSource::Static(vec![default_url.to_owned()]),
            (None, false) => EndpointSource::Static(d.endpoints.clone()),
        };
        let e = &d.ejection;
        if e.max_ejected_percent > 100 {
            return Err(key_error(
                key("ejection.max_ejected_percent"),
                "must be between 0 and 100",
            ));
        }
        let faults = d
            .faults
            .iter()
            .enumerate()
            .map(|(i, f)| f.to_rule(&key(&format!("faults[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DownstreamSettings {
            classifier: Classifier::new(codes(&key("fault_codes"), &d.fault_codes)?),
            breaker,
            retry: RetryPolicies { default, methods },
            budget_max_tokens: r.budget_max_tokens,
            budget_token_ratio: r.budget_token_ratio,
            deadline: DeadlineConfig {
                default_timeout: ms(positive("defaults.timeout_ms", self.defaults.timeout_ms)?),
                margin: ms(self.defaults.deadline_margin_ms),
            },
            balancer: BalancerConfig {
                source,
                ejection: EjectionPolicy {
                    consecutive_failures: e.consecutive_failures,
                    base_ejection: ms(e.base_ejection_ms),
                    max_ejection: ms(e.max_ejection_ms),
                    max_ejected_percent: e.max_ejected_percent,
                },
                connect_timeout: ms(positive(&key("connect_timeout_ms"), d.connect_timeout_ms)?),
            },
            faults,
        })
    }
}

fn set_path(table: &mut toml::Table, parts: &[String], value: toml::Value) -> Result<(), String> {
    match parts {
        [] => Err("empty key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set_path(inner, rest, value),
                _ => Err(format!("`{first}` is not a section")),
            }
        }
    }
}

#[cfg(test)]
mod tests;
