//! Time as the databases store it: integer microseconds since the Unix epoch
//! (portable across SQLite and PostgreSQL through `AnyPool`, which carries no
//! timestamp type), and its conversion to `google.protobuf.Timestamp`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A duration in whole microseconds, the unit stored times are kept in
/// (saturating: a longer-than-representable duration reads as forever).
pub fn micros(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// The protobuf timestamp for a stored microsecond value.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// The stored microsecond value of a protobuf timestamp (inverse of
/// [`timestamp`]; saturating).
pub fn micros_of(timestamp: &prost_types::Timestamp) -> i64 {
    timestamp
        .seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(timestamp.nanos / 1_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_splits_seconds_and_nanos_also_before_the_epoch() {
        assert_eq!(
            timestamp(1_500_000),
            prost_types::Timestamp {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            timestamp(-1),
            prost_types::Timestamp {
                seconds: -1,
                nanos: 999_999_000
            }
        );
    }

    #[test]
    fn micros_round_trip_through_timestamps() {
        for micros in [0, 1, 1_500_000, -1, -1_500_001, 1_795_687_832_591_910] {
            assert_eq!(micros_of(&timestamp(micros)), micros, "{micros}");
        }
    }
}
