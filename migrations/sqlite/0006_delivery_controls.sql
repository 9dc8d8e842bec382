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
