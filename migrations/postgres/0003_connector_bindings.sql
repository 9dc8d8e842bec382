-- Durable bindings of connectors: a connector that has once been active keeps receiving
-- deliveries for its event types, which wait while it is missing, failed or inactive, instead of
-- being routed nothing (a bad deploy must not lose events).
CREATE TABLE connector_bindings (
    name       TEXT PRIMARY KEY,
    events     TEXT[] NOT NULL,                       -- event types, or {'*'}
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Deliveries of one connector (its backlog, cancelling on unbind).
CREATE INDEX deliveries_by_connector ON deliveries (connector, status) WHERE connector IS NOT NULL;
-- Due connector deliveries, which an instance that lacks their connector defers: found without
-- walking the webhooks' backlog.
CREATE INDEX deliveries_due_to_connectors ON deliveries (next_attempt_at)
    WHERE status = 'pending' AND connector IS NOT NULL;

-- Which connectors each instance runs, refreshed every poll: a delivery is deferred (left for
-- later, unattempted) only when no live instance runs its connector.
CREATE TABLE connector_presence (
    instance TEXT NOT NULL,
    name     TEXT NOT NULL,
    seen_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (instance, name)
);
