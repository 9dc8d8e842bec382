-- Attempts name their destination (copied from their delivery when recorded), so a
-- destination's statistics read its own attempts by time instead of joining every delivery it
-- ever had.
ALTER TABLE attempts ADD COLUMN subscription_id BLOB;
ALTER TABLE attempts ADD COLUMN connector TEXT;

UPDATE attempts SET
    subscription_id = (SELECT d.subscription_id FROM deliveries d WHERE d.id = attempts.delivery_id),
    connector = (SELECT d.connector FROM deliveries d WHERE d.id = attempts.delivery_id);
-- Attempts to a connector instance (through a subscription) name the connector too.
UPDATE attempts SET connector = (SELECT ci.connector FROM subscriptions s
        JOIN connector_instances ci ON ci.id = s.instance_id WHERE s.id = attempts.subscription_id)
    WHERE connector IS NULL
      AND subscription_id IN (SELECT id FROM subscriptions WHERE instance_id IS NOT NULL);

CREATE INDEX attempts_by_subscription ON attempts (subscription_id, started_at)
    WHERE subscription_id IS NOT NULL;
CREATE INDEX attempts_by_connector ON attempts (connector, started_at) WHERE connector IS NOT NULL;
