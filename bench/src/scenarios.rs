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

/// `n` connections to `url` (workers take them round-robin, as several
/// clients would).
pub async fn connections(url: &str, n: usize, bearer: &Bearer) -> anyhow::Result<Vec<Conn>> {
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
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

/// Who the orders are charged to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Customer {
    pub id: String,
    /// Opened (and funded) for this run.
    pub opened: bool,
    /// Orders the balance pays for, when limited (a demo or given customer).
    pub budget_orders: Option<u64>,
    pub unit_price_minor: i64,
}

/// A balance no run spends: $100 billion (the API's amount cap is far above).
const BENCH_FUNDS_MINOR: i64 = 10_000_000_000_000;

/// Opens a funded account for this run; a server without `OpenAccount`
/// (UNIMPLEMENTED) gets the demo customer `alice` instead, with as many
/// orders as her balance pays for. `given` names an existing customer.
pub async fn customer(
    payment: &mut PaymentServiceClient<Conn>,
    inventory: &mut InventoryServiceClient<Conn>,
    sku: &str,
    run_id: &str,
    given: Option<&str>,
) -> anyhow::Result<Customer> {
    let price = inventory
        .get_stock(inventory_pb::GetStockRequest { sku: sku.to_owned() })
        .await
        .with_context(|| format!("GetStock {sku} (--sku)"))?
        .into_inner()
        .item
        .and_then(|i| i.unit_price)
        .context("GetStock answered without a price")?;
    let limited = |account: payment_pb::Account, id: &str| -> Customer {
        let available = account.available.map_or(0, |m| m.amount_minor);
        Customer {
            id: id.to_owned(),
            opened: false,
            budget_orders: Some(u64::try_from(available / price.amount_minor.max(1)).unwrap_or(0)),
            unit_price_minor: price.amount_minor,
        }
    };
    if let Some(id) = given {
        let account = get_account(payment, id).await?;
        return Ok(limited(account, id));
    }
    let id = format!("bench-{run_id}");
    let opened = payment
        .open_account(payment_pb::OpenAccountRequest {
            request_id: format!("bench-open-{run_id}"),
            account_id: id.clone(),
            display_name: "ordermesh bench".into(),
            opening_balance: Some(Money::new(BENCH_FUNDS_MINOR, &price.currency_code)),
            credit_limit: None,
            payment_limit: None,
        })
        .await;
    match opened {
        Ok(_) => Ok(Customer {
            id,
            opened: true,
            budget_orders: None,
            unit_price_minor: price.amount_minor,
        }),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            eprintln!(
                "bench: the server has no OpenAccount (an older binary); ordering as the demo customer {FALLBACK_CUSTOMER}, limited to her balance"
            );
            let account = get_account(payment, FALLBACK_CUSTOMER).await?;
            Ok(limited(account, FALLBACK_CUSTOMER))
        }
        Err(status) => Err(anyhow::anyhow!("OpenAccount: {status}")),
    }
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

/// Adds a million units of `sku` so no run runs out of stock.
pub async fn restock(
    inventory: &mut InventoryServiceClient<Conn>,
    sku: &str,
    run_id: &str,
) -> anyhow::Result<()> {
    inventory
        .adjust_stock(inventory_pb::AdjustStockRequest {
            sku: sku.to_owned(),
            delta: 1_000_000,
            reason: "ordermesh bench".into(),
            request_id: format!("bench-restock-{run_id}"),
        })
        .await
        .with_context(|| format!("AdjustStock {sku}"))?;
    Ok(())
}

/// Places `n` orders one after another and returns the ids of the
/// confirmed ones (what get-order reads).
pub async fn seed_orders(
    client: &OrderServiceClient<Conn>,
    customer: &str,
    sku: &str,
    run_id: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let (tx, mut rx) = tokio::sync::watch::channel(String::new());
    let mut ids = Vec::new();
    for i in 0..n {
        let done = create_order(
            client.clone(),
            format!("bench-seed-{run_id}-{i}"),
            customer.to_owned(),
            sku.to_owned(),
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
