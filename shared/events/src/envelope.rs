//! The CloudEvents 1.0 envelope in binary mode: the event's attributes travel
//! as NATS headers (`ce-*`), the payload is the protobuf-encoded message.
//!
//! Why binary mode rather than a JSON envelope: consumers (and JetStream
//! tooling) read the attributes without decoding the body, the payload stays
//! the compact protobuf the services already speak, and any language's NATS
//! client plus the generated types is enough to consume (see the nats-py
//! test). `traceparent` is passed through as given; telemetry owns it.

use async_nats::HeaderMap;
use bytes::Bytes;
use ordermesh_proto::events::v1 as pb;

use crate::error::Error;
use crate::kind::{DomainEvent, kind_of_type};

/// Header names of the envelope.
pub mod header {
    pub const SPECVERSION: &str = "ce-specversion";
    pub const ID: &str = "ce-id";
    pub const SOURCE: &str = "ce-source";
    pub const TYPE: &str = "ce-type";
    pub const TIME: &str = "ce-time";
    pub const SUBJECT: &str = "ce-subject";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const TRACEPARENT: &str = "traceparent";
    /// The value of `ce-specversion`.
    pub const SPEC_VERSION_1_0: &str = "1.0";
    /// The value of `content-type`.
    pub const PROTOBUF: &str = "application/protobuf";
}

/// One event as it travels: CloudEvents attributes plus payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `ce-id`, also the JetStream de-duplication id (`Nats-Msg-Id`).
    pub id: String,
    /// `ce-source`, e.g. `/ordermesh/order`.
    pub source: String,
    /// `ce-type`, the payload's protobuf name.
    pub ce_type: String,
    /// `ce-subject`, the aggregate id.
    pub subject: String,
    /// `ce-time` in microseconds since the epoch.
    pub time_us: i64,
    /// W3C trace context, passed through.
    pub traceparent: Option<String>,
    /// The NATS subject it is published on.
    pub topic: String,
    /// The protobuf-encoded payload.
    pub data: Bytes,
}

impl Event {
    /// A new event (fresh time-ordered id) for a payload.
    pub fn new<E: DomainEvent>(source: &str, payload: &E, traceparent: Option<&str>) -> Self {
        let time_us = payload.occur_time().map(micros_of).unwrap_or_else(now_micros);
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            source: source.to_owned(),
            ce_type: E::KIND.type_name.to_owned(),
            subject: payload.aggregate_id().to_owned(),
            time_us,
            traceparent: traceparent.map(str::to_owned),
            topic: E::KIND.subject(),
            data: Bytes::from(payload.encode_to_vec()),
        }
    }

    /// The NATS headers of the envelope.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::SPECVERSION, header::SPEC_VERSION_1_0);
        headers.insert(header::ID, self.id.as_str());
        headers.insert(header::SOURCE, self.source.as_str());
        headers.insert(header::TYPE, self.ce_type.as_str());
        headers.insert(header::TIME, rfc3339(self.time_us).as_str());
        headers.insert(header::SUBJECT, self.subject.as_str());
        headers.insert(header::CONTENT_TYPE, header::PROTOBUF);
        if let Some(traceparent) = &self.traceparent {
            headers.insert(header::TRACEPARENT, traceparent.as_str());
        }
        headers
    }

    /// Reads an event from a NATS message. Fails when a required attribute
    /// is missing or the content type is not protobuf: such a message is
    /// poison for every ordermesh consumer.
    pub fn from_message(topic: &str, headers: Option<&HeaderMap>, data: Bytes) -> Result<Self, Error> {
        let missing = |name: &str| Error::Envelope {
            topic: topic.to_owned(),
            reason: format!("header {name} missing"),
        };
        let headers = headers.ok_or_else(|| missing(header::ID))?;
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        let required = |name: &str| get(name).filter(|v| !v.is_empty()).ok_or_else(|| missing(name));
        let version = required(header::SPECVERSION)?;
        if version != header::SPEC_VERSION_1_0 {
            return Err(Error::Envelope {
                topic: topic.to_owned(),
                reason: format!("ce-specversion {version:?} is not 1.0"),
            });
        }
        if let Some(content_type) = get(header::CONTENT_TYPE)
            && content_type != header::PROTOBUF
        {
            return Err(Error::Envelope {
                topic: topic.to_owned(),
                reason: format!("content-type {content_type:?} is not {}", header::PROTOBUF),
            });
        }
        let time = required(header::TIME)?;
        let time_us = time
            .parse::<prost_types::Timestamp>()
            .map(|t| micros_of(&t))
            .map_err(|e| Error::Envelope {
                topic: topic.to_owned(),
                reason: format!("ce-time {time:?}: {e}"),
            })?;
        Ok(Self {
            id: required(header::ID)?,
            source: required(header::SOURCE)?,
            ce_type: required(header::TYPE)?,
            subject: get(header::SUBJECT).unwrap_or_default(),
            time_us,
            traceparent: get(header::TRACEPARENT).filter(|v| !v.is_empty()),
            topic: topic.to_owned(),
            data,
        })
    }

    /// Decodes the payload as `E`, checking the type first.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, Error> {
        if self.ce_type != E::KIND.type_name {
            return Err(Error::Decode {
                ce_type: self.ce_type.clone(),
                reason: format!("expected {}", E::KIND.type_name),
            });
        }
        E::decode(self.data.as_ref()).map_err(|e| Error::Decode {
            ce_type: self.ce_type.clone(),
            reason: e.to_string(),
        })
    }

    /// Checks a known type's payload against its contract
    /// ([`DomainEvent::validate`]) and that `ce-subject` is its aggregate id:
    /// [`Error::InvalidEvent`] (or [`Error::Decode`]) when it cannot be right.
    /// An event of a type ordermesh does not know passes (its consumers judge).
    pub fn validate(&self) -> Result<(), Error> {
        crate::kind::validate_encoded(&self.ce_type, &self.subject, &self.data).unwrap_or(Ok(()))
    }

    /// Whether the type is one of ordermesh's event types.
    pub fn is_known_type(&self) -> bool {
        kind_of_type(&self.ce_type).is_some()
    }

    /// The wire form for `EventAdminService`.
    pub fn to_pb(&self) -> pb::Event {
        pb::Event {
            id: self.id.clone(),
            source: self.source.clone(),
            r#type: self.ce_type.clone(),
            subject: self.subject.clone(),
            time: Some(timestamp(self.time_us)),
            topic: self.topic.clone(),
            traceparent: self.traceparent.clone().unwrap_or_default(),
            data: self.data.to_vec(),
        }
    }

    /// Back from the wire form.
    pub fn from_pb(event: pb::Event) -> Self {
        Self {
            id: event.id,
            source: event.source,
            ce_type: event.r#type,
            subject: event.subject,
            time_us: event.time.as_ref().map(micros_of).unwrap_or_default(),
            traceparent: Some(event.traceparent).filter(|t| !t.is_empty()),
            topic: event.topic,
            data: Bytes::from(event.data),
        }
    }
}

/// Microseconds since the epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn micros_of(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.nanos) / 1_000)
}

/// A protobuf timestamp for microseconds since the epoch.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

/// RFC 3339 text of a microsecond time, as `ce-time` wants it.
pub fn rfc3339(micros: i64) -> String {
    timestamp(micros).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confirmed() -> pb::OrderConfirmed {
        pb::OrderConfirmed {
            order_id: "o-1".into(),
            customer_id: "alice".into(),
            total: Some(ordermesh_proto::common::v1::Money::new(8999, "USD")),
            payment_id: "p-1".into(),
            occur_time: Some(timestamp(1_700_000_000_123_456)),
        }
    }

    #[test]
    fn headers_round_trip() {
        let event = Event::new("/ordermesh/order", &confirmed(), Some("00-abc-def-01"));
        assert_eq!(event.topic, "ordermesh.orders.v1.confirmed");
        assert_eq!(event.subject, "o-1");
        assert_eq!(event.time_us, 1_700_000_000_123_456);
        let headers = event.headers();
        assert_eq!(
            headers.get(header::TIME).map(|v| v.as_str()),
            Some("2023-11-14T22:13:20.123456Z")
        );
        let back = Event::from_message(&event.topic, Some(&headers), event.data.clone()).expect("parses");
        assert_eq!(back, event);
        assert_eq!(back.decode::<pb::OrderConfirmed>().expect("decodes"), confirmed());
        assert!(back.decode::<pb::OrderCreated>().is_err(), "type is checked");
    }

    #[test]
    fn a_message_without_envelope_is_refused_naming_the_header() {
        let err =
            Event::from_message("ordermesh.orders.v1.created", None, Bytes::new()).expect_err("no headers");
        assert!(err.to_string().contains("ce-id"), "{err}");
        let mut headers = Event::new("/x", &confirmed(), None).headers();
        headers.insert(header::CONTENT_TYPE, "application/json");
        let err = Event::from_message("t", Some(&headers), Bytes::new()).expect_err("json");
        assert!(err.to_string().contains("content-type"), "{err}");
    }
}
