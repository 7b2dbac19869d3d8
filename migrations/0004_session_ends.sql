-- 0004: a session that ends inside its user's offline grace keeps its row, marked ended (when,
-- and why), until the user's offline transition is committed; a restart in between reports
-- the user offline with the true cause and last-seen time.

ALTER TABLE sessions ADD COLUMN ended_at INTEGER;
ALTER TABLE sessions ADD COLUMN end_cause TEXT;
