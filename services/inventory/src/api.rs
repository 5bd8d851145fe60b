//! The `ordermesh.inventory.v1.InventoryService` gRPC surface: validates
//! requests, decides who may call what, calls the store, converts to
//! protobuf. No SQL here.
//!
//! Access (decided here, whatever the gateway let through): the catalogue
//! and availability are for any caller; adjusting stock, editing products
//! and reading restock alerts need the `inventory:admin` scope; reserving,
//! committing and releasing stock are the order service's saga's (and
//! operators'); a customer's token reads the reservations of its own orders
//! only, another's answering NOT_FOUND as a missing one
//! ([`ordermesh_runtime::actor`]).

use tonic::{Request, Response, Status};

use ordermesh_proto::common::v1::Money;
use ordermesh_proto::inventory::v1 as pb;
use ordermesh_proto::inventory::v1::inventory_service_server::InventoryService;
use ordermesh_runtime::actor::{Actor, Trust};
use ordermesh_runtime::validate::{
    MAX_ID_LEN, MAX_NAME_LEN, MAX_NOTE_LEN, MAX_QUANTITY, Violations, invalid_field, is_currency_code,
    require_id, too_long,
};
use ordermesh_runtime::{clock, paging};

use crate::store::{self, Store};

/// The scope that adjusts stock, edits products and reads restock alerts.
pub const ADMIN_SCOPE: &str = "inventory:admin";

pub struct InventoryApi {
    store: Store,
    trust: Trust,
}

impl InventoryApi {
    pub fn new(store: Store, trust: Trust) -> Self {
        Self { store, trust }
    }

    fn actor<T>(&self, request: &Request<T>) -> Actor {
        Actor::of(request, self.trust)
    }
}

fn money(amount_minor: i64, currency_code: &str) -> Option<Money> {
    Some(Money::new(amount_minor, currency_code))
}

fn item_to_pb(item: store::Item) -> pb::StockItem {
    pb::StockItem {
        unit_price: money(item.unit_price_minor, &item.currency_code),
        sku: item.sku,
        name: item.name,
        available: item.available,
        reserved: item.reserved,
        sold: item.sold,
        create_time: Some(clock::timestamp(item.create_time)),
        update_time: Some(clock::timestamp(item.update_time)),
        low_stock_threshold: item.low_stock_threshold,
    }
}

fn alert_to_pb(alert: store::RestockAlert) -> pb::RestockAlert {
    pb::RestockAlert {
        alert_time: Some(clock::timestamp(alert.alert_time)),
        sku: alert.sku,
        available: alert.available,
        threshold: alert.threshold,
        order_id: alert.order_id,
        event_id: alert.event_id,
    }
}

fn reservation_status(status: store::ReservationStatus) -> pb::ReservationStatus {
    use store::ReservationStatus as S;
    match status {
        S::Active => pb::ReservationStatus::Active,
        S::Committed => pb::ReservationStatus::Committed,
        S::Released => pb::ReservationStatus::Released,
        S::Expired => pb::ReservationStatus::Expired,
        S::Returned => pb::ReservationStatus::Returned,
    }
}

fn reservation_to_pb(r: store::Reservation) -> pb::Reservation {
    pb::Reservation {
        status: reservation_status(r.status).into(),
        lines: r
            .lines
            .into_iter()
            .map(|l| pb::ReservedLine {
                unit_price: money(l.unit_price_minor, &r.currency_code),
                sku: l.sku,
                quantity: l.quantity,
            })
            .collect(),
        total: money(r.total_minor, &r.currency_code),
        expire_time: Some(clock::timestamp(r.expire_time)),
        create_time: Some(clock::timestamp(r.create_time)),
        update_time: Some(clock::timestamp(r.update_time)),
        customer_id: r.customer_id,
        order_id: r.order_id,
    }
}

/// Checks a list of lines and converts it for the store.
fn validate_lines(violations: &mut Violations, lines: &[pb::StockLine]) -> Vec<store::Line> {
    violations.require_lines(lines.iter().map(|l| (l.sku.as_str(), l.quantity)));
    lines
        .iter()
        .map(|l| store::Line {
            sku: l.sku.clone(),
            quantity: l.quantity,
        })
        .collect()
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn check_availability(
        &self,
        request: Request<pb::CheckAvailabilityRequest>,
    ) -> Result<Response<pb::CheckAvailabilityResponse>, Status> {
        let request = request.into_inner();
        let mut v = Violations::new();
        let lines = validate_lines(&mut v, &request.lines);
        v.into_result()?;
        let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
        let available = self.store.availability(&skus).await?;
        let mut all = true;
        let mut out = Vec::with_capacity(lines.len());
        for line in lines {
            let have = available.get(&line.sku).copied();
            let sufficient = have.is_some_and(|have| have >= line.quantity);
            all &= sufficient;
            out.push(pb::LineAvailability {
                sku: line.sku,
                requested: line.quantity,
                available: have.unwrap_or(0),
                sufficient,
                known: have.is_some(),
            });
        }
        Ok(Response::new(pb::CheckAvailabilityResponse {
            available: all,
            lines: out,
        }))
    }

    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        let sku = request.into_inner().sku;
        require_id("sku", &sku)?;
        let item = self.store.item(&sku).await?;
        Ok(Response::new(pb::GetStockResponse {
            item: Some(item_to_pb(item)),
        }))
    }

    async fn list_stock(
        &self,
        request: Request<pb::ListStockRequest>,
    ) -> Result<Response<pb::ListStockResponse>, Status> {
        let request = request.into_inner();
        let size = paging::page_size(request.page_size)?;
        let after = paging::decode_token(&request.page_token)?;
        let mut items = self.store.items_after(after.as_deref(), size + 1).await?;
        let next_page_token = paging::next_page(&mut items, size, |i| i.sku.clone());
        Ok(Response::new(pb::ListStockResponse {
            items: items.into_iter().map(item_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        self.actor(&request).require_scope(ADMIN_SCOPE, "AdjustStock")?;
        let request = request.into_inner();
        let mut v = Violations::new();
        v.require_id("sku", &request.sku);
        v.require_id("request_id", &request.request_id);
        if request.delta == 0 || request.delta.abs() > MAX_QUANTITY {
            v.add(
                "delta",
                format!("must be non-zero and at most {MAX_QUANTITY} in size"),
            );
        }
        if too_long(&request.reason, MAX_NOTE_LEN) {
            v.add("reason", format!("must be at most {MAX_NOTE_LEN} characters"));
        }
        v.into_result()?;
        let item = self
            .store
            .adjust(&request.sku, request.delta, &request.reason, &request.request_id)
            .await?;
        tracing::info!(sku = %item.sku, delta = request.delta, reason = %request.reason, "stock adjusted");
        Ok(Response::new(pb::AdjustStockResponse {
            item: Some(item_to_pb(item)),
        }))
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        self.actor(&request).require_privileged("ReserveStock")?;
        let request = request.into_inner();
        let mut v = Violations::new();
        v.require_id("order_id", &request.order_id);
        if too_long(&request.customer_id, MAX_ID_LEN) {
            v.add("customer_id", format!("must be at most {MAX_ID_LEN} characters"));
        }
        let lines = validate_lines(&mut v, &request.lines);
        v.into_result()?;
        let reservation = self
            .store
            .reserve(&request.order_id, &request.customer_id, &lines)
            .await?;
        Ok(Response::new(pb::ReserveStockResponse {
            reservation: Some(reservation_to_pb(reservation)),
        }))
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        let actor = self.actor(&request);
        let order_id = request.into_inner().order_id;
        require_id("order_id", &order_id)?;
        self.store.expire(&order_id).await?;
        let reservation = self
            .store
            .reservation(&order_id)
            .await?
            .filter(|r| actor.may_act_for(&r.customer_id))
            .ok_or_else(|| crate::error::Error::ReservationNotFound { order_id })?;
        Ok(Response::new(pb::GetReservationResponse {
            reservation: Some(reservation_to_pb(reservation)),
        }))
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        self.actor(&request).require_privileged("ReleaseReservation")?;
        let order_id = request.into_inner().order_id;
        require_id("order_id", &order_id)?;
        let reservation = self.store.release(&order_id).await?;
        Ok(Response::new(pb::ReleaseReservationResponse {
            reservation: Some(reservation_to_pb(reservation)),
        }))
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        self.actor(&request).require_privileged("CommitReservation")?;
        let order_id = request.into_inner().order_id;
        require_id("order_id", &order_id)?;
        let reservation = self.store.commit(&order_id).await?;
        Ok(Response::new(pb::CommitReservationResponse {
            reservation: Some(reservation_to_pb(reservation)),
        }))
    }

    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::UpdateProductResponse>, Status> {
        self.actor(&request).require_scope(ADMIN_SCOPE, "UpdateProduct")?;
        let request = request.into_inner();
        let mut v = Violations::new();
        v.require_id("sku", &request.sku);
        if let Some(name) = &request.name {
            v.require_text("name", name, MAX_NAME_LEN);
        }
        if let Some(price) = &request.unit_price {
            if price.amount_minor < 0 {
                v.add("unit_price.amount_minor", "must be at least 0");
            }
            if !is_currency_code(&price.currency_code) {
                v.add(
                    "unit_price.currency_code",
                    "must be an ISO 4217 code of three upper-case letters",
                );
            }
        }
        if request.low_stock_threshold.is_some_and(|t| t < 0) {
            v.add("low_stock_threshold", "must be at least 0");
        }
        if request.name.is_none() && request.unit_price.is_none() && request.low_stock_threshold.is_none() {
            v.add(
                "name",
                "set at least one of name, unit_price, low_stock_threshold",
            );
        }
        v.into_result()?;
        let update = store::ProductUpdate {
            name: request.name,
            unit_price: request.unit_price.map(|m| (m.amount_minor, m.currency_code)),
            low_stock_threshold: request.low_stock_threshold,
        };
        let item = self.store.update_product(&request.sku, &update).await?;
        tracing::info!(sku = %item.sku, "product updated");
        Ok(Response::new(pb::UpdateProductResponse {
            item: Some(item_to_pb(item)),
        }))
    }

    async fn list_restock_alerts(
        &self,
        request: Request<pb::ListRestockAlertsRequest>,
    ) -> Result<Response<pb::ListRestockAlertsResponse>, Status> {
        self.actor(&request)
            .require_scope(ADMIN_SCOPE, "ListRestockAlerts")?;
        let request = request.into_inner();
        if too_long(&request.sku, MAX_ID_LEN) {
            return Err(invalid_field("sku", "is too long"));
        }
        let size = paging::page_size(request.page_size)?;
        let before = paging::decode_time_id(&request.page_token)?;
        let mut alerts = self.store.restock_alerts(&request.sku, before, size + 1).await?;
        let next_page_token = paging::next_page(&mut alerts, size, |a| {
            paging::time_id_key(a.alert_time, &a.event_id)
        });
        Ok(Response::new(pb::ListRestockAlertsResponse {
            alerts: alerts.into_iter().map(alert_to_pb).collect(),
            next_page_token,
        }))
    }
}
