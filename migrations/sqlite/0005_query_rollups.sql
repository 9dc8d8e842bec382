-- Hourly attempt counts per destination (the hub, a subscription, a connector), rolled up from
-- attempts once an hour is over (host/src/store/rollup.rs): a week's statistics read at most
-- 168 rows, plus the attempts of the hours not rolled up yet.
CREATE TABLE attempt_hours (
    scope     TEXT NOT NULL CHECK (scope IN ('hub', 'subscription', 'connector')),
    name      TEXT NOT NULL,                          -- subscription id, connector name, '' for the hub
    hour      INTEGER NOT NULL,
    attempts  INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    PRIMARY KEY (scope, name, hour)
) STRICT, WITHOUT ROWID;

-- Hours before `rolled_until` are in attempt_hours (NULL: nothing rolled up yet). One row.
CREATE TABLE attempt_rollup (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    rolled_until INTEGER
) STRICT;
INSERT INTO attempt_rollup (id, rolled_until) VALUES (1, NULL);

-- Dead letters by event type without reading their events.
ALTER TABLE dead_letters ADD COLUMN event_type TEXT;
UPDATE dead_letters SET event_type = (SELECT e.event_type FROM events e WHERE e.id = dead_letters.event_id);
CREATE INDEX dead_letters_by_type ON dead_letters (event_type, id);

-- Events by connector, from the connector's deliveries.
CREATE INDEX deliveries_by_connector_event ON deliveries (connector, event_id) WHERE connector IS NOT NULL;
