-- What a connector reported of an attempt (WIT 0.2, host/src/connectors/runtime.rs): its answer,
-- the upstream's id for what it created, the delay it asked for. NULL for webhooks and for calls
-- the sandbox stopped.
ALTER TABLE attempts ADD COLUMN reported TEXT CHECK (reported IN ('ok', 'skipped', 'retry', 'permanent'));
ALTER TABLE attempts ADD COLUMN external_id TEXT;
ALTER TABLE attempts ADD COLUMN retry_after_ms BIGINT;
