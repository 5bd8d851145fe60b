//! The OpenMetrics text format (`application/openmetrics-text`), for
//! scrapers that ask for it in `Accept`, made from the Prometheus text the
//! exporter renders.
//!
//! Written here because `metrics-exporter-prometheus` renders Prometheus's
//! text format only, and the alternative with OpenMetrics built in
//! (`prometheus-client`) needs its registry passed through every crate that
//! counts (see docs/decisions.md). The two formats differ in a few rules,
//! all of them line-local once each family's type is known:
//!
//! - a counter family is named without its `_total` suffix in `# HELP` and
//!   `# TYPE`, while its samples keep it (a counter sample without it gets
//!   it);
//! - `untyped` is `unknown`;
//! - no blank lines, and the exposition ends with `# EOF`.
//!
//! Histograms, summaries, gauges, labels and their escaping are the same in
//! both. No exemplars: the exporter records none.

use std::collections::HashMap;

/// The content type of [`from_prometheus`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header value asks for OpenMetrics (what Prometheus
/// sends when it prefers it).
pub fn wanted(accept: &str) -> bool {
    accept.split(',').any(|part| {
        part.trim()
            .to_ascii_lowercase()
            .starts_with("application/openmetrics-text")
    })
}

/// The metric name of a sample line (`name{labels} value` or `name value`).
fn sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    &line[..end]
}

/// `text` (Prometheus's text format, as the exporter renders it) in the
/// OpenMetrics text format.
pub fn from_prometheus(text: &str) -> String {
    // Each family's type first: `# HELP` comes before `# TYPE`.
    let mut types: HashMap<&str, &str> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name, kind);
            }
        }
    }
    let counter = |name: &str| types.get(name) == Some(&"counter");
    let family = |name: &str| -> String {
        if counter(name) {
            name.strip_suffix("_total").unwrap_or(name).to_owned()
        } else {
            name.to_owned()
        }
    };
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}", family(name)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let kind = if kind.trim() == "untyped" {
                "unknown"
            } else {
                kind.trim()
            };
            out.push_str(&format!("# TYPE {} {kind}", family(name)));
        } else if line.starts_with('#') {
            // Other comments have no place in OpenMetrics.
            continue;
        } else {
            let name = sample_name(line);
            if counter(name) && !name.ends_with("_total") {
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&line[name.len()..]);
            } else {
                out.push_str(line);
            }
        }
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS: &str = "\
# HELP ordermesh_rpc_server_requests_total gRPC calls answered
# TYPE ordermesh_rpc_server_requests_total counter
ordermesh_rpc_server_requests_total{rpc_method=\"CreateOrder\",grpc_code=\"OK\"} 3

# HELP process_threads Threads
# TYPE process_threads gauge
process_threads 9

# TYPE legacy_events counter
legacy_events{kind=\"a b\"} 2
# TYPE odd untyped
odd 1
# HELP ordermesh_rpc_server_duration_seconds Time to status
# TYPE ordermesh_rpc_server_duration_seconds histogram
ordermesh_rpc_server_duration_seconds_bucket{le=\"0.001\"} 1
ordermesh_rpc_server_duration_seconds_bucket{le=\"+Inf\"} 3
ordermesh_rpc_server_duration_seconds_sum 0.25
ordermesh_rpc_server_duration_seconds_count 3
";

    #[test]
    fn counters_are_named_without_total_and_the_exposition_ends_with_eof() {
        let open = from_prometheus(PROMETHEUS);
        let expected = "\
# HELP ordermesh_rpc_server_requests gRPC calls answered
# TYPE ordermesh_rpc_server_requests counter
ordermesh_rpc_server_requests_total{rpc_method=\"CreateOrder\",grpc_code=\"OK\"} 3
# HELP process_threads Threads
# TYPE process_threads gauge
process_threads 9
# TYPE legacy_events counter
legacy_events_total{kind=\"a b\"} 2
# TYPE odd unknown
odd 1
# HELP ordermesh_rpc_server_duration_seconds Time to status
# TYPE ordermesh_rpc_server_duration_seconds histogram
ordermesh_rpc_server_duration_seconds_bucket{le=\"0.001\"} 1
ordermesh_rpc_server_duration_seconds_bucket{le=\"+Inf\"} 3
ordermesh_rpc_server_duration_seconds_sum 0.25
ordermesh_rpc_server_duration_seconds_count 3
# EOF
";
        assert_eq!(open, expected);
    }

    #[test]
    fn an_empty_exposition_is_just_eof() {
        assert_eq!(from_prometheus(""), "# EOF\n");
    }

    #[test]
    fn openmetrics_is_chosen_by_accept() {
        assert!(wanted(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(wanted("text/plain, Application/OpenMetrics-Text"));
        assert!(!wanted("text/plain;version=0.0.4"));
        assert!(!wanted("*/*"));
        assert!(!wanted(""));
    }
}
