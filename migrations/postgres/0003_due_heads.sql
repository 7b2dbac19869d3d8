-- Due queue heads through partial indexes, so that finding due work costs what is claimed,
-- not what was claimed before: an index whose pages keep changing cannot mark the entries of
-- dead row versions as dead, and every scan then walks them all again.
--
-- `deliveries_due` holds unleased pending heads by due time: a claim walks it and stops at
-- its limit, and the next due time is its first entry. A claim (which sets the lease) and a
-- recorded outcome (delivered, failed) take a row out of it, so a burst of deliveries inserts
-- nothing into it. `deliveries_leased` holds the heads in flight, by lease expiry: expired
-- leases to take over, the next expiry, a dispatcher's leases to free. `deliveries_pending`
-- serves the backlog metrics (count, oldest); the hot path never reads it.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id)
    WHERE head AND status = 'pending' AND lease_until IS NULL;
CREATE INDEX deliveries_leased ON deliveries (lease_until)
    WHERE head AND status = 'pending' AND lease_until IS NOT NULL;
CREATE INDEX deliveries_pending ON deliveries (created_at) WHERE status = 'pending';
