-- 0002: presence — the durable event table, persisted sessions, and per-user reachability
-- bookkeeping (sequence, last_seen, online_since).

ALTER TABLE users ADD COLUMN sequence     INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_seen    INTEGER;
ALTER TABLE users ADD COLUMN online_since INTEGER;
CREATE INDEX users_online ON users (service_sid, is_online, id);

-- Every user event and reachability transition, in commit order. The webhook outbox and the
-- realtime feed consume it; rows outlive the users they describe.
CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    service_sid   TEXT    NOT NULL,
    user_sid      TEXT    NOT NULL,
    identity      TEXT    NOT NULL,
    type          TEXT    NOT NULL,  -- user.added | user.updated | user.deleted | user.reachability_updated
    reasons       TEXT    NOT NULL,  -- JSON array: reachabilityOnline, reachabilityNotifiable, …
    cause         TEXT,              -- session_opened … reachability_enabled (reachability events)
    sequence      INTEGER NOT NULL,  -- the user's sequence after this event
    is_online     INTEGER,
    is_notifiable INTEGER,
    session_count INTEGER,
    last_seen     INTEGER,
    source        TEXT    NOT NULL,  -- SDK | API
    rest_webhooks INTEGER NOT NULL DEFAULT 0, -- REST change sent with X-Twilio-Webhook-Enabled: true
    user_json     TEXT    NOT NULL,  -- the user's profile at the time (friendly_name, attributes, role_sid, dates)
    created_at    INTEGER NOT NULL
);
CREATE INDEX events_by_service ON events (service_sid, id);
CREATE INDEX events_by_time ON events (created_at);

-- Live client sessions, flushed in batches so a restart can resume them.
CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY,
    service_sid  TEXT    NOT NULL,
    identity     TEXT    NOT NULL,
    transport    TEXT    NOT NULL,
    endpoint     TEXT,
    created_at   INTEGER NOT NULL,
    last_ping_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (service_sid, identity);
