-- Attempts name their destination (copied from their delivery when recorded), so a
-- destination's statistics read its own attempts by time instead of joining every delivery it
-- ever had.
ALTER TABLE attempts ADD COLUMN subscription_id UUID;
ALTER TABLE attempts ADD COLUMN connector TEXT;

UPDATE attempts a SET subscription_id = d.subscription_id, connector = d.connector
    FROM deliveries d WHERE d.id = a.delivery_id;
-- Attempts to a connector instance (through a subscription) name the connector too.
UPDATE attempts a SET connector = ci.connector
    FROM subscriptions s JOIN connector_instances ci ON ci.id = s.instance_id
    WHERE s.id = a.subscription_id AND a.connector IS NULL;

CREATE INDEX attempts_by_subscription ON attempts (subscription_id, started_at)
    WHERE subscription_id IS NOT NULL;
CREATE INDEX attempts_by_connector ON attempts (connector, started_at) WHERE connector IS NOT NULL;
