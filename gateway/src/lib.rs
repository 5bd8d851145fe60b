//! The edge gateway (see README.md in this crate).
