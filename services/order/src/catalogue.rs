//! A read cache of the catalogue (each SKU's name and unit price), so
//! CreateOrder can name an order's lines, and the availability precheck can
//! refuse an unknown SKU, without a call to inventory per order.
//!
//! Why a cache and why this one: the catalogue changes rarely and is read on
//! every order. Entries are filled on a miss (one GetStock), dropped when
//! inventory publishes ProductUpdated for their SKU (this process tails that
//! subject: every replica must see every update, so it is a live
//! subscription, not a shared durable consumer), and expire after a TTL as a
//! safety net for an update missed while the subscription was down (which
//! also clears the cache when it reconnects). The size is bounded; past it
//! the oldest entry goes. A stale entry never changes what is charged: the
//! reservation returns the authoritative price.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tonic::Code;

use ordermesh_events::{Bus, DomainEvent};
use ordermesh_mesh::stack::MeshChannel;
use ordermesh_proto::events::v1::ProductUpdated;
use ordermesh_proto::inventory::v1 as inventory_pb;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;

/// A catalogue entry as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub name: String,
    pub unit_price_minor: i64,
    pub currency_code: String,
}

/// What the cache (or inventory, on a miss) says about a SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Known(Product),
    /// Inventory answered that the SKU is not in the catalogue.
    Unknown,
    /// Inventory could not be asked; nothing is known.
    Unreachable,
}

#[derive(Clone)]
pub struct Catalogue {
    inner: Arc<Inner>,
}

struct Inner {
    entries: Mutex<HashMap<String, (Product, Instant)>>,
    inventory: InventoryServiceClient<MeshChannel>,
    ttl: Duration,
    capacity: usize,
}

impl Catalogue {
    pub fn new(inventory: InventoryServiceClient<MeshChannel>, ttl: Duration, capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                entries: Mutex::new(HashMap::new()),
                inventory,
                ttl,
                capacity: capacity.max(1),
            }),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Product, Instant)>> {
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached entry, if fresh.
    pub fn cached(&self, sku: &str) -> Option<Product> {
        let entries = self.entries();
        let (product, fetched) = entries.get(sku)?;
        (fetched.elapsed() < self.inner.ttl).then(|| product.clone())
    }

    /// The entry, from the cache or else from inventory.
    pub async fn lookup(&self, sku: &str) -> Lookup {
        if let Some(product) = self.cached(sku) {
            return Lookup::Known(product);
        }
        let mut client = self.inner.inventory.clone();
        let answer = client
            .get_stock(inventory_pb::GetStockRequest { sku: sku.into() })
            .await;
        match answer {
            Ok(response) => {
                let Some(item) = response.into_inner().item else {
                    return Lookup::Unreachable;
                };
                let price = item.unit_price.unwrap_or_default();
                let product = Product {
                    name: item.name,
                    unit_price_minor: price.amount_minor,
                    currency_code: price.currency_code,
                };
                self.insert(sku, product.clone());
                Lookup::Known(product)
            }
            Err(status) if status.code() == Code::NotFound => Lookup::Unknown,
            Err(status) => {
                tracing::debug!(%sku, code = ?status.code(), "catalogue lookup failed");
                Lookup::Unreachable
            }
        }
    }

    fn insert(&self, sku: &str, product: Product) {
        let mut entries = self.entries();
        if entries.len() >= self.inner.capacity && !entries.contains_key(sku) {
            let oldest = entries
                .iter()
                .min_by_key(|(_, (_, fetched))| *fetched)
                .map(|(sku, _)| sku.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(sku.to_owned(), (product, Instant::now()));
    }

    /// Drops a SKU's entry (its product changed).
    pub fn invalidate(&self, sku: &str) {
        self.entries().remove(sku);
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Follows ProductUpdated events on `bus` until the task is dropped,
    /// dropping the entry of each updated SKU. Whenever the subscription
    /// (re)starts, the cache is cleared: updates missed meanwhile cannot
    /// leave a stale entry behind. The bus ends the subscription when its
    /// stream is deleted or re-created (NATS lost its store: a subscription
    /// left running would resume at its old sequence and skip every update
    /// up to there), so that, too, clears the cache and subscribes again.
    pub async fn follow(self, bus: Bus) {
        let subject = <ProductUpdated as DomainEvent>::KIND.subject();
        let mut backoff = Duration::from_millis(100);
        loop {
            match bus.tail(&subject).await {
                Ok(mut updates) => {
                    self.entries().clear();
                    backoff = Duration::from_millis(100);
                    while let Some(update) = updates.next().await {
                        match update.and_then(|event| event.decode::<ProductUpdated>()) {
                            Ok(updated) => {
                                tracing::debug!(sku = %updated.sku, "catalogue entry invalidated");
                                self.invalidate(&updated.sku);
                            }
                            Err(e) => tracing::warn!(error = %e, "catalogue update not understood"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot follow catalogue updates; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
