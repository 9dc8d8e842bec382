-- Integrations Hub schema, PostgreSQL flavour. Ids are UUIDv7 (sortable by creation time).

CREATE TABLE subscriptions (
    id                   UUID PRIMARY KEY,
    url                  TEXT NOT NULL,
    description          TEXT,
    events               TEXT[] NOT NULL,             -- event types, or {'*'}
    headers              JSONB NOT NULL DEFAULT '{}',
    enabled              BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason      TEXT,                        -- e.g. the endpoint answered 410 Gone
    circuit_state        TEXT NOT NULL DEFAULT 'closed'
                         CHECK (circuit_state IN ('closed', 'open', 'half_open')),
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    circuit_open_until   TIMESTAMPTZ,                 -- no attempt before this time while open
    circuit_trips        INTEGER NOT NULL DEFAULT 0,  -- consecutive openings: the cool-off doubles
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL,
    deleted_at           TIMESTAMPTZ                  -- soft delete keeps delivery history readable
);

CREATE INDEX subscriptions_live ON subscriptions (id) WHERE deleted_at IS NULL AND enabled;

CREATE TABLE subscription_secrets (
    id              BIGSERIAL PRIMARY KEY,
    subscription_id UUID NOT NULL REFERENCES subscriptions (id),
    secret          TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ                       -- NULL: the current secret
);

CREATE INDEX subscription_secrets_by_subscription ON subscription_secrets (subscription_id, id);

CREATE TABLE events (
    id         UUID PRIMARY KEY,
    event_type TEXT NOT NULL,
    payload    JSON NOT NULL,                         -- json, not jsonb: keeps the exact bytes that are signed
    created_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX events_created_at ON events (created_at);

CREATE TABLE deliveries (
    id               UUID PRIMARY KEY,
    event_id         UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    kind             TEXT NOT NULL CHECK (kind IN ('webhook', 'connector')),
    subscription_id  UUID REFERENCES subscriptions (id),
    connector        TEXT,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_flight', 'succeeded', 'dead', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    CHECK ((kind = 'webhook' AND subscription_id IS NOT NULL AND connector IS NULL)
        OR (kind = 'connector' AND connector IS NOT NULL AND subscription_id IS NULL))
);

-- The claim query (FOR UPDATE SKIP LOCKED): due pending work, and expired leases.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE status = 'in_flight';
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id, status);

CREATE TABLE attempts (
    id              UUID PRIMARY KEY,
    delivery_id     UUID NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    event_id        UUID NOT NULL,
    attempt         INTEGER NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    response_status INTEGER,
    response_body   TEXT,
    error           TEXT,
    duration_ms     BIGINT NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL
);

CREATE INDEX attempts_by_event ON attempts (event_id, started_at);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id);
CREATE INDEX attempts_started_at ON attempts (started_at);

CREATE TABLE dead_letters (
    id          UUID PRIMARY KEY,
    delivery_id UUID NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    event_id    UUID NOT NULL,
    attempts    INTEGER NOT NULL,
    last_error  TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    replayed_at TIMESTAMPTZ
);

CREATE INDEX dead_letters_created_at ON dead_letters (created_at);
CREATE INDEX dead_letters_by_delivery ON dead_letters (delivery_id);

CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    event_ids   TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
