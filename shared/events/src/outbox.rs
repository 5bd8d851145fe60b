//! The transactional outbox: an event is a row written in the same database
//! transaction as the state change that caused it, so either both happen or
//! neither does (no dual write). The [`crate::relay`] publishes the rows
//! afterwards; a crash between commit and publish leaves the row pending, and
//! it is published when the relay runs again.
//!
//! # Ordering
//! Events of one aggregate are published in the order they were committed.
//! Each row gets `aggregate_seq` = the aggregate's highest + 1 and a
//! `created_us` never below the aggregate's previous row, both computed by
//! the insert itself; the relay reads pending rows by (`created_us`,
//! `aggregate_seq`, then `event_id`). This relies on what the services do anyway: writes to
//! one aggregate are serialized (the saga's fenced lease, conditional stock
//! and balance updates). Two unserialized writers of one aggregate would
//! collide on the unique (`aggregate_id`, `aggregate_seq`) key and one
//! transaction fails, rather than the order silently breaking.
//!
//! Why no global sequence: an id counter row would serialize every writing
//! transaction of the service, and `AUTOINCREMENT`/`IDENTITY` differ between
//! SQLite and PostgreSQL (the migrations are one portable set).
//!
//! The payload is stored as base64 TEXT: PostgreSQL has no BLOB and SQLite
//! through `AnyPool` cannot read a column declared BYTEA, so TEXT is the one
//! portable choice (a few hundred bytes per event; encoding is negligible).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sqlx::AnyConnection;
use tokio::sync::Notify;

use crate::envelope::{Event, now_micros};
use crate::error::Error;
use crate::kind::DomainEvent;

/// The outbox table. Add it to each service's migrations (portable SQL for
/// SQLite and PostgreSQL); [`crate::inbox::DDL`] is its counterpart for
/// consumers.
pub const DDL: &str = include_str!("../sql/outbox.sql");

/// Each look-up at the aggregate's rows is a subquery of its own with one
/// `MAX`, so both databases answer it from an index (the unique
/// (`aggregate_id`, `aggregate_seq`) key, `outbox_aggregate_created`) with
/// one probe, however many rows the aggregate has (SQLite optimizes a lone
/// `MAX` only; two in one query visited every row of the aggregate).
const INSERT: &str = "INSERT INTO outbox (event_id, aggregate_id, aggregate_seq, topic, ce_type, ce_source, \
     ce_subject, traceparent, payload, occur_us, created_us) \
     SELECT $1, $2, COALESCE((SELECT MAX(aggregate_seq) FROM outbox WHERE aggregate_id = $2), 0) + 1, \
     $3, $4, $5, $6, $7, $8, $9, \
     COALESCE((SELECT MAX(created_us) FROM outbox WHERE aggregate_id = $2 AND created_us > $10), $10)";

/// Writes events of one service (its `ce-source`) into its outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    source: String,
}

impl Outbox {
    /// `source` is the service's CloudEvents source, e.g. `/ordermesh/order`.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
        }
    }

    /// Adds `payload` as an event inside the caller's open transaction and
    /// returns it (with its id). Poke the relay's [`Notifier`]
    /// after the commit.
    pub async fn add<E: DomainEvent>(
        &self,
        conn: &mut AnyConnection,
        payload: &E,
        traceparent: Option<&str>,
    ) -> Result<Event, Error> {
        let event = Event::new(&self.source, payload, traceparent);
        insert(conn, &event).await?;
        Ok(event)
    }
}

/// Inserts an already built event (one statement) on `conn`, normally the
/// caller's open transaction: `insert(&mut *tx, &event)`.
/// An event that breaks its type's contract is refused
/// ([`Error::InvalidEvent`]): the producer's transaction fails at the source.
pub async fn insert(conn: &mut AnyConnection, event: &Event) -> Result<(), Error> {
    bind_insert(sqlx::query(INSERT), event)?
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The outbox INSERT of one event as a part of a larger statement (a
/// data-modifying `WITH` on PostgreSQL, where the state change and its
/// event then cost one round trip and no BEGIN/COMMIT): its placeholders
/// numbered from `$first`, and, with a `condition` (an SQL boolean over the
/// statement's other parts, e.g. `EXISTS (SELECT 1 FROM changed)`), written
/// only when that holds. Bind its values with [`bind_insert`] after the
/// placeholders before `$first`.
pub fn insert_part(first: usize, condition: Option<&str>) -> String {
    let mut sql = ordermesh_runtime::db::renumbered(INSERT, first);
    if let Some(condition) = condition {
        sql.push_str(" WHERE ");
        sql.push_str(condition);
    }
    sql
}

/// Binds `event`'s ten values to `query` (the placeholders of [`INSERT`] or
/// of an [`insert_part`]), once the event is checked against its type's
/// contract ([`Error::InvalidEvent`] otherwise).
pub fn bind_insert<'q, Q: BindValues<'q>>(query: Q, event: &Event) -> Result<Q, Error> {
    event.validate()?;
    Ok(query
        .bind_value(event.id.clone())
        .bind_value(event.subject.clone())
        .bind_value(event.topic.clone())
        .bind_value(event.ce_type.clone())
        .bind_value(event.source.clone())
        .bind_value(event.subject.clone())
        .bind_value(event.traceparent.clone())
        .bind_value(BASE64.encode(&event.data))
        .bind_value(event.time_us)
        .bind_value(now_micros()))
}

/// A statement values can be bound to: sqlx's `Query`, `QueryAs` and
/// `QueryScalar` on [`sqlx::Any`] (they share no trait for `bind`).
pub trait BindValues<'q>: Sized {
    fn bind_value<T>(self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>;
}

impl<'q> BindValues<'q> for sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    fn bind_value<T>(self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        self.bind(value)
    }
}

impl<'q, O> BindValues<'q> for sqlx::query::QueryScalar<'q, sqlx::Any, O, sqlx::any::AnyArguments> {
    fn bind_value<T>(self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        self.bind(value)
    }
}

impl<'q, O> BindValues<'q> for sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments> {
    fn bind_value<T>(self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        self.bind(value)
    }
}

/// Wakes the relay (which waits on it); call [`notify`](Notifier::notify) after committing a
/// transaction that added outbox rows. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier(Arc<Notify>);

impl Notifier {
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// What the relay waits on.
    pub(crate) async fn notified(&self) {
        self.0.notified().await;
    }
}

/// Rows not yet published (for tests and health checks).
pub async fn pending_count(pool: &sqlx::AnyPool) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_us IS NULL")
            .fetch_one(pool)
            .await?,
    )
}

/// What a service's store holds to publish events: its outbox (with the
/// service's `ce-source`) and the notifier of the relay that publishes it.
/// Events are written with [`Publisher::add`] inside the transaction of the
/// change that causes them; [`Publisher::committed`] after the commit wakes
/// the relay (without it the relay's poll finds the rows a little later).
#[derive(Debug, Clone)]
pub struct Publisher {
    outbox: Outbox,
    notifier: Notifier,
}

impl Publisher {
    pub fn new(outbox: Outbox, notifier: Notifier) -> Self {
        Self { outbox, notifier }
    }

    /// The event for `payload` from this service (to insert later with
    /// [`Publisher::insert`], when a caller builds it outside the store).
    /// It carries the current span's trace context (that of the change
    /// that causes it), if any.
    pub fn event<E: DomainEvent>(&self, payload: &E) -> Event {
        let traceparent = ordermesh_mesh::trace::current_traceparent();
        Event::new(
            &self.outbox.source,
            payload,
            Some(traceparent.as_str()).filter(|t| !t.is_empty()),
        )
    }

    /// Adds `payload` as an event inside the caller's open transaction.
    pub async fn add<E: DomainEvent>(&self, conn: &mut AnyConnection, payload: &E) -> Result<(), Error> {
        insert(conn, &self.event(payload)).await
    }

    /// Inserts an event built with [`Publisher::event`].
    pub async fn insert(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), Error> {
        insert(conn, event).await
    }

    /// Call after committing a transaction that added events.
    pub fn committed(&self) {
        self.notifier.notify();
    }

    /// Runs a single statement whose outbox part is guarded by its first
    /// part (see [`insert_part`]) and which answers how many rows that part
    /// changed: true, and the relay woken, when it changed any (the
    /// statement committed its event); false when the guard matched
    /// nothing and nothing was written.
    pub async fn run_guarded(
        &self,
        query: sqlx::query::QueryScalar<'_, sqlx::Any, i64, sqlx::any::AnyArguments>,
        pool: &sqlx::AnyPool,
    ) -> Result<bool, sqlx::Error> {
        let changed = query.fetch_one(pool).await? > 0;
        if changed {
            self.committed();
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders(sql: &str) -> Vec<usize> {
        sql.split('$')
            .skip(1)
            .map(|rest| {
                let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
                rest[..digits].parse().expect("a number after $")
            })
            .collect()
    }

    #[test]
    fn an_insert_part_renumbers_every_placeholder_and_adds_its_condition() {
        assert_eq!(insert_part(1, None), INSERT);
        let part = insert_part(17, Some("EXISTS (SELECT 1 FROM changed)"));
        let shifted: Vec<usize> = placeholders(INSERT).iter().map(|n| n + 16).collect();
        assert_eq!(placeholders(&part), shifted);
        assert_eq!(
            (placeholders(&part).iter().min(), placeholders(&part).iter().max()),
            (Some(&17), Some(&26))
        );
        assert!(part.ends_with(" WHERE EXISTS (SELECT 1 FROM changed)"), "{part}");
        assert_eq!(
            part.replace(" WHERE EXISTS (SELECT 1 FROM changed)", "").len(),
            INSERT.len()
                + placeholders(INSERT)
                    .iter()
                    .filter(|n| **n + 16 >= 10 && **n < 10)
                    .count(),
            "only the numbers change"
        );
    }
}
