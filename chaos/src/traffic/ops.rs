//! One call, timed and recorded: each function here makes one gRPC call to
//! one process, appends what happened to the history (request id, order id,
//! the answer's code and order status, start and end), and returns what the
//! workload needs to go on. Every call carries a deadline, so a paused or
//! killed process costs the caller a timeout, never a hang.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use ordermesh_proto::inventory::v1 as inventory_pb;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::order::v1 as order_pb;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;

use crate::history::{HistoryWriter, Line, Op, OpKind, Record};

/// How long a unary call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(8);

/// A process that serves OrderService: an order replica, or the gateway
/// (with a bearer token).
#[derive(Clone)]
pub struct Target {
    pub name: &'static str,
    pub client: OrderServiceClient<Channel>,
    pub token: Option<MetadataValue<Ascii>>,
}

impl Target {
    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("authorization", token.clone());
        }
        request
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("signing the gateway token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("the gateway token is not a header value")]
    Header,
}

/// `Bearer <jwt>` for the gateway in development mode: HS256 with its
/// secret, subject `chaos`, valid for `ttl`, with the operator's scope: the
/// traffic through the gateway plays a back office acting for every
/// customer of the run (a customer's token is confined to its own orders,
/// which `tests/tests/authz.rs` proves).
pub fn bearer(secret: &str, ttl: Duration) -> Result<MetadataValue<Ascii>, TokenError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({
        "sub": "chaos",
        "iat": now,
        "exp": now + ttl.as_secs(),
        "scope": "admin",
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?;
    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| TokenError::Header)
}

/// The status name without its prefix: `ORDER_STATUS_CONFIRMED` -> `CONFIRMED`.
pub fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

pub fn order_status(order: &order_pb::Order) -> String {
    short(order.status().as_str_name(), "ORDER_STATUS_")
}

pub fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let sep = (i > 0 && c.is_ascii_uppercase()).then_some('_');
            sep.into_iter().chain(std::iter::once(c.to_ascii_uppercase()))
        })
        .collect()
}

/// Appends ops to the history.
#[derive(Clone)]
pub struct Recorder {
    pub history: Arc<HistoryWriter>,
}

impl Recorder {
    fn begin(&self, op: OpKind, workload: &str, via: &str) -> Op {
        Op {
            op,
            workload: workload.to_owned(),
            via: via.to_owned(),
            start_ms: self.history.now_ms(),
            ..Op::default()
        }
    }

    fn end(&self, mut op: Op, outcome: Result<(), tonic::Status>) -> Op {
        op.end_ms = self.history.now_ms();
        match outcome {
            Ok(()) => op.code = "OK".into(),
            Err(status) => {
                op.code = code_name(status.code());
                op.message = status.message().chars().take(200).collect();
            }
        }
        if let Err(e) = self.history.append(&Record::Op(op.clone())) {
            eprintln!("chaos: {e}");
        }
        op
    }

    /// CreateOrder; the order when it was accepted, else the code.
    pub async fn create(
        &self,
        target: &Target,
        workload: &str,
        request_id: &str,
        customer_id: &str,
        lines: &[Line],
    ) -> Result<order_pb::Order, tonic::Code> {
        let mut op = self.begin(OpKind::Create, workload, target.name);
        op.request_id = request_id.to_owned();
        op.customer_id = customer_id.to_owned();
        op.lines = lines.to_vec();
        let request = target.request(
            order_pb::CreateOrderRequest {
                request_id: request_id.to_owned(),
                customer_id: customer_id.to_owned(),
                lines: lines
                    .iter()
                    .map(|l| order_pb::CreateOrderLine {
                        sku: l.sku.clone(),
                        quantity: l.quantity,
                    })
                    .collect(),
            },
            CALL_TIMEOUT,
        );
        let answer = target.client.clone().create_order(request).await;
        let order = match answer {
            Ok(response) => response
                .into_inner()
                .order
                .ok_or_else(|| tonic::Status::internal("no order in the answer")),
            Err(status) => Err(status),
        };
        if let Ok(order) = &order {
            op.order_id = order.order_id.clone();
            op.status = order_status(order);
        }
        let code = order.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        self.end(op, order.as_ref().map(drop).map_err(Clone::clone));
        order.map_err(|_| code)
    }

    /// CancelOrder; the code of the answer and the order's status in it.
    pub async fn cancel(&self, target: &Target, workload: &str, order_id: &str) -> (tonic::Code, String) {
        let mut op = self.begin(OpKind::Cancel, workload, target.name);
        op.order_id = order_id.to_owned();
        let request = target.request(
            order_pb::CancelOrderRequest {
                order_id: order_id.to_owned(),
            },
            CALL_TIMEOUT,
        );
        let answer = target.client.clone().cancel_order(request).await;
        let code = answer.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        if let Some(order) = answer.as_ref().ok().and_then(|r| r.get_ref().order.as_ref()) {
            op.status = order_status(order);
        }
        let op = self.end(op, answer.map(drop));
        (code, op.status)
    }

    /// GetOrder; the order's status, when answered.
    pub async fn get(&self, target: &Target, workload: &str, order_id: &str) -> Option<String> {
        let mut op = self.begin(OpKind::Get, workload, target.name);
        op.order_id = order_id.to_owned();
        let request = target.request(
            order_pb::GetOrderRequest {
                order_id: order_id.to_owned(),
            },
            CALL_TIMEOUT,
        );
        let answer = target.client.clone().get_order(request).await;
        if let Some(order) = answer.as_ref().ok().and_then(|r| r.get_ref().order.as_ref()) {
            op.status = order_status(order);
        }
        let op = self.end(op, answer.map(drop));
        op.ok().then_some(op.status)
    }

    /// WatchOrder until a terminal status or `within`; the last status seen.
    pub async fn watch(
        &self,
        target: &Target,
        workload: &str,
        order_id: &str,
        within: Duration,
    ) -> Option<String> {
        let mut op = self.begin(OpKind::Watch, workload, target.name);
        op.order_id = order_id.to_owned();
        let request = target.request(
            order_pb::WatchOrderRequest {
                order_id: order_id.to_owned(),
            },
            within,
        );
        let outcome = async {
            let mut stream = target.client.clone().watch_order(request).await?.into_inner();
            while let Some(item) = stream.next().await {
                if let Some(order) = item?.order {
                    op.status = order_status(&order);
                }
            }
            Ok::<(), tonic::Status>(())
        };
        // The server ends the stream at the deadline; this bounds a server
        // that cannot (a paused process).
        let outcome = match tokio::time::timeout(within + Duration::from_secs(2), outcome).await {
            Ok(outcome) => outcome,
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "the watch outlived its deadline",
            )),
        };
        let op = self.end(op, outcome);
        (!op.status.is_empty()).then_some(op.status)
    }

    /// AdjustStock; whether it was acknowledged.
    pub async fn adjust(
        &self,
        inventory: &InventoryServiceClient<Channel>,
        workload: &str,
        request_id: &str,
        line: &Line,
    ) -> bool {
        let mut op = self.begin(OpKind::Adjust, workload, "inventory");
        op.request_id = request_id.to_owned();
        op.lines = vec![line.clone()];
        let mut request = tonic::Request::new(inventory_pb::AdjustStockRequest {
            sku: line.sku.clone(),
            delta: line.quantity,
            reason: format!("chaos {workload}"),
            request_id: request_id.to_owned(),
        });
        request.set_timeout(CALL_TIMEOUT);
        let answer = inventory.clone().adjust_stock(request).await;
        self.end(op, answer.map(drop)).ok()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_read_as_in_grpc() {
        assert_eq!(
            super::code_name(tonic::Code::DeadlineExceeded),
            "DEADLINE_EXCEEDED"
        );
        assert_eq!(super::code_name(tonic::Code::Ok), "OK");
        assert_eq!(
            super::code_name(tonic::Code::FailedPrecondition),
            "FAILED_PRECONDITION"
        );
        assert_eq!(
            super::short("ORDER_STATUS_CONFIRMED", "ORDER_STATUS_"),
            "CONFIRMED"
        );
    }
}
