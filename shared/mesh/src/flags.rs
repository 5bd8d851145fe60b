//! Feature flags, evaluated locally: a boolean switch plus an optional
//! percentage rollout that is sticky per key (a customer id keeps its answer
//! as long as the percentage does not drop below its bucket). Flags come
//! from the policy file, change at runtime through the admin RPC, and are
//! reloaded with the policy file without a restart.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// One flag's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    pub enabled: bool,
    /// Share (0..=100) of keys for which an enabled flag is on; 100 = all.
    pub rollout_percent: f64,
    pub description: String,
}

impl Flag {
    pub fn on(description: &str) -> Self {
        Self {
            enabled: true,
            rollout_percent: 100.0,
            description: description.into(),
        }
    }
}

/// The process's flags, shared by every layer and service that reads them.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    flags: Arc<RwLock<BTreeMap<String, Flag>>>,
    /// Flags the code defines with a default value; the policy file
    /// overrides them, and a reload without them restores the defaults.
    defaults: Arc<RwLock<BTreeMap<String, Flag>>>,
}

/// A key's fixed bucket in 0..10000 for a flag (FNV-1a: stable across
/// processes and releases, unlike std's randomly seeded hasher).
pub fn bucket(flag: &str, key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in flag.bytes().chain([b':']).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % 10_000
}

impl Flags {
    pub fn new(flags: BTreeMap<String, Flag>) -> Self {
        Self {
            flags: Arc::new(RwLock::new(flags)),
            defaults: Arc::default(),
        }
    }

    /// Declares a flag the code reads, with its default; a value already
    /// set (by the policy) wins.
    pub fn define(&self, name: &str, default: Flag) {
        self.defaults
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), default.clone());
        self.flags
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_insert(default);
    }

    /// Whether `name` is on, for `key` when the flag rolls out by key. An
    /// unknown flag is off; without a key only the switch counts.
    pub fn is_enabled(&self, name: &str, key: Option<&str>) -> bool {
        let flags = self.flags.read().unwrap_or_else(|p| p.into_inner());
        let Some(flag) = flags.get(name) else {
            return false;
        };
        if !flag.enabled {
            return false;
        }
        match key {
            Some(key) if flag.rollout_percent < 100.0 => {
                (bucket(name, key) as f64) < flag.rollout_percent * 100.0
            }
            _ => true,
        }
    }

    /// Sets (or creates) one flag.
    pub fn set(&self, name: &str, flag: Flag) {
        self.flags
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), flag);
    }

    /// Replaces every flag (a policy reload); defined flags the policy does
    /// not mention return to their defaults.
    pub fn replace(&self, flags: BTreeMap<String, Flag>) {
        let mut all = self.defaults.read().unwrap_or_else(|p| p.into_inner()).clone();
        all.extend(flags);
        *self.flags.write().unwrap_or_else(|p| p.into_inner()) = all;
    }

    pub fn snapshot(&self) -> BTreeMap<String, Flag> {
        self.flags.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_disabled_flags_are_off() {
        let flags = Flags::default();
        assert!(!flags.is_enabled("nope", None));
        flags.set(
            "f",
            Flag {
                enabled: false,
                rollout_percent: 100.0,
                description: String::new(),
            },
        );
        assert!(!flags.is_enabled("f", Some("alice")));
        flags.set("f", Flag::on(""));
        assert!(flags.is_enabled("f", Some("alice")));
        assert!(flags.is_enabled("f", None));
    }

    #[test]
    fn defined_defaults_yield_to_the_policy_and_come_back_on_reload() {
        let mut policy = BTreeMap::new();
        policy.insert(
            "f".to_string(),
            Flag {
                enabled: false,
                rollout_percent: 100.0,
                description: String::new(),
            },
        );
        let flags = Flags::new(policy.clone());
        flags.define("f", Flag::on("default on"));
        flags.define("g", Flag::on("default on"));
        assert!(!flags.is_enabled("f", None), "the policy wins");
        assert!(flags.is_enabled("g", None));
        flags.replace(BTreeMap::new());
        assert!(flags.is_enabled("f", None), "back to the default");
    }

    #[test]
    fn rollout_is_sticky_per_key_and_close_to_its_percentage() {
        let flags = Flags::default();
        flags.set(
            "f",
            Flag {
                enabled: true,
                rollout_percent: 30.0,
                description: String::new(),
            },
        );
        let keys: Vec<String> = (0..10_000).map(|i| format!("customer-{i}")).collect();
        let on: Vec<bool> = keys.iter().map(|k| flags.is_enabled("f", Some(k))).collect();
        let share = on.iter().filter(|b| **b).count() as f64 / keys.len() as f64;
        assert!((0.27..0.33).contains(&share), "{share}");
        let again: Vec<bool> = keys.iter().map(|k| flags.is_enabled("f", Some(k))).collect();
        assert_eq!(on, again, "sticky");
        // Raising the percentage only turns keys on.
        flags.set(
            "f",
            Flag {
                enabled: true,
                rollout_percent: 60.0,
                description: String::new(),
            },
        );
        for (key, was_on) in keys.iter().zip(on) {
            assert!(!was_on || flags.is_enabled("f", Some(key)), "{key} lost the flag");
        }
    }
}
