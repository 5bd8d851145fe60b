//! The ordermesh mesh runtime: what every service process needs besides its
//! own domain logic.
//!
//! # Layout
//! - [`db`]: connect to SQLite or PostgreSQL through one `AnyPool` and apply
//!   the service's embedded migrations.
//! - [`server`]: bootstrap a tonic server with health, reflection (v1 and
//!   v1alpha) and graceful shutdown on a listener the caller bound.
//! - [`health`]: keep the health status in step with database readiness,
//!   and the one health client (`ordermesh health`, readiness waits).
//! - [`net`]: free loopback ports for the processes the bench and tests start.
//! - [`pgcluster`]: a throwaway PostgreSQL cluster (start, stop, restart) for
//!   the bench and the chaos run.
//! - [`shutdown`]: the SIGTERM / Ctrl-C future.
//! - [`validate`]: collect field violations into `INVALID_ARGUMENT` with
//!   `google.rpc.BadRequest` details.
//! - [`status`]: shared pieces of the services' error-to-status mappings.
//! - [`paging`]: AIP-158 page sizes and opaque page tokens.
//! - [`periodic`]: background sweeps on an interval.
//! - [`actor`]: who a call acts for, decided where the data lives
//!   (per-customer access, operators, admin APIs).
//! - [`clock`]: timestamps as integer microseconds, the storage format.
//! - [`telemetry`]: the tracing subscriber.
//! - [`metrics`]: the Prometheus endpoint and its scrape hooks.
//!
//! The mesh client stack (breakers, retries, balancing) joins this crate in
//! the mesh-layer work.

pub mod actor;
pub mod clock;
pub mod db;
pub mod error;
pub mod health;
pub mod metrics;
pub mod net;
pub mod paging;
pub mod periodic;
pub mod pgcluster;
pub mod server;
pub mod shutdown;
pub mod starting;
pub mod status;
pub mod telemetry;
pub mod validate;

pub use error::{Error, Infra};

/// Declares an enum stored as text: `as_str` is what a query binds, and
/// `parse` (also as `TryFrom<String>`, for `#[sqlx(try_from = "String")]` on a
/// `FromRow` field) reads it back. Parsing fails with [`Infra::Corrupt`] (as
/// the calling crate's `Error`), since an unknown value in the database is corrupt data,
/// not bad input. `ALL` lists every value (for exhaustive tests).
#[macro_export]
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Result<Self, Error> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => Err(Error::from($crate::Infra::Corrupt(format!(concat!(stringify!($name), " {:?}"), other)))),
                }
            }

            #[allow(dead_code)]
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
        }

        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(text: String) -> Result<Self, Error> {
                Self::parse(&text)
            }
        }
    };
}
