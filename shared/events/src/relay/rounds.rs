//! One relay round: read pending rows, publish them in per-aggregate waves,
//! and hand the acked ones to a batched, background mark-sent write.
//!
//! Rows that were published but are not yet marked are remembered (the
//! `excluded` set), so reads skip them and a deferred mark never causes a
//! re-publish within one relay. While catching up (full batches), a read
//! starts after the previous batch's last key instead of from the start, so
//! the backlog is not re-read; once caught up, the next read starts from the
//! beginning again, which also finds rows that committed late with an
//! earlier `created_us`. A row that committed late behind the cursor may
//! have a successor in its aggregate ahead of it: the read after the key
//! holds such successors back until that read from the start
//! ([`super::pending::SELECT_PENDING_AFTER`]), so an aggregate's rows go out
//! in order whatever the order their transactions committed in.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::AnyPool;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::pending::{SELECT_PENDING, SELECT_PENDING_AFTER, pending_of_row};
use super::republish;
use crate::bus::Bus;
use crate::envelope::{Event, now_micros};
use crate::error::Error;

/// The position of a row in publishing order.
type Key = (i64, i64, String);

/// A mark-sent write in flight and the rows it marks.
type Mark = (JoinHandle<Result<(), Error>>, Vec<Key>);

/// A relay's state from round to round (its cursor, the rows published and
/// not yet marked, the mark in flight): [`super::Relay`] runs it in a loop;
/// tools and tests can step it by hand.
pub struct Rounds {
    pool: AnyPool,
    bus: Bus,
    limit: usize,
    mark_interval: Duration,
    after: Option<Key>,
    /// Published, not yet known to be marked sent.
    excluded: HashSet<String>,
    /// Published, waiting for the next mark.
    unmarked: Vec<Key>,
    marking: Option<Mark>,
    last_mark: Instant,
}

impl Rounds {
    /// Rounds of up to `limit` rows from `pool`'s outbox to `bus`, marking
    /// acked rows sent at most every `mark_interval` (or per full batch).
    pub fn new(pool: AnyPool, bus: Bus, limit: usize, mark_interval: Duration) -> Self {
        Self {
            pool,
            bus,
            limit: limit.max(1),
            mark_interval,
            after: None,
            excluded: HashSet::new(),
            unmarked: Vec::new(),
            marking: None,
            last_mark: Instant::now(),
        }
    }

    /// Whether some published rows still wait for their mark.
    pub(super) fn has_unmarked(&self) -> bool {
        !self.excluded.is_empty()
    }

    /// Collects a finished mark and starts the next one when due (`force`:
    /// now, and wait for it; a few tries, since the database may be down).
    pub async fn flush_marks(&mut self, force: bool) {
        for _ in 0..3 {
            if let Some((task, ids)) = self.marking.take() {
                if !force && !task.is_finished() {
                    self.marking = Some((task, ids));
                    return;
                }
                match task.await {
                    Ok(Ok(())) => ids.iter().for_each(|(_, _, id)| {
                        self.excluded.remove(id);
                    }),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, rows = ids.len(), "outbox mark-sent failed; retrying");
                        self.unmarked.extend(ids);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox mark-sent task failed; retrying");
                        self.unmarked.extend(ids);
                    }
                }
            }
            let due = self.unmarked.len() >= self.limit || self.last_mark.elapsed() >= self.mark_interval;
            if self.unmarked.is_empty() || !(force || due) {
                return;
            }
            let ids = std::mem::take(&mut self.unmarked);
            let pool = self.pool.clone();
            let marked = ids.clone();
            self.last_mark = Instant::now();
            self.marking = Some((tokio::spawn(async move { mark_sent(&pool, &marked).await }), ids));
            if !force {
                return;
            }
        }
    }

    /// Reads, publishes and queues marks; returns how many rows it read (a
    /// full batch means more are waiting).
    pub async fn round(&mut self) -> Result<usize, Error> {
        let result = self.publish_batch().await;
        if !matches!(result, Ok(n) if n >= self.limit) {
            self.after = None; // caught up or failed: from the start next time
        }
        self.flush_marks(false).await;
        result
    }

    async fn publish_batch(&mut self) -> Result<usize, Error> {
        let rows = match &self.after {
            None => {
                // Skipped (published, unmarked) rows count against LIMIT.
                let limit = i64::try_from(self.limit + self.excluded.len()).unwrap_or(i64::MAX);
                sqlx::query(SELECT_PENDING)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some((created, seq, id)) => {
                // What was published so far lies before the key (the loop
                // below still skips any published row it meets).
                sqlx::query(SELECT_PENDING_AFTER)
                    .bind(i64::try_from(self.limit).unwrap_or(i64::MAX))
                    .bind(*created)
                    .bind(*seq)
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut waves: Vec<Vec<Event>> = Vec::new();
        let mut keys: HashMap<String, Key> = HashMap::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        // First attempts of rows tried before; rows tried now for the first time.
        let mut attempted: HashMap<String, i64> = HashMap::new();
        let mut first_tries: Vec<Key> = Vec::new();
        let mut read = 0;
        for row in &rows {
            let pending = pending_of_row(row)?;
            if self.excluded.contains(&pending.event.id) {
                continue;
            }
            if read == self.limit {
                break;
            }
            read += 1;
            let wave = seen.entry(pending.aggregate_id).or_insert(0);
            if waves.len() <= *wave {
                waves.push(Vec::new());
            }
            let key = (
                pending.created_us,
                pending.aggregate_seq,
                pending.event.id.clone(),
            );
            self.after = Some(key.clone());
            match pending.attempted_us {
                Some(at) => {
                    attempted.insert(pending.event.id.clone(), at);
                }
                None => first_tries.push(key.clone()),
            }
            keys.insert(pending.event.id.clone(), key);
            waves[*wave].push(pending.event);
            *wave += 1;
        }
        // Recorded before the publish: an ack may be lost, the row is then
        // stored although it stays pending (`republish`).
        let now = now_micros();
        update_rows(&self.pool, SET_ATTEMPTED, &first_tries, now).await?;
        let window = self.bus.settings().streams.duplicate_window;
        let mut failure = None;
        for wave in &waves {
            let mut publish = Vec::with_capacity(wave.len());
            for event in wave {
                let Some(&at) = attempted.get(&event.id) else {
                    publish.push(event.clone());
                    continue;
                };
                if !republish::must_look_up(Some(at), now, window) {
                    publish.push(event.clone());
                    continue;
                }
                match self
                    .bus
                    .stored_since(event, republish::look_up_since(at, window))
                    .await
                {
                    Ok(true) => {
                        tracing::info!(event_id = %event.id, "outbox row already in its stream; marked sent");
                        self.acked(&mut keys, event);
                    }
                    Ok(false) => publish.push(event.clone()),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
            let spans: Vec<tracing::Span> = publish.iter().map(crate::trace::producer).collect();
            for ((event, result), span) in publish
                .iter()
                .zip(self.bus.publish_all(&publish).await)
                .zip(spans)
            {
                match result {
                    Ok(_) => self.acked(&mut keys, event),
                    Err(e) => {
                        span.record("otel.status_code", "ERROR");
                        failure = failure.or(Some(e));
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(read),
        }
    }
}

impl Rounds {
    /// Remembers a row the stream holds (acked now, or found stored) for
    /// the next mark.
    fn acked(&mut self, keys: &mut HashMap<String, Key>, event: &Event) {
        if let Some(key) = keys.remove(&event.id) {
            self.excluded.insert(event.id.clone());
            self.unmarked.push(key);
        }
    }
}

/// One round without deferral (for tools and tests): reads up to `limit`
/// pending rows, publishes them, marks the acked ones sent before returning.
pub async fn relay_batch(pool: &AnyPool, bus: &Bus, limit: usize) -> Result<usize, Error> {
    let mut rounds = Rounds::new(pool.clone(), bus.clone(), limit, Duration::ZERO);
    let result = rounds.publish_batch().await;
    rounds.flush_marks(true).await;
    result
}

/// Marks rows sent.
const SET_SENT: &str = "UPDATE outbox SET sent_us = $1 WHERE sent_us IS NULL";

/// Records a first attempt to publish rows.
const SET_ATTEMPTED: &str =
    "UPDATE outbox SET attempted_us = $1 WHERE sent_us IS NULL AND attempted_us IS NULL";

async fn mark_sent(pool: &AnyPool, keys: &[Key]) -> Result<(), Error> {
    update_rows(pool, SET_SENT, keys, now_micros()).await
}

/// Runs `update` (which sets a column to `$1` on pending rows) on the rows
/// of `keys`. The key range lets both databases find the rows through the
/// pending-rows index instead of scanning the table for the `IN` list
/// (PostgreSQL picks a sequential scan for a long list).
async fn update_rows(pool: &AnyPool, update: &'static str, keys: &[Key], value: i64) -> Result<(), Error> {
    let mut keys = keys.to_vec();
    keys.sort();
    // Bounded statements: PostgreSQL allows 65,535 parameters.
    for chunk in keys.chunks(1000) {
        let (Some(lo), Some(hi)) = (chunk.first(), chunk.last()) else {
            continue;
        };
        let placeholders: Vec<String> = (8..chunk.len() + 8).map(|i| format!("${i}")).collect();
        let sql = format!(
            "{update} \
             AND (created_us, aggregate_seq, event_id) >= ($2, $3, $4) \
             AND (created_us, aggregate_seq, event_id) <= ($5, $6, $7) \
             AND event_id IN ({})",
            placeholders.join(", ")
        );
        // Not kept prepared: the IN list's length varies from call to call,
        // and each length would take a slot in the connection's statement
        // cache that the service's own statements need.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .bind(value)
            .bind(lo.0)
            .bind(lo.1)
            .bind(&lo.2)
            .bind(hi.0)
            .bind(hi.1)
            .bind(&hi.2);
        for (_, _, id) in chunk {
            query = query.bind(id);
        }
        query.execute(pool).await?;
    }
    Ok(())
}
