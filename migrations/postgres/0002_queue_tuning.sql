-- `deliveries` is a queue: rows are inserted, claimed and finished within seconds.

-- At the default thresholds (20% of the table) autovacuum and autoanalyze fall far behind a
-- burst; after 1% they keep the indexes free of dead entries and the planner's picture of the
-- backlog current.
ALTER TABLE deliveries SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01
);

-- The lease index was partial on `status = 'in_flight'`, so the planner offered it to every
-- statement that finishes an attempt (`... AND status = 'in_flight'`). Every claim leaves a dead
-- entry in it until vacuum, and a bitmap scan over it read ~4,000 buffers per finished batch
-- (measured). Keyed on the lease itself it serves the expiry sweep and nothing else.
DROP INDEX deliveries_leased;
CREATE INDEX deliveries_lease_expiry ON deliveries (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
