-- Portable DDL: runs unchanged on SQLite and PostgreSQL.

-- When a relay first tried to publish a row: once that is older than half
-- JetStream's duplicate window, the relay looks the message up in the
-- stream before publishing it again, so a publish whose ack was lost is not
-- stored twice (ordermesh-events, shared/events/src/relay/republish.rs).
ALTER TABLE outbox ADD COLUMN attempted_us BIGINT;
