-- Portable DDL: runs unchanged on SQLite and PostgreSQL.
-- Money is integer minor units; times are integer microseconds since the epoch.

-- balance_minor is denormalized from the ledger account customer:<account_id>
-- so that an authorization is one conditional UPDATE; the CHECKs keep even a
-- buggy statement from taking an account past its credit limit.
CREATE TABLE accounts (
    account_id          TEXT PRIMARY KEY,
    display_name        TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('ACTIVE', 'BLOCKED')),
    currency_code       TEXT NOT NULL,
    balance_minor       BIGINT NOT NULL,
    credit_limit_minor  BIGINT NOT NULL CHECK (credit_limit_minor >= 0),
    payment_limit_minor BIGINT NOT NULL CHECK (payment_limit_minor >= 0),
    create_time         BIGINT NOT NULL,
    update_time         BIGINT NOT NULL,
    CHECK (balance_minor + credit_limit_minor >= 0)
);

-- authorize_request_id is the idempotency key of AuthorizePayment: a retry,
-- or a concurrent duplicate, collides on it and gets the first payment back.
CREATE TABLE payments (
    payment_id           TEXT PRIMARY KEY,
    authorize_request_id TEXT NOT NULL UNIQUE,
    account_id           TEXT NOT NULL REFERENCES accounts (account_id),
    amount_minor         BIGINT NOT NULL CHECK (amount_minor > 0),
    currency_code        TEXT NOT NULL,
    status               TEXT NOT NULL
        CHECK (status IN ('AUTHORIZED', 'DECLINED', 'CAPTURED', 'VOIDED', 'REFUNDED')),
    decline_reason       TEXT NOT NULL
        CHECK (decline_reason IN ('', 'INSUFFICIENT_FUNDS', 'ACCOUNT_BLOCKED', 'AMOUNT_OVER_LIMIT')),
    reference            TEXT NOT NULL,
    create_time          BIGINT NOT NULL,
    update_time          BIGINT NOT NULL
);
-- ListPayments pages newest first, over all payments or one account's.
CREATE INDEX payments_by_time ON payments (create_time, payment_id);
CREATE INDEX payments_by_account ON payments (account_id, create_time, payment_id);

-- Idempotency keys of capture, void and refund.
CREATE TABLE payment_operations (
    request_id  TEXT PRIMARY KEY,
    payment_id  TEXT NOT NULL REFERENCES payments (payment_id),
    kind        TEXT NOT NULL CHECK (kind IN ('CAPTURE', 'VOID', 'REFUND')),
    create_time BIGINT NOT NULL
);

-- The double-entry ledger: every movement is two rows summing to zero.
-- payment_id is NULL for opening balances.
CREATE TABLE ledger_entries (
    entry_id       TEXT PRIMARY KEY,
    payment_id     TEXT REFERENCES payments (payment_id),
    ledger_account TEXT NOT NULL,
    amount_minor   BIGINT NOT NULL CHECK (amount_minor <> 0),
    currency_code  TEXT NOT NULL,
    create_time    BIGINT NOT NULL
);
CREATE INDEX ledger_entries_by_account ON ledger_entries (ledger_account);
CREATE INDEX ledger_entries_by_payment ON ledger_entries (payment_id);
