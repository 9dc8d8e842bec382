-- The transform a webhook subscription's deliveries go through (host/src/connectors/transform.rs):
-- {"name": ..., "settings": {...}} as JSON text, NULL for none.
ALTER TABLE subscriptions ADD COLUMN transform TEXT;
-- The SHA-256 (hex) of the body a transform made, on each attempt that sent one.
ALTER TABLE attempts ADD COLUMN body_sha256 TEXT;
