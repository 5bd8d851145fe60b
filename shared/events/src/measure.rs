//! What the event plumbing measures (docs/metrics.md): the outbox backlog
//! (read when metrics are scraped), what the relay published and how often
//! a round failed, and per consumer what it handled, what came back
//! redelivered, what it dead-lettered and how far behind its stream it is.

use sqlx::AnyPool;

pub const OUTBOX_PENDING: &str = "ordermesh_outbox_pending";
pub const OUTBOX_OLDEST_AGE: &str = "ordermesh_outbox_oldest_age_seconds";
pub const PUBLISHED: &str = "ordermesh_events_published_total";
pub const RELAY_ERRORS: &str = "ordermesh_relay_errors_total";
pub const RELAY_LEADER: &str = "ordermesh_relay_leader";
pub const HANDLED: &str = "ordermesh_consumer_handled_total";
pub const REDELIVERED: &str = "ordermesh_consumer_redelivered_total";
pub const DEAD_LETTERED: &str = "ordermesh_consumer_dead_lettered_total";
pub const LAG: &str = "ordermesh_consumer_lag";

pub(crate) fn published(service: &str, rows: usize) {
    metrics::counter!(PUBLISHED, "service" => service.to_owned()).increment(rows as u64);
}

pub(crate) fn relay_failed(service: &str) {
    metrics::counter!(RELAY_ERRORS, "service" => service.to_owned()).increment(1);
}

pub(crate) fn leading(service: &str, leads: bool) {
    metrics::gauge!(RELAY_LEADER, "service" => service.to_owned()).set(if leads { 1.0 } else { 0.0 });
}

pub(crate) fn handled(consumer: &str) {
    metrics::counter!(HANDLED, "consumer" => consumer.to_owned()).increment(1);
}

pub(crate) fn redelivered(consumer: &str) {
    metrics::counter!(REDELIVERED, "consumer" => consumer.to_owned()).increment(1);
}

pub(crate) fn dead_lettered(consumer: &str) {
    metrics::counter!(DEAD_LETTERED, "consumer" => consumer.to_owned()).increment(1);
}

pub(crate) fn lag(consumer: &str, pending: u64) {
    metrics::gauge!(LAG, "consumer" => consumer.to_owned()).set(pending as f64);
}

/// The unpublished rows and the oldest one's age, read on every scrape
/// (one query on the outbox's index of pending rows).
pub(crate) fn export_outbox(service: String, pool: AnyPool) {
    ordermesh_runtime::metrics::on_scrape(move || {
        let (service, pool) = (service.clone(), pool.clone());
        Box::pin(async move {
            let read: Result<(i64, Option<i64>), sqlx::Error> =
                sqlx::query_as("SELECT COUNT(*), MIN(created_us) FROM outbox WHERE sent_us IS NULL")
                    .fetch_one(&pool)
                    .await;
            match read {
                Ok((pending, oldest)) => {
                    let age = oldest.map_or(0.0, |created| {
                        (ordermesh_runtime::clock::now_micros() - created).max(0) as f64 / 1e6
                    });
                    metrics::gauge!(OUTBOX_PENDING, "service" => service.clone()).set(pending as f64);
                    metrics::gauge!(OUTBOX_OLDEST_AGE, "service" => service).set(age);
                }
                Err(error) => tracing::warn!(%error, %service, "cannot read the outbox backlog"),
            }
        })
    });
}
