-- 0005: a dispatcher's claim on a delivery is a lease held in the row, so that several
-- dispatchers (later: several nodes) can share one database. `lease_owner` is the claiming
-- dispatcher's id (random per start), `lease_until` (ms) when the claim lapses and another
-- dispatcher may take the delivery over. Both are set together or both NULL; only pending
-- queue heads carry a lease; recording an outcome or a graceful stop clears it.
--
-- The due index gains `lease_until` before `next_attempt_at`: claiming finds unleased due heads
-- (lease_until IS NULL, by next_attempt_at) and expired leases (lease_until <= now) in the
-- index alone, and the next due time is two lookups at the ends of its ranges.

ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
ALTER TABLE deliveries ADD COLUMN lease_until INTEGER;

DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (head, status, lease_until, next_attempt_at);
