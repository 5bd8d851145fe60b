//! An event as a consumer receives it from NATS: the subject, the
//! CloudEvents attributes in the message headers (`ce-id`, `ce-type`,
//! `ce-time`, ...) and the protobuf payload. Input: the subject, a newline,
//! `Name: value` header lines, an empty line, the payload.
//!
//! Any message is read or refused as an envelope error (which consumers
//! dead-letter); a message that is read validates or is refused, and its
//! admin form (`EventAdminService`) reads back to the same event.
#![no_main]

use std::str::FromStr;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ordermesh_events::Event;
use ordermesh_events::kind::BoundedContext;

fuzz_target!(|data: &[u8]| {
    let (head, payload) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return;
    };
    let mut lines = head.lines();
    let subject = lines.next().unwrap_or_default();
    let mut headers = async_nats::HeaderMap::new();
    let mut any = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            async_nats::HeaderName::from_str(name.trim()),
            async_nats::HeaderValue::from_str(value.trim()),
        ) else {
            continue;
        };
        headers.append(name, value);
        any = true;
    }
    let _ = BoundedContext::of_subject(subject);
    let headers = any.then_some(&headers);
    let Ok(event) = Event::from_message(subject, headers, Bytes::copy_from_slice(payload)) else {
        return;
    };
    let _ = event.validate();
    let _ = event.is_known_type();
    let round_trip = Event::from_pb(event.to_pb());
    assert_eq!(round_trip.id, event.id);
    assert_eq!(round_trip.ce_type, event.ce_type);
    assert_eq!(round_trip.data, event.data);
    let _ = event.headers();
});
