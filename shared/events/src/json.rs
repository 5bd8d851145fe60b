//! Events as JSON for people and scripts (`ordermesh events tail`).
//!
//! The payload is decoded by its `ce-type` through prost-reflect and the
//! contracts' own descriptor set, so the JSON follows the protobuf JSON
//! mapping (camelCase names, enums by name, RFC 3339 timestamps) for every
//! event type without a hand-written match over the types.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value, json};

use crate::envelope::{Event, rfc3339};

static POOL: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(|| DescriptorPool::decode(ordermesh_proto::FILE_DESCRIPTOR_SET).ok());

/// The payload decoded to JSON, or an error text naming why it could not be.
pub fn payload_json(ce_type: &str, data: &[u8]) -> Result<Value, String> {
    let pool = POOL
        .as_ref()
        .ok_or("the contracts' descriptor set does not decode")?;
    let descriptor = pool
        .get_message_by_name(ce_type)
        .ok_or_else(|| format!("unknown event type {ce_type:?}"))?;
    let message =
        DynamicMessage::decode(descriptor, data).map_err(|e| format!("cannot decode {ce_type}: {e}"))?;
    serde_json::to_value(&message).map_err(|e| format!("cannot render {ce_type}: {e}"))
}

/// One event as a JSON object: the CloudEvents attributes and the decoded
/// payload under `data` (or, when it does not decode, the reason under
/// `dataError` and its size under `dataBytes`: one bad event must not stop
/// a tail).
pub fn event_json(event: &Event) -> Value {
    let mut object = json!({
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.ce_type,
        "subject": event.subject,
        "time": rfc3339(event.time_us),
        "topic": event.topic,
    });
    if let Some(traceparent) = &event.traceparent {
        object["traceparent"] = json!(traceparent);
    }
    match payload_json(&event.ce_type, &event.data) {
        Ok(data) => object["data"] = data,
        Err(error) => {
            object["dataError"] = json!(error);
            object["dataBytes"] = json!(event.data.len());
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordermesh_proto::events::v1 as pb;

    #[test]
    fn payload_renders_with_protobuf_json_names() {
        let payload = pb::PaymentCaptured {
            payment_id: "p-1".into(),
            order_id: "o-1".into(),
            account_id: "alice".into(),
            amount: Some(ordermesh_proto::common::v1::Money::new(2499, "USD")),
            occur_time: Some(crate::envelope::timestamp(1_700_000_000_000_000)),
        };
        let event = Event::new("/ordermesh/payment", &payload, None);
        let json = event_json(&event);
        assert_eq!(json["type"], "ordermesh.events.v1.PaymentCaptured");
        assert_eq!(json["data"]["paymentId"], "p-1");
        assert_eq!(json["data"]["amount"]["amountMinor"], "2499");
        assert_eq!(json["data"]["occurTime"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn an_undecodable_payload_is_reported_not_fatal() {
        let mut event = Event::new("/x", &pb::StockLow::default(), None);
        event.data = bytes::Bytes::from_static(&[0xff, 0xff, 0xff]);
        let json = event_json(&event);
        assert!(json["dataError"].as_str().is_some_and(|e| e.contains("StockLow")));
    }
}
