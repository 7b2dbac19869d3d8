-- 0003: webhooks — native endpoints (per service, or from the config file for all services),
-- the transactional outbox (one delivery per event and matching target) and its attempt log.

CREATE TABLE webhook_endpoints (
    id            TEXT    PRIMARY KEY,      -- WH + 32 hex (config entries: WH + hash of the name)
    service_sid   TEXT    REFERENCES services (sid) ON DELETE CASCADE, -- NULL: every service (config)
    url           TEXT    NOT NULL,
    description   TEXT,
    secret        TEXT    NOT NULL,         -- whsec_<base64>
    event_types   TEXT,                     -- JSON array; NULL means every type
    disabled      INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    from_config   INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    seq           INTEGER NOT NULL          -- creation order, for listing
);
CREATE INDEX webhook_endpoints_by_service ON webhook_endpoints (service_sid, seq);

CREATE TABLE deliveries (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id          INTEGER NOT NULL,
    service_sid       TEXT    NOT NULL,
    user_sid          TEXT    NOT NULL,
    target            TEXT    NOT NULL,     -- 'service:IS…' | 'account' | 'endpoint:WH…'
    format            TEXT    NOT NULL,     -- chat | conversations | native
    url               TEXT    NOT NULL,
    method            TEXT    NOT NULL,     -- POST | GET
    max_attempts      INTEGER NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
        status            TEXT    NOT NULL,     -- pending | delivered | failed
    head              INTEGER NOT NULL DEFAULT 0, -- 1: the oldest pending delivery of its (target, user) queue
    next_attempt_at   INTEGER NOT NULL,
    
    idempotency_token TEXT    NOT NULL,     -- stable across attempts
    last_status       INTEGER,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (head, status, next_attempt_at);
CREATE INDEX deliveries_queue ON deliveries (target, user_sid, status, id);
CREATE INDEX deliveries_by_target ON deliveries (target, id);
CREATE INDEX deliveries_by_event ON deliveries (event_id);

CREATE TABLE delivery_attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id   INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt       INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    status_code   INTEGER,
    latency_ms    INTEGER NOT NULL,
    response_body TEXT,                     -- first 1 KiB
    error         TEXT
);
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, attempt);
