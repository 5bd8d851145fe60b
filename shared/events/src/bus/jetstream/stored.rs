//! Whether a message is already in its stream, by its message id: what the
//! relay asks before it publishes again a row whose first attempt is older
//! than (half) the duplicate window, where JetStream would no longer drop
//! the copy (see `relay::republish`).
//!
//! How: an ordered ephemeral consumer on the message's subject, headers
//! only, from a start time (the first attempt, less a margin for the clocks
//! of the relay and the server), read to the stream's end looking for
//! `Nats-Msg-Id`. It reads only that subject's messages since the attempt;
//! rare (after an outage longer than half the window), so a scan is fine.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;

use super::JetStreamBus;
use crate::envelope::Event;
use crate::error::Error;
use crate::kind::BoundedContext;

/// `Nats-Msg-Id`, the header JetStream de-duplicates by.
const MSG_ID: &str = "Nats-Msg-Id";

/// How long one look-up may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

impl JetStreamBus {
    /// True when `event` (by its id) is stored on its subject at or after
    /// `since_us` (server time).
    pub(crate) async fn stored_since(&self, event: &Event, since_us: i64) -> Result<bool, Error> {
        tokio::time::timeout(LOOKUP_TIMEOUT, self.scan(event, since_us))
            .await
            .unwrap_or_else(|_| Err(Error::jetstream("look up a message", "timed out")))
    }

    async fn scan(&self, event: &Event, since_us: i64) -> Result<bool, Error> {
        let context = BoundedContext::of_subject(&event.topic).ok_or_else(|| {
            Error::jetstream("look up a message", format!("no stream holds {}", event.topic))
        })?;
        let stream = self
            .js
            .get_stream(context.stream())
            .await
            .map_err(|e| Error::jetstream("get stream", e))?;
        let start_time = async_nats::datetime::from_nanos(i128::from(since_us.max(0)) * 1_000)
            .map_err(|e| Error::jetstream("look up a message", e))?;
        let mut consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: event.topic.clone(),
                headers_only: true,
                deliver_policy: DeliverPolicy::ByStartTime { start_time },
                ..Default::default()
            })
            .await
            .map_err(|e| Error::jetstream("create look-up consumer", e))?;
        if consumer
            .info()
            .await
            .map_err(|e| Error::jetstream("look-up consumer info", e))?
            .num_pending
            == 0
        {
            return Ok(false);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| Error::jetstream("look up a message", e))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| Error::jetstream("look up a message", e))?;
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get(MSG_ID))
                .map(|v| v.as_str());
            if id == Some(event.id.as_str()) {
                return Ok(true);
            }
            let pending = message
                .info()
                .map_err(|e| Error::jetstream("look up a message", e))?
                .pending;
            if pending == 0 {
                return Ok(false);
            }
        }
        Ok(false)
    }
}
