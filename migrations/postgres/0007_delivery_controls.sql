-- Delivery controls: a subscription's payload filter (its JSON document, validated by the API:
-- host/src/model/filter.rs) and whether it is paused (deliveries are created and held).
ALTER TABLE subscriptions ADD COLUMN filter TEXT;
ALTER TABLE subscriptions ADD COLUMN paused BOOLEAN NOT NULL DEFAULT false;

-- What the hub has to say about itself (host/src/model/notice.rs): written in the transaction of
-- what it reports, published as a hub.* event by the upkeep of any instance, then removed.
CREATE TABLE hub_notices (
    id              UUID PRIMARY KEY,
    kind            TEXT NOT NULL,
    subscription_id UUID,
    delivery_id     UUID,
    connector       TEXT,
    detail          TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);
