//! Before the traffic: the stock as the demo catalogue seeded it (the
//! baseline of conservation), funded customers opened with OpenAccount and
//! one without funds, and the four orderable SKUs restocked with AdjustStock
//! (recorded as operations, so conservation counts them). The public API
//! cannot add SKUs, so the run works with the demo catalogue's five: four
//! restocked deep, two of them hot, and the one-unit lamp for orders that
//! cannot be filled. MN-003 gets a low-stock threshold so StockLow events
//! and restock alerts flow too.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::transport::Channel;

use ordermesh_proto::common::v1::Money;
use ordermesh_proto::inventory::v1 as inventory_pb;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::payment::v1 as payment_pb;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;

use super::{SKUS, Traffic, line};
use crate::history::Setup;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{call}: {status}")]
    Call { call: String, status: tonic::Status },
    #[error("restocking {0} was never acknowledged")]
    Restock(String),
}

/// Funded customers, and the one without funds.
pub const CUSTOMERS: usize = 8;
pub const BROKE: &str = "chaos-broke";
/// The demo customers (their payments are listed too).
const DEMO_CUSTOMERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const RESTOCK: i64 = 100_000;

pub fn customers() -> Vec<String> {
    (0..CUSTOMERS).map(|i| format!("chaos-{i}")).collect()
}

/// Customers whose orders are declined: ours without funds, and the demo's
/// `bob` ($20).
pub fn broke() -> Vec<String> {
    vec![BROKE.to_owned(), "bob".to_owned()]
}

/// Calls `f` until it answers, for up to a minute (the services just started).
async fn retried<T, F, Fut>(call: &str, mut f: F) -> Result<T, SetupError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Ok(value) => return Ok(value),
            Err(status)
                if tokio::time::Instant::now() < deadline && status.code() == tonic::Code::Unavailable =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(status) => {
                return Err(SetupError::Call {
                    call: call.to_owned(),
                    status,
                });
            }
        }
    }
}

/// The stock per SKU now (available + reserved + sold).
pub async fn stock_totals(
    inventory: &InventoryServiceClient<Channel>,
) -> Result<BTreeMap<String, i64>, SetupError> {
    let items = retried("ListStock", || {
        let mut inventory = inventory.clone();
        async move {
            inventory
                .list_stock(inventory_pb::ListStockRequest {
                    page_size: 1000,
                    page_token: String::new(),
                })
                .await
        }
    })
    .await?
    .into_inner()
    .items;
    Ok(items
        .into_iter()
        .map(|i| (i.sku, i.available + i.reserved + i.sold))
        .collect())
}

pub async fn prepare(
    traffic: &Traffic,
    payment: &PaymentServiceClient<Channel>,
) -> Result<Setup, SetupError> {
    let stock = stock_totals(&traffic.inventory).await?;
    let usd = |amount_minor: i64| Money {
        amount_minor,
        currency_code: "USD".into(),
    };
    let mut accounts: Vec<(String, i64)> = customers().into_iter().map(|c| (c, 1_000_000_000)).collect();
    accounts.push((BROKE.to_owned(), 0));
    for (account_id, balance) in &accounts {
        retried("OpenAccount", || {
            let mut payment = payment.clone();
            let request = payment_pb::OpenAccountRequest {
                request_id: format!("open-{account_id}"),
                account_id: account_id.clone(),
                display_name: account_id.clone(),
                opening_balance: Some(usd(*balance)),
                ..Default::default()
            };
            async move { payment.open_account(request).await }
        })
        .await?;
    }
    for sku in SKUS {
        if !traffic
            .restock(&format!("setup-restock-{sku}"), &line(sku, RESTOCK), "setup")
            .await
        {
            return Err(SetupError::Restock(sku.to_owned()));
        }
    }
    let threshold = stock.get("MN-003").copied().unwrap_or(0) + RESTOCK - 5;
    retried("UpdateProduct", || {
        let mut inventory = traffic.inventory.clone();
        let request = inventory_pb::UpdateProductRequest {
            sku: "MN-003".into(),
            low_stock_threshold: Some(threshold),
            ..Default::default()
        };
        async move { inventory.update_product(request).await }
    })
    .await?;
    let mut listed: Vec<String> = accounts.into_iter().map(|(a, _)| a).collect();
    listed.extend(DEMO_CUSTOMERS.iter().map(|c| (*c).to_owned()));
    Ok(Setup {
        stock,
        accounts: listed,
    })
}
