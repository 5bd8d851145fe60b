//! The inventory database: catalogue, stock buckets, reservations and
//! adjustments.
//!
//! Every stock movement is a conditional `UPDATE` (`WHERE available >= $n`)
//! inside the transaction that records why it happened, so concurrent
//! reservations can never oversell and no value is read, changed in Rust and
//! written back across an await. Every write transaction begins with a write,
//! so it takes the write lock at once instead of upgrading a read lock.
//!
//! A row's `update_time` never goes back: each update sets it to the later
//! of its previous value and the caller's clock, under the row's lock. The
//! clock is read before the lock is taken, so concurrent changes of one SKU
//! would otherwise stamp it out of order; the events of a SKU (StockAdjusted,
//! StockLow, ProductUpdated) and of a reservation take their occurrence time
//! from the row as updated, so within an aggregate it follows the order of
//! the events.
//!
//! # Layout
//! - this module: the stored types (typed rows read with `FromRow`; enums
//!   stored as text and bound from their definitions).
//! - [`catalogue`]: items, seeding, adjustments, product updates,
//!   availability.
//! - [`reservations`]: reserve, commit, release, expiry.
//! - [`stock`]: how a change touches stock rows (in SKU order, so two
//!   transactions over the same SKUs cannot deadlock) and the movements
//!   between a SKU's buckets.
//! - [`events`]: the events each change writes in its own transaction
//!   (StockReserved, StockCommitted, StockReleased, StockAdjusted, StockLow,
//!   ProductUpdated).
//! - [`low_stock`]: when a stock change publishes StockLow (once per low
//!   episode, with hysteresis): the rule, a pure function.
//! - [`alerts`]: restock alerts recorded from StockLow events.

// Column lists are macros so that queries are `concat!`ed at compile time
// (one fixed SQL text per query, nothing built at run time). Defined before
// the modules that use them.
macro_rules! item_columns {
    () => {
        "sku, name, unit_price_minor, currency_code, available, reserved, sold, create_time, update_time,
         low_stock_threshold"
    };
}

macro_rules! reservation_columns {
    () => {
        "order_id, status, total_minor, currency_code, expire_time, create_time, update_time, customer_id"
    };
}

pub mod alerts;
mod catalogue;
mod events;
mod low_stock;
mod postgres;
mod reservations;
mod stock;

use std::time::Duration;

use ordermesh_events::Publisher;
use ordermesh_runtime::db::Db;
use ordermesh_runtime::text_enum;

use crate::error::Error;

pub use alerts::{AlertCursor, RestockAlert};
pub use catalogue::ProductUpdate;

/// A catalogue entry with its stock buckets.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Item {
    pub sku: String,
    pub name: String,
    pub unit_price_minor: i64,
    pub currency_code: String,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub create_time: i64,
    pub update_time: i64,
    /// StockLow is published when `available` falls below this (0: never),
    /// once until a restock re-arms it (see `store::low_stock`).
    pub low_stock_threshold: i64,
}

/// A catalogue entry to create when it does not exist yet.
#[derive(Debug, Clone)]
pub struct SeedItem {
    pub sku: String,
    pub name: String,
    pub unit_price_minor: i64,
    pub currency_code: String,
    pub initial_stock: i64,
    pub low_stock_threshold: i64,
}

/// A requested line: SKU and quantity (already validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub quantity: i64,
}

text_enum!(
    /// A reservation's state, as stored.
    ReservationStatus {
        Active => "ACTIVE",
        Committed => "COMMITTED",
        Released => "RELEASED",
        Expired => "EXPIRED",
        Returned => "RETURNED",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReservedLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

/// A reservation's row (its lines are rows of their own).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct ReservationRow {
    order_id: String,
    #[sqlx(try_from = "String")]
    status: ReservationStatus,
    total_minor: i64,
    currency_code: String,
    expire_time: i64,
    create_time: i64,
    update_time: i64,
    customer_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: String,
    pub status: ReservationStatus,
    pub lines: Vec<ReservedLine>,
    pub total_minor: i64,
    pub currency_code: String,
    pub expire_time: i64,
    pub create_time: i64,
    pub update_time: i64,
    /// Whose order it is (empty for reservations recorded before owners were).
    pub customer_id: String,
}

impl ReservationRow {
    fn with_lines(self, lines: Vec<ReservedLine>) -> Reservation {
        Reservation {
            order_id: self.order_id,
            status: self.status,
            lines,
            customer_id: self.customer_id,
            total_minor: self.total_minor,
            currency_code: self.currency_code,
            expire_time: self.expire_time,
            create_time: self.create_time,
            update_time: self.update_time,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    db: Db,
    reservation_ttl: Duration,
    /// Writes each change's events in the change's transaction.
    events: Publisher,
}

impl Store {
    pub fn new(db: Db, reservation_ttl: Duration, events: Publisher) -> Self {
        Self {
            db,
            reservation_ttl,
            events,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}
