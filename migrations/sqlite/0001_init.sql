-- Integrations Hub schema, SQLite flavour. Timestamps are INTEGER microseconds since the Unix
-- epoch (UTC); ids are UUIDv7 as 16-byte BLOBs, so they sort by creation time.

CREATE TABLE subscriptions (
    id                   BLOB PRIMARY KEY NOT NULL,
    url                  TEXT NOT NULL,
    description          TEXT,
    events               TEXT NOT NULL,               -- JSON array of event types, or ["*"]
    headers              TEXT NOT NULL DEFAULT '{}',  -- JSON object of custom headers
    enabled              INTEGER NOT NULL DEFAULT 1,
    disabled_reason      TEXT,                        -- e.g. the endpoint answered 410 Gone
    circuit_state        TEXT NOT NULL DEFAULT 'closed'
                         CHECK (circuit_state IN ('closed', 'open', 'half_open')),
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    circuit_open_until   INTEGER,                     -- no attempt before this time while open
    circuit_trips        INTEGER NOT NULL DEFAULT 0,  -- consecutive openings: the cool-off doubles
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    deleted_at           INTEGER                      -- soft delete keeps delivery history readable
) STRICT;

-- Matching on publish scans only live, enabled subscriptions.
CREATE INDEX subscriptions_live ON subscriptions (id) WHERE deleted_at IS NULL AND enabled = 1;

CREATE TABLE subscription_secrets (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id BLOB NOT NULL REFERENCES subscriptions (id),
    secret          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER                           -- NULL: the current secret
) STRICT;

CREATE INDEX subscription_secrets_by_subscription ON subscription_secrets (subscription_id, id);

CREATE TABLE events (
    id         BLOB PRIMARY KEY NOT NULL,
    event_type TEXT NOT NULL,
    payload    TEXT NOT NULL,                         -- the JSON object exactly as accepted
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX events_created_at ON events (created_at);

CREATE TABLE deliveries (
    id               BLOB PRIMARY KEY NOT NULL,
    event_id         BLOB NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    kind             TEXT NOT NULL CHECK (kind IN ('webhook', 'connector')),
    subscription_id  BLOB REFERENCES subscriptions (id),
    connector        TEXT,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_flight', 'succeeded', 'dead', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,      -- attempts spent from the current budget
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    CHECK ((kind = 'webhook' AND subscription_id IS NOT NULL AND connector IS NULL)
        OR (kind = 'connector' AND connector IS NOT NULL AND subscription_id IS NULL))
) STRICT;

-- The claim query: due pending work, and in-flight work whose lease expired.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE status = 'in_flight';
CREATE INDEX deliveries_by_event ON deliveries (event_id);
-- Cancelling a deleted subscription's open work, and bulk replay by subscription.
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id, status);

CREATE TABLE attempts (
    id              BLOB PRIMARY KEY NOT NULL,
    delivery_id     BLOB NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    event_id        BLOB NOT NULL,
    attempt         INTEGER NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    response_status INTEGER,
    response_body   TEXT,                             -- first 4 KiB
    error           TEXT,
    duration_ms     INTEGER NOT NULL,
    started_at      INTEGER NOT NULL
) STRICT;

CREATE INDEX attempts_by_event ON attempts (event_id, started_at);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id);
CREATE INDEX attempts_started_at ON attempts (started_at);

CREATE TABLE dead_letters (
    id          BLOB PRIMARY KEY NOT NULL,
    delivery_id BLOB NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    event_id    BLOB NOT NULL,
    attempts    INTEGER NOT NULL,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    replayed_at INTEGER
) STRICT;

CREATE INDEX dead_letters_created_at ON dead_letters (created_at);
CREATE INDEX dead_letters_by_delivery ON dead_letters (delivery_id);

CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY NOT NULL,
    fingerprint TEXT NOT NULL,
    event_ids   TEXT NOT NULL,                        -- JSON array of the events created
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
