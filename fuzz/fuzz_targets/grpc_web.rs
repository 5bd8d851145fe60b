//! gRPC and grpc-web request bodies as the gateway forwards them: grpc-web
//! (binary, and base64 text) is unwrapped by `tonic_web::GrpcWebLayer`, and
//! every body passes the gateway's message size check, which reads the
//! 5-byte message prefixes as the bytes stream through. Input: a mode byte
//! (bit 0: grpc-web-text; the rest: where the body is cut into chunks),
//! then the body.
//!
//! The size check reads the same messages however the body is chunked; a
//! binary body is forwarded byte for byte exactly when no message declares
//! more than the limit, and refused otherwise; text bodies are forwarded
//! or refused without a panic.
#![no_main]

use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use libfuzzer_sys::fuzz_target;
use ordermesh_gateway::grpc::frames::{self, Framing};
use tower::{Layer, ServiceExt};

/// Small, so that both sides of the limit are reached.
const MAX: usize = 64;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
});

/// Cuts `body` into chunks whose sizes cycle through `1..=step`.
fn chunks(body: &[u8], step: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut size = 1;
    while !rest.is_empty() {
        let take = size.min(rest.len());
        out.push(Bytes::copy_from_slice(&rest[..take]));
        rest = &rest[take..];
        size = size % step.max(1) + 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let text = mode & 1 == 1;
    let step = usize::from(mode >> 1) + 1;
    let chunks = chunks(body, step);

    // The same verdict and state whatever the chunking.
    let mut whole = Framing::default();
    let whole_verdict = whole.feed(body, MAX as u64);
    let mut piecewise = Framing::default();
    let mut piecewise_verdict = Ok(());
    for chunk in &chunks {
        piecewise_verdict = piecewise.feed(chunk, MAX as u64);
        if piecewise_verdict.is_err() {
            break;
        }
    }
    assert_eq!(whole_verdict, piecewise_verdict);
    if whole_verdict.is_ok() {
        assert_eq!(whole, piecewise);
    }

    // Through grpc-web unwrapping and the limit, as the gateway forwards it.
    let forwarded: Arc<Mutex<Option<Result<Bytes, ()>>>> = Arc::default();
    let seen = Arc::clone(&forwarded);
    let inner = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let seen = Arc::clone(&seen);
        async move {
            let outcome = match frames::limit(request.into_body(), MAX, frames::BodyFailure::default()).await
            {
                Ok(body) => body.collect().await.map(|c| c.to_bytes()).map_err(|_| ()),
                Err(_) => Err(()),
            };
            *seen.lock().unwrap() = Some(outcome);
            Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
        }
    });
    let service = tonic_web::GrpcWebLayer::new().layer(inner);
    let stream = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|chunk| Ok::<_, Infallible>(http_body::Frame::data(chunk))),
    );
    let content_type = if text {
        "application/grpc-web-text"
    } else {
        "application/grpc-web+proto"
    };
    let request = http::Request::builder()
        .method("POST")
        .uri("/ordermesh.order.v1.OrderService/GetOrder")
        .header("content-type", content_type)
        .body(tonic::body::Body::new(StreamBody::new(stream)))
        .expect("request");
    let _ = RUNTIME.block_on(service.oneshot(request));
    if !text {
        let outcome = forwarded.lock().unwrap().take();
        match outcome {
            Some(Ok(bytes)) => {
                assert!(whole_verdict.is_ok(), "forwarded past the limit");
                assert_eq!(bytes.as_ref(), body);
            }
            Some(Err(())) => assert!(whole_verdict.is_err(), "refused within the limit"),
            None => panic!("the call was not forwarded"),
        }
    }
});
