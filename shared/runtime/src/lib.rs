//! The ordermesh mesh runtime: what every service process needs besides its
//! own domain logic.
//!
//! # Layout
//! - [`db`]: connect to SQLite or PostgreSQL through one `AnyPool` and apply
//!   the service's embedded migrations.
//! - [`server`]: bootstrap a tonic server with health, reflection (v1 and
//!   v1alpha) and graceful shutdown on a listener the caller bound.
//! - [`health`]: keep the health status in step with database readiness.
//! - [`shutdown`]: the SIGTERM / Ctrl-C future.
//! - [`validate`]: collect field violations into `INVALID_ARGUMENT` with
//!   `google.rpc.BadRequest` details.
//! - [`status`]: shared pieces of the services' error-to-status mappings.
//! - [`paging`]: AIP-158 page sizes and opaque page tokens.
//! - [`clock`]: timestamps as integer microseconds, the storage format.
//! - [`telemetry`]: the tracing subscriber.
//!
//! The mesh client stack (breakers, retries, balancing) joins this crate in
//! the mesh-layer work.

pub mod clock;
pub mod db;
pub mod error;
pub mod health;
pub mod paging;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod validate;

pub use error::Error;
