-- Portable DDL: runs unchanged on SQLite and PostgreSQL.

-- The relay holds a row back while its aggregate has an unsent row before
-- the relay's cursor (a transaction that committed late); this index finds
-- those predecessors among the pending rows only (ordermesh-events,
-- shared/events/sql/outbox.sql).
CREATE INDEX outbox_pending_aggregate ON outbox (aggregate_id, aggregate_seq) WHERE sent_us IS NULL;
