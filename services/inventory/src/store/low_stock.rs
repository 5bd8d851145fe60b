//! When a SKU's stock change raises a low-stock alert (StockLow, and the
//! restock alert its consumer records): once per low episode, with
//! hysteresis.
//!
//! Why hysteresis: stock near its threshold goes down with each reservation
//! and up again with each release or expiry. Alerting on every downward
//! crossing sent one StockLow (and one restock alert) per order while stock
//! hovered around the threshold. Instead each SKU keeps whether it has
//! alerted (`stock_items.low_alerted`, written in the same transaction as
//! the stock change, under the row's lock):
//!
//! - A take (reservation, negative adjustment) that leaves available stock
//!   below a positive threshold alerts if the SKU is armed, and disarms it.
//! - Units given back (release, expiry, return of sold units) never alert
//!   and never re-arm: they are the oscillation itself, not new supply. So
//!   those paths leave the state alone and do not consult the rule.
//! - A restock (positive adjustment) that brings available stock back to
//!   the threshold or above re-arms the SKU: the next take below alerts.
//! - A threshold change re-arms the SKU when its stock is not below the new
//!   threshold; a threshold of 0 turns alerts off (and re-arms for later).
//!
//! [`decide`] is the whole rule, a pure function; the store applies it.

/// What changed a SKU's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Units left available stock: a reservation, a negative adjustment.
    Taken,
    /// Units were added (an adjustment of zero or more).
    Restocked,
    /// The threshold itself changed (stock did not).
    ThresholdSet,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Decision {
    /// Publish StockLow now.
    pub alert: bool,
    /// The SKU's state afterwards: true while it has alerted and not been
    /// re-armed.
    pub alerted: bool,
}

/// Whether a change that left `available` units with `threshold` alerts,
/// given whether the SKU had `alerted` already (its state before).
pub(super) fn decide(alerted: bool, available: i64, threshold: i64, change: Change) -> Decision {
    let quiet = |alerted| Decision {
        alert: false,
        alerted,
    };
    if threshold <= 0 {
        return quiet(false);
    }
    let low = available < threshold;
    match change {
        Change::Taken if low => Decision {
            alert: !alerted,
            alerted: true,
        },
        Change::Taken => quiet(alerted),
        Change::Restocked | Change::ThresholdSet => quiet(alerted && low),
    }
}

#[cfg(test)]
mod tests {
    use super::{Change, Decision, decide};

    const ALL: [Change; 3] = [Change::Taken, Change::Restocked, Change::ThresholdSet];

    fn alert(alerted: bool) -> Decision {
        Decision { alert: true, alerted }
    }

    fn quiet(alerted: bool) -> Decision {
        Decision {
            alert: false,
            alerted,
        }
    }

    #[test]
    fn every_state_change_and_level() {
        // Threshold 5; levels below, at and above it; armed and alerted.
        let t = 5;
        let expected = |alerted: bool, available: i64, change: Change| -> Decision {
            match (change, available < t, alerted) {
                (Change::Taken, true, false) => alert(true),
                (Change::Taken, true, true) => quiet(true),
                (Change::Taken, false, a) => quiet(a),
                (Change::Restocked | Change::ThresholdSet, low, a) => quiet(a && low),
            }
        };
        for alerted in [false, true] {
            for available in [0, 1, 4, 5, 6, 100] {
                for change in ALL {
                    assert_eq!(
                        decide(alerted, available, t, change),
                        expected(alerted, available, change),
                        "alerted {alerted}, available {available}, {change:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn threshold_zero_never_alerts_and_rearms() {
        for alerted in [false, true] {
            for available in [0, 1, 10] {
                for change in ALL {
                    assert_eq!(decide(alerted, available, 0, change), quiet(false));
                    assert_eq!(decide(alerted, available, -1, change), quiet(false));
                }
            }
        }
    }

    #[test]
    fn oscillating_around_the_threshold_alerts_once_until_a_restock() {
        // Threshold 5, stock 6: orders take 2 and give them back (which does
        // not consult the rule), again and again; then a restock, then
        // another take below.
        let mut alerted = false;
        let mut alerts = 0;
        let mut step = |available: i64, change: Change| {
            let d = decide(alerted, available, 5, change);
            alerted = d.alerted;
            alerts += usize::from(d.alert);
        };
        for _ in 0..10 {
            step(4, Change::Taken);
        }
        step(3, Change::Taken);
        step(1, Change::Taken);
        step(20, Change::Restocked);
        step(4, Change::Taken);
        assert_eq!(
            alerts, 2,
            "one per episode: the first take below, the first after the restock"
        );
    }

    #[test]
    fn a_restock_still_below_the_threshold_does_not_rearm() {
        assert_eq!(decide(true, 4, 5, Change::Restocked), quiet(true));
        assert_eq!(
            decide(true, 5, 5, Change::Restocked),
            quiet(false),
            "at the threshold: no longer low"
        );
        assert_eq!(
            decide(true, 4, 3, Change::ThresholdSet),
            quiet(false),
            "lowered under the stock"
        );
        assert_eq!(
            decide(true, 4, 9, Change::ThresholdSet),
            quiet(true),
            "raised: still low"
        );
    }

    #[test]
    fn an_armed_sku_below_its_threshold_alerts_on_its_next_take() {
        // Seeded (or its threshold raised) under the threshold, not alerted.
        assert_eq!(decide(false, 3, 10, Change::ThresholdSet), quiet(false));
        assert_eq!(decide(false, 2, 10, Change::Taken), alert(true));
    }
}
