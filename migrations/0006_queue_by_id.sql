-- 0006: the (target, user) queue index no longer holds a delivery's status.
--
-- Within a queue, the pending deliveries are always the newest ones: only the head (the oldest
-- pending) is ever settled, a disabled endpoint fails all of them at once, and a resend adds
-- a new, newest row. So "does the queue have a pending delivery" is "is its newest delivery
-- pending", and the next head is the delivery right after the settled one — both found in an
-- index of (target, user_sid, id).
--
-- Settling a delivery then leaves this index alone. With the status in it, every settled
-- delivery rewrote an entry keyed by its user: one page of the index per outcome, scattered
-- across the file, written to the WAL at every commit — most of a busy outbox's writes.

DROP INDEX deliveries_queue;
CREATE INDEX deliveries_queue ON deliveries (target, user_sid, id);
