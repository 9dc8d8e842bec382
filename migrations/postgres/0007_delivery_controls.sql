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

-- A circuit closing is noticed however it closes (a probe, or a late success on any path).
CREATE FUNCTION hub_notice_circuit_closed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hub_notices (id, kind, subscription_id, created_at)
    VALUES (gen_random_uuid(), 'hub.circuit.closed', NEW.id, clock_timestamp());
    RETURN NEW;
END
$$;
CREATE TRIGGER hub_notice_circuit_closed AFTER UPDATE OF circuit_state ON subscriptions
    FOR EACH ROW WHEN (OLD.circuit_state <> 'closed' AND NEW.circuit_state = 'closed')
    EXECUTE FUNCTION hub_notice_circuit_closed();
