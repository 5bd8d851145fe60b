//! The edge gateway (see README.md in this crate).
pub mod auth;
pub mod limit;
