//! The requests the bench sends, one function per scenario, each returning
//! a [`Done`]; and the setup they need (stock, a funded customer, orders to
//! read).

use std::time::Duration;

use anyhow::Context;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use ordermesh_mesh::classify::code_name;
use ordermesh_proto::common::v1::Money;
use ordermesh_proto::inventory::v1 as inventory_pb;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::payment::v1 as payment_pb;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;

use super::load::Done;

/// How long one order may take to reach a terminal status before it counts
/// as an error (`TIMEOUT`).
const ORDER_DEADLINE: Duration = Duration::from_secs(30);
/// The demo customer a run falls back to when the server cannot open
/// accounts (a binary older than `OpenAccount`).
pub const FALLBACK_CUSTOMER: &str = "alice";

/// A connection whose every call carries the bearer token, if any.
pub type Conn = InterceptedService<Channel, Bearer>;

/// `authorization: Bearer <token>` on every call (`--token`), or nothing.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        token
            .map(|t| {
                format!("Bearer {}", t.trim())
                    .parse()
                    .context("--token is not a valid header value")
            })
            .transpose()
            .map(Bearer)
    }

    /// The header value, for HTTP requests.
    pub fn header(&self) -> Option<&str> {
        self.0.as_ref().and_then(|v| v.to_str().ok())
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub async fn connect(url: &str, bearer: &Bearer) -> anyhow::Result<Conn> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(InterceptedService::new(channel, bearer.clone()))
}

/// `n` connections, to each of `urls` in turn (workers take them
/// round-robin, as several clients would; with several replicas a worker's
/// calls, its order's create and watch, all go to one of them).
pub async fn connections(urls: &[String], n: usize, bearer: &Bearer) -> anyhow::Result<Vec<Conn>> {
    let mut out = Vec::new();
    for url in urls.iter().cycle().take(n.max(urls.len())) {
        out.push(connect(url, bearer).await?);
    }
    Ok(out)
}

fn status_key(status: &tonic::Status) -> String {
    code_name(status.code()).to_owned()
}

/// The floor: `grpc.health.v1.Health/Check` of the whole server, answered
/// from memory by the service's own gRPC server (no database, no handler
/// work), through a bare channel or the mesh client stack.
pub async fn echo<T>(mut client: HealthClient<T>, tag: &'static str) -> Done
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let result = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|s| status_key(&s));
    Done { tag, result }
}

/// How an order is followed to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Follow {
    /// One WatchOrder stream per order (the server pushes each change).
    Watch,
    /// GetOrder every 2 ms.
    Poll,
}

/// The error key of a terminal status other than CONFIRMED.
pub fn terminal_key(order: &order_pb::Order) -> Option<Result<(), String>> {
    use order_pb::OrderStatus as S;
    match order.status() {
        S::Confirmed => Some(Ok(())),
        S::Rejected => Some(Err(format!(
            "REJECTED:{}",
            order
                .reject_reason()
                .as_str_name()
                .trim_start_matches("REJECT_REASON_")
        ))),
        S::Cancelled => Some(Err("CANCELLED".into())),
        _ => None,
    }
}

/// Places an order of one unit of `sku` and follows it until it is
/// terminal; only CONFIRMED counts as success. `created` hears the order id
/// (the watch scenario's watchers follow the newest order).
pub async fn create_order(
    mut client: OrderServiceClient<Conn>,
    request_id: String,
    customer: String,
    sku: String,
    follow: Follow,
    created: Option<tokio::sync::watch::Sender<String>>,
) -> Done {
    let placed = async {
        let order = client
            .create_order(order_pb::CreateOrderRequest {
                request_id,
                customer_id: customer,
                lines: vec![order_pb::CreateOrderLine { sku, quantity: 1 }],
            })
            .await
            .map_err(|s| format!("CreateOrder:{}", status_key(&s)))?
            .into_inner()
            .order
            .ok_or("CreateOrder:NO_ORDER")?;
        if let Some(created) = &created {
            created.send_replace(order.order_id.clone());
        }
        if let Some(done) = terminal_key(&order) {
            return done;
        }
        match follow {
            Follow::Watch => {
                let mut stream = client
                    .watch_order(order_pb::WatchOrderRequest {
                        order_id: order.order_id.clone(),
                    })
                    .await
                    .map_err(|s| format!("WatchOrder:{}", status_key(&s)))?
                    .into_inner();
                while let Some(update) = stream
                    .message()
                    .await
                    .map_err(|s| format!("WatchOrder:{}", status_key(&s)))?
                {
                    if let Some(done) = update.order.as_ref().and_then(terminal_key) {
                        return done;
                    }
                }
                Err("WATCH_ENDED_EARLY".into())
            }
            Follow::Poll => loop {
                let now = client
                    .get_order(order_pb::GetOrderRequest {
                        order_id: order.order_id.clone(),
                    })
                    .await
                    .map_err(|s| format!("GetOrder:{}", status_key(&s)))?
                    .into_inner()
                    .order
                    .ok_or("GetOrder:NO_ORDER")?;
                if let Some(done) = terminal_key(&now) {
                    return done;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            },
        }
    };
    let result = match tokio::time::timeout(ORDER_DEADLINE, placed).await {
        Ok(result) => result.map_err(|e: String| e),
        Err(_) => Err("TIMEOUT".into()),
    };
    Done { tag: "", result }
}

pub async fn get_order(mut client: OrderServiceClient<Conn>, order_id: String) -> Done {
    let result = client
        .get_order(order_pb::GetOrderRequest { order_id })
        .await
        .map(|_| ())
        .map_err(|s| status_key(&s));
    Done { tag: "", result }
}

/// An HTTP/1.1 client for the REST scenario: keep-alive connections, one
/// per request in flight (HTTP/1.1 has no multiplexing).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    // reqwest is built with rustls but no crypto provider (the gateway's
    // choice); building a client needs one even for plain http://.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(None)
        .build()
        .context("building the HTTP client")
}

/// `GET {base}/v1/orders/{order_id}`, the body read to its end; only 200
/// counts as success (errors are `HTTP_<status>` or `HTTP_TRANSPORT`).
pub async fn rest_get_order(client: reqwest::Client, base: String, order_id: String, bearer: Bearer) -> Done {
    let result = async {
        let mut request = client.get(format!("{}/v1/orders/{order_id}", base.trim_end_matches('/')));
        if let Some(value) = bearer.header() {
            request = request.header("authorization", value);
        }
        let response = request.send().await.map_err(|_| "HTTP_TRANSPORT".to_owned())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|_| "HTTP_TRANSPORT".to_owned())?;
        if status == reqwest::StatusCode::OK && !body.is_empty() {
            Ok(())
        } else {
            Err(format!("HTTP_{}", status.as_u16()))
        }
    }
    .await;
    Done { tag: "", result }
}

/// What the orders buy and who pays: each order takes the next SKU and the
/// next customer in turn ([`Spread::pick`]), so concurrent orders land on
/// different stock rows and balances as real traffic does, unless the run
/// names one of each (the hot-row worst case).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Spread {
    pub skus: Vec<String>,
    #[serde(flatten)]
    pub customers: Customers,
}

impl Spread {
    /// The SKU and the customer of the order with sequence number `seq`.
    pub fn pick(&self, seq: u64) -> (String, String) {
        let i = usize::try_from(seq).unwrap_or(0);
        (
            self.skus[i % self.skus.len()].clone(),
            self.customers.ids[i % self.customers.ids.len()].clone(),
        )
    }
}

/// Who the orders are charged to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Customers {
    pub ids: Vec<String>,
    /// Opened (and funded) for this run.
    pub opened: bool,
    /// Orders the balance pays for, when limited (a demo or given customer).
    pub budget_orders: Option<u64>,
    /// The dearest SKU's price (what the budget is counted in).
    pub unit_price_minor: i64,
}

/// Most SKUs a run spreads its orders over when none are named.
const SPREAD_SKUS: i32 = 64;

/// The SKUs a run orders and the dearest one's price: `named`, or else the
/// catalogue's first [`SPREAD_SKUS`] in the first one's currency (an
/// account pays in one currency). Named SKUs must share a currency.
pub async fn skus(
    inventory: &mut InventoryServiceClient<Conn>,
    named: &[String],
) -> anyhow::Result<(Vec<String>, Money)> {
    let items = if named.is_empty() {
        let listed = inventory
            .list_stock(inventory_pb::ListStockRequest {
                page_size: SPREAD_SKUS,
                page_token: String::new(),
            })
            .await
            .context("ListStock (the SKUs to order; or name them with --sku)")?
            .into_inner()
            .items;
        let currency = listed
            .first()
            .and_then(|i| i.unit_price.as_ref())
            .map(|p| p.currency_code.clone())
            .context("the catalogue is empty: nothing to order")?;
        listed
            .into_iter()
            .filter(|i| i.unit_price.as_ref().is_some_and(|p| p.currency_code == currency))
            .collect()
    } else {
        let mut items = Vec::new();
        for sku in named {
            items.push(
                inventory
                    .get_stock(inventory_pb::GetStockRequest { sku: sku.clone() })
                    .await
                    .with_context(|| format!("GetStock {sku} (--sku)"))?
                    .into_inner()
                    .item
                    .context("GetStock answered without an item")?,
            );
        }
        items
    };
    let prices = items
        .iter()
        .map(|i| {
            i.unit_price
                .clone()
                .with_context(|| format!("{} has no price", i.sku))
        })
        .collect::<anyhow::Result<Vec<Money>>>()?;
    let dearest = prices
        .iter()
        .max_by_key(|p| p.amount_minor)
        .cloned()
        .context("no SKU to order")?;
    anyhow::ensure!(
        prices.iter().all(|p| p.currency_code == dearest.currency_code),
        "--sku: the SKUs are priced in different currencies; an account pays in one"
    );
    Ok((items.into_iter().map(|i| i.sku).collect(), dearest))
}

/// A balance no run spends: $100 billion (the API's amount cap is far above).
const BENCH_FUNDS_MINOR: i64 = 10_000_000_000_000;

/// Opens `accounts` funded accounts for this run; a server without
/// `OpenAccount` (UNIMPLEMENTED) gets the demo customer `alice` instead,
/// with as many orders as her balance pays for at `price`. `given` names an
/// existing customer instead.
pub async fn customers(
    payment: &mut PaymentServiceClient<Conn>,
    price: &Money,
    run_id: &str,
    accounts: u16,
    given: Option<&str>,
) -> anyhow::Result<Customers> {
    let limited = |account: payment_pb::Account, id: &str| -> Customers {
        let available = account.available.map_or(0, |m| m.amount_minor);
        Customers {
            ids: vec![id.to_owned()],
            opened: false,
            budget_orders: Some(u64::try_from(available / price.amount_minor.max(1)).unwrap_or(0)),
            unit_price_minor: price.amount_minor,
        }
    };
    if let Some(id) = given {
        let account = get_account(payment, id).await?;
        return Ok(limited(account, id));
    }
    let mut ids = Vec::new();
    for n in 0..accounts {
        let id = format!("bench-{run_id}-{n}");
        let opened = payment
            .open_account(payment_pb::OpenAccountRequest {
                request_id: format!("bench-open-{run_id}-{n}"),
                account_id: id.clone(),
                display_name: "ordermesh bench".into(),
                opening_balance: Some(Money::new(BENCH_FUNDS_MINOR, &price.currency_code)),
                credit_limit: None,
                payment_limit: None,
            })
            .await;
        match opened {
            Ok(_) => ids.push(id),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                eprintln!(
                    "bench: the server has no OpenAccount (an older binary); ordering as the demo customer {FALLBACK_CUSTOMER}, limited to her balance"
                );
                let account = get_account(payment, FALLBACK_CUSTOMER).await?;
                return Ok(limited(account, FALLBACK_CUSTOMER));
            }
            Err(status) => return Err(anyhow::anyhow!("OpenAccount: {status}")),
        }
    }
    Ok(Customers {
        ids,
        opened: true,
        budget_orders: None,
        unit_price_minor: price.amount_minor,
    })
}

async fn get_account(
    payment: &mut PaymentServiceClient<Conn>,
    id: &str,
) -> anyhow::Result<payment_pb::Account> {
    payment
        .get_account(payment_pb::GetAccountRequest {
            account_id: id.to_owned(),
        })
        .await
        .with_context(|| format!("GetAccount {id}"))?
        .into_inner()
        .account
        .context("GetAccount answered without an account")
}

/// Adds a million units of each of `skus` so no run runs out of stock.
pub async fn restock(
    inventory: &mut InventoryServiceClient<Conn>,
    skus: &[String],
    run_id: &str,
) -> anyhow::Result<()> {
    for sku in skus {
        inventory
            .adjust_stock(inventory_pb::AdjustStockRequest {
                sku: sku.clone(),
                delta: 1_000_000,
                reason: "ordermesh bench".into(),
                request_id: format!("bench-restock-{run_id}-{sku}"),
            })
            .await
            .with_context(|| format!("AdjustStock {sku}"))?;
    }
    Ok(())
}

/// Places `n` orders one after another and returns the ids of the
/// confirmed ones (what get-order reads).
pub async fn seed_orders(
    client: &OrderServiceClient<Conn>,
    spread: &Spread,
    run_id: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let (tx, mut rx) = tokio::sync::watch::channel(String::new());
    let mut ids = Vec::new();
    for i in 0..n {
        let (sku, customer) = spread.pick(i as u64);
        let done = create_order(
            client.clone(),
            format!("bench-seed-{run_id}-{i}"),
            customer,
            sku,
            Follow::Watch,
            Some(tx.clone()),
        )
        .await;
        if done.result.is_ok() {
            ids.push(rx.borrow_and_update().clone());
        }
    }
    anyhow::ensure!(!ids.is_empty(), "none of {n} seed orders was confirmed");
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(skus: &[&str], customers: usize) -> Spread {
        Spread {
            skus: skus.iter().map(|s| (*s).to_owned()).collect(),
            customers: Customers {
                ids: (0..customers).map(|n| format!("c{n}")).collect(),
                opened: true,
                budget_orders: None,
                unit_price_minor: 1,
            },
        }
    }

    #[test]
    fn consecutive_orders_take_every_sku_and_customer_pair() {
        let spread = spread(&["A", "B", "C", "D", "E"], 32);
        let pairs: std::collections::HashSet<_> = (0..160).map(|seq| spread.pick(seq)).collect();
        assert_eq!(pairs.len(), 160, "5 SKUs x 32 customers in 160 orders");
        // Neighbours (orders in flight together) share neither row.
        for seq in 0..200 {
            let (a, b) = (spread.pick(seq), spread.pick(seq + 1));
            assert_ne!(a.0, b.0);
            assert_ne!(a.1, b.1);
        }
    }

    #[test]
    fn one_sku_and_one_customer_is_the_hot_row_case() {
        let spread = spread(&["CB-004"], 1);
        for seq in [0, 1, 7, 1_000_003] {
            assert_eq!(spread.pick(seq), ("CB-004".to_owned(), "c0".to_owned()));
        }
    }
}
