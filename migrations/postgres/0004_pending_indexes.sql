-- The queue and by-event indexes hold pending deliveries only. Every lookup through them asks
-- for pending ones (a queue's head and the deliveries waiting behind it, an endpoint's
-- pending deliveries, an event that still has some), and a delivery that finishes — most of
-- them, once — then adds no entry to either: recording an outcome writes a new row version,
-- and each index that holds it costs an insertion (measured: ~20 buffers per recorded row).
DROP INDEX deliveries_queue;
CREATE INDEX deliveries_queue ON deliveries (target, user_sid, id) WHERE status = 'pending';
DROP INDEX deliveries_by_event;
CREATE INDEX deliveries_pending_by_event ON deliveries (event_id) WHERE status = 'pending';
