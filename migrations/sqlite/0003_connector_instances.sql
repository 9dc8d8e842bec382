-- Connector instances: one component, many configured destinations (two Discord channels, two
-- Slack workspaces), created through the API without a restart. A subscription whose
-- destination is an instance names it in instance_id and has url '' (SQLite cannot relax the
-- column's NOT NULL in place). Its deliveries are subscription deliveries (kind 'webhook' reads
-- "of a subscription" here), so everything a subscription has applies to them: event types,
-- circuit breaker, replay.
CREATE TABLE connector_instances (
    id         BLOB PRIMARY KEY NOT NULL,
    connector  TEXT NOT NULL,
    name       TEXT NOT NULL,
    settings   TEXT NOT NULL DEFAULT '{}',            -- JSON object: setting values by key
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER                                -- kept while deliveries still name it
) STRICT;

CREATE UNIQUE INDEX connector_instances_by_name ON connector_instances (connector, name)
    WHERE deleted_at IS NULL;

ALTER TABLE subscriptions ADD COLUMN instance_id BLOB REFERENCES connector_instances (id);

CREATE INDEX subscriptions_by_instance ON subscriptions (instance_id) WHERE instance_id IS NOT NULL;

-- Presence now lists every connector an instance has loaded; `active` says whether it runs its
-- default instance (a binding's deliveries need that; an instance's need only the component).
ALTER TABLE connector_presence ADD COLUMN active INTEGER NOT NULL DEFAULT 1;
