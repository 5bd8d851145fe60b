//! The `ordermesh.order.v1.OrderService` gRPC surface: validation,
//! conversion, and handing orders to the saga runner. No SQL here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use ordermesh_mesh::flags::Flags;
use ordermesh_mesh::stack::MeshChannel;
use ordermesh_proto::common::v1::Money;
use ordermesh_proto::inventory::v1 as inventory_pb;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::order::v1 as pb;
use ordermesh_proto::order::v1::order_service_server::OrderService;
use ordermesh_runtime::validate::{MAX_ID_LEN, Violations, invalid_field, require_id};
use ordermesh_runtime::{clock, paging};

use crate::saga::SagaRunner;
use crate::store::{self, Created, NewOrder, Store};

/// A watcher re-reads the order at least this often, so it also sees
/// changes made by another replica.
const WATCH_POLL: Duration = Duration::from_secs(1);

/// The feature flag that makes CreateOrder refuse orders it can already
/// see cannot be filled (rolled out per customer id).
pub const PRECHECK_FLAG: &str = "order_availability_precheck";

pub struct OrderApi {
    store: Store,
    runner: SagaRunner,
    updates: broadcast::Sender<Arc<store::Order>>,
    inventory: InventoryServiceClient<MeshChannel>,
    flags: Flags,
}

impl OrderApi {
    pub fn new(
        store: Store,
        runner: SagaRunner,
        updates: broadcast::Sender<Arc<store::Order>>,
        inventory: InventoryServiceClient<MeshChannel>,
        flags: Flags,
    ) -> Self {
        Self {
            store,
            runner,
            updates,
            inventory,
            flags,
        }
    }

    /// With the precheck flag on for this customer: refuse an order whose
    /// lines are out of stock now, before anything is written. The check is
    /// advisory (stock can still run out before the reservation), and it
    /// fails open: when inventory cannot answer, the saga decides.
    async fn precheck(&self, request: &pb::CreateOrderRequest) -> Result<(), Status> {
        if !self.flags.is_enabled(PRECHECK_FLAG, Some(&request.customer_id)) {
            return Ok(());
        }
        let check = inventory_pb::CheckAvailabilityRequest {
            lines: request
                .lines
                .iter()
                .map(|l| inventory_pb::StockLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                })
                .collect(),
        };
        let mut client = self.inventory.clone();
        match client.check_availability(check).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                if answer.available {
                    return Ok(());
                }
                let short: Vec<String> = answer
                    .lines
                    .iter()
                    .filter(|l| !l.sufficient)
                    .map(|l| format!("{} (requested {}, available {})", l.sku, l.requested, l.available))
                    .collect();
                Err(Status::failed_precondition(format!(
                    "insufficient stock: {}",
                    short.join(", ")
                )))
            }
            Err(status) if status.code() == tonic::Code::NotFound => Err(status),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "availability precheck skipped");
                Ok(())
            }
        }
    }
}

fn status_to_pb(status: store::OrderStatus) -> pb::OrderStatus {
    use store::OrderStatus as S;
    match status {
        S::Pending => pb::OrderStatus::Pending,
        S::StockReserved => pb::OrderStatus::StockReserved,
        S::PaymentAuthorized => pb::OrderStatus::PaymentAuthorized,
        S::PaymentCaptured => pb::OrderStatus::PaymentCaptured,
        S::Confirmed => pb::OrderStatus::Confirmed,
        S::Compensating => pb::OrderStatus::Compensating,
        S::Rejected => pb::OrderStatus::Rejected,
        S::Cancelling => pb::OrderStatus::Cancelling,
        S::Cancelled => pb::OrderStatus::Cancelled,
    }
}

fn reject_reason_to_pb(reason: &str) -> pb::RejectReason {
    pb::RejectReason::from_str_name(&format!("REJECT_REASON_{reason}"))
        .unwrap_or(pb::RejectReason::Unspecified)
}

pub fn order_to_pb(order: store::Order) -> pb::Order {
    let currency = order.currency_code.clone();
    let money = |amount_minor: i64| Money {
        amount_minor,
        currency_code: currency.clone(),
    };
    pb::Order {
        status: status_to_pb(order.status).into(),
        lines: order
            .lines
            .into_iter()
            .map(|l| pb::OrderLine {
                unit_price: l.unit_price_minor.map(money),
                line_total: l.unit_price_minor.map(|p| money(p.saturating_mul(l.quantity))),
                sku: l.sku,
                quantity: l.quantity,
            })
            .collect(),
        total: order.total_minor.map(money),
        reject_reason: reject_reason_to_pb(&order.reject_reason).into(),
        reject_detail: order.reject_detail,
        payment_id: order.payment_id,
        create_time: Some(clock::timestamp(order.create_time)),
        update_time: Some(clock::timestamp(order.update_time)),
        order_id: order.order_id,
        request_id: order.request_id,
        customer_id: order.customer_id,
    }
}

fn validate_create(request: &pb::CreateOrderRequest) -> Result<(), Status> {
    let mut v = Violations::new();
    v.require_id("request_id", &request.request_id);
    v.require_id("customer_id", &request.customer_id);
    v.require_lines(request.lines.iter().map(|l| (l.sku.as_str(), l.quantity)));
    v.into_result()
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchOrderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let request = request.into_inner();
        validate_create(&request)?;
        self.precheck(&request).await?;
        let new = NewOrder {
            order_id: uuid::Uuid::now_v7().to_string(),
            request_id: request.request_id,
            customer_id: request.customer_id,
            lines: request.lines.into_iter().map(|l| (l.sku, l.quantity)).collect(),
        };
        let order = match self
            .store
            .create_order(&new, self.runner.owner(), self.runner.lease_until())
            .await?
        {
            Created::New(order) => {
                tracing::info!(order_id = %order.order_id, customer_id = %order.customer_id, "order created");
                self.runner.spawn(order.order_id.clone());
                order
            }
            Created::Replay(order) => {
                tracing::info!(order_id = %order.order_id, request_id = %order.request_id, "CreateOrder replayed");
                order
            }
        };
        Ok(Response::new(pb::CreateOrderResponse {
            order: Some(order_to_pb(order)),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let order_id = request.into_inner().order_id;
        require_id("order_id", &order_id)?;
        let order = self
            .store
            .order(&order_id)
            .await?
            .ok_or(crate::Error::NotFound { order_id })?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(order_to_pb(order)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let request = request.into_inner();
        let size = paging::page_size(request.page_size)?;
        let position = paging::decode_time_id(&request.page_token)?;
        if request.customer_id.len() > MAX_ID_LEN {
            return Err(invalid_field("customer_id", "is too long"));
        }
        let mut orders = self
            .store
            .list_orders(&request.customer_id, position, size + 1)
            .await?;
        let next_page_token = paging::next_page(&mut orders, size, |o| {
            paging::time_id_key(o.create_time, &o.order_id)
        });
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.into_iter().map(order_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let order_id = request.into_inner().order_id;
        require_id("order_id", &order_id)?;
        let order = self
            .store
            .start_cancel(&order_id, self.runner.owner(), self.runner.lease_until())
            .await?;
        if order.status == store::OrderStatus::Cancelling {
            tracing::info!(%order_id, "cancelling order");
            let _ = self.updates.send(Arc::new(order.clone()));
            self.runner.spawn(order_id);
        }
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(order_to_pb(order)),
        }))
    }

    type WatchOrderStream = WatchStream;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let order_id = request.into_inner().order_id;
        require_id("order_id", &order_id)?;
        // Subscribe before the first read so no change between them is missed.
        let mut updates = self.updates.subscribe();
        let first = self.store.order(&order_id).await?.ok_or(crate::Error::NotFound {
            order_id: order_id.clone(),
        })?;
        let (tx, rx) = mpsc::channel(16);
        let store = self.store.clone();
        tokio::spawn(async move {
            // Each recorded step arrives as a snapshot, in order; a watcher
            // that lags, or a change made by another replica, is caught up by
            // re-reading the order. Only status changes are sent.
            let mut last = first.status;
            let terminal = last.is_terminal();
            let send = |order: store::Order| pb::WatchOrderResponse {
                order: Some(order_to_pb(order)),
            };
            if tx.send(Ok(send(first))).await.is_err() || terminal {
                return;
            }
            loop {
                let next = tokio::select! {
                    update = updates.recv() => match update {
                        Ok(order) if order.order_id != order_id => continue,
                        Ok(order) => Some((*order).clone()),
                        Err(broadcast::error::RecvError::Lagged(_)) => None,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = tokio::time::sleep(WATCH_POLL) => None,
                    () = tx.closed() => return,
                };
                let order = match next {
                    Some(order) => order,
                    None => match store.order(&order_id).await {
                        Ok(Some(order)) => order,
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    },
                };
                if order.status == last {
                    continue;
                }
                last = order.status;
                let terminal = last.is_terminal();
                if tx.send(Ok(send(order))).await.is_err() || terminal {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
