//! How a change touches stock rows: which rows first, and what each
//! reservation transition moves between a SKU's buckets.
//!
//! # Lock order
//! A transaction that updates several stock rows holds each row's lock from
//! its update to the commit. Two transactions that update the same rows in
//! opposite orders can each wait for the other: PostgreSQL then aborts one
//! with `deadlock detected` (after `deadlock_timeout`, a second by
//! default). So every path that updates stock rows of several lines
//! (reserve, commit, release, expiry) visits them through
//! [`lock_order`]: sorted by SKU, whatever the order of the lines. A
//! reservation names each SKU at most once (the API refuses a repeated SKU
//! and `reservation_lines` is keyed by order and SKU), so there is nothing
//! to merge. SQLite has one writer at a time and cannot deadlock; the order
//! is the same there.
//!
//! A SKU's low-stock state ([`super::low_stock`]) lives on its stock row
//! and is written by [`low_stock`] right after the row's update, under the
//! lock that update took: no other lock, and no other order.

use sqlx::AnyConnection;

use super::low_stock::{Change, decide};
use super::{Line, ReservedLine};
use crate::error::Error;

/// The indexes of `lines` in the order their stock rows are updated: by
/// SKU (stable, so equal SKUs keep their order).
pub(super) fn lock_order<L: Sku>(lines: &[L]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lines.len()).collect();
    order.sort_by(|&a, &b| lines[a].sku().cmp(lines[b].sku()));
    order
}

/// A line that names a stock row.
pub(super) trait Sku {
    fn sku(&self) -> &str;
}

impl Sku for Line {
    fn sku(&self) -> &str {
        &self.sku
    }
}

impl Sku for ReservedLine {
    fn sku(&self) -> &str {
        &self.sku
    }
}

/// How a reservation transition moves units between a SKU's buckets. The SQL
/// is a fixed text per variant.
#[derive(Debug, Clone, Copy)]
pub(super) enum Movement {
    ReservedToAvailable,
    ReservedToSold,
    SoldToAvailable,
}

impl Movement {
    pub(super) fn sql(self) -> &'static str {
        match self {
            Movement::ReservedToAvailable => {
                "UPDATE stock_items SET available = available + $1, reserved = reserved - $1, update_time = CASE WHEN update_time > $2 THEN update_time ELSE $2 END WHERE sku = $3"
            }
            Movement::ReservedToSold => {
                "UPDATE stock_items SET reserved = reserved - $1, sold = sold + $1, update_time = CASE WHEN update_time > $2 THEN update_time ELSE $2 END WHERE sku = $3"
            }
            Movement::SoldToAvailable => {
                "UPDATE stock_items SET available = available + $1, sold = sold - $1, update_time = CASE WHEN update_time > $2 THEN update_time ELSE $2 END WHERE sku = $3"
            }
        }
    }
}

/// Applies the low-stock rule to a SKU whose stock row this transaction
/// has just updated (`alerted`: the row's `low_alerted` as that update
/// returned it; `available`, `threshold`: the row afterwards). Stores the
/// SKU's new state when it changed; returns whether to publish StockLow.
pub(super) async fn low_stock(
    conn: &mut AnyConnection,
    sku: &str,
    (alerted, available, threshold): (bool, i64, i64),
    change: Change,
) -> Result<bool, Error> {
    let decision = decide(alerted, available, threshold, change);
    if decision.alerted != alerted {
        sqlx::query("UPDATE stock_items SET low_alerted = $1 WHERE sku = $2")
            .bind(i64::from(decision.alerted))
            .bind(sku)
            .execute(&mut *conn)
            .await?;
    }
    Ok(decision.alert)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str) -> Line {
        Line {
            sku: sku.into(),
            quantity: 1,
        }
    }

    #[test]
    fn rows_are_visited_by_sku_whatever_the_line_order() {
        let lines = [line("MS-002"), line("KB-001"), line("AA-9")];
        assert_eq!(lock_order(&lines), vec![2, 1, 0]);
        let sorted = [line("A"), line("B")];
        assert_eq!(lock_order(&sorted), vec![0, 1]);
        let reversed = [line("B"), line("A")];
        assert_eq!(lock_order(&reversed), vec![1, 0]);
        // The same SKUs in either order give the same rows in the same order.
        let skus = |lines: &[Line]| {
            lock_order(lines)
                .into_iter()
                .map(|i| lines[i].sku.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(skus(&sorted), skus(&reversed));
        assert!(lock_order::<Line>(&[]).is_empty());
    }
}
