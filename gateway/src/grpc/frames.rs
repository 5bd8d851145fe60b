//! The gateway's message size limit on gRPC and grpc-web request bodies,
//! enforced while they stream through, never by buffering them: gRPC frames
//! each message with a 5-byte prefix (a compression flag and a big-endian
//! length), so the declared size of every message is known before its bytes
//! arrive.
//!
//! The first message's prefix is read before the call is forwarded, so a
//! unary call that declares too large a message gets RESOURCE_EXHAUSTED
//! from the gateway and never reaches a service. A later message of a
//! stream that declares too large a size ends the request body with an
//! error (the stream is reset). No crate parses gRPC framing on a body in
//! flight without decoding the messages, hence this small parser.
//!
//! A request body that fails as it streams (too large a later message, or
//! grpc-web-text that is not base64, which tonic-web finds while decoding)
//! would reach the caller as whatever the upstream connection made of a
//! broken request body (UNAVAILABLE, which clients retry). The failure is
//! kept in a [`BodyFailure`] so that the call answers with it instead:
//! RESOURCE_EXHAUSTED or INVALID_ARGUMENT, the caller's to fix.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tonic::body::Body;

/// The length of a gRPC message prefix.
const PREFIX: usize = 5;

/// Tracks where the message prefixes are in a stream of bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Framing {
    /// Bytes of the current prefix seen so far.
    prefix: Vec<u8>,
    /// Payload bytes of the current message still to come.
    remaining: u64,
}

/// A message larger than the limit, by its declared length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a request message of {declared} bytes exceeds the gateway's limit of {max} bytes")]
pub struct TooLarge {
    pub declared: u64,
    pub max: u64,
}

impl Framing {
    /// Advances over `chunk`; the first message whose declared length
    /// exceeds `max` is an error.
    pub fn feed(&mut self, mut chunk: &[u8], max: u64) -> Result<(), TooLarge> {
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let take = self.remaining.min(chunk.len() as u64);
                self.remaining -= take;
                chunk = &chunk[take as usize..];
                continue;
            }
            let want = PREFIX - self.prefix.len();
            let take = want.min(chunk.len());
            self.prefix.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.prefix.len() == PREFIX {
                let declared = u64::from(u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]));
                self.prefix.clear();
                if declared > max {
                    return Err(TooLarge { declared, max });
                }
                self.remaining = declared;
            }
        }
        Ok(())
    }

    /// Whether a whole prefix has been read (the first message's size is known).
    fn started(&self, fed: usize) -> bool {
        fed >= PREFIX
    }
}

/// The first failure of a caller's request body, kept for the call's answer.
#[derive(Debug, Clone, Default)]
pub struct BodyFailure(Arc<Mutex<Option<tonic::Status>>>);

impl BodyFailure {
    fn record(&self, status: tonic::Status) -> tonic::Status {
        let mut slot = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert_with(|| status.clone());
        status
    }

    /// The failure, if the body failed.
    pub fn take(&self) -> Option<tonic::Status> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// The caller's body could not be read (tonic-web's base64 decoding, or the
/// stream broke): the caller's request is at fault, not the upstream.
fn unreadable(status: &tonic::Status) -> tonic::Status {
    tonic::Status::invalid_argument(format!(
        "the request body could not be read: {}",
        status.message()
    ))
}

/// A request body whose messages are checked against `max` as they pass.
struct Limited {
    head: VecDeque<Bytes>,
    inner: Body,
    framing: Framing,
    max: u64,
    failure: BodyFailure,
}

impl HttpBody for Limited {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        // The bytes read ahead to check the first prefix were checked then.
        if let Some(head) = self.head.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(too_large) = this.framing.feed(data.chunk(), this.max)
                {
                    let status = tonic::Status::resource_exhausted(too_large.to_string());
                    return Poll::Ready(Some(Err(this.failure.record(status))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(status))) => {
                Poll::Ready(Some(Err(this.failure.record(unreadable(&status)))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let head: u64 = self.head.iter().map(|b| b.len() as u64).sum();
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + head);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + head);
        }
        hint
    }
}

/// `body`, checked message by message against `max` bytes: RESOURCE_EXHAUSTED
/// at once when the first message declares more, else a body that fails
/// when a later one does (and records why in `failure`).
pub async fn limit(body: Body, max: usize, failure: BodyFailure) -> Result<Body, tonic::Status> {
    let max = max as u64;
    let mut body = body;
    let mut framing = Framing::default();
    let mut head = VecDeque::new();
    let mut fed = 0;
    while !framing.started(fed) {
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    fed += data.len();
                    framing
                        .feed(&data, max)
                        .map_err(|too_large| tonic::Status::resource_exhausted(too_large.to_string()))?;
                    head.push_back(data);
                }
                // Trailers before any message: nothing more to check.
                Err(_) => break,
            },
            Some(Err(status)) => return Err(unreadable(&status)),
            None => break,
        }
    }
    Ok(Body::new(Limited {
        head,
        inner: body,
        framing,
        max,
        failure,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7u8, len as usize));
        bytes
    }

    #[test]
    fn messages_within_the_limit_pass_in_any_split() {
        let mut stream = message(10);
        stream.extend(message(0));
        stream.extend(message(100));
        for split in 1..stream.len() {
            let mut framing = Framing::default();
            for chunk in stream.chunks(split) {
                framing.feed(chunk, 100).expect("within the limit");
            }
            assert_eq!(
                framing,
                Framing::default(),
                "ends between messages (split {split})"
            );
        }
    }

    #[test]
    fn a_message_declared_over_the_limit_is_refused_wherever_it_starts() {
        let mut stream = message(10);
        stream.extend_from_slice(&[0, 0, 0, 0, 101]);
        for split in 1..stream.len() {
            let mut framing = Framing::default();
            let refused = stream
                .chunks(split)
                .try_for_each(|chunk| framing.feed(chunk, 100));
            assert_eq!(
                refused,
                Err(TooLarge {
                    declared: 101,
                    max: 100
                }),
                "split {split}"
            );
        }
        // Exactly the limit passes; the length is big-endian over 4 bytes.
        assert!(Framing::default().feed(&[0, 0, 0, 0, 100], 100).is_ok());
        assert_eq!(
            Framing::default().feed(&[1, 1, 0, 0, 0], u64::from(u32::MAX)),
            Ok(()),
            "16 MiB declared under a 4 GiB limit"
        );
        assert_eq!(
            Framing::default().feed(&[0, 1, 0, 0, 0], 100),
            Err(TooLarge {
                declared: 1 << 24,
                max: 100
            })
        );
    }

    #[tokio::test]
    async fn the_first_message_is_checked_before_forwarding() {
        let big = Body::new(http_body_util::Full::new(Bytes::from(message(200))));
        let refused = limit(big, 100, BodyFailure::default())
            .await
            .expect_err("too large");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("200 bytes"), "{}", refused.message());

        // A later message over the limit fails the body as it streams.
        let chunks: Vec<Result<Frame<Bytes>, tonic::Status>> = vec![
            Ok(Frame::data(Bytes::from(message(10)))),
            Ok(Frame::data(Bytes::from(message(300)))),
        ];
        let streamed = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        let failure = BodyFailure::default();
        let body = limit(Body::new(streamed), 100, failure.clone())
            .await
            .expect("the first message is within");
        let failed = body.collect().await.expect_err("the second is not");
        assert_eq!(failed.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            failure.take().map(|s| s.code()),
            Some(tonic::Code::ResourceExhausted),
            "kept for the answer"
        );

        let small = Body::new(http_body_util::Full::new(Bytes::from(message(50))));
        let passed = limit(small, 100, BodyFailure::default()).await.expect("within");
        let bytes = passed.collect().await.expect("body").to_bytes();
        assert_eq!(bytes.len(), 55, "every byte passes, the read-ahead included");
    }

    #[tokio::test]
    async fn a_body_that_breaks_is_the_callers_invalid_argument() {
        // At once: the first read fails.
        let broken: Vec<Result<Frame<Bytes>, tonic::Status>> = vec![Err(tonic::Status::internal(
            "tonic-web: Invalid byte 33, offset 0.",
        ))];
        let refused = limit(
            Body::new(http_body_util::StreamBody::new(futures::stream::iter(broken))),
            100,
            BodyFailure::default(),
        )
        .await
        .expect_err("unreadable");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("Invalid byte 33"), "{refused:?}");

        // Later: the body fails as it streams, and the failure is kept.
        let later: Vec<Result<Frame<Bytes>, tonic::Status>> = vec![
            Ok(Frame::data(Bytes::from(message(10)))),
            Err(tonic::Status::internal("tonic-web: Invalid padding")),
        ];
        let failure = BodyFailure::default();
        let body = limit(
            Body::new(http_body_util::StreamBody::new(futures::stream::iter(later))),
            100,
            failure.clone(),
        )
        .await
        .expect("the first message is readable");
        assert!(body.collect().await.is_err());
        assert_eq!(
            failure.take().map(|s| s.code()),
            Some(tonic::Code::InvalidArgument)
        );
        assert!(failure.take().is_none(), "taken once");
    }
}
