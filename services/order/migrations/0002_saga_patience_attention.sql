-- Portable DDL: runs unchanged on SQLite and PostgreSQL.
--
-- The saga's state moves into its order's row: a step's outcome and the
-- order's change are then one UPDATE of one row (no transaction of two
-- statements), which is both the durability rule ("recorded together") and
-- the saga's cheapest possible write.
ALTER TABLE orders ADD COLUMN saga_kind TEXT NOT NULL DEFAULT 'PLACE';
ALTER TABLE orders ADD COLUMN saga_state TEXT NOT NULL DEFAULT 'DONE';
-- The next step to run.
ALTER TABLE orders ADD COLUMN saga_step TEXT NOT NULL DEFAULT 'FINISH';
-- Which forward steps may have taken effect downstream (undone by the
-- order's key when compensating), and whether the payment is known to be
-- captured (the saga's pivot: after it, only forward).
ALTER TABLE orders ADD COLUMN stock_maybe_reserved BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN payment_maybe_made BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN payment_captured BIGINT NOT NULL DEFAULT 0;
-- Some attempt of the current step may have reached its service (sent and
-- not answered): the step then counts as possibly done.
ALTER TABLE orders ADD COLUMN step_maybe_sent BIGINT NOT NULL DEFAULT 0;
-- Failed attempts of the current step and the last error.
ALTER TABLE orders ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
-- When the current step began: an outage is waited out for a limited time
-- from here (patience before the capture, the forward window after it).
ALTER TABLE orders ADD COLUMN step_since BIGINT NOT NULL DEFAULT 0;
-- Set when the saga stopped for an operator (OrderAdminService lists it,
-- RetrySaga drives it again); the recovery worker leaves it alone.
ALTER TABLE orders ADD COLUMN needs_attention BIGINT NOT NULL DEFAULT 0;
-- The worker driving the saga and until when; every write is fenced on it.
ALTER TABLE orders ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
-- Incremented by every change, so watchers fed from several sources (this
-- process's saga workers, the poll for other replicas' changes) keep only
-- newer snapshots.
ALTER TABLE orders ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

UPDATE orders SET
    saga_kind = (SELECT s.kind FROM sagas s WHERE s.order_id = orders.order_id),
    saga_state = (SELECT s.state FROM sagas s WHERE s.order_id = orders.order_id),
    saga_step = (SELECT s.step FROM sagas s WHERE s.order_id = orders.order_id),
    stock_maybe_reserved = (SELECT s.stock_maybe_reserved FROM sagas s WHERE s.order_id = orders.order_id),
    payment_maybe_made = (SELECT s.payment_maybe_made FROM sagas s WHERE s.order_id = orders.order_id),
    attempts = (SELECT s.attempts FROM sagas s WHERE s.order_id = orders.order_id),
    last_error = (SELECT s.last_error FROM sagas s WHERE s.order_id = orders.order_id),
    lease_owner = (SELECT s.lease_owner FROM sagas s WHERE s.order_id = orders.order_id),
    lease_until = (SELECT s.lease_until FROM sagas s WHERE s.order_id = orders.order_id),
    step_since = (SELECT s.update_time FROM sagas s WHERE s.order_id = orders.order_id)
WHERE EXISTS (SELECT 1 FROM sagas s WHERE s.order_id = orders.order_id);
-- In flight at the upgrade: a saga at COMMIT or cancelling had captured.
UPDATE orders SET payment_captured = 1 WHERE saga_kind = 'CANCEL' OR saga_step IN ('COMMIT', 'CONFIRM');
DROP TABLE sagas;

-- The recovery scan and ListSagas read unfinished sagas by state; the
-- state changes rarely (so the index costs little), the lease often (so it
-- is not indexed).
CREATE INDEX orders_by_saga_state ON orders (saga_state);
-- WatchOrder's one poll per process for other replicas' changes.
CREATE INDEX orders_by_update ON orders (update_time);
