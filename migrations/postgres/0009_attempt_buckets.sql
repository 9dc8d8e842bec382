-- Attempt counts per destination in 5-minute buckets instead of hours (host/src/store/rollup.rs):
-- a window's ragged start and the attempts not rolled up yet, read row by row, shrink from up to
-- two hours to about a quarter of an hour. The hourly counts are dropped and counted again from
-- `attempts` by the upkeep; until it catches up, statistics read `attempts` (same figures, slower).
CREATE TABLE attempt_buckets (
    scope     TEXT NOT NULL CHECK (scope IN ('hub', 'subscription', 'connector')),
    name      TEXT NOT NULL,                          -- subscription id, connector name, '' for the hub
    bucket    TIMESTAMPTZ NOT NULL,                   -- the bucket's start
    attempts  BIGINT NOT NULL,
    succeeded BIGINT NOT NULL,
    PRIMARY KEY (scope, name, bucket)
);
DROP TABLE attempt_hours;
UPDATE attempt_rollup SET rolled_until = NULL;
