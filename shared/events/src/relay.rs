//! The outbox relay: publishes pending outbox rows and marks them sent once
//! the bus acknowledged them.
//!
//! - Wakes promptly after a commit (the service calls [`Notifier::notify`])
//!   and also polls slowly, so a row whose poke was lost (a crash right after
//!   commit, another process's commit) still goes out.
//! - Reads a batch per query and publishes it pipelined; one UPDATE marks the
//!   batch sent. Per event that is one INSERT in the service's transaction
//!   and a share of two relay statements. Rounds woken by commits start at
//!   most every `min_round_interval`, so under load many commits share one
//!   round instead of each costing the database an extra write.
//! - Order per aggregate: a batch is published in waves (the first pending
//!   row of every aggregate, then the second, ...); after a failed wave the
//!   batch stops, so no later row of an aggregate overtakes an earlier one.
//! - A row is marked sent only after the publish ack. A crash after the ack
//!   but before the mark re-publishes the row, and JetStream's duplicate
//!   window (message id = event id) stores it once.
//! - While the bus is down, publishing fails and the relay backs off
//!   exponentially (up to `max_backoff`), then catches up in full batches.
//!
//! Run one relay per service database. Two relays on one database (several
//! replicas) are safe, duplicates are dropped by the message id, but waste
//! work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::Error;
use crate::bus::Bus;
use crate::envelope::{Event, now_micros};
use crate::outbox::{SELECT_PENDING, SELECT_PENDING_AFTER, pending_of_row};

/// How the relay works.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows read and published per round.
    pub batch_size: usize,
    /// Least time between the starts of two rounds woken by commits: commits
    /// arriving meanwhile share one round (one read, one mark-sent write),
    /// so the relay's own writes stay bounded however fast the service
    /// commits. Adds at most this much latency. A round that found a full
    /// batch goes on at once (catching up).
    pub min_round_interval: Duration,
    /// The safety-net poll when no notification comes.
    pub poll_interval: Duration,
    /// First and largest wait after a failure (doubling in between).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long sent rows stay (for inspection) before they are deleted.
    pub sent_retention: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            min_round_interval: Duration::from_millis(5),
            poll_interval: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            sent_retention: Duration::from_secs(60),
        }
    }
}

/// Wakes the relay; call [`notify`](Notifier::notify) after committing a
/// transaction that added outbox rows. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier(Arc<Notify>);

impl Notifier {
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// A running relay.
pub struct Relay {
    notifier: Notifier,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts relaying `pool`'s outbox to `bus`.
    pub fn spawn(pool: AnyPool, bus: Bus, config: RelayConfig) -> Self {
        let notifier = Notifier::default();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(pool, bus, config, notifier.clone(), stopped));
        Self { notifier, stop, task }
    }

    /// The handle to poke after a commit.
    pub fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }

    /// Stops after the current round (rows in flight are re-published by
    /// the next relay; duplicates are dropped by the message id).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stops at once, as a crash would (tests).
    pub fn abort(self) {
        self.task.abort();
    }
}

async fn run(
    pool: AnyPool,
    bus: Bus,
    config: RelayConfig,
    notifier: Notifier,
    mut stopped: watch::Receiver<bool>,
) {
    let mut state = Rounds::new(pool.clone(), bus.clone(), config.batch_size);
    let mut streams_ready = false;
    let mut backoff = config.initial_backoff;
    let mut last_prune = tokio::time::Instant::now();
    let mut last_round = tokio::time::Instant::now();
    let mut catching_up = false;
    loop {
        if *stopped.borrow() {
            break;
        }
        if !catching_up {
            // Let commits that arrive within the interval join this round.
            let since = last_round.elapsed();
            if since < config.min_round_interval {
                tokio::time::sleep(config.min_round_interval - since).await;
            }
        }
        last_round = tokio::time::Instant::now();
        catching_up = false;
        let round = async {
            if !streams_ready {
                bus.ensure_streams().await?;
                streams_ready = true;
            }
            state.round().await
        };
        let wait = match round.await {
            Ok(published) => {
                backoff = config.initial_backoff;
                if published >= config.batch_size {
                    catching_up = true;
                    continue; // more are waiting: catch up without sleeping
                }
                if last_prune.elapsed() >= config.poll_interval {
                    last_prune = tokio::time::Instant::now();
                    if let Err(e) = prune(&pool, config.sent_retention).await {
                        tracing::warn!(error = %e, "outbox prune failed");
                    }
                }
                config.poll_interval
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "outbox relay round failed");
                // The streams may be gone (a NATS without its store): make sure again.
                streams_ready = false;
                let wait = backoff;
                backoff = (backoff * 2).min(config.max_backoff);
                wait
            }
        };
        tokio::select! {
            () = notifier.0.notified() => {}
            () = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => break,
        }
    }
    if let Err(e) = state.finish_marking().await {
        tracing::warn!(error = %e, "outbox mark-sent failed at shutdown; rows will be re-published");
    }
}

/// The position of a row in publishing order.
type Key = (i64, i64, String);

/// Relay rounds with their pipeline: while catching up, the mark-sent write
/// of one batch runs while the next batch is read and published (the read
/// starts after the previous batch's last key, so it does not see rows whose
/// mark is still in flight). Once caught up, the mark is awaited and the
/// next read starts from the beginning again, which also picks up rows that
/// committed late with an earlier `created_us` (another aggregate's; one
/// aggregate's rows are never committed out of order).
struct Rounds {
    pool: AnyPool,
    bus: Bus,
    limit: usize,
    after: Option<Key>,
    marking: Option<JoinHandle<Result<(), Error>>>,
}

impl Rounds {
    fn new(pool: AnyPool, bus: Bus, limit: usize) -> Self {
        Self {
            pool,
            bus,
            limit,
            after: None,
            marking: None,
        }
    }

    async fn finish_marking(&mut self) -> Result<(), Error> {
        match self.marking.take() {
            Some(task) => task.await.unwrap_or_else(|e| {
                Err(Error::Envelope {
                    topic: "outbox".into(),
                    reason: format!("mark-sent task failed: {e}"),
                })
            }),
            None => Ok(()),
        }
    }

    /// Reads up to `limit` pending rows, publishes them in per-aggregate
    /// waves, starts marking what was acked. Returns how many were read.
    async fn round(&mut self) -> Result<usize, Error> {
        let result = self.publish_batch().await;
        if !matches!(result, Ok(n) if n >= self.limit) {
            // Caught up or failed: settle the marks, read from the start next time.
            self.after = None;
            self.finish_marking().await?;
        }
        result
    }

    async fn publish_batch(&mut self) -> Result<usize, Error> {
        let limit = i64::try_from(self.limit).unwrap_or(i64::MAX);
        let rows = match &self.after {
            None => {
                sqlx::query(SELECT_PENDING)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some((created, seq, id)) => {
                sqlx::query(SELECT_PENDING_AFTER)
                    .bind(limit)
                    .bind(*created)
                    .bind(*seq)
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        if rows.is_empty() {
            return Ok(0);
        }
        let mut waves: Vec<Vec<Event>> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut last = None;
        for row in &rows {
            let pending = pending_of_row(row)?;
            let wave = seen.entry(pending.aggregate_id).or_insert(0);
            if waves.len() <= *wave {
                waves.push(Vec::new());
            }
            last = Some((
                pending.created_us,
                pending.aggregate_seq,
                pending.event.id.clone(),
            ));
            waves[*wave].push(pending.event);
            *wave += 1;
        }
        let mut sent: Vec<String> = Vec::with_capacity(rows.len());
        let mut failure = None;
        for wave in &waves {
            for (event, result) in wave.iter().zip(self.bus.publish_all(wave).await) {
                match result {
                    Ok(_) => sent.push(event.id.clone()),
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            if failure.is_some() {
                break;
            }
        }
        // At most one mark in flight: the previous batch's ends first.
        self.finish_marking().await?;
        let pool = self.pool.clone();
        self.marking = Some(tokio::spawn(async move { mark_sent(&pool, &sent).await }));
        self.after = last;
        match failure {
            Some(e) => Err(e),
            None => Ok(rows.len()),
        }
    }
}

/// One round without the pipeline (for tools and tests): reads up to
/// `limit` pending rows, publishes them, marks the acked ones sent.
pub async fn relay_batch(pool: &AnyPool, bus: &Bus, limit: usize) -> Result<usize, Error> {
    let mut rounds = Rounds::new(pool.clone(), bus.clone(), limit);
    let result = rounds.publish_batch().await;
    rounds.finish_marking().await?;
    result
}

async fn mark_sent(pool: &AnyPool, ids: &[String]) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    // Bounded statements: PostgreSQL allows 65,535 parameters.
    for chunk in ids.chunks(1000) {
        let placeholders: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "UPDATE outbox SET sent_us = $1 WHERE event_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_micros());
        for id in chunk {
            query = query.bind(id);
        }
        query.execute(pool).await?;
    }
    Ok(())
}

async fn prune(pool: &AnyPool, retention: Duration) -> Result<(), Error> {
    let before = now_micros() - i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    sqlx::query("DELETE FROM outbox WHERE sent_us IS NOT NULL AND sent_us < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(())
}
