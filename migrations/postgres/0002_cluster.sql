-- Cluster mode: the nodes serving this database, which node holds each user's presence, and
-- which node holds each live session.

-- One row per running node (a "member": one process's membership; a restarted node joins
-- again as a new member). `lease_until` is renewed on the database's clock; a member whose
-- lease has passed is taken over by another node, which deletes its row. Writers hold their
-- member row FOR KEY SHARE while they commit presence, so a takeover (a DELETE) waits for
-- them, and a member whose row is gone can no longer write: that is the fence.
CREATE TABLE cluster_members (
    member      BIGSERIAL   PRIMARY KEY,
    node_id     TEXT        NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL,
    joined_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Renewed last at (lease_until - lease), for a lost node's users' last_seen.
    lease_ms    BIGINT      NOT NULL,
    -- Left gracefully: its sessions' rows carry their final expiries, to be resumed.
    stopped     BOOLEAN     NOT NULL DEFAULT FALSE
);

-- A user is online while at least one member holds them (has a live session of theirs, or is
-- inside the offline grace of their last one). Online/offline transitions are decided on
-- this table, in the writers' transactions, which the feed_position row serializes.
CREATE TABLE presence_holds (
    service_sid TEXT   NOT NULL,
    identity    TEXT   NOT NULL,
    member      BIGINT NOT NULL,
    PRIMARY KEY (service_sid, identity, member)
);
CREATE INDEX presence_holds_by_member ON presence_holds (member);

-- The member holding a session; NULL: its member was lost, and the session may be resumed on
-- any node until its user goes offline.
ALTER TABLE sessions ADD COLUMN member BIGINT;
CREATE INDEX sessions_by_member ON sessions (member);
