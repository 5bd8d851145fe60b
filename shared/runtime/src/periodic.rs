//! Background work that runs on a fixed interval for as long as its task
//! lives (expiry sweeps). Durable deadlines live in the database; these
//! sweeps only make sure someone looks, off every request's path.

use std::time::Duration;

/// Runs `work` every `interval` (the first run at once) until the task is
/// dropped or aborted; a failed run is logged under `what` and retried at
/// the next tick.
pub async fn every<F, Fut, E>(what: &'static str, interval: Duration, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, E>>,
    E: std::fmt::Display,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match work().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(what, n, "periodic work done"),
            Err(e) => tracing::warn!(what, error = %e, "periodic work failed"),
        }
    }
}
