//! The edge gateway: one port for every kind of client.
//!
//! - REST/JSON, transcoded from the `google.api.http` annotations in the
//!   contracts' descriptor set at start ([`rules`], [`template`], [`json`],
//!   [`rest`]), with server streaming as NDJSON or Server-Sent Events;
//! - native gRPC (HTTP/2) and grpc-web, forwarded without decoding ([`grpc`]);
//! - a composed read for frontends ([`compose`]) and the OpenAPI 3.1 document
//!   generated from the same bindings ([`openapi`]).
//!
//! Every call, whatever its protocol, is admitted by one [`edge::Guard`] (JWT
//! auth, per-route scopes, per-principal rate limits) keyed by its RPC path,
//! and every failure is a `tonic::Status` until the edge ([`error`]). Calls to
//! the services go through the same mesh client stack the services use
//! between themselves ([`upstream`]).

pub mod auth;
pub mod codec;
pub mod compose;
pub mod config;
pub mod descriptors;
pub mod edge;
pub mod error;
pub mod fields;
pub mod grpc;
pub mod json;
pub mod limit;
pub mod listen;
pub mod metrics;
pub mod openapi;
pub mod rest;
pub mod rules;
pub mod server;
pub mod template;
pub mod upstream;

use std::time::Duration;

use crate::edge::Guard;
use crate::rules::Binding;
use crate::upstream::Upstreams;

pub use crate::config::GatewayConfig;
pub use crate::server::{Gateway, build};

/// The request id header, generated when a client sends none.
pub const REQUEST_ID: &str = "x-request-id";

/// What every handler shares.
pub struct Shared {
    /// Most specific first: templates with a custom verb, then by literals.
    pub routes: Vec<Binding>,
    pub guard: Guard,
    pub upstreams: Upstreams,
    pub json: json::JsonOptions,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub max_body_bytes: usize,
    /// How long a REST request's body may take to arrive.
    pub body_read_timeout: Duration,
    pub openapi: bytes::Bytes,
}

impl Shared {
    /// The binding for a request and its path variables.
    pub fn route(&self, method: &http::Method, path: &str) -> Option<(&Binding, crate::template::Captures)> {
        rules::route(&self.routes, method, path)
    }
}

/// Orders bindings so the first match is the most specific one.
pub fn sort_routes(routes: &mut [Binding]) {
    routes.sort_by_key(|b| {
        (
            b.template.verb.is_none(),
            std::cmp::Reverse(b.template.literals()),
        )
    });
}
