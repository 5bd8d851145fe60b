//! One relay per database publishes at a time.
//!
//! Several replicas of a service share its database, and each runs a relay.
//! Without coordination every relay reads every pending row and publishes
//! it: safe (JetStream drops the duplicates by message id) but N times the
//! reads, publishes and marks. On PostgreSQL the relays elect one: the
//! leader holds a session-level advisory lock on a connection of its own
//! (`pg_try_advisory_lock`, keyed by the service), the others follow.
//!
//! - **Takeover on loss**: the lock lives as long as the leader's session,
//!   so a leader that crashes (kill -9 included) or loses its connection
//!   frees it at once, and a follower, which tries the lock every
//!   `poll_interval`, takes over within that interval. A leader checks its
//!   lock connection as often, and stops publishing when it broke.
//! - **A follower's tries are cheap**: at most one per `poll_interval`,
//!   however often its commits wake it, each on a pooled connection that
//!   goes back to the pool when the lock is taken elsewhere (only the
//!   winner's connection leaves the pool to hold the lock). A try per
//!   wake-up on a connection of its own cost PostgreSQL a new session (a
//!   backend process) every few commits.
//! - **Followers' commits**: a follower's own commits would wait for the
//!   leader's slow poll; instead the follower forwards each wake-up (at most
//!   one per `min_round_interval`) as `NOTIFY`, and the leader `LISTEN`s.
//!   The NOTIFY is a statement of its own after the commit, never inside
//!   the business transaction: PostgreSQL serializes the commits of
//!   transactions that notify.
//! - A leader whose connection hangs without breaking (a network partition)
//!   keeps the lock until the server notices the dead session (TCP
//!   keepalive); meanwhile nobody publishes that database's rows. A broken
//!   connection, the common case, is noticed at once.
//!
//! SQLite needs none of this: one process owns a database file, and its
//! relay always leads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{AnyConnection, AnyPool};
use tokio::time::Instant;

/// Whether this relay may publish, and how it learns of followers' commits.
pub(crate) struct Leadership {
    postgres: Option<Election>,
    /// Whether this relay leads, for [`crate::Relay::leads`].
    leads: Arc<AtomicBool>,
    service: String,
}

struct Election {
    pool: AnyPool,
    url: String,
    service: String,
    key: i64,
    channel: String,
    /// The connection holding the lock, while this relay leads.
    lock: Option<AnyConnection>,
    /// When the lock connection was last seen alive.
    checked: Instant,
    /// When a follower last tried the lock.
    tried: Option<Instant>,
    /// The leader's LISTEN for followers' wake-ups.
    listener: Option<PgListener>,
}

impl Leadership {
    /// Elected on PostgreSQL (by `service`), always leading elsewhere.
    pub(crate) fn of(pool: &AnyPool, service: &str) -> Self {
        let url = pool.connect_options().database_url.to_string();
        let postgres = (url.starts_with("postgres:") || url.starts_with("postgresql:")).then(|| {
            let key = lock_key(service);
            Election {
                pool: pool.clone(),
                url,
                service: service.to_owned(),
                key,
                channel: format!("ordermesh_outbox_{key:x}"),
                lock: None,
                checked: Instant::now(),
                tried: None,
                listener: None,
            }
        });
        let leads = Arc::new(AtomicBool::new(postgres.is_none()));
        crate::measure::leading(service, postgres.is_none());
        Leadership {
            postgres,
            leads,
            service: service.to_owned(),
        }
    }

    /// Whether this relay leads, as last found.
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.leads.clone()
    }

    fn set(&self, leads: bool) {
        if self.leads.swap(leads, Ordering::Relaxed) != leads {
            crate::measure::leading(&self.service, leads);
        }
    }

    /// Whether this relay leads now: a follower tries to take the lock, a
    /// leader checks its lock connection, each when it last did longer than
    /// `check` ago. A database error counts as not leading (tried again
    /// `check` later).
    pub(crate) async fn lead(&mut self, check: Duration) -> bool {
        let Some(election) = &mut self.postgres else {
            return true;
        };
        let leads = election.lead(check).await;
        self.set(leads);
        leads
    }

    /// A follower's commits wake the leader (best effort: the leader's poll
    /// finds the rows anyway).
    pub(crate) async fn forward(&mut self) {
        // Owned copies: the election's lock connection may not cross an await.
        let Some((pool, channel)) = self
            .postgres
            .as_ref()
            .map(|e| (e.pool.clone(), e.channel.clone()))
        else {
            return;
        };
        let notified = sqlx::query("SELECT pg_notify($1, '')")
            .bind(channel)
            .execute(&pool)
            .await;
        if let Err(e) = notified {
            tracing::debug!(service = %self.service, error = %e, "outbox relay could not wake its leader");
        }
    }

    /// Resolves when a follower forwarded a wake-up to this leader; never
    /// when there is nothing to listen to.
    pub(crate) async fn woken(&mut self) {
        let Some(election) = self.postgres.as_mut() else {
            return std::future::pending().await;
        };
        let Some(listener) = election.listener.as_mut() else {
            return std::future::pending().await;
        };
        if let Err(e) = listener.recv().await {
            // Dropped, not retried here (that would spin while the
            // database is away): the next check of the lock listens again.
            tracing::debug!(service = %election.service, error = %e, "outbox relay's LISTEN failed");
            election.listener = None;
        }
    }
}

impl Election {
    async fn lead(&mut self, check: Duration) -> bool {
        if let Some(lock) = &mut self.lock {
            if self.checked.elapsed() < check {
                return true;
            }
            if sqlx::query("SELECT 1").execute(&mut *lock).await.is_ok() {
                self.checked = Instant::now();
                if self.listener.is_none() {
                    self.listen().await;
                }
                return true;
            }
            tracing::warn!(service = %self.service, "outbox relay lost its leader's connection; following");
            self.lock = None;
            self.listener = None;
            return false;
        }
        if self.tried.is_some_and(|at| at.elapsed() < check) {
            return false;
        }
        self.tried = Some(Instant::now());
        match self.try_lock().await {
            Ok(true) => {
                tracing::info!(service = %self.service, "outbox relay leads: it publishes this database's events");
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::debug!(service = %self.service, error = %e, "outbox relay could not try the leader's lock");
                false
            }
        }
    }

    /// Tries the lock on a pooled connection, which leaves the pool to hold
    /// the lock when it was taken (a failed try holds nothing, and the
    /// connection goes back), and listens for followers once it has it.
    async fn try_lock(&mut self) -> Result<bool, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut *conn)
            .await?;
        if !taken {
            return Ok(false);
        }
        self.lock = Some(conn.detach());
        self.checked = Instant::now();
        self.listen().await;
        Ok(true)
    }

    /// Listens for followers' wake-ups. Without the listener the leader
    /// still polls: a failure here only delays followers' events until then
    /// (and the next check of the lock tries again).
    async fn listen(&mut self) {
        let listened = async {
            let mut listener = PgListener::connect(&self.url).await?;
            listener.listen(&self.channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listened.await {
            Ok(listener) => self.listener = Some(listener),
            Err(e) => {
                tracing::warn!(service = %self.service, error = %e, "outbox relay cannot LISTEN for followers")
            }
        }
    }
}

/// The advisory lock's key for `service`: FNV-1a of a fixed prefix and the
/// name (stable across builds and processes, unlike std's hasher).
fn lock_key(service: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"ordermesh-outbox-relay/".iter().chain(service.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_has_its_own_stable_lock() {
        assert_eq!(lock_key("order"), lock_key("order"));
        assert_ne!(lock_key("order"), lock_key("payment"));
        assert_ne!(lock_key(""), lock_key("inventory"));
        // Pinned (FNV-1a 64 of "ordermesh-outbox-relay/order", computed
        // apart): replicas of different builds must agree on the key.
        assert_eq!(lock_key("order"), 0xaf80_caed_6602_27b3_u64 as i64);
    }
}
