-- Delivery controls: a subscription's payload filter (its JSON document, validated by the API:
-- host/src/model/filter.rs) and whether it is paused (deliveries are created and held).
ALTER TABLE subscriptions ADD COLUMN filter TEXT;
ALTER TABLE subscriptions ADD COLUMN paused INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1));

-- What the hub has to say about itself (host/src/model/notice.rs): written in the transaction of
-- what it reports, published as a hub.* event by the upkeep of any instance, then removed.
CREATE TABLE hub_notices (
    id              BLOB PRIMARY KEY NOT NULL,
    kind            TEXT NOT NULL,
    subscription_id BLOB,
    delivery_id     BLOB,
    connector       TEXT,
    detail          TEXT,
    created_at      INTEGER NOT NULL
) STRICT;

-- A circuit closing is noticed however it closes (a probe, or a late success on any path).
CREATE TRIGGER hub_notice_circuit_closed AFTER UPDATE OF circuit_state ON subscriptions
    WHEN OLD.circuit_state <> 'closed' AND NEW.circuit_state = 'closed'
BEGIN
    INSERT INTO hub_notices (id, kind, subscription_id, created_at)
    VALUES (randomblob(16), 'hub.circuit.closed', NEW.id, CAST(unixepoch('subsec') * 1000000 AS INTEGER));
END;
