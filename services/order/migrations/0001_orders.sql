-- Portable DDL: runs unchanged on SQLite and PostgreSQL.
-- Money is integer minor units; times are integer microseconds since the epoch.
CREATE TABLE orders (
    order_id            TEXT PRIMARY KEY,
    -- CreateOrder's idempotency key; the fingerprint tells a replay from a reuse.
    request_id          TEXT NOT NULL UNIQUE,
    request_fingerprint TEXT NOT NULL,
    customer_id         TEXT NOT NULL,
    status              TEXT NOT NULL,
    total_minor         BIGINT,
    currency_code       TEXT NOT NULL DEFAULT '',
    reject_reason       TEXT NOT NULL DEFAULT '',
    reject_detail       TEXT NOT NULL DEFAULT '',
    payment_id          TEXT NOT NULL DEFAULT '',
    create_time         BIGINT NOT NULL,
    update_time         BIGINT NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer_id, create_time, order_id);
CREATE INDEX orders_by_time ON orders (create_time, order_id);

CREATE TABLE order_lines (
    order_id         TEXT NOT NULL REFERENCES orders (order_id),
    line_no          BIGINT NOT NULL,
    sku              TEXT NOT NULL,
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT,
    PRIMARY KEY (order_id, line_no)
);

-- One row per order saga. `step` is the next step to run; the flags record
-- which forward steps may have taken effect downstream, so compensation knows
-- what to undo. The lease makes one worker at a time drive a saga.
CREATE TABLE sagas (
    order_id             TEXT PRIMARY KEY REFERENCES orders (order_id),
    kind                 TEXT NOT NULL,
    state                TEXT NOT NULL,
    step                 TEXT NOT NULL,
    stock_maybe_reserved BIGINT NOT NULL DEFAULT 0,
    payment_maybe_made   BIGINT NOT NULL DEFAULT 0,
    attempts             BIGINT NOT NULL DEFAULT 0,
    last_error           TEXT NOT NULL DEFAULT '',
    lease_owner          TEXT NOT NULL DEFAULT '',
    lease_until          BIGINT NOT NULL DEFAULT 0,
    create_time          BIGINT NOT NULL,
    update_time          BIGINT NOT NULL
);
CREATE INDEX sagas_by_state_lease ON sagas (state, lease_until);
