//! The edge gateway (see README.md in this crate).

pub mod descriptors;
pub mod fields;
pub mod openapi;
pub mod rules;
pub mod template;
