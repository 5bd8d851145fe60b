-- Processed events of a consumer (ordermesh-events). Copy into a service's migrations.
-- Portable DDL: runs unchanged on SQLite and PostgreSQL (see src/inbox.rs).
CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_us BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX inbox_by_time ON inbox (processed_us);
