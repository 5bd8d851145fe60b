-- Portable DDL: runs unchanged on SQLite and PostgreSQL.

-- The product's name when the order was placed, from the catalogue cache
-- (display only; the reservation prices the line).
ALTER TABLE order_lines ADD COLUMN name TEXT NOT NULL DEFAULT '';

-- The order's audit trail, built from the events of all three services
-- (event sourcing for the audit): append-only, one row per event, read in
-- occurrence order by GetOrderTimeline.
CREATE TABLE order_timeline (
    order_id   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    occur_time BIGINT NOT NULL,
    ce_type    TEXT NOT NULL,
    ce_source  TEXT NOT NULL,
    summary    TEXT NOT NULL,
    payload    TEXT NOT NULL,
    PRIMARY KEY (order_id, event_id)
);
CREATE INDEX order_timeline_by_time ON order_timeline (order_id, occur_time, event_id);

-- Confirmation notices: the notifier consumer records exactly one per
-- confirmed order, whatever the redeliveries.
CREATE TABLE confirmation_notices (
    order_id    TEXT PRIMARY KEY,
    event_id    TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    message     TEXT NOT NULL,
    create_time BIGINT NOT NULL
);

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
