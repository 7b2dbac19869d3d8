-- reachd baseline schema (PRAGMA user_version 1). Later changes are numbered files in
-- migrations/, applied in order; reachd refuses a database newer than itself.
-- Timestamps are milliseconds since the Unix epoch. `id` columns give creation order and are
-- the keyset-paging keys.

CREATE TABLE account (
    id                            INTEGER PRIMARY KEY CHECK (id = 1),
    sid                           TEXT    NOT NULL,
    auth_token                    TEXT    NOT NULL,
    default_chat_service_sid      TEXT,
    default_messaging_service_sid TEXT,
    default_inactive_timer        TEXT,
    default_closed_timer          TEXT,
    webhook_method                TEXT,
    webhook_filters               TEXT,   -- JSON array, NULL until set
    webhook_pre_url               TEXT,
    webhook_post_url              TEXT,
    webhook_target                TEXT,
    date_created                  INTEGER NOT NULL,
    date_updated                  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    sid           TEXT    NOT NULL UNIQUE,
    friendly_name TEXT,
    secret        TEXT    NOT NULL,
    date_created  INTEGER NOT NULL,
    revoked_at    INTEGER
);

CREATE TABLE services (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    sid                    TEXT    NOT NULL UNIQUE,
    friendly_name          TEXT    NOT NULL,
    reachability_enabled   INTEGER NOT NULL DEFAULT 0,
    ping_interval_ms       INTEGER,
    session_ttl_ms         INTEGER,
    offline_grace_ms       INTEGER,
    settings               TEXT    NOT NULL,  -- JSON: domain::service::ChatSettings
    date_created           INTEGER NOT NULL,
    date_updated           INTEGER NOT NULL
);

CREATE TABLE users (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    sid                   TEXT    NOT NULL UNIQUE,
    service_sid           TEXT    NOT NULL REFERENCES services (sid) ON DELETE CASCADE,
    identity              TEXT    NOT NULL,
    friendly_name         TEXT,
    attributes            TEXT    NOT NULL DEFAULT '{}',
    role_sid              TEXT,
    joined_channels_count INTEGER NOT NULL DEFAULT 0,
    is_online             INTEGER,           -- NULL: unknown since reachability was enabled
    is_notifiable         INTEGER,
    date_created          INTEGER NOT NULL,
    date_updated          INTEGER NOT NULL,
    UNIQUE (service_sid, identity)
);
CREATE INDEX users_by_service ON users (service_sid, id);

CREATE TABLE bindings (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    sid            TEXT    NOT NULL UNIQUE,
    service_sid    TEXT    NOT NULL REFERENCES services (sid) ON DELETE CASCADE,
    user_sid       TEXT    NOT NULL REFERENCES users (sid) ON DELETE CASCADE,
    identity       TEXT    NOT NULL,
    credential_sid TEXT,
    endpoint       TEXT    NOT NULL,
    address        TEXT    NOT NULL,
    binding_type   TEXT    NOT NULL,
    date_created   INTEGER NOT NULL,
    date_updated   INTEGER NOT NULL,
    UNIQUE (service_sid, endpoint)
);
CREATE INDEX bindings_by_user ON bindings (user_sid, id);
CREATE INDEX bindings_by_service ON bindings (service_sid, id);

CREATE TABLE credentials (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    sid           TEXT    NOT NULL UNIQUE,
    friendly_name TEXT,
    type          TEXT    NOT NULL,
    sandbox       INTEGER,
    certificate   TEXT,
    private_key   TEXT,
    api_key       TEXT,
    secret        TEXT,
    date_created  INTEGER NOT NULL,
    date_updated  INTEGER NOT NULL
);
