-- Portable DDL: runs unchanged on SQLite and PostgreSQL.

-- Low-stock alerts with hysteresis (see src/store/low_stock.rs): 1 once a
-- SKU has alerted, until a restock or a threshold change re-arms it; 0 when
-- armed. A SKU already below its threshold has alerted when it got there.
ALTER TABLE stock_items ADD COLUMN low_alerted BIGINT NOT NULL DEFAULT 0;
UPDATE stock_items SET low_alerted = 1 WHERE low_stock_threshold > 0 AND available < low_stock_threshold;
