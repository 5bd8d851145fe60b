//! The events inventory publishes, built from what a change wrote and
//! written in the change's own transaction (the outbox; see
//! `ordermesh_events::outbox`).
//!
//! Whether a change publishes StockLow is decided by the store
//! ([`super::low_stock`]: once per low episode, with hysteresis); these
//! functions only build and write the events.

use sqlx::AnyConnection;

use ordermesh_events::{Event, Publisher};
use ordermesh_proto::common::v1::Money;
use ordermesh_proto::events::v1 as pb;
use ordermesh_runtime::clock;

use super::{Item, Reservation, ReservationStatus};
use crate::error::Error;

fn lines(reservation: &Reservation) -> Vec<pb::StockLine> {
    reservation
        .lines
        .iter()
        .map(|line| pb::StockLine {
            sku: line.sku.clone(),
            quantity: line.quantity,
            unit_price: Some(Money::new(line.unit_price_minor, &reservation.currency_code)),
        })
        .collect()
}

/// The event of a reservation's change: reserved, committed, or released
/// (released, returned or expired), written on `conn`.
pub(super) async fn reservation_changed(
    events: &Publisher,
    conn: &mut AnyConnection,
    reservation: &Reservation,
) -> Result<(), Error> {
    events
        .insert(conn, &reservation_event(events, reservation))
        .await?;
    Ok(())
}

/// The event of a reservation's change, built (for a statement that writes
/// it itself).
pub(super) fn reservation_event(events: &Publisher, reservation: &Reservation) -> Event {
    use ReservationStatus::*;
    let order_id = reservation.order_id.clone();
    let occur_time = Some(clock::timestamp(reservation.update_time));
    let released = |cause: pb::ReleaseCause| pb::StockReleased {
        order_id: order_id.clone(),
        lines: lines(reservation),
        cause: cause.into(),
        occur_time,
    };
    match reservation.status {
        Active => events.event(&pb::StockReserved {
            order_id: order_id.clone(),
            lines: lines(reservation),
            expire_time: Some(clock::timestamp(reservation.expire_time)),
            occur_time,
        }),
        Committed => events.event(&pb::StockCommitted {
            order_id: order_id.clone(),
            lines: lines(reservation),
            occur_time,
        }),
        Released => events.event(&released(pb::ReleaseCause::Released)),
        Returned => events.event(&released(pb::ReleaseCause::Returned)),
        Expired => events.event(&released(pb::ReleaseCause::Expired)),
    }
}

/// StockLow for a SKU that the low-stock rule says alerts now (`order_id`
/// empty for an adjustment).
pub(super) async fn stock_low(
    events: &Publisher,
    conn: &mut AnyConnection,
    (sku, available, threshold): (&str, i64, i64),
    order_id: &str,
    now: i64,
) -> Result<(), Error> {
    events
        .add(
            conn,
            &pb::StockLow {
                sku: sku.into(),
                available,
                threshold,
                order_id: order_id.into(),
                occur_time: Some(clock::timestamp(now)),
            },
        )
        .await?;
    Ok(())
}

pub(super) async fn adjusted(
    events: &Publisher,
    conn: &mut AnyConnection,
    item: &Item,
    (delta, request_id): (i64, &str),
    low: bool,
) -> Result<(), Error> {
    events
        .add(
            conn,
            &pb::StockAdjusted {
                sku: item.sku.clone(),
                request_id: request_id.into(),
                delta,
                available: item.available,
                occur_time: Some(clock::timestamp(item.update_time)),
            },
        )
        .await?;
    if low {
        stock_low(
            events,
            conn,
            (&item.sku, item.available, item.low_stock_threshold),
            "",
            item.update_time,
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn product_updated(
    events: &Publisher,
    conn: &mut AnyConnection,
    item: &Item,
) -> Result<(), Error> {
    events
        .add(
            conn,
            &pb::ProductUpdated {
                sku: item.sku.clone(),
                name: item.name.clone(),
                unit_price: Some(Money::new(item.unit_price_minor, &item.currency_code)),
                occur_time: Some(clock::timestamp(item.update_time)),
            },
        )
        .await?;
    Ok(())
}
