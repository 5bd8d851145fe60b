-- Portable DDL: runs unchanged on SQLite and PostgreSQL.

-- Idempotency keys of OpenAccount and CreditAccount, written first in their
-- transaction: a repeat (or a concurrent duplicate) collides here before any
-- money moves, and is answered from what the key recorded.
CREATE TABLE account_operations (
    request_id    TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('OPEN', 'CREDIT')),
    account_id    TEXT NOT NULL,
    amount_minor  BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency_code TEXT NOT NULL,
    create_time   BIGINT NOT NULL
);
