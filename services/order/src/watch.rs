//! WatchOrder's feed: one broadcast channel per watched order, fed by this
//! process's saga workers as they record each step, and by one poll per
//! process for changes other replicas made.
//!
//! Why not a poll per watcher: a thousand watchers would read the database a
//! thousand times a second. Here a watcher costs one database read when it
//! subscribes (and again only if it lags behind its channel); the poll for
//! other replicas' changes reads the versions of the watched orders (one
//! query per 64 of them) per interval for the whole process, and only while
//! someone watches. Snapshots carry the order's `version`, so a watcher fed
//! from both sources keeps only newer ones.
//!
//! Why by version and not by update time: a write stamps its time before it
//! waits for a connection or a row lock, so writes commit out of time order;
//! a poll that looks back a fixed window past the newest time it has seen
//! misses a write that committed late, and the watch of that order never
//! ends. A version per row cannot be missed, and the poll's cost follows the
//! watched orders, not the write rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::store::{Order, Store};

/// How many snapshots a watcher may fall behind before it re-reads.
const CHANNEL_CAPACITY: usize = 16;

#[derive(Clone)]
pub struct WatchHub {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    orders: Mutex<HashMap<String, Watched>>,
}

struct Watched {
    sender: broadcast::Sender<Arc<Order>>,
    /// The newest version sent.
    version: i64,
}

impl WatchHub {
    pub fn new(store: Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                orders: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn orders(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watched>> {
        self.inner.orders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new snapshot of an order (a recorded saga step, a cancel): sent to
    /// its watchers, if it has any and it is newer than what they have.
    pub fn publish(&self, order: &Order) {
        let mut orders = self.orders();
        let Some(watched) = orders.get_mut(&order.order_id) else {
            return;
        };
        if watched.sender.receiver_count() == 0 {
            orders.remove(&order.order_id);
            return;
        }
        if order.version > watched.version {
            watched.version = order.version;
            let _ = watched.sender.send(Arc::new(order.clone()));
        }
    }

    /// A receiver of an order's snapshots. Subscribe before reading the order
    /// the first time, so no change between the two is missed.
    pub fn subscribe(&self, order_id: &str) -> broadcast::Receiver<Arc<Order>> {
        self.orders()
            .entry(order_id.to_owned())
            .or_insert_with(|| Watched {
                sender: broadcast::channel(CHANNEL_CAPACITY).0,
                version: -1,
            })
            .sender
            .subscribe()
    }

    /// Polls, every `interval` while anyone watches, for changes made by
    /// other processes, until the task is dropped.
    pub async fn poll_forever(self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let watched: HashMap<String, i64> = {
                let mut orders = self.orders();
                orders.retain(|_, w| w.sender.receiver_count() > 0);
                orders.iter().map(|(id, w)| (id.clone(), w.version)).collect()
            };
            if watched.is_empty() {
                continue;
            }
            let ids: Vec<String> = watched.keys().cloned().collect();
            let versions = match self.inner.store.versions_of(&ids).await {
                Ok(versions) => versions,
                Err(e) => {
                    tracing::warn!(error = %e, "watch poll failed");
                    continue;
                }
            };
            for (order_id, version) in versions {
                if watched.get(&order_id).is_some_and(|seen| version > *seen) {
                    match self.inner.store.order(&order_id).await {
                        Ok(Some(order)) => self.publish(&order),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(%order_id, error = %e, "watch read failed"),
                    }
                }
            }
        }
    }
}
