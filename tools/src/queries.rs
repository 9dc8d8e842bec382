//! The query benchmark behind `bench-queries`: a hub on a database seeded with `events` events
//! (one delivery each, two attempts per delivery, 1 % dead letters, spread over 7 days), then
//! every list, filter and statistics call of the visibility API timed over real HTTP.

use std::time::Instant;

use hdrhistogram::Histogram;
use integrations_hub::config::Config;
use integrations_hub_testkit::{Backend, TestDb, TestHub};
use serde_json::json;
use sqlx::Connection;

/// What one call measured.
#[derive(Debug)]
pub struct Timing {
    pub call: String,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

/// The rows of `events` events spread over the last 7 days, as SQL over a row number `i` (and
/// its time `ms`): UUIDv7-shaped ids (time first), four event types, alternating subscriptions
/// A and B; two attempts per delivery.
fn seed_statements(backend: Backend, events: u64, a: &str, b: &str) -> Vec<String> {
    let week_ms: u64 = 7 * 24 * 3600 * 1000;
    let start_ms = chrono::Utc::now().timestamp_millis() as u64 - week_ms;
    // Row numbers 0..count as `n`, with `i` = n / per and its time `ms`.
    let rows = |count: u64, per: u64| match backend {
        Backend::Postgres => format!(
            "SELECT n, n / {per} AS i, {start_ms}::bigint + (n / {per})::bigint * {week_ms} / {events} AS ms \
             FROM generate_series(0::bigint, {count} - 1) AS n"
        ),
        Backend::Sqlite => format!(
            "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < {count} - 1) \
             SELECT n, n / {per} AS i, {start_ms} + (n / {per}) * {week_ms} / {events} AS ms FROM s"
        ),
    };
    // An id of table `tag`, unique per row number `n`, sorting by time.
    let id = |tag: &str| match backend {
        Backend::Postgres => {
            format!("(lpad(to_hex(ms), 12, '0') || '7000{tag}' || lpad(to_hex(n), 12, '0'))::uuid")
        }
        Backend::Sqlite => format!("unhex(printf('%012x7000{tag}%012x', ms, n))"),
    };
    let sub = |id: &str| match backend {
        Backend::Postgres => format!("'{id}'::uuid"),
        Backend::Sqlite => format!("X'{}'", id.replace('-', "")),
    };
    let (time, later) = match backend {
        Backend::Postgres => ("to_timestamp(ms / 1000.0)", "now() + interval '365 days'"),
        Backend::Sqlite => ("ms * 1000", "(unixepoch() + 365 * 86400) * 1000000"),
    };
    let (a, b, one, two) = (sub(a), sub(b), rows(events, 1), rows(events * 2, 2));
    let (event, delivery) = (id("8000"), id("9000"));
    // Per delivery (n = i): its event and delivery ids, from i.
    let of_i = |expr: &str| {
        expr.replace("to_hex(n)", "to_hex(i)")
            .replace("ms, n))", "ms, i))")
    };
    let (event_of_i, delivery_of_i) = (of_i(&event), of_i(&delivery));
    let status =
        "CASE WHEN i % 100 = 0 THEN 'dead' WHEN i % 200 = 1 THEN 'pending' ELSE 'succeeded' END";
    let ok = "n % 2 = 1 AND i % 100 <> 0";
    let event_type = "CASE i % 4 WHEN 0 THEN 'order.created' WHEN 1 THEN 'order.paid' \
         WHEN 2 THEN 'user.created' ELSE 'invoice.sent' END";
    vec![
        format!(
            "INSERT INTO events (id, event_type, payload, created_at) \
             SELECT {event}, {event_type}, '{{\"n\":1}}', {time} FROM ({one}) g"
        ),
        format!(
            "INSERT INTO deliveries (id, event_id, kind, subscription_id, status, attempts, \
               next_attempt_at, last_error, created_at, updated_at) \
             SELECT {delivery}, {event}, 'webhook', CASE WHEN i % 2 = 0 THEN {a} ELSE {b} END, {status}, 2, \
               CASE WHEN i % 200 = 1 THEN {later} ELSE {time} END, \
               CASE WHEN i % 100 = 0 THEN 'HTTP 500' END, {time}, {time} FROM ({one}) g"
        ),
        format!(
            "INSERT INTO attempts (id, delivery_id, event_id, attempt, outcome, response_status, \
               error, duration_ms, started_at, subscription_id) \
             SELECT {}, {delivery_of_i}, {event_of_i}, n % 2 + 1, \
               CASE WHEN {ok} THEN 'succeeded' ELSE 'failed' END, CASE WHEN {ok} THEN 200 ELSE 500 END, \
               CASE WHEN {ok} THEN NULL ELSE 'HTTP 500' END, 5 + n % 50, {time}, \
               CASE WHEN i % 2 = 0 THEN {a} ELSE {b} END FROM ({two}) g",
            id("a000")
        ),
        format!(
            "INSERT INTO dead_letters (id, delivery_id, event_id, attempts, last_error, created_at, \
               event_type) \
             SELECT {}, {delivery}, {event}, 2, 'HTTP 500', {time}, {event_type} FROM ({one}) g \
             WHERE i % 100 = 0",
            id("b000")
        ),
        // Nothing of the seeded history is counted yet (the hub may have counted the empty
        // buckets before the seed committed).
        "DELETE FROM attempt_buckets".to_owned(),
        "UPDATE attempt_rollup SET rolled_until = NULL".to_owned(),
    ]
}

async fn seed(db: &TestDb, events: u64, a: &str, b: &str) -> anyhow::Result<()> {
    let statements = seed_statements(db.backend, events, a, b);
    match db.backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await?;
            for sql in &statements {
                sqlx::query(sql).execute(&mut conn).await?;
            }
            sqlx::query("ANALYZE").execute(&mut conn).await?;
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await?;
            for sql in &statements {
                sqlx::query(sql).execute(&mut conn).await?;
            }
            sqlx::query("ANALYZE").execute(&mut conn).await?;
        }
    }
    Ok(())
}

/// Counts every finished 5-minute bucket not counted yet into the figures statistics read, as
/// the hub does (`Store::roll_up_attempts`); answers how many buckets.
async fn count_buckets(db: &TestDb) -> anyhow::Result<u32> {
    let config = Config::from_vars([("IH_DATABASE_URL", db.url.as_str())])?;
    let store = integrations_hub::store::connect(&config).await?;
    let mut buckets = 0;
    loop {
        let counted = store.roll_up_attempts(chrono::Utc::now(), 288).await?;
        buckets += counted;
        if counted < 288 {
            return Ok(buckets);
        }
    }
}

/// Seeds a fresh database of `backend` with `events` events, starts a hub on it and times
/// each call `runs` times. `None` when the backend is not available.
pub async fn run(backend: Backend, events: u64, runs: u32) -> anyhow::Result<Option<Vec<Timing>>> {
    let Some(db) = TestDb::create(backend).await else {
        return Ok(None);
    };
    let hub = TestHub::start_on(db.share(), &[("IH_ALLOW_PRIVATE_DESTINATIONS", "true")]).await;
    let subscribe = |n: u32| {
        json!({"url": format!("http://127.0.0.1:9/{n}"), "secret": "bench-secret-0123456789",
               "events": ["order.created", "order.paid", "user.created", "invoice.sent"]})
    };
    let a = hub
        .post_json("/api/v1/subscriptions", &subscribe(1), 201)
        .await;
    let b = hub
        .post_json("/api/v1/subscriptions", &subscribe(2), 201)
        .await;
    let (a, b) = (
        a["id"].as_str().unwrap_or_default(),
        b["id"].as_str().unwrap_or_default(),
    );
    // Nothing may be due: the seeded pending deliveries wait a year; disabled subscriptions
    // keep the engine off them entirely.
    for id in [a, b] {
        let path = format!("/api/v1/subscriptions/{id}");
        hub.patch_json(&path, &json!({"enabled": false}), 200).await;
    }
    let started = Instant::now();
    seed(&db, events, a, b).await?;
    let seeded = started.elapsed();
    // The seeded history arrived at once, in the past: count its hours as a hub that had run
    // all week would have (the hub's own roll-up may have run before the seed committed).
    let started = Instant::now();
    let buckets = count_buckets(&db).await?;
    let counted = started.elapsed();
    let day_ago = (chrono::Utc::now() - chrono::TimeDelta::days(1)).to_rfc3339();
    let two_days_ago = (chrono::Utc::now() - chrono::TimeDelta::days(2)).to_rfc3339();
    let window = format!("since={two_days_ago}&until={day_ago}").replace('+', "%2B");
    let subscription = format!("/api/v1/subscriptions/{a}");
    let calls = [
        ("events", "/api/v1/events".to_owned()),
        (
            "events ?event_type=order.paid",
            "/api/v1/events?event_type=order.paid".to_owned(),
        ),
        (
            "events ?event_type=order.",
            "/api/v1/events?event_type=order.".to_owned(),
        ),
        (
            "events ?subscription_id",
            format!("/api/v1/events?subscription_id={a}"),
        ),
        (
            "events ?delivery_status=dead",
            "/api/v1/events?delivery_status=dead".to_owned(),
        ),
        (
            "events ?since&until (one day)",
            format!("/api/v1/events?{window}"),
        ),
        (
            "events ?connector=slack",
            "/api/v1/events?connector=slack".to_owned(),
        ),
        (
            "subscription deliveries",
            format!("{subscription}/deliveries"),
        ),
        (
            "subscription deliveries ?status=dead",
            format!("{subscription}/deliveries?status=dead"),
        ),
        (
            "subscription stats 1h",
            format!("{subscription}/stats?window=1h"),
        ),
        (
            "subscription stats 24h",
            format!("{subscription}/stats?window=24h"),
        ),
        (
            "subscription stats 7d",
            format!("{subscription}/stats?window=7d"),
        ),
        ("hub stats 1h", "/api/v1/stats?window=1h".to_owned()),
        ("hub stats 24h", "/api/v1/stats?window=24h".to_owned()),
        ("hub stats 7d", "/api/v1/stats?window=7d".to_owned()),
        (
            "connector stats 7d",
            "/api/v1/connectors/slack/stats?window=7d".to_owned(),
        ),
        (
            "connector stats 24h",
            "/api/v1/connectors/slack/stats?window=24h".to_owned(),
        ),
        ("dead letters", "/api/v1/admin/dead-letters".to_owned()),
        (
            "dead letters ?event_type=order.paid",
            "/api/v1/admin/dead-letters?event_type=order.paid".to_owned(),
        ),
        (
            "dead letters ?subscription_id&since&until",
            format!("/api/v1/admin/dead-letters?subscription_id={a}&{window}"),
        ),
    ];
    let once = |call: String, took: std::time::Duration| Timing {
        call,
        p50_ms: took.as_secs_f64() * 1000.0,
        p95_ms: took.as_secs_f64() * 1000.0,
        max_ms: took.as_secs_f64() * 1000.0,
    };
    let mut timings = vec![
        once(
            format!("(seeding {events} events, {} attempts)", events * 2),
            seeded,
        ),
        once(
            format!("(counting {buckets} 5-minute buckets of attempts)"),
            counted,
        ),
    ];
    for (label, call) in calls {
        let mut histogram = Histogram::<u64>::new(3)?;
        for _ in 0..runs {
            let clock = Instant::now();
            hub.get_json(&call, 200).await;
            histogram.record(clock.elapsed().as_micros() as u64)?;
        }
        timings.push(Timing {
            call: label.to_owned(),
            p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
            p95_ms: histogram.value_at_quantile(0.95) as f64 / 1000.0,
            max_ms: histogram.max() as f64 / 1000.0,
        });
    }
    let (stopped, _db) = hub.stop().await;
    stopped?;
    Ok(Some(timings))
}
