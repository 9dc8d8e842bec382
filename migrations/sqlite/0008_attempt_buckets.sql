-- Attempt counts per destination in 5-minute buckets instead of hours (host/src/store/rollup.rs):
-- a window's ragged start and the attempts not rolled up yet, read row by row, shrink from up to
-- two hours to about a quarter of an hour. The hourly counts are dropped and counted again from
-- `attempts` by the upkeep; until it catches up, statistics read `attempts` (same figures, slower).
CREATE TABLE attempt_buckets (
    scope     TEXT NOT NULL CHECK (scope IN ('hub', 'subscription', 'connector')),
    name      TEXT NOT NULL,                          -- subscription id, connector name, '' for the hub
    bucket    INTEGER NOT NULL,                       -- the bucket's start
    attempts  INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    PRIMARY KEY (scope, name, bucket)
) STRICT, WITHOUT ROWID;
DROP TABLE attempt_hours;
UPDATE attempt_rollup SET rolled_until = NULL;
