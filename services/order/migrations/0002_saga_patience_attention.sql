-- Portable DDL: runs unchanged on SQLite and PostgreSQL.

-- When the saga's current step began: forward steps wait out an outage for a
-- limited time from here (patience before the payment is captured, the
-- forward window after it).
ALTER TABLE sagas ADD COLUMN step_since BIGINT NOT NULL DEFAULT 0;
UPDATE sagas SET step_since = update_time;
-- Set when the saga stopped for an operator (listed by OrderAdminService and
-- re-driven by RetrySaga); the recovery worker leaves such sagas alone.
ALTER TABLE sagas ADD COLUMN needs_attention BIGINT NOT NULL DEFAULT 0;
-- Set once the payment is known to be captured (the saga's pivot): undoing
-- the payment then means a refund, and a forward step never turns back.
ALTER TABLE sagas ADD COLUMN payment_captured BIGINT NOT NULL DEFAULT 0;
UPDATE sagas SET payment_captured = 1 WHERE kind = 'CANCEL' OR step IN ('COMMIT', 'CONFIRM');
-- Set when some attempt of the current step may have reached its service
-- (sent and not answered): the step then counts as possibly done. Cleared
-- when a step is recorded.
ALTER TABLE sagas ADD COLUMN step_maybe_sent BIGINT NOT NULL DEFAULT 0;
CREATE INDEX sagas_by_attention ON sagas (needs_attention, update_time);

-- Incremented by every change of an order, so watchers fed from several
-- sources (this process's saga workers, the poll for changes made by other
-- replicas) keep only the newest snapshot.
ALTER TABLE orders ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX orders_by_update ON orders (update_time);
