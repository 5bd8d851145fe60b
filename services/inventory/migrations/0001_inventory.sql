-- Portable DDL: runs unchanged on SQLite and PostgreSQL.
-- Money is integer minor units; times are integer microseconds since the epoch.
CREATE TABLE stock_items (
    sku              TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    currency_code    TEXT NOT NULL,
    available        BIGINT NOT NULL CHECK (available >= 0),
    reserved         BIGINT NOT NULL CHECK (reserved >= 0),
    sold             BIGINT NOT NULL CHECK (sold >= 0),
    create_time      BIGINT NOT NULL,
    update_time      BIGINT NOT NULL
);

-- One reservation per order; order_id is the idempotency key of ReserveStock.
CREATE TABLE reservations (
    order_id      TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    total_minor   BIGINT NOT NULL,
    currency_code TEXT NOT NULL,
    expire_time   BIGINT NOT NULL,
    create_time   BIGINT NOT NULL,
    update_time   BIGINT NOT NULL
);
CREATE INDEX reservations_by_status_expiry ON reservations (status, expire_time);

CREATE TABLE reservation_lines (
    order_id         TEXT NOT NULL REFERENCES reservations (order_id),
    line_no          BIGINT NOT NULL,
    sku              TEXT NOT NULL REFERENCES stock_items (sku),
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT NOT NULL,
    currency_code    TEXT NOT NULL,
    PRIMARY KEY (order_id, sku)
);

-- AdjustStock's idempotency keys and audit trail.
CREATE TABLE stock_adjustments (
    request_id  TEXT PRIMARY KEY,
    sku         TEXT NOT NULL REFERENCES stock_items (sku),
    delta       BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    create_time BIGINT NOT NULL
);
