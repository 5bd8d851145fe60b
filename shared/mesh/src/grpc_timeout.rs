//! The `grpc-timeout` header (gRPC over HTTP/2 spec): at most eight digits
//! and a unit. tonic keeps its codec for this private, hence this small copy.

use std::time::Duration;

use http::HeaderValue;

pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Parses `grpc-timeout`; `None` when absent or malformed.
pub fn parse(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Encodes a duration as `grpc-timeout`, in the finest unit that fits in
/// eight digits (rounding up, so a budget is never silently lengthened to
/// zero).
pub fn encode(duration: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = duration.as_nanos();
    let candidates = [
        (1u128, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in candidates {
        let amount = nanos.div_ceil(per);
        if amount <= MAX {
            return HeaderValue::from_str(&format!("{amount}{unit}"))
                .unwrap_or(HeaderValue::from_static("99999999H"));
        }
    }
    HeaderValue::from_static("99999999H")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(5),
            Duration::from_nanos(7),
            Duration::from_secs(86_400),
        ] {
            let parsed = parse(&encode(d)).expect("parses");
            assert!(
                parsed >= d && parsed - d < d / 1000 + Duration::from_nanos(1),
                "{d:?} -> {parsed:?}"
            );
        }
        assert_eq!(
            parse(&HeaderValue::from_static("100m")),
            Some(Duration::from_millis(100))
        );
        for bad in ["", "m", "123456789m", "10x", "-1S"] {
            assert_eq!(parse(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }
}
