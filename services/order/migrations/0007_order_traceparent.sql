-- The W3C trace context of the request that placed the order (its
-- CreateOrder span): GetOrder answers its trace id, and a saga resumed by
-- another process after a crash joins that trace. Empty when tracing was
-- off or the order predates it.
ALTER TABLE orders ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';
