-- Ordered delivery: an event's ordering key, copied to the deliveries of the subscriptions that
-- keep order, whose claims take only the oldest unfinished delivery of each key.
ALTER TABLE events ADD COLUMN ordering_key TEXT;
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
ALTER TABLE subscriptions ADD COLUMN ordered INTEGER NOT NULL DEFAULT 0 CHECK (ordered IN (0, 1));
CREATE INDEX deliveries_by_key ON deliveries (subscription_id, ordering_key, id)
    WHERE ordering_key IS NOT NULL AND status IN ('pending', 'in_flight');

-- Rate limits: deliveries per second and a burst; `rate_allow_at` is when the next may go
-- (GCRA, host/src/model/rate.rs), moved forward by the claims that take them.
ALTER TABLE subscriptions ADD COLUMN rate_per_second INTEGER;
ALTER TABLE subscriptions ADD COLUMN rate_burst INTEGER;
ALTER TABLE subscriptions ADD COLUMN rate_allow_at INTEGER;
