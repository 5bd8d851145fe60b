//! The saga's promise, checked through the services' public APIs only (so it
//! works the same against in-process services and against child processes
//! after a kill -9): every order is terminal, and for each one the payment
//! and reservation under its keys are in the state its status demands;
//! stock is conserved and none stays reserved; the ledger balances; nothing
//! was charged twice.

use std::collections::HashMap;
use std::time::Duration;

use tonic::transport::Channel;

use ordermesh_proto::inventory::v1 as inventory_pb;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::payment::v1 as payment_pb;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;

/// The clients an audit reads through.
#[derive(Clone)]
pub struct Audit {
    pub order: OrderServiceClient<Channel>,
    pub inventory: InventoryServiceClient<Channel>,
    pub payment: PaymentServiceClient<Channel>,
    /// Each SKU's stock before any order (available + reserved + sold).
    pub initial_stock: HashMap<String, i64>,
}

/// What an audit found, for scenario-specific assertions.
#[derive(Debug, Default)]
pub struct Findings {
    pub orders: Vec<order_pb::Order>,
    pub by_status: HashMap<&'static str, usize>,
}

impl Findings {
    pub fn count(&self, status: order_pb::OrderStatus) -> usize {
        self.by_status.get(status.as_str_name()).copied().unwrap_or(0)
    }
}

impl Audit {
    /// Every order, oldest last (ListOrders pages newest first).
    pub async fn orders(&self) -> Vec<order_pb::Order> {
        self.try_orders().await.expect("ListOrders")
    }

    async fn try_orders(&self) -> Result<Vec<order_pb::Order>, tonic::Status> {
        let mut client = self.order.clone();
        let mut orders = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_orders(order_pb::ListOrdersRequest {
                    customer_id: String::new(),
                    page_size: 1000,
                    page_token,
                })
                .await?
                .into_inner();
            orders.extend(page.orders);
            if page.next_page_token.is_empty() {
                return Ok(orders);
            }
            page_token = page.next_page_token;
        }
    }

    /// Waits until every order is terminal (sagas resume after restarts).
    pub async fn wait_all_terminal(&self, within: Duration) -> Vec<order_pb::Order> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let orders = tokio::time::timeout(Duration::from_secs(5), self.try_orders())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let open: Vec<&order_pb::Order> = orders.iter().filter(|o| !is_terminal(o.status())).collect();
            if !orders.is_empty() && open.is_empty() {
                return orders;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {} orders not terminal within {within:?}, e.g. {:?}",
                open.len(),
                orders.len(),
                open.first()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The payments made under an order's authorization key (at most one).
    pub async fn payment_of(&self, order_id: &str) -> Vec<payment_pb::Payment> {
        let mut client = self.payment.clone();
        client
            .list_payments(payment_pb::ListPaymentsRequest {
                authorize_request_id: format!("{order_id}:authorize"),
                ..Default::default()
            })
            .await
            .expect("ListPayments by key")
            .into_inner()
            .payments
    }

    async fn reservation_of(&self, order_id: &str) -> Option<inventory_pb::Reservation> {
        let mut client = self.inventory.clone();
        match client
            .get_reservation(inventory_pb::GetReservationRequest {
                order_id: order_id.into(),
            })
            .await
        {
            Ok(response) => response.into_inner().reservation,
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => panic!("GetReservation {order_id}: {status:?}"),
        }
    }

    /// Checks every promise; panics naming the first broken one.
    pub async fn check(&self) -> Findings {
        use inventory_pb::ReservationStatus as R;
        use order_pb::OrderStatus as O;
        use payment_pb::PaymentStatus as P;
        let orders = self.orders().await;
        let mut findings = Findings::default();
        let mut sold_by_confirmed: HashMap<String, i64> = HashMap::new();
        for order in &orders {
            let status = order.status();
            assert!(is_terminal(status), "order not terminal: {order:?}");
            *findings.by_status.entry(status.as_str_name()).or_default() += 1;
            let payments = self.payment_of(&order.order_id).await;
            assert!(payments.len() <= 1, "one payment per order key: {payments:?}");
            let payment = payments.first().map(|p| (p.status(), p));
            if let Some((status, payment)) = payment {
                self.check_ledger_entries(status, payment).await;
            }
            let reservation = self.reservation_of(&order.order_id).await;
            let reservation_status = reservation.as_ref().map(|r| r.status());
            match status {
                O::Confirmed => {
                    let (paid, payment) =
                        payment.unwrap_or_else(|| panic!("confirmed without payment: {order:?}"));
                    assert_eq!(paid, P::Captured, "{order:?} / {payment:?}");
                    assert_eq!(
                        payment.amount.as_ref().map(|m| m.amount_minor),
                        order.total.as_ref().map(|m| m.amount_minor),
                        "charged the order total: {order:?}"
                    );
                    assert_eq!(
                        reservation_status,
                        Some(R::Committed),
                        "{order:?} / {reservation:?}"
                    );
                    for line in &order.lines {
                        *sold_by_confirmed.entry(line.sku.clone()).or_default() += line.quantity;
                    }
                }
                O::Rejected => {
                    assert!(
                        matches!(
                            payment.map(|p| p.0),
                            None | Some(P::Voided | P::Declined | P::Refunded)
                        ),
                        "a rejected order holds or keeps no money: {order:?} / {payment:?}"
                    );
                    assert!(
                        matches!(
                            reservation_status,
                            None | Some(R::Released | R::Expired | R::Returned)
                        ),
                        "a rejected order holds no stock: {order:?} / {reservation:?}"
                    );
                    assert_ne!(
                        order.reject_reason(),
                        order_pb::RejectReason::Unspecified,
                        "a rejection says why: {order:?}"
                    );
                }
                O::Cancelled => {
                    assert_eq!(payment.map(|p| p.0), Some(P::Refunded), "{order:?}");
                    assert_eq!(reservation_status, Some(R::Returned), "{order:?}");
                }
                other => unreachable!("terminal checked above: {other:?}"),
            }
        }
        // Stock: conserved, nothing reserved, sold = what confirmed orders took.
        let mut inventory = self.inventory.clone();
        let items = inventory
            .list_stock(inventory_pb::ListStockRequest {
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .expect("ListStock")
            .into_inner()
            .items;
        for item in items {
            if let Some(initial) = self.initial_stock.get(&item.sku) {
                assert_eq!(
                    item.available + item.reserved + item.sold,
                    *initial,
                    "stock of {} conserved: {item:?}",
                    item.sku
                );
            }
            assert_eq!(item.reserved, 0, "nothing stays reserved: {item:?}");
            assert_eq!(
                item.sold,
                sold_by_confirmed.get(&item.sku).copied().unwrap_or(0),
                "sold units of {} are the confirmed orders' (no double commit, no lost return)",
                item.sku
            );
        }
        // Money: the ledger balances and mirrors every balance.
        let mut payment = self.payment.clone();
        let ledger = payment
            .verify_ledger(payment_pb::VerifyLedgerRequest {})
            .await
            .expect("VerifyLedger")
            .into_inner();
        assert!(ledger.balanced, "the ledger balances: {ledger:?}");
        findings.orders = orders;
        findings
    }
}

impl Audit {
    /// Each movement of a payment is posted once: the number of ledger
    /// entries follows from its status (two per movement), so a hold,
    /// capture, void or refund that happened twice shows here.
    async fn check_ledger_entries(&self, status: payment_pb::PaymentStatus, payment: &payment_pb::Payment) {
        use payment_pb::PaymentStatus as P;
        let expected = match status {
            P::Declined => 0,
            P::Authorized => 2,
            P::Captured | P::Voided => 4,
            P::Refunded => 6,
            P::Unspecified => panic!("payment without status: {payment:?}"),
        };
        let mut client = self.payment.clone();
        let entries = client
            .list_ledger_entries(payment_pb::ListLedgerEntriesRequest {
                payment_id: payment.payment_id.clone(),
                page_size: 100,
                ..Default::default()
            })
            .await
            .expect("ListLedgerEntries")
            .into_inner()
            .entries;
        assert_eq!(
            entries.len(),
            expected,
            "payment {} ({status:?}) moved money once per step: {entries:?}",
            payment.payment_id
        );
    }
}

fn is_terminal(status: order_pb::OrderStatus) -> bool {
    use order_pb::OrderStatus as O;
    matches!(status, O::Confirmed | O::Rejected | O::Cancelled)
}
