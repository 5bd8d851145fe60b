//! Reading the end state through the public APIs only (the services' and
//! NATS's; never a database) into a [`Snapshot`]: every order and unfinished
//! saga, each order's reservation and timeline, every payment of the run's
//! accounts with its ledger entries, the ledger audit, the stock, the
//! confirmation notices, every service's dead letters, the streams from
//! sequence 1, and the `panicked at` lines of the processes' logs.
//!
//! Per-order reads go sixteen at a time; a read that fails is retried a few
//! times (the run just ended: a breaker may still be open).

pub mod nats;
pub mod settle;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tonic::transport::Channel;

use ordermesh_proto::events::v1 as events_pb;
use ordermesh_proto::events::v1::event_admin_service_client::EventAdminServiceClient;
use ordermesh_proto::inventory::v1 as inventory_pb;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::order_admin_service_client::OrderAdminServiceClient;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::payment::v1 as payment_pb;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;

use crate::check::snapshot::*;
use crate::history::Line;
use crate::traffic::ops::{order_status, short};

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{call}: {status}")]
    Call { call: String, status: tonic::Status },
    #[error("NATS: {0}")]
    Nats(String),
}

/// The services' channels, by what is read from them.
#[derive(Clone)]
pub struct Sources {
    /// An order replica (orders, sagas, timelines, notices).
    pub order: Channel,
    pub inventory: Channel,
    pub payment: Channel,
    /// Every service process, for its dead letters.
    pub services: Vec<(String, Channel)>,
    pub nats_url: String,
    /// Process logs, scanned for panics.
    pub logs: Vec<(String, PathBuf)>,
}

const PARALLEL: usize = 16;

/// Calls `f` until it answers (up to five times, a second apart).
pub async fn retried<T, F, Fut>(call: &str, mut f: F) -> Result<T, CollectError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Ok(value) => return Ok(value),
            Err(status) if attempt < 5 && status.code() != tonic::Code::NotFound => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(status) => {
                return Err(CollectError::Call {
                    call: call.to_owned(),
                    status,
                });
            }
        }
    }
}

fn lines(list: impl IntoIterator<Item = (String, i64)>) -> Vec<Line> {
    list.into_iter()
        .map(|(sku, quantity)| Line { sku, quantity })
        .collect()
}

fn micros(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
}

/// Every order, through ListOrders.
pub async fn orders(order: &Channel) -> Result<Vec<OrderSnap>, CollectError> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = retried("ListOrders", || {
            let mut client = OrderServiceClient::new(order.clone());
            let request = order_pb::ListOrdersRequest {
                customer_id: String::new(),
                page_size: 1000,
                page_token: page_token.clone(),
            };
            async move { client.list_orders(request).await }
        })
        .await?
        .into_inner();
        out.extend(page.orders.iter().map(|o| OrderSnap {
            order_id: o.order_id.clone(),
            request_id: o.request_id.clone(),
            customer_id: o.customer_id.clone(),
            status: order_status(o),
            reject_reason: if o.reject_reason() == order_pb::RejectReason::Unspecified {
                String::new()
            } else {
                short(o.reject_reason().as_str_name(), "REJECT_REASON_")
            },
            reject_detail: o.reject_detail.clone(),
            lines: lines(o.lines.iter().map(|l| (l.sku.clone(), l.quantity))),
            total_minor: o.total.as_ref().map_or(0, |m| m.amount_minor),
            create_us: micros(o.create_time.as_ref()),
            update_us: micros(o.update_time.as_ref()),
        }));
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

/// Every unfinished saga.
pub async fn sagas(order: &Channel) -> Result<Vec<SagaSnap>, CollectError> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = retried("ListSagas", || {
            let mut client = OrderAdminServiceClient::new(order.clone());
            let request = order_pb::ListSagasRequest {
                needs_attention_only: false,
                page_size: 1000,
                page_token: page_token.clone(),
            };
            async move { client.list_sagas(request).await }
        })
        .await?
        .into_inner();
        out.extend(page.sagas.iter().map(|s| SagaSnap {
            order_id: s.order_id.clone(),
            state: short(s.state().as_str_name(), "SAGA_STATE_"),
            step: short(s.step().as_str_name(), "SAGA_STEP_"),
            needs_attention: s.needs_attention,
            last_error: s.last_error.clone(),
        }));
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

/// Everything, once the run has settled.
pub async fn snapshot(sources: &Sources, accounts: &[String]) -> Result<Snapshot, CollectError> {
    let orders = orders(&sources.order).await?;
    let sagas = sagas(&sources.order).await?;
    let ids: Vec<String> = orders.iter().map(|o| o.order_id.clone()).collect();
    let reservations = per_order(&ids, |id| reservation(sources.inventory.clone(), id)).await?;
    let timelines = per_order(&ids, |id| timeline(sources.order.clone(), id)).await?;
    let mut payments = Vec::new();
    for account in accounts {
        payments.extend(payments_of(&sources.payment, account).await?);
    }
    let ledger = retried("VerifyLedger", || {
        let mut client = PaymentServiceClient::new(sources.payment.clone());
        async move { client.verify_ledger(payment_pb::VerifyLedgerRequest {}).await }
    })
    .await?
    .into_inner();
    let stock = retried("ListStock", || {
        let mut client = InventoryServiceClient::new(sources.inventory.clone());
        async move {
            client
                .list_stock(inventory_pb::ListStockRequest {
                    page_size: 1000,
                    page_token: String::new(),
                })
                .await
        }
    })
    .await?
    .into_inner()
    .items
    .into_iter()
    .map(|i| {
        (
            i.sku,
            StockSnap {
                available: i.available,
                reserved: i.reserved,
                sold: i.sold,
            },
        )
    })
    .collect();
    Ok(Snapshot {
        orders,
        sagas,
        reservations: reservations
            .into_iter()
            .filter_map(|(id, r)| Some((id, r?)))
            .collect(),
        payments,
        ledger: LedgerSnap {
            balanced: ledger.balanced,
            mismatched_accounts: ledger.mismatched_account_ids,
        },
        stock,
        timelines,
        notices: notices(&sources.order).await?,
        streams: nats::streams(&nats::context(&sources.nats_url).await?).await?,
        dead_letters: dead_letters(&sources.services).await?,
        panics: panics(&sources.logs),
    })
}

/// `read` for every order id, sixteen at a time.
async fn per_order<T, F, Fut>(ids: &[String], read: F) -> Result<BTreeMap<String, T>, CollectError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T, CollectError>>,
{
    let results: Vec<Result<(String, T), CollectError>> = futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let read = read(id.clone());
            async move { Ok((id, read.await?)) }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn reservation(inventory: Channel, order_id: String) -> Result<Option<ReservationSnap>, CollectError> {
    let answer = retried("GetReservation", || {
        let mut client = InventoryServiceClient::new(inventory.clone());
        let request = inventory_pb::GetReservationRequest {
            order_id: order_id.clone(),
        };
        async move { client.get_reservation(request).await }
    })
    .await;
    match answer {
        Ok(response) => Ok(response.into_inner().reservation.map(|r| ReservationSnap {
            status: short(r.status().as_str_name(), "RESERVATION_STATUS_"),
            lines: lines(r.lines.into_iter().map(|l| (l.sku, l.quantity))),
        })),
        Err(CollectError::Call { status, .. }) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

async fn timeline(order: Channel, order_id: String) -> Result<Vec<EventSnap>, CollectError> {
    let entries = retried("GetOrderTimeline", || {
        let mut client = OrderServiceClient::new(order.clone());
        let request = order_pb::GetOrderTimelineRequest {
            order_id: order_id.clone(),
        };
        async move { client.get_order_timeline(request).await }
    })
    .await?
    .into_inner()
    .entries;
    Ok(entries
        .iter()
        .map(|e| {
            let kind = e.r#type.rsplit('.').next().unwrap_or(&e.r#type);
            EventSnap::new(0, &e.event_id, kind, &order_id)
        })
        .collect())
}

async fn payments_of(payment: &Channel, account_id: &str) -> Result<Vec<PaymentSnap>, CollectError> {
    let mut found = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = retried("ListPayments", || {
            let mut client = PaymentServiceClient::new(payment.clone());
            let request = payment_pb::ListPaymentsRequest {
                account_id: account_id.to_owned(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            };
            async move { client.list_payments(request).await }
        })
        .await?
        .into_inner();
        found.extend(page.payments);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let ids: Vec<String> = found.iter().map(|p| p.payment_id.clone()).collect();
    let entries = per_order(&ids, |id| ledger_entries(payment.clone(), id)).await?;
    Ok(found
        .into_iter()
        .map(|p| PaymentSnap {
            ledger_entries: entries.get(&p.payment_id).copied().unwrap_or(0),
            status: short(p.status().as_str_name(), "PAYMENT_STATUS_"),
            amount_minor: p.amount.as_ref().map_or(0, |m| m.amount_minor),
            payment_id: p.payment_id,
            account_id: p.account_id,
            reference: p.reference,
        })
        .collect())
}

async fn ledger_entries(payment: Channel, payment_id: String) -> Result<usize, CollectError> {
    let page = retried("ListLedgerEntries", || {
        let mut client = PaymentServiceClient::new(payment.clone());
        let request = payment_pb::ListLedgerEntriesRequest {
            payment_id: payment_id.clone(),
            page_size: 1000,
            ..Default::default()
        };
        async move { client.list_ledger_entries(request).await }
    })
    .await?;
    Ok(page.into_inner().entries.len())
}

async fn notices(order: &Channel) -> Result<Vec<NoticeSnap>, CollectError> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = retried("ListConfirmationNotices", || {
            let mut client = OrderAdminServiceClient::new(order.clone());
            let request = order_pb::ListConfirmationNoticesRequest {
                customer_id: String::new(),
                page_size: 1000,
                page_token: page_token.clone(),
            };
            async move { client.list_confirmation_notices(request).await }
        })
        .await?
        .into_inner();
        out.extend(page.notices.into_iter().map(|n| NoticeSnap {
            order_id: n.order_id,
            event_id: n.event_id,
        }));
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

/// Every service's dead letters, each once.
async fn dead_letters(services: &[(String, Channel)]) -> Result<Vec<DeadLetterSnap>, CollectError> {
    let mut out: BTreeMap<String, DeadLetterSnap> = BTreeMap::new();
    for (name, channel) in services {
        let mut page_token = String::new();
        loop {
            let page = retried(&format!("ListDeadLetters on {name}"), || {
                let mut client = EventAdminServiceClient::new(channel.clone());
                let request = events_pb::ListDeadLettersRequest {
                    page_size: 1000,
                    page_token: page_token.clone(),
                };
                async move { client.list_dead_letters(request).await }
            })
            .await?
            .into_inner();
            for dead in page.dead_letters {
                let event = dead.event.unwrap_or_default();
                out.entry(dead.dead_letter_id.clone()).or_insert(DeadLetterSnap {
                    id: dead.dead_letter_id,
                    consumer: dead.consumer,
                    event_type: event.r#type.rsplit('.').next().unwrap_or_default().to_owned(),
                    subject: event.subject,
                    error: dead.error,
                });
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    Ok(out.into_values().collect())
}

/// `panicked at` lines in the logs (each with the line that follows it,
/// where Rust prints the message).
pub fn panics(logs: &[(String, PathBuf)]) -> Vec<PanicSnap> {
    let mut out = Vec::new();
    for (proc, path) in logs {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("panicked at") {
                let message = lines.get(i + 1).copied().unwrap_or_default();
                out.push(PanicSnap {
                    proc: proc.clone(),
                    line: format!("{} {}", line.trim(), message.trim())
                        .chars()
                        .take(400)
                        .collect(),
                });
            }
        }
    }
    out
}
