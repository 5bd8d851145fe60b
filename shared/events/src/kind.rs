//! Event types, subjects and streams: the naming contract every publisher
//! and consumer shares.
//!
//! Subjects are `ordermesh.<context>.v1.<event>` and each bounded context
//! has one JetStream stream (`ORDERS`, `INVENTORY`, `PAYMENTS`) holding
//! `ordermesh.<context>.v1.>`. The CloudEvents type of an event is the full
//! protobuf name of its payload, so a consumer in any language finds the
//! message to decode with by the `ce-type` header alone.

use ordermesh_proto::events::v1 as pb;

/// The first token of every ordermesh subject.
pub const SUBJECT_PREFIX: &str = "ordermesh";

/// A bounded context: one stream, one subject namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BoundedContext {
    Orders,
    Inventory,
    Payments,
}

impl BoundedContext {
    pub const ALL: [BoundedContext; 3] = [Self::Orders, Self::Inventory, Self::Payments];

    /// The subject token, e.g. `orders`.
    pub fn token(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Inventory => "inventory",
            Self::Payments => "payments",
        }
    }

    /// The JetStream stream name, e.g. `ORDERS`.
    pub fn stream(self) -> &'static str {
        match self {
            Self::Orders => "ORDERS",
            Self::Inventory => "INVENTORY",
            Self::Payments => "PAYMENTS",
        }
    }

    /// The subjects the stream holds, e.g. `ordermesh.orders.v1.>`.
    pub fn subjects(self) -> String {
        format!("{SUBJECT_PREFIX}.{}.v1.>", self.token())
    }

    /// The context a subject belongs to.
    pub fn of_subject(subject: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| subject_matches(&c.subjects(), subject))
    }
}

/// One event type: its context, subject suffix and CloudEvents type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKind {
    pub context: BoundedContext,
    /// The last subject token, e.g. `confirmed`.
    pub name: &'static str,
    /// The CloudEvents type, the payload's protobuf name.
    pub type_name: &'static str,
}

impl EventKind {
    /// The NATS subject, e.g. `ordermesh.orders.v1.confirmed`.
    pub fn subject(&self) -> String {
        format!("{SUBJECT_PREFIX}.{}.v1.{}", self.context.token(), self.name)
    }
}

/// A payload message of `ordermesh.events.v1`.
pub trait DomainEvent: prost::Message + Default + Send + Sync + 'static {
    const KIND: EventKind;
    /// The id of the aggregate the event belongs to (`ce-subject`); events of
    /// one aggregate are published in commit order.
    fn aggregate_id(&self) -> &str;
    /// The order the event concerns, where there is one.
    fn order_id(&self) -> Option<&str>;
    fn occur_time(&self) -> Option<&prost_types::Timestamp>;
    /// Whether the payload keeps its type's contract: its ids are set (the
    /// aggregate's always) and its values possible. An event that breaks it
    /// cannot be right whatever a consumer does with it, so producers refuse
    /// to write it and consumers dead-letter it. `Err` names the field.
    fn validate(&self) -> Result<(), String>;
}

macro_rules! domain_events {
    ($($ty:ident => $context:ident, $name:literal, aggregate: $agg:ident, order: $order:tt,
        required: [$($required:ident),*], check: $check:tt;)+) => {
        $(
            impl DomainEvent for pb::$ty {
                const KIND: EventKind = EventKind {
                    context: BoundedContext::$context,
                    name: $name,
                    type_name: concat!("ordermesh.events.v1.", stringify!($ty)),
                };
                fn aggregate_id(&self) -> &str {
                    &self.$agg
                }
                fn order_id(&self) -> Option<&str> {
                    domain_events!(@order self $order)
                }
                fn occur_time(&self) -> Option<&prost_types::Timestamp> {
                    self.occur_time.as_ref()
                }
                fn validate(&self) -> Result<(), String> {
                    for (field, value) in [(stringify!($agg), &self.$agg) $(, (stringify!($required), &self.$required))*] {
                        if value.trim().is_empty() {
                            return Err(format!("{field} is empty"));
                        }
                    }
                    domain_events!(@check self $check)
                }
            }
        )+

        /// Every event type, in the order of `events.proto`.
        pub const KINDS: &[EventKind] = &[$(<pb::$ty as DomainEvent>::KIND),+];

        /// Decodes an encoded payload of the known type `type_name` and
        /// checks its contract, also that `subject` (`ce-subject`) is its
        /// aggregate id; `None` for a type that is not ordermesh's.
        pub fn validate_encoded(
            type_name: &str,
            subject: &str,
            data: &[u8],
        ) -> Option<Result<(), crate::error::Error>> {
            $(
                if type_name == <pb::$ty as DomainEvent>::KIND.type_name {
                    return Some(validate_as::<pb::$ty>(subject, data));
                }
            )+
            None
        }
    };
    (@order $self:ident none) => { None };
    (@order $self:ident $field:ident) => {
        Some(&$self.$field).filter(|id| !id.is_empty()).map(String::as_str)
    };
    (@check $self:ident none) => { Ok(()) };
    (@check $self:ident $check:ident) => { $check($self) };
}

fn validate_as<E: DomainEvent>(subject: &str, data: &[u8]) -> Result<(), crate::error::Error> {
    let invalid = |reason: String| crate::error::Error::InvalidEvent {
        ce_type: E::KIND.type_name.to_owned(),
        reason,
    };
    let payload = E::decode(data).map_err(|e| crate::error::Error::Decode {
        ce_type: E::KIND.type_name.to_owned(),
        reason: e.to_string(),
    })?;
    payload.validate().map_err(invalid)?;
    if subject != payload.aggregate_id() {
        return Err(invalid(format!(
            "ce-subject {subject:?} is not the aggregate id {:?}",
            payload.aggregate_id()
        )));
    }
    Ok(())
}

/// Events with lines (an order's, a reservation's): the SKU and quantity of each.
trait Lines {
    fn each(&self) -> impl Iterator<Item = (&str, i64)>;
}

impl Lines for pb::OrderCreated {
    fn each(&self) -> impl Iterator<Item = (&str, i64)> {
        self.lines.iter().map(|l| (l.sku.as_str(), l.quantity))
    }
}

macro_rules! stock_lines {
    ($($ty:ident),+) => {$(
        impl Lines for pb::$ty {
            fn each(&self) -> impl Iterator<Item = (&str, i64)> {
                self.lines.iter().map(|l| (l.sku.as_str(), l.quantity))
            }
        }
    )+};
}
stock_lines!(StockReserved, StockReleased, StockCommitted);

/// Every line names a SKU and a positive quantity.
fn lines(event: &impl Lines) -> Result<(), String> {
    for (i, (sku, quantity)) in event.each().enumerate() {
        if sku.trim().is_empty() {
            return Err(format!("lines[{i}].sku is empty"));
        }
        if quantity <= 0 {
            return Err(format!("lines[{i}].quantity {quantity} is not positive"));
        }
    }
    Ok(())
}

/// StockLow: a SKU fell below a positive threshold.
fn low_stock(event: &pb::StockLow) -> Result<(), String> {
    if event.threshold <= 0 {
        return Err(format!("threshold {} is not positive", event.threshold));
    }
    Ok(())
}

domain_events! {
    OrderCreated => Orders, "created", aggregate: order_id, order: order_id, required: [customer_id], check: lines;
    OrderConfirmed => Orders, "confirmed", aggregate: order_id, order: order_id, required: [customer_id], check: none;
    OrderRejected => Orders, "rejected", aggregate: order_id, order: order_id, required: [customer_id], check: none;
    OrderCancelled => Orders, "cancelled", aggregate: order_id, order: order_id, required: [customer_id], check: none;
    StockReserved => Inventory, "stock_reserved", aggregate: order_id, order: order_id, required: [], check: lines;
    StockReleased => Inventory, "stock_released", aggregate: order_id, order: order_id, required: [], check: lines;
    StockCommitted => Inventory, "stock_committed", aggregate: order_id, order: order_id, required: [], check: lines;
    StockAdjusted => Inventory, "stock_adjusted", aggregate: sku, order: none, required: [], check: none;
    StockLow => Inventory, "stock_low", aggregate: sku, order: order_id, required: [], check: low_stock;
    ProductUpdated => Inventory, "product_updated", aggregate: sku, order: none, required: [], check: none;
    // A payment's reference (the order id) is optional: a payment need not be an order's.
    PaymentAuthorized => Payments, "authorized", aggregate: payment_id, order: order_id, required: [], check: none;
    PaymentCaptured => Payments, "captured", aggregate: payment_id, order: order_id, required: [], check: none;
    PaymentVoided => Payments, "voided", aggregate: payment_id, order: order_id, required: [], check: none;
    PaymentRefunded => Payments, "refunded", aggregate: payment_id, order: order_id, required: [], check: none;
}

/// The event type with this CloudEvents type.
pub fn kind_of_type(type_name: &str) -> Option<&'static EventKind> {
    KINDS.iter().find(|k| k.type_name == type_name)
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for f in filter.split('.') {
        match (f, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (f, Some(s)) if f == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Whether some subject could match both patterns.
pub fn subjects_overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Checks a subject filter given by a user: non-empty tokens, `>` only last.
pub fn validate_filter(filter: &str) -> Result<(), crate::error::Error> {
    let tokens: Vec<&str> = filter.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(crate::error::Error::invalid(
                "subject_filter",
                format!("{filter:?} has an empty or blank token"),
            ));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(crate::error::Error::invalid(
                "subject_filter",
                format!("{filter:?}: `>` may only be the last token"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_naming_contract() {
        assert_eq!(
            <pb::OrderConfirmed as DomainEvent>::KIND.subject(),
            "ordermesh.orders.v1.confirmed"
        );
        assert_eq!(
            <pb::StockLow as DomainEvent>::KIND.subject(),
            "ordermesh.inventory.v1.stock_low"
        );
        assert_eq!(
            <pb::PaymentRefunded as DomainEvent>::KIND.type_name,
            "ordermesh.events.v1.PaymentRefunded"
        );
        assert_eq!(KINDS.len(), 14);
        for kind in KINDS {
            assert_eq!(BoundedContext::of_subject(&kind.subject()), Some(kind.context));
            assert_eq!(kind_of_type(kind.type_name), Some(kind));
        }
    }

    #[test]
    fn every_kind_names_a_message_in_the_descriptor_set() {
        let pool = prost_reflect::DescriptorPool::decode(ordermesh_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        for kind in KINDS {
            assert!(
                pool.get_message_by_name(kind.type_name).is_some(),
                "{} missing",
                kind.type_name
            );
        }
    }

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("ordermesh.>", "ordermesh.orders.v1.created"));
        assert!(subject_matches(
            "ordermesh.*.v1.created",
            "ordermesh.orders.v1.created"
        ));
        assert!(!subject_matches(
            "ordermesh.*.v1.created",
            "ordermesh.orders.v1.confirmed"
        ));
        assert!(!subject_matches(
            "ordermesh.orders",
            "ordermesh.orders.v1.created"
        ));
        assert!(!subject_matches(
            "ordermesh.orders.v1.created.x",
            "ordermesh.orders.v1.created"
        ));
        assert!(!subject_matches("ordermesh.orders.v1.>", "ordermesh.orders.v1"));
        assert!(subjects_overlap(
            "ordermesh.orders.v1.>",
            "ordermesh.*.v1.created"
        ));
        assert!(subjects_overlap("ordermesh.orders.v1.>", ">"));
        assert!(!subjects_overlap("ordermesh.orders.v1.>", "ordermesh.payments.>"));
        assert!(validate_filter("ordermesh.>.x").is_err());
        assert!(validate_filter("ordermesh..x").is_err());
        assert!(validate_filter("ordermesh.*.v1.>").is_ok());
    }

    /// Every kind refuses its default (empty) payload naming the empty
    /// field; a payload with its ids set passes, and `ce-subject` must be
    /// its aggregate id.
    #[test]
    fn every_kind_refuses_empty_required_fields() {
        for kind in KINDS {
            let refused = validate_encoded(kind.type_name, "", &[]).expect("a known type");
            let error = refused.expect_err(kind.type_name).to_string();
            assert!(error.contains("is empty"), "{}: {error}", kind.type_name);
        }
        let confirmed = pb::OrderConfirmed {
            order_id: "o-1".into(),
            customer_id: "alice".into(),
            ..Default::default()
        };
        assert_eq!(confirmed.validate(), Ok(()));
        let no_customer = pb::OrderConfirmed {
            customer_id: String::new(),
            ..confirmed.clone()
        };
        assert_eq!(no_customer.validate(), Err("customer_id is empty".into()));
        let confirmed_type = <pb::OrderConfirmed as DomainEvent>::KIND.type_name;
        let data = prost::Message::encode_to_vec(&confirmed);
        assert!(validate_encoded(confirmed_type, "o-1", &data).is_some_and(|r| r.is_ok()));
        let wrong_subject = validate_encoded(confirmed_type, "o-2", &data);
        assert!(wrong_subject.is_some_and(|r| r.is_err_and(|e| e.to_string().contains("ce-subject"))));
        let low = pb::StockLow {
            sku: "KB-001".into(),
            threshold: 0,
            ..Default::default()
        };
        assert!(low.validate().is_err_and(|e| e.contains("threshold")));
        let created = pb::OrderCreated {
            order_id: "o-1".into(),
            customer_id: "alice".into(),
            lines: vec![pb::OrderedLine {
                sku: "KB-001".into(),
                quantity: 0,
            }],
            ..Default::default()
        };
        assert!(created.validate().is_err_and(|e| e.contains("lines[0].quantity")));
        assert!(validate_encoded("com.example.Other", "x", &[]).is_none());
    }

    #[test]
    fn order_id_is_none_when_empty() {
        let low = pb::StockLow {
            sku: "KB-001".into(),
            ..Default::default()
        };
        assert_eq!(low.aggregate_id(), "KB-001");
        assert_eq!(low.order_id(), None);
    }
}
