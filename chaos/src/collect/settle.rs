//! The settle phase, bounded by `--settle`: restocks whose outcome stayed
//! unknown are sent again (same request id, so each applies once), then the
//! run waits until every order is terminal or its saga waits for an
//! operator, and then until the outboxes have drained (the streams' last
//! sequences stop moving) and every durable consumer has caught up. What is
//! still open at the deadline is left for the checker to report.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::{Sources, nats, orders, sagas};
use crate::traffic::Traffic;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Settled {
    /// Orders neither terminal nor waiting for an operator at the end.
    pub open_orders: usize,
    /// Messages the consumers had not received or acked at the end.
    pub consumer_backlog: u64,
    pub waited_ms: u64,
}

pub async fn settle(sources: &Sources, traffic: &Traffic, within: Duration) -> Settled {
    let start = Instant::now();
    let deadline = start + within;
    let unresolved: Vec<_> =
        std::mem::take(&mut *traffic.unresolved.lock().unwrap_or_else(|p| p.into_inner()));
    for (request_id, line) in unresolved {
        while Instant::now() < deadline && !traffic.restock(&request_id, &line, "restock-resolve").await {}
    }
    let mut settled = Settled::default();
    let mut said = start;
    loop {
        settled.open_orders = open_orders(sources).await.unwrap_or(usize::MAX);
        if settled.open_orders == 0 || Instant::now() >= deadline {
            break;
        }
        if said.elapsed() >= Duration::from_secs(10) {
            eprintln!("chaos: settling: {} orders still open", settled.open_orders);
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut last = Vec::new();
    let js = nats::context(&sources.nats_url).await.ok();
    if js.is_none() {
        settled.consumer_backlog = u64::MAX;
    }
    while let Some(js) = &js {
        let sequences = nats::last_sequences(js).await.unwrap_or_default();
        settled.consumer_backlog = nats::consumer_backlog(js).await.unwrap_or(u64::MAX);
        let drained = sequences == last && settled.consumer_backlog == 0;
        if drained || Instant::now() >= deadline {
            break;
        }
        last = sequences;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    settled.waited_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    settled
}

/// Orders not terminal whose saga does not wait for an operator.
async fn open_orders(sources: &Sources) -> Result<usize, super::CollectError> {
    let orders = orders(&sources.order).await?;
    let waiting: std::collections::BTreeSet<String> = sagas(&sources.order)
        .await?
        .into_iter()
        .filter(|s| s.needs_attention)
        .map(|s| s.order_id)
        .collect();
    Ok(orders
        .iter()
        .filter(|o| !o.terminal() && !waiting.contains(&o.order_id))
        .count())
}
