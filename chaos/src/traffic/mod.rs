//! The traffic: a few workers, each drawing its actions from its own RNG
//! seeded by the run's seed and its index, so the choices (which workload,
//! which process, which SKUs, which customer, when to cancel) replay with
//! the seed; what the services answer under faults is the run's to record.
//!
//! Workloads: confirmable orders over the catalogue's SKUs; hot orders on
//! two SKUs; crossed pairs (the same two SKUs in opposite orders, on the two
//! replicas at once); out-of-stock orders (the one-unit lamp, twice);
//! declined orders (a customer without funds); cancels, after a watched
//! confirmation or while the saga may still run; duplicate CreateOrders
//! (the same request sent twice at once); restocks; watches of earlier
//! orders. Calls go to both order replicas and, with a token, through the
//! gateway's native gRPC port; a CreateOrder that failed in transit is sent
//! again with the same request id, as a client would.

pub mod ops;
pub mod setup;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;

use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::order::v1 as order_pb;

use crate::history::Line;
use ops::{Recorder, Target};

/// SKUs every order can be filled from (restocked at setup).
pub const SKUS: [&str; 4] = ["KB-001", "MS-002", "MN-003", "CB-004"];
/// The SKUs most orders meet on.
pub const HOT: [&str; 2] = ["CB-004", "KB-001"];
/// One unit in stock; orders ask for two.
pub const SCARCE: &str = "LT-005";

/// Everything the workers share.
pub struct Traffic {
    pub seed: u64,
    /// order-0, order-1, then the gateway.
    pub targets: Vec<Target>,
    pub inventory: InventoryServiceClient<Channel>,
    pub recorder: Recorder,
    /// Funded customers.
    pub customers: Vec<String>,
    /// Customers whose payments are declined.
    pub broke: Vec<String>,
    /// Recently placed orders, for watches.
    recent: Mutex<Vec<String>>,
    /// Restocks whose outcome is unknown (resent when the run settles).
    pub unresolved: Mutex<Vec<(String, Line)>>,
    /// When the traffic ends: no action starts after it, and the waits of
    /// the actions in flight are cut to [`OVERRUN`] past it.
    end: OnceLock<Instant>,
}

/// How long actions in flight may outlast the traffic's end.
const OVERRUN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
enum Workload {
    Confirmable,
    Hot,
    Crossed,
    OutOfStock,
    Declined,
    Cancel,
    Duplicate,
    Restock,
    Watch,
}

const WEIGHTS: [(Workload, u32); 9] = [
    (Workload::Confirmable, 28),
    (Workload::Hot, 14),
    (Workload::Crossed, 8),
    (Workload::OutOfStock, 6),
    (Workload::Declined, 6),
    (Workload::Cancel, 16),
    (Workload::Duplicate, 10),
    (Workload::Restock, 4),
    (Workload::Watch, 8),
];

fn pick(rng: &mut fastrand::Rng) -> Workload {
    let total: u32 = WEIGHTS.iter().map(|(_, w)| w).sum();
    let mut roll = rng.u32(..total);
    for (workload, weight) in WEIGHTS {
        if roll < weight {
            return workload;
        }
        roll -= weight;
    }
    Workload::Confirmable
}

/// Codes after which a CreateOrder may or may not have landed.
fn in_doubt(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unavailable | DeadlineExceeded | Unknown | Internal | Cancelled | Aborted | ResourceExhausted
    )
}

fn line(sku: &str, quantity: i64) -> Line {
    Line {
        sku: sku.to_owned(),
        quantity,
    }
}

impl Traffic {
    pub fn new(
        seed: u64,
        targets: Vec<Target>,
        inventory: InventoryServiceClient<Channel>,
        recorder: Recorder,
        customers: Vec<String>,
        broke: Vec<String>,
    ) -> Self {
        Traffic {
            seed,
            targets,
            inventory,
            recorder,
            customers,
            broke,
            recent: Mutex::new(Vec::new()),
            unresolved: Mutex::new(Vec::new()),
            end: OnceLock::new(),
        }
    }

    /// Runs `workers` workers until `end`; each finishes the action it is in.
    pub async fn run(self: Arc<Self>, workers: usize, end: Instant) -> u64 {
        let _ = self.end.set(end);
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let traffic = self.clone();
                tokio::spawn(async move { traffic.worker(worker as u64, end).await })
            })
            .collect();
        let mut actions = 0;
        for handle in handles {
            actions += handle.await.unwrap_or(0);
        }
        actions
    }

    async fn worker(&self, worker: u64, end: Instant) -> u64 {
        let mut rng = fastrand::Rng::with_seed(self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (worker + 1));
        let mut n = 0;
        while Instant::now() < end {
            n += 1;
            let id = format!("s{}-w{worker}-{n}", self.seed);
            match pick(&mut rng) {
                Workload::Confirmable => {
                    let lines = self.lines(&mut rng);
                    let customer = self.customer(&mut rng);
                    let order = self.place(&mut rng, "confirmable", &id, &customer, &lines).await;
                    if let Some(order) = order
                        && rng.bool()
                    {
                        let target = self.target(&mut rng);
                        let within = self.capped(Duration::from_secs(30));
                        self.recorder
                            .watch(&target, "confirmable", &order.order_id, within)
                            .await;
                    }
                }
                Workload::Hot => {
                    let lines = [line(HOT[rng.usize(..HOT.len())], 1)];
                    let customer = self.customer(&mut rng);
                    self.place(&mut rng, "hot", &id, &customer, &lines).await;
                }
                Workload::Crossed => self.crossed(&mut rng, &id).await,
                Workload::OutOfStock => {
                    let mut lines = vec![line(SCARCE, 2)];
                    if rng.bool() {
                        lines.push(line(SKUS[rng.usize(..SKUS.len())], 1));
                        rng.shuffle(&mut lines);
                    }
                    let customer = self.customer(&mut rng);
                    self.place(&mut rng, "out-of-stock", &id, &customer, &lines).await;
                }
                Workload::Declined => {
                    let lines = [line(HOT[rng.usize(..HOT.len())], 1)];
                    let customer = self.broke[rng.usize(..self.broke.len())].clone();
                    self.place(&mut rng, "declined", &id, &customer, &lines).await;
                }
                Workload::Cancel => self.cancel(&mut rng, &id).await,
                Workload::Duplicate => self.duplicate(&mut rng, &id).await,
                Workload::Restock => {
                    let sku = SKUS[rng.usize(..SKUS.len())];
                    self.restock(&format!("{id}-restock"), &line(sku, rng.i64(1..=20)), "restock")
                        .await;
                }
                Workload::Watch => {
                    let order_id = {
                        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                        (!recent.is_empty()).then(|| recent[rng.usize(..recent.len())].clone())
                    };
                    if let Some(order_id) = order_id {
                        let target = self.target(&mut rng);
                        let within = self.capped(Duration::from_millis(rng.u64(3_000..=15_000)));
                        self.recorder.watch(&target, "watch", &order_id, within).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(0..50))).await;
        }
        n
    }

    /// `wait`, cut to end no later than [`OVERRUN`] after the traffic.
    fn capped(&self, wait: Duration) -> Duration {
        match self.end.get() {
            Some(end) => wait.min((*end + OVERRUN).saturating_duration_since(Instant::now())),
            None => wait,
        }
    }

    /// order-0 and order-1 two times in five each, the gateway one in five.
    fn target(&self, rng: &mut fastrand::Rng) -> Target {
        let i = match rng.u32(..5) {
            0 | 1 => 0,
            2 | 3 => 1,
            _ => 2,
        };
        self.targets[i.min(self.targets.len() - 1)].clone()
    }

    fn customer(&self, rng: &mut fastrand::Rng) -> String {
        self.customers[rng.usize(..self.customers.len())].clone()
    }

    /// One to three distinct SKUs, one to three of each, in a random order.
    fn lines(&self, rng: &mut fastrand::Rng) -> Vec<Line> {
        let mut skus = SKUS.to_vec();
        rng.shuffle(&mut skus);
        skus.truncate(rng.usize(1..=3));
        skus.into_iter().map(|sku| line(sku, rng.i64(1..=3))).collect()
    }

    /// CreateOrder, sent again with the same request id (up to three more
    /// times, to any process) while its outcome is in doubt.
    async fn place(
        &self,
        rng: &mut fastrand::Rng,
        workload: &str,
        request_id: &str,
        customer: &str,
        lines: &[Line],
    ) -> Option<order_pb::Order> {
        for attempt in 0..4 {
            let target = self.target(rng);
            match self
                .recorder
                .create(&target, workload, request_id, customer, lines)
                .await
            {
                Ok(order) => {
                    let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                    if recent.len() >= 256 {
                        recent.remove(0);
                    }
                    recent.push(order.order_id.clone());
                    return Some(order);
                }
                Err(code) if in_doubt(code) && attempt < 3 => {
                    tokio::time::sleep(Duration::from_millis(rng.u64(200..=800))).await;
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// The same two SKUs in opposite orders, on the two replicas at once.
    async fn crossed(&self, rng: &mut fastrand::Rng, id: &str) {
        let mut skus = SKUS.to_vec();
        rng.shuffle(&mut skus);
        let (a, b) = (skus[0], skus[1]);
        let (c1, c2) = (self.customer(rng), self.customer(rng));
        let (t1, t2) = (self.targets[0].clone(), self.targets[1].clone());
        let (r1, r2) = (format!("{id}-ab"), format!("{id}-ba"));
        let (l1, l2) = ([line(a, 1), line(b, 1)], [line(b, 1), line(a, 1)]);
        // Both outcomes are in the history; nothing follows them here.
        let _ = tokio::join!(
            self.recorder.create(&t1, "crossed", &r1, &c1, &l1),
            self.recorder.create(&t2, "crossed", &r2, &c2, &l2),
        );
    }

    /// The same CreateOrder sent twice at once (to any two processes).
    async fn duplicate(&self, rng: &mut fastrand::Rng, id: &str) {
        let lines = self.lines(rng);
        let customer = self.customer(rng);
        let (t1, t2) = (self.target(rng), self.target(rng));
        let _ = tokio::join!(
            self.recorder.create(&t1, "duplicate", id, &customer, &lines),
            self.recorder.create(&t2, "duplicate", id, &customer, &lines),
        );
    }

    /// An order cancelled: after a watch saw it confirmed, or at once and
    /// again until it is confirmed (the cancel may meet the saga still
    /// running) or ends otherwise.
    async fn cancel(&self, rng: &mut fastrand::Rng, id: &str) {
        let lines = self.lines(rng);
        let customer = self.customer(rng);
        let Some(order) = self.place(rng, "cancel", id, &customer, &lines).await else {
            return;
        };
        let order_id = order.order_id;
        if rng.bool() {
            let target = self.target(rng);
            let within = self.capped(Duration::from_secs(40));
            let seen = self.recorder.watch(&target, "cancel", &order_id, within).await;
            if seen.as_deref() != Some("CONFIRMED") {
                return;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(rng.u64(0..400))).await;
        }
        let give_up = Instant::now() + self.capped(Duration::from_secs(30));
        while Instant::now() < give_up {
            let target = self.target(rng);
            match self.recorder.cancel(&target, "cancel", &order_id).await {
                (tonic::Code::Ok, _) => return,
                (tonic::Code::FailedPrecondition, _) => {
                    let status = self.recorder.get(&target, "cancel", &order_id).await;
                    if matches!(status.as_deref(), Some("REJECTED" | "CANCELLED")) {
                        return;
                    }
                }
                (tonic::Code::NotFound | tonic::Code::InvalidArgument, _) => return,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(300..=700))).await;
        }
    }

    /// AdjustStock, sent again with its request id while unacknowledged;
    /// remembered for the settle phase if it never was.
    pub async fn restock(&self, request_id: &str, line: &Line, workload: &str) -> bool {
        for attempt in 0..3 {
            if self
                .recorder
                .adjust(&self.inventory, workload, request_id, line)
                .await
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300 * (attempt + 1))).await;
        }
        self.unresolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((request_id.to_owned(), line.clone()));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_drawn_from_the_seed() {
        let draw = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..50)
                .map(|_| format!("{:?}", pick(&mut rng)))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(4), draw(4));
        assert_ne!(draw(4), draw(5));
        let all: std::collections::BTreeSet<String> = (0..20).flat_map(draw).collect();
        assert_eq!(all.len(), WEIGHTS.len(), "every workload comes up");
    }
}
