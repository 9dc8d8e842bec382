-- Every claim asks whether some circuit's cool-off is over or some rate-limited subscription has
-- due work (host/src/store/postgres.rs, FAST_CLAIM). Both are rare; without these the question
-- read every subscription on every claim (one sequential scan per claim, thousands a second).
CREATE INDEX subscriptions_circuit_not_closed ON subscriptions (circuit_open_until)
    WHERE enabled AND circuit_state <> 'closed';
CREATE INDEX subscriptions_rate_limited ON subscriptions (id)
    WHERE rate_per_second IS NOT NULL AND enabled AND NOT paused AND deleted_at IS NULL;
