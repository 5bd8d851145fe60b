//! The `ordermesh.order.v1.OrderService` gRPC surface: validation,
//! conversion, who may act on which order, and handing orders to the saga
//! runner (`place`, `cancel`). No SQL and no leases here.
//!
//! Access (decided here, where the orders live, whatever the gateway let
//! through): a customer's token places orders for its own customer only,
//! and sees, watches and cancels its own orders only; another customer's
//! order answers NOT_FOUND, as a missing one, so order ids reveal nothing.
//! Lists are confined to the caller's customer. Operators and services act
//! for anyone ([`ordermesh_runtime::actor`]).

use std::pin::Pin;

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
use ordermesh_runtime::actor::{Actor, Trust};
use ordermesh_runtime::validate::{MAX_ID_LEN, Violations, invalid_field, require_id, too_long};
use ordermesh_runtime::{clock, paging};

use crate::catalogue::{Catalogue, Lookup};
use crate::saga::SagaRunner;
use crate::store::{self, Created, NewLine, NewOrder, Store};
use crate::watch::WatchHub;

/// The feature flag that makes CreateOrder refuse orders it can already
/// see cannot be filled (rolled out per customer id).
pub const PRECHECK_FLAG: &str = "order_availability_precheck";

pub struct OrderApi {
    store: Store,
    runner: SagaRunner,
    watch: WatchHub,
    inventory: InventoryServiceClient<MeshChannel>,
    catalogue: Catalogue,
    flags: Flags,
    trust: Trust,
}

impl OrderApi {
    pub fn new(
        store: Store,
        runner: SagaRunner,
        watch: WatchHub,
        (inventory, catalogue): (InventoryServiceClient<MeshChannel>, Catalogue),
        flags: Flags,
        trust: Trust,
    ) -> Self {
        Self {
            store,
            runner,
            watch,
            inventory,
            catalogue,
            flags,
            trust,
        }
    }

    /// The order, when it exists and `actor` may see it: another customer's
    /// order is NOT_FOUND, as a missing one.
    async fn visible_order(&self, actor: &Actor, order_id: String) -> Result<store::Order, Status> {
        require_id("order_id", &order_id)?;
        match self.store.order(&order_id).await? {
            Some(order) if actor.may_act_for(&order.customer_id) => Ok(order),
            _ => Err(crate::error::Error::NotFound { order_id }.into()),
        }
    }

    /// The request's lines, named from the catalogue cache; the lookups say
    /// which SKUs inventory does not know.
    async fn named_lines(&self, lines: Vec<pb::CreateOrderLine>) -> (Vec<NewLine>, Vec<Lookup>) {
        let lookups = futures::future::join_all(lines.iter().map(|l| self.catalogue.lookup(&l.sku))).await;
        let named = lines
            .into_iter()
            .zip(&lookups)
            .map(|(line, lookup)| NewLine {
                name: match lookup {
                    Lookup::Known(product) => product.name.clone(),
                    Lookup::Unknown | Lookup::Unreachable => String::new(),
                },
                sku: line.sku,
                quantity: line.quantity,
            })
            .collect();
        (named, lookups)
    }

    /// With the precheck flag on for this customer: refuse an order whose
    /// lines are out of stock now, before anything is written. The check is
    /// advisory (stock can still run out before the reservation), and it
    /// fails open: when inventory cannot answer, the saga decides. Its
    /// refusals are this service's errors, with this service's reasons.
    async fn precheck(&self, new: &NewOrder, lookups: &[Lookup]) -> Result<(), Status> {
        // The catalogue cache already knows an unknown SKU (inventory said so).
        if let Some(index) = lookups.iter().position(|l| *l == Lookup::Unknown) {
            return Err(crate::error::Error::UnknownSku {
                field: format!("lines[{index}].sku"),
                sku: new.lines[index].sku.clone(),
            }
            .into());
        }
        let check = inventory_pb::CheckAvailabilityRequest {
            lines: new
                .lines
                .iter()
                .map(|line| inventory_pb::StockLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                })
                .collect(),
        };
        let mut client = self.inventory.clone();
        let answer = match client.check_availability(check).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "availability precheck skipped");
                return Ok(());
            }
        };
        if answer.available {
            return Ok(());
        }
        if let Some((index, line)) = answer.lines.iter().enumerate().find(|(_, l)| !l.known) {
            return Err(crate::error::Error::UnknownSku {
                field: format!("lines[{index}].sku"),
                sku: line.sku.clone(),
            }
            .into());
        }
        let short: Vec<&inventory_pb::LineAvailability> =
            answer.lines.iter().filter(|l| !l.sufficient).collect();
        let detail = short
            .iter()
            .map(|l| format!("{} (requested {}, available {})", l.sku, l.requested, l.available))
            .collect::<Vec<_>>()
            .join(", ");
        Err(crate::error::Error::InsufficientStock {
            sku: short.first().map(|l| l.sku.clone()).unwrap_or_default(),
            detail,
        }
        .into())
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

pub fn order_to_pb(order: store::Order) -> pb::Order {
    let currency = order.currency_code.clone();
    let trace_id = order.trace_id().to_owned();
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
                name: l.name,
            })
            .collect(),
        total: order.total_minor.map(money),
        reject_reason: pb::RejectReason::from(order.reject_reason).into(),
        reject_detail: order.reject_detail,
        payment_id: order.payment_id,
        create_time: Some(clock::timestamp(order.create_time)),
        update_time: Some(clock::timestamp(order.update_time)),
        trace_id,
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
        let actor = Actor::of(&request, self.trust);
        let request = request.into_inner();
        validate_create(&request)?;
        if !actor.may_act_for(&request.customer_id) {
            return Err(Status::permission_denied(format!(
                "customer_id: this caller may not place orders for customer {:?}",
                request.customer_id
            )));
        }
        let (lines, lookups) = self.named_lines(request.lines).await;
        let new = NewOrder {
            order_id: uuid::Uuid::now_v7().to_string(),
            request_id: request.request_id,
            customer_id: request.customer_id,
            lines,
            traceparent: ordermesh_mesh::trace::current_traceparent(),
        };
        // A replay gets the first answer, before any other check: the
        // precheck must not refuse a retry of an order that took the last unit.
        if self.flags.is_enabled(PRECHECK_FLAG, Some(&new.customer_id)) {
            if let Some(order) = self.store.replay_of(&new).await? {
                tracing::info!(order_id = %order.order_id, request_id = %order.request_id, "CreateOrder replayed");
                return Ok(Response::new(pb::CreateOrderResponse {
                    order: Some(order_to_pb(order)),
                }));
            }
            self.precheck(&new, &lookups).await?;
        }
        let order = match self.runner.place(&new).await? {
            Created::New(order, _) => {
                tracing::info!(order_id = %order.order_id, customer_id = %order.customer_id, "order created");
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
        let actor = Actor::of(&request, self.trust);
        let order = self.visible_order(&actor, request.into_inner().order_id).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(order_to_pb(order)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let actor = Actor::of(&request, self.trust);
        let request = request.into_inner();
        let size = paging::page_size(request.page_size)?;
        let position = paging::decode_time_id(&request.page_token)?;
        if too_long(&request.customer_id, MAX_ID_LEN) {
            return Err(invalid_field("customer_id", "is too long"));
        }
        // A customer lists its own orders only.
        let customer_id = match actor.confined_to() {
            Some(own) if request.customer_id.is_empty() || request.customer_id == own => own.to_owned(),
            Some(_) => {
                return Err(Status::permission_denied(
                    "customer_id: this caller may list its own customer's orders only",
                ));
            }
            None => request.customer_id,
        };
        let mut orders = self.store.list_orders(&customer_id, position, size + 1).await?;
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
        let actor = Actor::of(&request, self.trust);
        let order = self.visible_order(&actor, request.into_inner().order_id).await?;
        let order = self.runner.cancel(&order.order_id).await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(order_to_pb(order)),
        }))
    }

    type WatchOrderStream = WatchStream;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let actor = Actor::of(&request, self.trust);
        let order_id = request.into_inner().order_id;
        require_id("order_id", &order_id)?;
        // Subscribe before the first read so no change between them is missed.
        let mut updates = self.watch.subscribe(&order_id);
        let first = match self.watch.driven(&order_id) {
            // This process's saga worker drives it: no read.
            Some(order) if actor.may_act_for(&order.customer_id) => (*order).clone(),
            _ => self.visible_order(&actor, order_id.clone()).await?,
        };
        // Tells the hub which version this process has seen, so its poll for
        // other replicas' changes does not re-read it.
        self.watch.publish(&first);
        // The stream outlives this handler, so it keeps the caller's deadline
        // itself: past it the watch ends with DEADLINE_EXCEEDED.
        let deadline = ordermesh_mesh::deadline::incoming_deadline();
        let (tx, rx) = mpsc::channel(16);
        let store = self.store.clone();
        tokio::spawn(async move {
            // Snapshots arrive in order from this process's saga worker and
            // from the hub's poll; only newer versions count, and only status
            // changes are sent. A watcher that lags re-reads the order.
            let mut last = (first.version, first.status);
            let terminal = first.status.is_terminal();
            let send = |order: store::Order| pb::WatchOrderResponse {
                order: Some(order_to_pb(order)),
            };
            if tx.send(Ok(send(first))).await.is_err() || terminal {
                return;
            }
            loop {
                let order = tokio::select! {
                    update = updates.recv() => match update {
                        Ok(order) => (*order).clone(),
                        Err(broadcast::error::RecvError::Lagged(_)) => match store.order(&order_id).await {
                            Ok(Some(order)) => order,
                            Ok(None) => return,
                            Err(e) => {
                                let _ = tx.send(Err(e.into())).await;
                                return;
                            }
                        },
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = tx.closed() => return,
                    () = until(deadline) => {
                        let status = Status::deadline_exceeded("the watch reached its deadline before the order ended");
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                if order.version <= last.0 {
                    continue;
                }
                let changed = order.status != last.1;
                last = (order.version, order.status);
                if !changed {
                    continue;
                }
                let terminal = order.status.is_terminal();
                if tx.send(Ok(send(order))).await.is_err() || terminal {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_order_timeline(
        &self,
        request: Request<pb::GetOrderTimelineRequest>,
    ) -> Result<Response<pb::GetOrderTimelineResponse>, Status> {
        let actor = Actor::of(&request, self.trust);
        let order_id = self
            .visible_order(&actor, request.into_inner().order_id)
            .await?
            .order_id;
        let entries = self
            .store
            .timeline(&order_id)
            .await?
            .into_iter()
            .map(|entry| {
                use base64::Engine;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(entry.payload.as_bytes())
                    .map_err(|e| {
                        crate::error::Error::from(ordermesh_runtime::Infra::Corrupt(format!(
                            "timeline payload of {}: {e}",
                            entry.event_id
                        )))
                    })?;
                Ok(pb::TimelineEntry {
                    occur_time: Some(clock::timestamp(entry.occur_time)),
                    event_id: entry.event_id,
                    r#type: entry.ce_type,
                    source: entry.ce_source,
                    summary: entry.summary,
                    data,
                })
            })
            .collect::<Result<Vec<_>, crate::error::Error>>()?;
        Ok(Response::new(pb::GetOrderTimelineResponse { entries }))
    }
}

/// Completes at `deadline`, never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
