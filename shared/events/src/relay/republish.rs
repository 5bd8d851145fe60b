//! When the relay must look in the stream before it publishes a row again.
//!
//! JetStream drops a re-publish with the same message id (the event id)
//! only within the stream's duplicate window (`StreamSettings::
//! duplicate_window`, 120 s by default). A publish whose ack was lost (a
//! timeout, a connection dropped, the relay killed after the ack and before
//! the mark) leaves the row pending although the stream stored it; retried
//! after the window, it would be stored twice. So the relay records when it
//! first attempted each row (`outbox.attempted_us`, written before the
//! publish, kept across restarts and shared by several relays), and once
//! that attempt is older than half the window it asks the bus whether the
//! message is stored ([`crate::Bus::stored_since`]) instead of publishing
//! blindly: found, the row is marked sent as if acked; not found, it is
//! published (and a later look-up still starts from the first attempt).
//!
//! Half the window: a publish in flight may be stored a little after the
//! attempt, and the relay's and the server's clocks differ; half leaves a
//! minute by default, and a look-up costs little. The look-up starts that
//! margin before the first attempt, for the same reasons.

use std::time::Duration;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Whether a row first attempted at `attempted_us` (`None`: never) must be
/// looked up before it is published at `now_us`, with duplicate window
/// `window`.
pub(super) fn must_look_up(attempted_us: Option<i64>, now_us: i64, window: Duration) -> bool {
    attempted_us.is_some_and(|at| now_us.saturating_sub(at) >= micros(window) / 2)
}

/// Where a look-up for a row first attempted at `attempted_us` starts.
pub(super) fn look_up_since(attempted_us: i64, window: Duration) -> i64 {
    attempted_us.saturating_sub(micros(window) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(120);
    const S: i64 = 1_000_000;

    #[test]
    fn never_attempted_rows_are_published_without_a_look_up() {
        assert!(!must_look_up(None, 1_000 * S, WINDOW));
    }

    #[test]
    fn a_look_up_from_half_the_window_on() {
        let at = 1_000 * S;
        assert!(!must_look_up(Some(at), at, WINDOW), "just attempted");
        assert!(!must_look_up(Some(at), at + 59 * S, WINDOW));
        assert!(must_look_up(Some(at), at + 60 * S, WINDOW), "half the window");
        assert!(must_look_up(Some(at), at + 121 * S, WINDOW), "past the window");
        assert!(!must_look_up(Some(at), at - S, WINDOW), "a clock that went back");
        assert!(must_look_up(Some(at), at, Duration::ZERO), "no window: always");
    }

    #[test]
    fn the_look_up_starts_a_margin_before_the_first_attempt() {
        assert_eq!(look_up_since(1_000 * S, WINDOW), 940 * S);
        assert_eq!(look_up_since(i64::MIN, WINDOW), i64::MIN);
    }
}
