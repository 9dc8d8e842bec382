-- The key that sealed a subscription secret (host/src/store/seal.rs): '' for one stored plain.
ALTER TABLE subscription_secrets ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
