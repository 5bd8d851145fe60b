-- Whose order a reservation is for: a customer's token reads its own
-- reservations only. Reservations recorded before it have none ('') and are
-- readable by operators and services only.
ALTER TABLE reservations ADD COLUMN customer_id TEXT NOT NULL DEFAULT '';
