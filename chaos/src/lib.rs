//! `ordermesh chaos`: the distributed mode under a seeded fault schedule,
//! and a checker that reads what happened and says which promise broke.
//!
//! # Layout
//! - [`settings`]: the saga timing a run uses.
//! - [`schedule`]: faults from the seed, a pure function.
//! - [`history`]: the JSON-lines history, written and read back.
//! - [`check`]: the rules, pure and unit-tested.

pub mod check;
pub mod history;
pub mod schedule;
pub mod settings;
