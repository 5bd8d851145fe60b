//! The gateway's TOML file (`--config`): rate limits, CORS origins and the
//! per-route access table, checked against the public services' RPCs as
//! `ordermesh serve gateway` checks it at start.
//!
//! Any text is accepted or refused with an error: a file that passes
//! builds its access table and rate limiters without panicking, and every
//! public RPC keeps an entry.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ordermesh_gateway::config::{FileConfig, route_access};
use ordermesh_gateway::descriptors::{PUBLIC_SERVICES, pool};
use ordermesh_gateway::limit::RateLimits;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("gateway.toml");
    let Ok(file) = FileConfig::parse(text, path) else {
        return;
    };
    let Ok(access) = route_access(pool(), PUBLIC_SERVICES, &file, path) else {
        return;
    };
    let rpcs = pool()
        .services()
        .filter(|s| PUBLIC_SERVICES.contains(&s.full_name()))
        .map(|s| s.methods().len())
        .sum::<usize>();
    assert_eq!(access.len(), rpcs);
    let _limits = RateLimits::new(
        file.rate_limit,
        access
            .iter()
            .filter_map(|(rpc, access)| access.rate_limit.map(|limit| (rpc.clone(), limit))),
    );
});
