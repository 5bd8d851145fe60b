-- Portable DDL: runs unchanged on SQLite and PostgreSQL.

-- The idempotency keys of AuthorizePayment, each either used by an
-- authorization or voided before any arrived. AuthorizePayment and a void by
-- key both begin by writing this row, so they serialize on it: a void that
-- wins makes a late authorization hold nothing; an authorization that wins is
-- found and voided.
CREATE TABLE authorize_keys (
    request_id  TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('AUTHORIZED', 'VOIDED_IN_ADVANCE')),
    create_time BIGINT NOT NULL
);
INSERT INTO authorize_keys (request_id, state, create_time)
    SELECT authorize_request_id, 'AUTHORIZED', create_time FROM payments;

-- When an authorization's hold lapses (0: never, for other statuses), and why
-- a payment was voided ('' unless VOIDED).
ALTER TABLE payments ADD COLUMN expire_time BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN void_reason TEXT NOT NULL DEFAULT '';
-- Holds made before this migration lapse after the default hold time (7 days).
UPDATE payments SET expire_time = create_time + 604800000000 WHERE status = 'AUTHORIZED';
UPDATE payments SET void_reason = 'REQUESTED' WHERE status = 'VOIDED';
CREATE INDEX payments_by_status_expiry ON payments (status, expire_time);
