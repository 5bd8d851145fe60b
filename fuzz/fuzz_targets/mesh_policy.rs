//! The mesh policy file (`--policy`, TOML) with its `ORDERMESH_MESH__*`
//! environment overrides, as every process reads it at start. Input: the
//! file, a NUL byte, then `NAME=value` lines.
//!
//! Any text is accepted or refused with an error naming the key; a policy
//! that passes gives settings for each of its downstreams, its flags and
//! its fault rules without a further error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordermesh_mesh::policy::MeshPolicy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let Ok(policy) = MeshPolicy::parse(file, env) else {
        return;
    };
    for name in policy.downstream.keys() {
        policy
            .downstream_settings(name, "http://127.0.0.1:1")
            .expect("a validated policy's downstream settings build");
    }
    let _ = policy.flags();
});
