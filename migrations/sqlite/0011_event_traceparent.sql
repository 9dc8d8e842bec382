-- The W3C traceparent of the request that published an event (host/src/model/trace.rs), passed
-- on to the calls its deliveries make. NULL when the request carried none.
ALTER TABLE events ADD COLUMN traceparent TEXT;
