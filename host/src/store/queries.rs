//! The visibility queries (events by filter, a subscription's deliveries, dead letters by
//! filter, a destination's statistics), written once for both backends: a [`Where`] holds the clauses of the filters given,
//! numbering their placeholders, so a query has only the conditions it needs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;
use super::rollup;
use super::rows::{self, attempt_views, destination_columns};
use super::sql::{Arg, Conn, DbRow, Dialect};

use crate::model::{
    DeadLetter, DeadLetterFilter, DeliveryCounts, DeliveryLine, DeliveryStatus, DestinationStats,
    EventFilter, EventSummary, Feed, MAX_LATENCY_SAMPLE, PageRequest, StatsOf, TypeMatch,
};

/// The conditions of a query and the arguments they bind.
#[derive(Default)]
pub(super) struct Where<'a> {
    clauses: Vec<String>,
    pub(super) args: Vec<Arg<'a>>,
}

impl<'a> Where<'a> {
    /// Adds `clause`, each `{}` of which is the placeholder of the next of `args`.
    pub(super) fn push(&mut self, clause: &str, args: impl IntoIterator<Item = Arg<'a>>) {
        let mut text = String::new();
        let mut parts = clause.split("{}");
        text.push_str(parts.next().unwrap_or_default());
        let mut args = args.into_iter();
        for part in parts {
            if let Some(arg) = args.next() {
                self.args.push(arg);
            }
            text.push_str(&format!("${}", self.args.len()));
            text.push_str(part);
        }
        self.clauses.push(text);
    }

    /// The placeholder number the next argument gets.
    pub(super) fn next(&self) -> usize {
        self.args.len() + 1
    }

    /// Adds a clause `make` writes around placeholder `next()`, bound to `arg`.
    pub(super) fn push_with(&mut self, make: impl FnOnce(usize) -> String, arg: Arg<'a>) {
        let clause = make(self.next());
        self.args.push(arg);
        self.clauses.push(clause);
    }

    /// The keyset page: items before `page.after` (newest first by `column`).
    fn page(&mut self, column: &str, page: PageRequest) {
        if let Some(after) = page.after {
            self.push(&format!("{column} < {{}}"), [Arg::Uuid(after)]);
        }
    }

    /// `AND`-joined, `TRUE` when empty.
    pub(super) fn sql(&self) -> String {
        if self.clauses.is_empty() {
            "TRUE".to_owned()
        } else {
            self.clauses.join(" AND ")
        }
    }

    /// Binds `n` as the next argument (for a `LIMIT`) and returns its placeholder.
    pub(super) fn limit(&mut self, n: u32) -> String {
        self.args.push(Arg::Int(n.into()));
        format!("${}", self.args.len())
    }
}

/// How far an event id's time may be from its `created_at` (both from one clock, moments apart).
const SLACK: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// The lowest (or highest) UUIDv7 of the millisecond of `t`.
fn v7_bound(t: DateTime<Utc>, upper: bool) -> Uuid {
    let ms = t.timestamp_millis().clamp(0, (1 << 48) - 1) as u64;
    let mut bytes = if upper { [0xFF; 16] } else { [0; 16] };
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

/// Unfinished deliveries of `of` (pending or in flight) and the oldest one's creation, each part
/// read through an index that holds only the backlog (or one destination's deliveries), never
/// the whole history.
pub(super) async fn backlog<C: Conn>(
    conn: &mut C,
    of: StatsOf<'_>,
) -> StoreResult<(u64, Option<DateTime<Utc>>)> {
    const OPEN: &str = "status IN ('pending', 'in_flight')";
    let (parts, arg): (Vec<String>, Option<Arg<'_>>) = match of {
        // `deliveries_due` and `deliveries_leased`, each partial on its status.
        StatsOf::Hub => (
            ["pending", "in_flight"]
                .map(|s| format!("FROM deliveries d WHERE d.status = '{s}'"))
                .into(),
            None,
        ),
        StatsOf::Subscription(id) => (
            vec![format!(
                "FROM deliveries d WHERE d.subscription_id = $1 AND d.{OPEN}"
            )],
            Some(Arg::Uuid(id)),
        ),
        StatsOf::Connector(name) => (
            vec![
                format!("FROM deliveries d WHERE d.connector = $1 AND d.{OPEN}"),
                format!(
                    "FROM deliveries d JOIN subscriptions s2 ON s2.id = d.subscription_id \
                     JOIN connector_instances ci ON ci.id = s2.instance_id \
                     WHERE ci.connector = $1 AND d.{OPEN}"
                ),
            ],
            Some(Arg::Text(name)),
        ),
    };
    let args: Vec<Arg<'_>> = arg.into_iter().collect();
    let (mut pending, mut oldest) = (0, None::<DateTime<Utc>>);
    for from in parts {
        let sql = format!("SELECT COUNT(*) AS n, MIN(d.created_at) AS oldest {from}");
        if let Some(row) = conn.row(&sql, &args).await? {
            pending += row.get::<u64>("n")?;
            if let Some(t) = row.opt_time("oldest")? {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
    }
    Ok((pending, oldest))
}

/// Live subscriptions whose circuit is not closed now.
pub(super) async fn open_circuits<C: Conn>(conn: &mut C) -> StoreResult<u64> {
    let row = conn
        .row(
            "SELECT COUNT(*) AS open FROM subscriptions \
             WHERE deleted_at IS NULL AND circuit_state <> 'closed'",
            &[],
        )
        .await?;
    row.map_or(Ok(0), |row| row.get::<u64>("open"))
}

/// `column` matches `wanted` (a type, or a prefix of types).
pub(super) fn type_matches<'a>(w: &mut Where<'a>, column: &str, wanted: &'a TypeMatch) {
    match wanted {
        TypeMatch::Exact(name) => w.push(&format!("{column} = {{}}"), [Arg::Text(name)]),
        TypeMatch::Prefix(prefix) => w.push(
            &format!("substr({column}, 1, CAST({{}} AS INTEGER)) = {{}}"),
            [Arg::Int(prefix.len() as i64), Arg::Text(prefix)],
        ),
    }
}

/// The delivery `d` goes to `connector`: its default instance, or one of its instances.
const TO_CONNECTOR: &str = "(d.connector = {} OR d.subscription_id IN (SELECT s2.id FROM subscriptions s2 \
     JOIN connector_instances ci ON ci.id = s2.instance_id WHERE ci.connector = {}))";

fn status_names(statuses: &[DeliveryStatus]) -> Vec<String> {
    statuses.iter().map(|s| s.as_str().to_owned()).collect()
}

pub(super) async fn list_events<D: Dialect>(
    store: &D,
    filter: &EventFilter,
    page: PageRequest,
) -> StoreResult<Vec<EventSummary>> {
    let statuses = status_names(&filter.delivery_status);
    let mut w = Where::default();
    w.page("e.id", page);
    if let Some(wanted) = &filter.event_type {
        type_matches(&mut w, "e.event_type", wanted);
    }
    // Event ids are UUIDv7 stamped by the clock that stamps `created_at`: their time prefix
    // bounds the newest-first scan (with a second of slack), the times themselves decide.
    if let Some(since) = filter.since {
        w.push("e.created_at >= {}", [Arg::Time(since)]);
        w.push("e.id >= {}", [Arg::Uuid(v7_bound(since - SLACK, false))]);
    }
    if let Some(until) = filter.until {
        w.push("e.created_at < {}", [Arg::Time(until)]);
        w.push("e.id <= {}", [Arg::Uuid(v7_bound(until + SLACK, true))]);
    }
    if let Some(id) = filter.subscription_id {
        w.push(
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.subscription_id = {})",
            [Arg::Uuid(id)],
        );
    }
    if let Some(name) = &filter.connector {
        // From the connector's deliveries (`deliveries_by_connector_event`): a connector with
        // few deliveries must not make the query read every event.
        w.push(
            "e.id IN (SELECT d.event_id FROM deliveries d WHERE d.connector = {} \
             UNION ALL SELECT d.event_id FROM deliveries d JOIN subscriptions s2 ON s2.id = d.subscription_id \
             JOIN connector_instances ci ON ci.id = s2.instance_id WHERE ci.connector = {})",
            [Arg::Text(name), Arg::Text(name)],
        );
    }
    if !statuses.is_empty() {
        w.push_with(
            |n| {
                format!(
                    "EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND NOT ({}))",
                    D::name_not_in("d.status", n)
                )
            },
            Arg::Names(&statuses),
        );
    }
    let limit = w.limit(page.limit);
    let sql = format!(
        "SELECT e.id, e.event_type, e.created_at FROM events e WHERE {} ORDER BY e.id DESC LIMIT {limit}",
        w.sql()
    );
    let mut conn = store.reader().acquire().await?;
    let found = conn.rows(&sql, &w.args).await?;
    let mut events = found
        .iter()
        .map(rows::event_summary)
        .collect::<StoreResult<Vec<_>>>()?;
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    if ids.is_empty() {
        return Ok(events);
    }
    let mut counts: HashMap<Uuid, DeliveryCounts> = HashMap::new();
    for row in conn
        .rows_in(
            "SELECT event_id, status, COUNT(*) AS n FROM deliveries WHERE event_id IN ({ids}) \
             GROUP BY event_id, status",
            &[],
            &ids,
        )
        .await?
    {
        let status = rows::delivery_status(&row.text("status")?)?;
        let entry = counts.entry(row.uuid("event_id")?).or_default();
        entry.add(status, row.count("n")?);
    }
    for event in &mut events {
        event.deliveries = counts.remove(&event.id).unwrap_or_default();
    }
    Ok(events)
}

pub(super) async fn subscription_deliveries<D: Dialect>(
    store: &D,
    subscription_id: Uuid,
    statuses: &[DeliveryStatus],
    page: PageRequest,
) -> StoreResult<Vec<DeliveryLine>> {
    let statuses = status_names(statuses);
    let mut w = Where::default();
    w.push("d.subscription_id = {}", [Arg::Uuid(subscription_id)]);
    w.page("d.id", page);
    if !statuses.is_empty() {
        w.push_with(
            |n| format!("NOT ({})", D::name_not_in("d.status", n)),
            Arg::Names(&statuses),
        );
    }
    let limit = w.limit(page.limit);
    let sql = format!(
        "SELECT d.id, d.event_id, e.event_type, d.status, d.attempts, d.next_attempt_at, d.last_error, \
         d.created_at, d.updated_at, \
         (SELECT a.response_status FROM attempts a WHERE a.delivery_id = d.id \
          ORDER BY a.started_at DESC, a.id DESC LIMIT 1) AS last_response_status \
         FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {} ORDER BY d.id DESC LIMIT {limit}",
        w.sql()
    );
    let mut conn = store.reader().acquire().await?;
    let found = conn.rows(&sql, &w.args).await?;
    found.iter().map(rows::delivery_line).collect()
}

/// The conditions of `filter` over `dl` (dead letters), `d` (their deliveries) and `e` (events).
pub(super) fn dead_letters_where<'a>(filter: &'a DeadLetterFilter) -> Where<'a> {
    let mut w = Where::default();
    if let Some(since) = filter.since {
        w.push("dl.created_at >= {}", [Arg::Time(since)]);
    }
    if let Some(until) = filter.until {
        w.push("dl.created_at < {}", [Arg::Time(until)]);
    }
    if let Some(id) = filter.subscription_id {
        w.push("d.subscription_id = {}", [Arg::Uuid(id)]);
    }
    if let Some(name) = &filter.connector {
        w.push(TO_CONNECTOR, [Arg::Text(name), Arg::Text(name)]);
    }
    if let Some(wanted) = &filter.event_type {
        type_matches(&mut w, "dl.event_type", wanted);
    }
    w
}

pub(super) async fn list_dead_letters<D: Dialect>(
    store: &D,
    filter: &DeadLetterFilter,
    page: PageRequest,
) -> StoreResult<Vec<DeadLetter>> {
    let mut w = dead_letters_where(filter);
    w.page("dl.id", page);
    let limit = w.limit(page.limit);
    let sql = format!(
        concat!(
            "SELECT dl.id, dl.event_id, COALESCE(dl.event_type, e.event_type) AS event_type, dl.delivery_id, ",
            destination_columns!(),
            ", dl.attempts, dl.last_error, dl.created_at, dl.replayed_at \
             FROM dead_letters dl JOIN deliveries d ON d.id = dl.delivery_id \
             JOIN events e ON e.id = dl.event_id \
             LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE {} ORDER BY dl.id DESC LIMIT {}"
        ),
        w.sql(),
        limit
    );
    let mut conn = store.reader().acquire().await?;
    let found = conn.rows(&sql, &w.args).await?;
    found.iter().map(rows::dead_letter).collect()
}

/// The attempts of `of`, over `a`: each names its subscription and, to a connector (default
/// instance or an instance), the connector (`attempts_by_subscription`, `attempts_by_connector`).
fn attempts_of<'a>(of: StatsOf<'a>) -> Where<'a> {
    let mut w = Where::default();
    match of {
        StatsOf::Hub => {}
        StatsOf::Subscription(id) => w.push("a.subscription_id = {}", [Arg::Uuid(id)]),
        StatsOf::Connector(name) => w.push("a.connector = {}", [Arg::Text(name)]),
    }
    w
}

pub(super) async fn destination_stats<D: Dialect>(
    store: &D,
    of: StatsOf<'_>,
    since: DateTime<Utc>,
) -> StoreResult<DestinationStats> {
    let mut conn = store.reader().acquire().await?;
    let rolled = rollup::rolled_until(&mut *conn).await?;
    let (scope, name) = rollup::key(of);

    // Whole buckets of the window already rolled up come from `attempt_buckets`; the partial
    // bucket at its start and what came since `rolled_until` from `attempts`.
    let first_bucket = rollup::bucket_of(since) + rollup::BUCKET;
    let (mut attempts, mut succeeded) = (0, 0);
    let mut raw = vec![(since, None)];
    if let Some(until) = rolled.filter(|until| *until > first_bucket) {
        let row = conn
            .row(
                "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) AS attempts, \
                 CAST(COALESCE(SUM(succeeded), 0) AS BIGINT) AS succeeded \
                 FROM attempt_buckets WHERE scope = $1 AND name = $2 AND bucket >= $3 AND bucket < $4",
                &[
                    Arg::Text(scope),
                    Arg::Text(&name),
                    Arg::Time(first_bucket),
                    Arg::Time(until),
                ],
            )
            .await?;
        if let Some(row) = row {
            attempts += row.get::<u64>("attempts")?;
            succeeded += row.get::<u64>("succeeded")?;
        }
        raw = vec![(since, Some(first_bucket)), (until, None)];
    }
    for (from, to) in raw {
        let mut w = attempts_of(of);
        w.push("a.started_at >= {}", [Arg::Time(from)]);
        if let Some(to) = to {
            w.push("a.started_at < {}", [Arg::Time(to)]);
        }
        let sql = format!(
            "SELECT COUNT(*) AS attempts, \
             COALESCE(SUM(CASE WHEN a.outcome = 'succeeded' THEN 1 ELSE 0 END), 0) AS succeeded \
             FROM attempts a WHERE {}",
            w.sql()
        );
        if let Some(row) = conn.row(&sql, &w.args).await? {
            attempts += row.get::<u64>("attempts")?;
            succeeded += row.get::<u64>("succeeded")?;
        }
    }

    let mut w = attempts_of(of);
    w.push("a.started_at >= {}", [Arg::Time(since)]);
    let limit = w.limit(MAX_LATENCY_SAMPLE);
    let sql = format!(
        "SELECT a.duration_ms FROM attempts a WHERE {} ORDER BY a.started_at DESC LIMIT {limit}",
        w.sql()
    );
    let durations_ms = (conn.rows(&sql, &w.args).await?.iter())
        .map(|row| row.get::<u64>("duration_ms"))
        .collect::<StoreResult<Vec<_>>>()?;

    let success = latest::<D>(&mut *conn, of, rolled, "succeeded").await?;
    let last_success_at = success.map(|row| row.time("started_at")).transpose()?;
    let failure = latest::<D>(&mut *conn, of, rolled, "failed").await?;
    let last_failure = failure
        .map(|row| Ok::<_, super::StoreError>((row.time("started_at")?, row.opt_text("error")?)))
        .transpose()?;

    let (pending, oldest_pending_created_at) = backlog(&mut *conn, of).await?;
    Ok(DestinationStats {
        attempts,
        succeeded,
        durations_ms,
        last_success_at,
        last_failure,
        pending,
        oldest_pending_created_at,
    })
}

/// The latest attempt of `of` with `outcome`: among the attempts not rolled up yet, else in the
/// latest rolled-up bucket that had one, so a destination that never failed is not read whole.
async fn latest<D: Dialect>(
    conn: &mut D::Conn,
    of: StatsOf<'_>,
    rolled: Option<DateTime<Utc>>,
    outcome: &str,
) -> StoreResult<Option<<D::Conn as Conn>::Row>> {
    let find = |from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| {
        let mut w = attempts_of(of);
        w.push("a.outcome = {}", [Arg::Text(outcome)]);
        if let Some(from) = from {
            w.push("a.started_at >= {}", [Arg::Time(from)]);
        }
        if let Some(to) = to {
            w.push("a.started_at < {}", [Arg::Time(to)]);
        }
        w
    };
    let sql = |w: &Where| {
        format!(
            "SELECT a.started_at, a.error FROM attempts a WHERE {} ORDER BY a.started_at DESC LIMIT 1",
            w.sql()
        )
    };
    let w = find(rolled, None);
    let found = conn.row(&sql(&w), &w.args).await?;
    let Some(until) = rolled else {
        return Ok(found);
    };
    if found.is_some() {
        return Ok(found);
    }
    let (scope, name) = rollup::key(of);
    let having = if outcome == "succeeded" {
        "succeeded > 0"
    } else {
        "attempts > succeeded"
    };
    let bucket = conn
        .row(
            &format!(
                "SELECT MAX(bucket) AS bucket FROM attempt_buckets \
                 WHERE scope = $1 AND name = $2 AND bucket < $3 AND {having}"
            ),
            &[Arg::Text(scope), Arg::Text(&name), Arg::Time(until)],
        )
        .await?;
    let Some(bucket) = bucket.map(|r| r.opt_time("bucket")).transpose()?.flatten() else {
        return Ok(None);
    };
    let w = find(Some(bucket), Some(bucket + rollup::BUCKET));
    conn.row(&sql(&w), &w.args).await
}

/// What happened after the cursors: events and attempts newer than `after_event` and
/// `after_attempt` (oldest first, at most `limit` of each); with no cursor, the newest ids, so
/// a feed starts from now.
pub(super) async fn feed<D: Dialect>(
    store: &D,
    after_event: Option<Uuid>,
    after_attempt: Option<Uuid>,
    limit: u32,
) -> StoreResult<Feed> {
    let mut conn = store.reader().acquire().await?;
    let (Some(after_event), Some(after_attempt)) = (after_event, after_attempt) else {
        // PostgreSQL has no MAX(uuid); the primary key gives the newest id as fast.
        let newest = |table: &str| format!("SELECT id FROM {table} ORDER BY id DESC LIMIT 1");
        let event = conn.row(&newest("events"), &[]).await?;
        let attempt = conn.row(&newest("attempts"), &[]).await?;
        let start = |row: Option<<D::Conn as Conn>::Row>| -> StoreResult<Uuid> {
            Ok(row
                .map(|r| r.opt_uuid("id"))
                .transpose()?
                .flatten()
                .unwrap_or(Uuid::nil()))
        };
        return Ok(Feed {
            events: Vec::new(),
            attempts: Vec::new(),
            event_cursor: after_event.map_or_else(|| start(event), Ok)?,
            attempt_cursor: after_attempt.map_or_else(|| start(attempt), Ok)?,
        });
    };
    let events = conn
        .rows(
            "SELECT id, event_type, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2",
            &[Arg::Uuid(after_event), Arg::Int(limit.into())],
        )
        .await?
        .iter()
        .map(rows::event_summary)
        .collect::<StoreResult<Vec<_>>>()?;
    let sql = concat!(attempt_views!(), " WHERE a.id > $1 ORDER BY a.id LIMIT $2");
    let attempts = conn
        .rows(sql, &[Arg::Uuid(after_attempt), Arg::Int(limit.into())])
        .await?
        .iter()
        .map(rows::attempt_view)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Feed {
        event_cursor: events.last().map_or(after_event, |e| e.id),
        attempt_cursor: attempts.last().map_or(after_attempt, |a| a.id),
        events,
        attempts,
    })
}
