//! The outbox relay: publishes pending outbox rows and marks them sent once
//! the bus acknowledged them.
//!
//! - Wakes promptly after a commit (the service calls [`Notifier::notify`])
//!   and also polls slowly, so a row whose poke was lost (a crash right after
//!   commit, another process's commit) still goes out.
//! - Reads a batch per query and publishes it pipelined. Per event that is
//!   one INSERT in the service's transaction and a share of the relay's
//!   reads and mark-sent writes, which are batched so the relay adds few
//!   writes (each a commit, on SQLite with fsyncs) whatever the event rate:
//!   rounds woken by commits start at most every `min_round_interval`
//!   (commits meanwhile share the round), and acked rows are marked sent
//!   together at most every `mark_interval` (or per full batch), off the
//!   publishing path ([`rounds`]).
//! - Order per aggregate: a batch is published in waves (the first pending
//!   row of every aggregate, then the second, ...); after a failed wave the
//!   batch stops, so no later row of an aggregate overtakes an earlier one.
//!   Nor across batches: a read never returns a row whose predecessor is
//!   pending but not in the read, even when the predecessor's transaction
//!   committed after rows with later keys ([`pending`]).
//! - A row is marked sent only after the publish ack. A crash after the ack
//!   but before the mark re-publishes the row, and JetStream's duplicate
//!   window (message id = event id) stores it once; so a deferred mark costs
//!   at most a re-publish, never a loss. Beyond the window (an outage, a
//!   relay down for minutes), the relay looks the message up in the stream
//!   before publishing it again ([`republish`]): each row's first attempt
//!   is recorded (one write per round, with the round's new rows) for that.
//! - While the bus is down, publishing fails and the relay backs off
//!   exponentially (up to `max_backoff`), then catches up in full batches.
//!
//! - One relay per database publishes at a time: on PostgreSQL, the replicas'
//!   relays elect one with an advisory lock and the others forward their
//!   commits' wake-ups to it ([`leader`]); takeover within `poll_interval`
//!   of the leader's end. Two relays publishing at once (the moment of a
//!   takeover) are safe, duplicates are dropped by the message id.

mod leader;
mod pending;
mod republish;
mod rounds;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::AnyPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bus::Bus;
use crate::envelope::now_micros;
use crate::error::Error;
use crate::outbox::Notifier;

pub use rounds::{Rounds, relay_batch};

/// How the relay works.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows read and published per round.
    pub batch_size: usize,
    /// Least time between the starts of two rounds woken by commits: commits
    /// arriving meanwhile share one round (one read, one mark-sent write),
    /// so the relay's own writes stay bounded however fast the service
    /// commits. Adds at most this much latency. A round that found a full
    /// batch goes on at once (catching up). 20 ms: at a few hundred orders a
    /// second a round then carries several orders' events (one read, one
    /// publish wave, one wake-up of the consumers) instead of about one,
    /// and commit-to-consumer stays well under its 50 ms target.
    pub min_round_interval: Duration,
    /// Longest time acked rows wait to be marked sent together (a full
    /// batch is marked at once). Rows are never published twice by one
    /// relay meanwhile; after a crash they are, and JetStream drops the
    /// duplicates.
    pub mark_interval: Duration,
    /// The safety-net poll when no notification comes.
    pub poll_interval: Duration,
    /// First and largest wait after a failure (doubling in between).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long sent rows stay (for inspection) before they are deleted.
    pub sent_retention: Duration,
    /// The service whose outbox this is (`order`, ...): its metrics' label.
    pub service: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            min_round_interval: Duration::from_millis(20),
            mark_interval: Duration::from_millis(100),
            poll_interval: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            sent_retention: Duration::from_secs(60),
            service: String::new(),
        }
    }
}

/// A running relay.
pub struct Relay {
    notifier: Notifier,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    leads: Arc<AtomicBool>,
}

impl Relay {
    /// Starts relaying `pool`'s outbox to `bus`.
    pub fn spawn(pool: AnyPool, bus: Bus, config: RelayConfig) -> Self {
        let notifier = Notifier::default();
        let (stop, stopped) = watch::channel(false);
        let leadership = leader::Leadership::of(&pool, &config.service);
        let leads = leadership.flag();
        let task = tokio::spawn(run(pool, bus, config, leadership, notifier.clone(), stopped));
        Self {
            notifier,
            stop,
            task,
            leads,
        }
    }

    /// Whether this relay publishes its database's events now (the one its
    /// replicas elected; always on SQLite).
    pub fn leads(&self) -> bool {
        self.leads.load(Ordering::Relaxed)
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
    mut leadership: leader::Leadership,
    notifier: Notifier,
    mut stopped: watch::Receiver<bool>,
) {
    let mut state = Rounds::new(pool.clone(), bus.clone(), config.batch_size, config.mark_interval);
    let mut streams_ready = false;
    let mut backoff = config.initial_backoff;
    let mut last_prune = tokio::time::Instant::now();
    let mut last_round = tokio::time::Instant::now();
    let mut catching_up = false;
    loop {
        if *stopped.borrow() {
            break;
        }
        if !leadership.lead(config.poll_interval).await {
            // Another replica's relay publishes: wake it for this process's
            // commits (at most once per min_round_interval), and try the
            // lock again every poll_interval.
            state.flush_marks(true).await;
            tokio::select! {
                () = notifier.notified() => {
                    leadership.forward().await;
                    tokio::time::sleep(config.min_round_interval).await;
                }
                () = tokio::time::sleep(config.poll_interval) => {}
                _ = stopped.changed() => break,
            }
            continue;
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
                crate::measure::published(&config.service, published);
                backoff = config.initial_backoff;
                if published >= config.batch_size {
                    catching_up = true;
                    continue; // more are waiting: catch up without sleeping
                }
                if state.has_unmarked() {
                    // Come back to mark them even if nothing else happens.
                    state.flush_marks(false).await;
                }
                if last_prune.elapsed() >= config.poll_interval {
                    last_prune = tokio::time::Instant::now();
                    if let Err(e) = prune(&pool, config.sent_retention).await {
                        tracing::warn!(error = %e, "outbox prune failed");
                    }
                }
                if state.has_unmarked() {
                    config.mark_interval.min(config.poll_interval)
                } else {
                    config.poll_interval
                }
            }
            Err(e) => {
                crate::measure::relay_failed(&config.service);
                tracing::warn!(error = %e, retry_in = ?backoff, "outbox relay round failed");
                // The streams may be gone (a NATS without its store): make sure again.
                streams_ready = false;
                let wait = backoff;
                backoff = (backoff * 2).min(config.max_backoff);
                wait
            }
        };
        tokio::select! {
            () = notifier.notified() => {}
            () = leadership.woken() => {}
            () = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => break,
        }
    }
    state.flush_marks(true).await;
}

async fn prune(pool: &AnyPool, retention: Duration) -> Result<(), Error> {
    let before = now_micros() - i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    sqlx::query("DELETE FROM outbox WHERE sent_us IS NOT NULL AND sent_us < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(())
}
