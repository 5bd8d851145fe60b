-- Portable DDL: runs unchanged on SQLite and PostgreSQL.

-- The outbox insert reads the aggregate's latest created_us; without this
-- index it visited every row of the aggregate (ordermesh-events,
-- shared/events/sql/outbox.sql).
CREATE INDEX outbox_aggregate_created ON outbox (aggregate_id, created_us);
