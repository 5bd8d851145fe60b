//! NATS, read with async-nats directly: each stream from sequence 1 with an
//! ordered consumer (the `ce-id`, type and subject of every message), and
//! the durable consumers' backlog, which the settle phase waits to drain.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, ErrorCode, consumer::DeliverPolicy, consumer::pull};
use futures::{StreamExt, TryStreamExt};

use ordermesh_events::DEAD_LETTER_STREAM;
use ordermesh_events::envelope::header;

use super::CollectError;
use crate::check::events::STREAMS;
use crate::check::snapshot::{EventSnap, StreamSnap};

/// A JetStream context on `url` (one connection; clones share it).
pub async fn context(url: &str) -> Result<jetstream::Context, CollectError> {
    let client = async_nats::ConnectOptions::new()
        .name("ordermesh-chaos")
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| CollectError::Nats(format!("connecting to {url}: {e}")))?;
    Ok(jetstream::new(client))
}

/// ORDERS, INVENTORY, PAYMENTS and DEADLETTER, each from sequence 1.
pub async fn streams(js: &jetstream::Context) -> Result<BTreeMap<String, StreamSnap>, CollectError> {
    let mut out = BTreeMap::new();
    for name in STREAMS.into_iter().chain([DEAD_LETTER_STREAM]) {
        out.insert(name.to_owned(), read_stream(js, name).await?);
    }
    Ok(out)
}

async fn read_stream(js: &jetstream::Context, name: &str) -> Result<StreamSnap, CollectError> {
    let mut stream = match js.get_stream(name).await {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            return Ok(StreamSnap::default());
        }
        Err(e) => return Err(CollectError::Nats(format!("stream {name}: {e}"))),
    };
    let last = stream
        .info()
        .await
        .map_err(|e| CollectError::Nats(format!("stream {name} info: {e}")))?
        .state
        .last_sequence;
    let mut snap = StreamSnap {
        exists: true,
        events: Vec::new(),
    };
    if last == 0 {
        return Ok(snap);
    }
    let mut messages = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: 1 },
            ..Default::default()
        })
        .await
        .map_err(|e| CollectError::Nats(format!("reading {name}: {e}")))?
        .messages()
        .await
        .map_err(|e| CollectError::Nats(format!("reading {name}: {e}")))?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let message = match next {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(CollectError::Nats(format!("reading {name}: {e}"))),
            Ok(None) => break,
            Err(_) => {
                return Err(CollectError::Nats(format!(
                    "reading {name}: nothing for 10 s at {} of {last} messages",
                    snap.events.len()
                )));
            }
        };
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let get = |key: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(key))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let ce_type = get(header::TYPE);
        let kind = ce_type.rsplit('.').next().unwrap_or_default().to_owned();
        snap.events.push(EventSnap::new(
            seq,
            &get(header::ID),
            &kind,
            &get(header::SUBJECT),
        ));
        if seq >= last {
            break;
        }
    }
    Ok(snap)
}

/// Messages the services' durable consumers have yet to receive or to ack,
/// over the three streams (a stream that is missing counts nothing).
pub async fn consumer_backlog(js: &jetstream::Context) -> Result<u64, CollectError> {
    let mut backlog = 0;
    for name in STREAMS {
        let Ok(stream) = js.get_stream(name).await else {
            continue;
        };
        let infos: Vec<_> = stream
            .consumers()
            .try_collect()
            .await
            .map_err(|e| CollectError::Nats(format!("consumers of {name}: {e}")))?;
        for info in infos.iter().filter(|i| i.config.durable_name.is_some()) {
            backlog += info.num_pending + info.num_ack_pending as u64;
        }
    }
    Ok(backlog)
}

/// The last sequence of each stream (0 when missing): the outboxes have
/// drained when these stop moving.
pub async fn last_sequences(js: &jetstream::Context) -> Result<Vec<u64>, CollectError> {
    let mut out = Vec::new();
    for name in STREAMS {
        let last = match js.get_stream(name).await {
            Ok(mut stream) => stream.info().await.map(|i| i.state.last_sequence).unwrap_or(0),
            Err(_) => 0,
        };
        out.push(last);
    }
    Ok(out)
}
