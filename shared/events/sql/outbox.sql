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
    -- When a relay first tried to publish the row (src/relay/republish.rs).
    attempted_us  BIGINT,
    UNIQUE (aggregate_id, aggregate_seq)
);
CREATE INDEX outbox_pending ON outbox (created_us, aggregate_seq, event_id) WHERE sent_us IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_us) WHERE sent_us IS NOT NULL;
-- The insert's look-up of the aggregate's latest created_us (src/outbox.rs).
CREATE INDEX outbox_aggregate_created ON outbox (aggregate_id, created_us);
-- The relay's look-up of an aggregate's unsent predecessors (src/relay/pending.rs).
CREATE INDEX outbox_pending_aggregate ON outbox (aggregate_id, aggregate_seq) WHERE sent_us IS NULL;
