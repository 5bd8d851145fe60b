//! The proxyless mesh: every call between ordermesh services goes through
//! one client stack built here, and every server through its server layers.
//!
//! # Layout
//! - [`refused`]: the typed marker of a call the mesh answered without
//!   sending it.
//! - [`classify`]: what a call's gRPC status says about the server; shared
//!   by breaker, retry and ejection.
//! - [`breaker`]: circuit breaker state machine and layer.
//! - [`retry`]: gRFC A6 retries with a retry budget.
//! - [`deadline`]: inherited deadlines and default timeouts.
//! - [`fault`]: fault injection (delays, aborts).
//! - [`balance`]: discovery (static, DNS), p2c over peak-EWMA, outlier ejection.
//! - [`flags`]: feature flags with sticky percentage rollouts.
//! - [`grpc_timeout`]: the `grpc-timeout` header codec.
//! - [`policy`]: the policy file, environment overrides, validation.
//! - [`stack`]: the client stack and the per-process [`stack::Mesh`].
//! - [`server`]: load shedding on the server side.
//! - [`metrics`]: what the mesh measures (RED per call, per-downstream state).
//! - [`admin`]: the `MeshAdminService` gRPC API.
//! - [`trace`]: spans of every call and the W3C trace context between processes.
//! - [`tls`]: mutual TLS between processes, and the peer a certificate names.
pub mod admin;
pub mod balance;
pub mod breaker;
pub mod classify;
pub mod deadline;
pub mod fault;
pub mod flags;
pub mod grpc_timeout;
pub mod metrics;
pub mod policy;
pub mod refused;
pub mod retry;
pub mod server;
pub mod stack;
pub mod tls;
pub mod trace;
