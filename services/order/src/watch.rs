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
//! A watcher's first read comes from memory when this process's saga
//! worker drives the order (the worker keeps the order as it recorded it,
//! see [`WatchHub::driving`]): an order followed from its creation, as a
//! client placing it does, costs its watcher no database read at all. Any
//! other order is read from the database.
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
    /// The order as this process's saga worker last recorded it, while
    /// one drives it: what a new watcher gets first.
    driven: Option<Arc<Order>>,
}

impl Watched {
    fn new() -> Self {
        Watched {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
            version: -1,
            driven: None,
        }
    }

    /// Nobody needs the entry: no watcher and no worker.
    fn unused(&self) -> bool {
        self.sender.receiver_count() == 0 && self.driven.is_none()
    }
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
        if watched.unused() {
            orders.remove(&order.order_id);
            return;
        }
        if order.version > watched.version {
            watched.version = order.version;
            let snapshot = Arc::new(order.clone());
            if watched.driven.is_some() {
                watched.driven = Some(snapshot.clone());
            }
            if watched.sender.receiver_count() > 0 {
                let _ = watched.sender.send(snapshot);
            }
        }
    }

    /// A saga worker of this process starts driving `order` (as it read or
    /// created it): until [`WatchHub::released`], new watchers get the
    /// order as the worker last recorded it instead of reading it.
    pub fn driving(&self, order: &Order) {
        let mut orders = self.orders();
        let watched = orders.entry(order.order_id.clone()).or_insert_with(Watched::new);
        if order.version >= watched.version {
            watched.version = order.version;
            watched.driven = Some(Arc::new(order.clone()));
        } else {
            // A watcher already saw a newer version (another replica's):
            // this worker's view is stale and its first write will fail.
            watched.driven = None;
        }
    }

    /// The worker that drove the order ended: its view no longer counts.
    pub fn released(&self, order_id: &str) {
        let mut orders = self.orders();
        if let Some(watched) = orders.get_mut(order_id) {
            watched.driven = None;
            if watched.unused() {
                orders.remove(order_id);
            }
        }
    }

    /// The order as this process's worker last recorded it, if one drives
    /// it now.
    pub fn driven(&self, order_id: &str) -> Option<Arc<Order>> {
        self.orders().get(order_id).and_then(|w| w.driven.clone())
    }

    /// A receiver of an order's snapshots. Subscribe before reading the order
    /// the first time, so no change between the two is missed.
    pub fn subscribe(&self, order_id: &str) -> broadcast::Receiver<Arc<Order>> {
        self.orders()
            .entry(order_id.to_owned())
            .or_insert_with(Watched::new)
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
                orders.retain(|_, w| !w.unused());
                orders
                    .iter()
                    .filter(|(_, w)| w.sender.receiver_count() > 0)
                    .map(|(id, w)| (id.clone(), w.version))
                    .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OrderStatus, RejectReason};
    use ordermesh_events::{Notifier, Outbox, Publisher};
    use ordermesh_runtime::db::{Backend, Db};

    fn hub() -> WatchHub {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .connect_lazy("sqlite::memory:")
            .expect("a lazy pool");
        let db = Db {
            write: pool.clone(),
            read: pool,
            backend: Backend::Sqlite,
            service: "order",
        };
        WatchHub::new(Store::new(
            db,
            Publisher::new(Outbox::new("/test"), Notifier::default()),
        ))
    }

    fn order(version: i64, status: OrderStatus) -> Order {
        Order {
            order_id: "o-1".into(),
            request_id: "r-1".into(),
            customer_id: "alice".into(),
            status,
            lines: Vec::new(),
            total_minor: None,
            currency_code: String::new(),
            reject_reason: RejectReason::NotRejected,
            reject_detail: String::new(),
            payment_id: String::new(),
            create_time: 1,
            update_time: version,
            version,
            traceparent: String::new(),
        }
    }

    #[tokio::test]
    async fn a_driven_order_is_served_as_its_worker_last_recorded_it() {
        let hub = hub();
        assert!(hub.driven("o-1").is_none());
        hub.driving(&order(1, OrderStatus::Pending));
        assert_eq!(hub.driven("o-1").map(|o| o.version), Some(1));
        let mut watcher = hub.subscribe("o-1");
        hub.publish(&order(2, OrderStatus::Confirmed));
        assert_eq!(hub.driven("o-1").map(|o| o.status), Some(OrderStatus::Confirmed));
        assert_eq!(watcher.try_recv().map(|o| o.version).ok(), Some(2));
        // An older snapshot changes nothing.
        hub.publish(&order(1, OrderStatus::Pending));
        assert_eq!(hub.driven("o-1").map(|o| o.version), Some(2));
        hub.released("o-1");
        assert!(
            hub.driven("o-1").is_none(),
            "after its worker, the order is read again"
        );
        assert_eq!(hub.orders().len(), 1, "kept for its watcher");
        drop(watcher);
        hub.released("o-1");
        assert!(hub.orders().is_empty(), "nobody needs it");
    }

    #[tokio::test]
    async fn a_worker_behind_what_watchers_saw_serves_nothing() {
        let hub = hub();
        let _watcher = hub.subscribe("o-1");
        hub.publish(&order(5, OrderStatus::Confirmed));
        hub.driving(&order(3, OrderStatus::Pending));
        assert!(hub.driven("o-1").is_none());
    }

    #[tokio::test]
    async fn without_a_worker_or_watchers_nothing_is_kept() {
        let hub = hub();
        hub.driving(&order(1, OrderStatus::Pending));
        hub.released("o-1");
        assert!(hub.orders().is_empty());
        hub.publish(&order(2, OrderStatus::Pending));
        assert!(hub.orders().is_empty(), "a publish alone keeps nothing");
    }
}
