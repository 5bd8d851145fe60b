-- Portable DDL: runs unchanged on SQLite and PostgreSQL.

-- StockLow is published when a reservation or adjustment takes available
-- stock below this (0: never).
ALTER TABLE stock_items ADD COLUMN low_stock_threshold BIGINT NOT NULL DEFAULT 0;

-- Restock alerts, recorded (once per StockLow event) by the consumer of the
-- inventory stream; ListRestockAlerts reads them.
CREATE TABLE restock_alerts (
    event_id   TEXT PRIMARY KEY,
    sku        TEXT NOT NULL,
    available  BIGINT NOT NULL,
    threshold  BIGINT NOT NULL,
    order_id   TEXT NOT NULL,
    alert_time BIGINT NOT NULL
);
CREATE INDEX restock_alerts_by_time ON restock_alerts (alert_time, event_id);

-- The transactional outbox (ordermesh-events). Copy into a service's migrations.
-- Portable DDL: runs unchanged on SQLite and PostgreSQL (see src/outbox.rs for why).
CREATE TABLE outbox (
    event_id      TEXT PRIMARY KEY,
    aggregate_id  TEXT NOT NULL,
    aggregate_seq BIGINT NOT NULL,
    topic         TEXT NOT NULL,
    ce_type       TEXT NOT NULL,
    ce_source     TEXT NOT NULL,
    ce_subject    TEXT NOT NULL,
    traceparent   TEXT,
    payload       TEXT NOT NULL,
    occur_us      BIGINT NOT NULL,
    created_us    BIGINT NOT NULL,
    sent_us       BIGINT,
    UNIQUE (aggregate_id, aggregate_seq)
);
CREATE INDEX outbox_pending ON outbox (created_us, aggregate_seq, event_id) WHERE sent_us IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_us) WHERE sent_us IS NOT NULL;

-- Processed events of a consumer (ordermesh-events). Copy into a service's migrations.
-- Portable DDL: runs unchanged on SQLite and PostgreSQL (see src/inbox.rs).
CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_us BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX inbox_by_time ON inbox (processed_us);
