//! PostgreSQL backend: for production and for several hub instances sharing one database.
//!
//! Bulk writes use `UNNEST` over array parameters, so a publish of one event or of a thousand is
//! the same handful of prepared statements, one round trip each.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use uuid::Uuid;

use super::common::{apply_to_circuit, commit};
use super::kept::{CHECK_WHEN_IDLE, Kept};
use super::plan::{DeliveryRow, rounds_of_distinct_deliveries, split_by_failures};
use super::seal::Keyring;
use super::sql::{Arg, Dialect, Fingerprints, Pools, driver};
use super::{StoreError, StoreResult};
use crate::model::{AttemptRecord, Backend, Claim, ClaimedDelivery, NewEvent, notice};

mod claims;

use claims::{FAST_CLAIM, claimed_from_row};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The destinations of event type `$t` at `$at` (see `Dialect::MATCHING_DESTINATIONS`): read with
/// `$1` and `$2`, and again inside the publish that checks them, for each type of its group.
/// Unordered: the read orders its rows, the fingerprint orders what it hashes.
macro_rules! matching {
    ($t:literal, $at:literal) => {
        concat!(
            "SELECT id, NULL::text AS connector, \
             CASE WHEN circuit_state = 'open' THEN circuit_open_until END AS blocked_until, paused, \
             filter, ordered, (circuit_state = 'closed' AND rate_per_second IS NULL \
               AND instance_id IS NULL AND NOT paused) AS direct, url, headers::text AS headers, \
             transform, (SELECT json_agg(ss.key_id || ':' || ss.secret ORDER BY ss.id DESC)::text \
               FROM subscription_secrets ss WHERE ss.subscription_id = subscriptions.id \
               AND (ss.expires_at IS NULL OR ss.expires_at > ",
            $at,
            ")) AS secrets FROM subscriptions WHERE deleted_at IS NULL AND enabled AND (",
            $t,
            " = ANY (events) OR '*' = ANY (events)) \
             UNION ALL SELECT NULL, name, NULL, false, NULL, false, false, NULL, NULL, NULL, NULL \
             FROM connector_bindings WHERE ",
            $t,
            " = ANY (events) OR '*' = ANY (events)"
        )
    };
}

/// The fingerprint of destinations `m` (rows of [`matching!`]), a SHA-256 of their text in
/// order; NULL for none (`remembered.rs`).
macro_rules! fingerprint {
    () => {
        "encode(sha256(convert_to(string_agg(m::text, ',' ORDER BY m.id, m.connector), 'UTF8')), \
         'hex')"
    };
}

/// A publish's events and their deliveries, one statement, written only when `$ok` (a query of
/// one row, `same`) says so; the statement answers `same`. The deliveries' foreign keys are
/// checked at its end, when the events are there.
macro_rules! insert_published {
    ($ok:expr) => {
        concat!(
            "WITH ok AS (",
            $ok,
            "), e AS ( \
               INSERT INTO events (id, event_type, payload, created_at, ordering_key, traceparent) \
               SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[]::json[], $4::timestamptz[], \
                 $5::text[], $6::text[]) WHERE (SELECT same FROM ok)), \
             ds AS (INSERT INTO deliveries (id, event_id, kind, subscription_id, connector, \
               next_attempt_at, created_at, updated_at, ordering_key, status, lease_owner, \
               lease_expires_at) \
             SELECT d.id, d.event_id, CASE WHEN d.sub IS NULL THEN 'connector' ELSE 'webhook' END, \
               d.sub, d.connector, d.due, d.at, d.at, d.ordering_key, \
               CASE WHEN d.leased IS NULL THEN 'pending' ELSE 'in_flight' END, \
               CASE WHEN d.leased IS NULL THEN NULL ELSE $15::text END, d.leased \
             FROM UNNEST($7::uuid[], $8::uuid[], $9::uuid[], $10::text[], $11::timestamptz[], \
               $12::timestamptz[], $13::text[], $14::timestamptz[]) \
               AS d(id, event_id, sub, connector, at, due, ordering_key, leased) \
             WHERE (SELECT same FROM ok)) \
             SELECT same FROM ok"
        )
    };
}

const INSERT_PUBLISHED: &str = insert_published!("SELECT true AS same");

/// Written only if the destinations of each type `$16` still have fingerprint `$17` at `$18`.
const INSERT_PUBLISHED_IF_SAME: &str = insert_published!(concat!(
    "SELECT COALESCE(bool_and(f.fp IS NOT DISTINCT FROM x.fp), false) AS same \
     FROM UNNEST($16::text[], $17::text[]) AS x(t, fp) CROSS JOIN LATERAL (SELECT ",
    fingerprint!(),
    " FROM (",
    matching!("x.t", "$18"),
    ") m) AS f(fp)"
));

/// `sql` (one of the two above) with a publish's events, deliveries and lease owner bound.
fn published<'q>(
    sql: &'static str,
    events: &'q [&'q NewEvent],
    rows: &'q [DeliveryRow<'q>],
    owner: Option<&'q str>,
) -> sqlx::query::QueryScalar<'q, Postgres, bool, sqlx::postgres::PgArguments> {
    sqlx::query_scalar(sql)
        .bind(column(events, |e| e.id))
        .bind(column(events, |e| e.event_type.as_str()))
        .bind(column(events, |e| e.payload.as_str()))
        .bind(column(events, |e| e.created_at))
        .bind(column(events, |e| e.ordering_key.as_deref()))
        .bind(column(events, |e| e.traceparent.as_deref()))
        .bind(column(rows, |r| r.id))
        .bind(column(rows, |r| r.event_id))
        .bind(column(rows, |r| r.subscription))
        .bind(column(rows, |r| r.connector))
        .bind(column(rows, |r| r.at))
        .bind(column(rows, |r| r.due))
        .bind(column(rows, |r| r.ordering_key))
        .bind(column(rows, |r| r.leased_until))
        .bind(owner)
}

/// Planner settings of the delivery hot path's connections. Its statements are primary-key
/// lookups and one ordered walk of `deliveries_due` that stops at its limit; nothing else is ever
/// cheaper. But a queue table's statistics are stale by nature (a burst of 100,000 rows lands
/// between two autoanalyze runs), and then the planner sorts every pending row, or bitmap-scans an
/// index full of dead entries, or scans the table. Measured with 100,000 pending: 400 ms per
/// claim instead of 0.4 ms. These keep the index plans on those connections only. (Plain index
/// scans also mark dead entries as they pass, which bitmap scans never do.)
///
/// The plan is also cached: the attempt-record statement's arrays make PostgreSQL estimate its
/// generic plan at ten rows a list, dearer than a custom plan for one row, so by default it
/// re-plans every call (0.4 ms of planning against 0.1 ms for the cached, identical plan).
const HOT_PATH_SETTINGS: [(&str, &str); 4] = [
    ("enable_sort", "off"),
    ("enable_bitmapscan", "off"),
    ("enable_seqscan", "off"),
    ("plan_cache_mode", "force_generic_plan"),
];

/// The channel instances use to wake each other (`LISTEN`/`NOTIFY`).
const WORK_CHANNEL: &str = "ih_work";

#[derive(Debug)]
pub struct PostgresStore {
    /// Reads and writes share one pool.
    pools: Pools<Postgres>,
    /// Set while a NOTIFY is queued, so a burst of publishes sends one.
    announcing: std::sync::Arc<Announcer>,
    /// Connections of the attempt records: see [`HOT_PATH_SETTINGS`]. All kept (`kept.rs`):
    /// nothing else uses them.
    hot: Kept<Postgres>,
    /// The claiming loop's connection: [`HOT_PATH_SETTINGS`] and [`CLAIM_SETTINGS`], kept.
    claims: Kept<Postgres>,
    /// Connections of the publish writers (`group.rs`): [`PUBLISH_SETTINGS`], all kept.
    publishes: Kept<Postgres>,
}

/// Publishes keep cached plans for the reason the hot path does ([`HOT_PATH_SETTINGS`]): their
/// arrays make the generic plan look dearer, and the statement that checks remembered
/// destinations (`remembered.rs`) was planned again on every call, 0.2–0.3 ms for 0.05 ms of
/// execution.
const PUBLISH_SETTINGS: [(&str, &str); 1] = [("plan_cache_mode", "force_generic_plan")];

/// A claim's commit does not wait for its WAL to reach the disk. A claim lost in a crash of the
/// database is a lease that never was: the delivery is still pending when it comes back, and its
/// attempt's record, which does wait, cannot be stored before the claim's WAL (the log is
/// written in order), so what it would cost is the redelivery that a crash between attempt and
/// record costs anyway. Publishes and attempt records keep waiting for the disk.
const CLAIM_SETTINGS: [(&str, &str); 1] = [("synchronous_commit", "off")];

/// Coalesces `NOTIFY`s: the first publish after a quiet spell is announced at once; a burst
/// sends one more at most every [`ANNOUNCE_EVERY`], covering everything committed meanwhile.
/// Each carries its instance's `token`, so an instance does not wake itself again.
#[derive(Debug, Default)]
struct Announcer {
    /// This instance, in its `NOTIFY`s' payload.
    token: String,
    /// Work was committed since the last `NOTIFY` went out.
    dirty: std::sync::atomic::AtomicBool,
    /// A sender task is running.
    running: std::sync::atomic::AtomicBool,
}

/// Shortest gap between two `NOTIFY`s of one instance under load. Peers are woken at most this
/// late (this instance's own engine is woken directly, and peers that are busy claim again as
/// they finish); each `NOTIFY` is a transaction of its own with a flushed commit and takes a
/// database-wide lock at commit, so one per publish would cost every instance.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(25);

impl PostgresStore {
    /// Connects to `url` with up to `max_connections` connections and applies the migrations
    /// (sqlx takes an advisory lock, so instances starting together migrate once).
    pub async fn connect(url: &str, max_connections: u32, keyring: Keyring) -> StoreResult<Self> {
        // JIT compilation pays off for long analytical queries; the hub's are all short, and
        // JIT would turn a sub-millisecond claim into 200 ms of compiling.
        let options = PgConnectOptions::from_str(url)?
            .application_name("integrations-hub")
            .options([("jit", "off")]);
        // Of the connection budget, a few serve the delivery hot path: one claiming loop and
        // the attempt-record writers.
        // One plain connection first: a pool that cannot connect only says it timed out, this
        // says why (refused, no such database, wrong password).
        match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&options))
            .await
        {
            Ok(Ok(probe)) => drop(probe.close().await),
            Ok(Err(e)) => return Err(StoreError::connect(&e)),
            Err(_) => {
                return Err(StoreError::Connect(
                    "no answer within 5 s (a firewall, or the wrong host or port?)".into(),
                ));
            }
        }
        let hot_connections = (max_connections / 3).clamp(1, 6);
        // One per publish writer of `group.rs` (four), from a quarter of the budget.
        let publishing = (max_connections / 4).clamp(1, 4);
        let pool =
            pool_options((max_connections.saturating_sub(hot_connections + publishing)).max(2))
                .connect_with(options.clone())
                .await?;
        MIGRATOR.run(&pool).await?;
        let hot_options = options.clone().options(HOT_PATH_SETTINGS.iter().copied());
        let hot_max = hot_connections.saturating_sub(1).max(1);
        let hot = pool_options(hot_max)
            .connect_with(hot_options.clone())
            .await?;
        let claims = pool_options(1)
            .connect_with(hot_options.options(CLAIM_SETTINGS.iter().copied()))
            .await?;
        let publishes = pool_options(publishing)
            .connect_with(options.options(PUBLISH_SETTINGS.iter().copied()))
            .await?;
        // Writes keep up to a third of the pool (the publish writers of `group.rs` are the
        // steady users); reads share the rest.
        let kept = (pool.options().get_max_connections() / 3) as usize;
        Ok(Self {
            pools: Pools {
                reader: pool.clone(),
                writer: Kept::new(pool, kept),
                keyring,
                taker: Default::default(),
                remembered: Default::default(),
            },
            hot: Kept::new(hot, hot_max as usize),
            claims: Kept::new(claims, 1),
            publishes: Kept::new(publishes, publishing as usize),
            announcing: std::sync::Arc::new(Announcer {
                token: uuid::Uuid::new_v4().simple().to_string(),
                ..Announcer::default()
            }),
        })
    }
}

/// A pool of up to `max` connections, waiting up to 5 s for one (see `group::MAX_WAIT`). A
/// connection is checked before use only when idle for [`CHECK_WHEN_IDLE`]: sqlx's default
/// checks it on every acquire, a round trip and a wake-up of PostgreSQL's backend per statement.
fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_WHEN_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// One array parameter of an `UNNEST` statement: `f` of every item.
fn column<'a, T, U>(items: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    items.iter().map(f).collect()
}

/// How the hub's values travel to PostgreSQL: native types, array parameters for lists.
mod repr {
    use chrono::{DateTime, Utc};
    use serde_json::value::RawValue;
    use sqlx::postgres::{PgArguments, PgQueryResult, PgRow};
    use sqlx::query::Query;
    use sqlx::types::Json;
    use sqlx::{Column, Postgres, Row, TypeInfo};
    use uuid::Uuid;

    use crate::store::sql::Arg;
    use crate::store::{StoreError, StoreResult};

    /// An array parameter takes any number of ids.
    pub const IDS_PER_STATEMENT: usize = usize::MAX;

    pub fn bind<'q>(
        q: Query<'q, Postgres, PgArguments>,
        arg: Arg<'q>,
    ) -> Query<'q, Postgres, PgArguments> {
        match arg {
            Arg::Uuid(v) => q.bind(v),
            Arg::OptUuid(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::OptText(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
            Arg::Time(v) => q.bind(v),
            Arg::OptTime(v) => q.bind(v),
            // JSONB, sent as the store encoded it.
            Arg::Json(v) => q.bind(Json(RawValue::from_string(v.to_owned()).ok())),
            Arg::Names(v) => q.bind(v),
            Arg::Uuids(v) => q.bind(v),
        }
    }

    pub fn id_list(first: usize, ids: &[Uuid]) -> (String, Vec<Arg<'_>>) {
        (format!("SELECT UNNEST(${first})"), vec![Arg::Uuids(ids)])
    }

    pub fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    /// INTEGER columns are `int4`; counts are `int8`.
    fn is_int4(row: &PgRow, col: &str) -> StoreResult<bool> {
        Ok(row.try_column(col)?.type_info().name() == "INT4")
    }

    pub fn int(row: &PgRow, col: &str) -> StoreResult<i64> {
        if is_int4(row, col)? {
            Ok(row.try_get::<i32, _>(col)?.into())
        } else {
            Ok(row.try_get(col)?)
        }
    }

    pub fn opt_int(row: &PgRow, col: &str) -> StoreResult<Option<i64>> {
        if is_int4(row, col)? {
            Ok(row.try_get::<Option<i32>, _>(col)?.map(i64::from))
        } else {
            Ok(row.try_get(col)?)
        }
    }

    pub fn time(row: &PgRow, col: &str) -> StoreResult<DateTime<Utc>> {
        Ok(row.try_get(col)?)
    }

    pub fn opt_time(row: &PgRow, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(row.try_get(col)?)
    }

    pub fn names(row: &PgRow, col: &str) -> StoreResult<Vec<String>> {
        row.try_get(col)
            .map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
    }
}

driver!(Postgres, PgConnection, PgRow, repr);

impl Dialect for PostgresStore {
    type Db = Postgres;
    type Conn = PgConnection;

    const BACKEND: Backend = Backend::Postgres;
    const MATCHING_DESTINATIONS: &'static str = concat!(
        "WITH m AS (",
        matching!("$1", "$2"),
        ") SELECT m.*, (SELECT ",
        fingerprint!(),
        " FROM m) AS fingerprint FROM m ORDER BY id, connector"
    );
    const CHECKS_DESTINATIONS: bool = true;
    const ROW_LOCKS: bool = true;

    fn name_not_in(column: &str, n: usize) -> String {
        format!("NOT ({column} = ANY (${n}))")
    }

    fn pools(&self) -> &Pools<Postgres> {
        &self.pools
    }

    fn publisher(&self) -> &Kept<Postgres> {
        &self.publishes
    }

    const ONE_STATEMENT_PUBLISH: bool = true;

    /// One statement: the events, then their deliveries (whose foreign keys are checked at its
    /// end, when the events are there).
    async fn insert_published(
        conn: &mut PgConnection,
        events: &[&NewEvent],
        rows: &[DeliveryRow<'_>],
        owner: Option<&str>,
    ) -> StoreResult<()> {
        published(INSERT_PUBLISHED, events, rows, owner)
            .fetch_one(conn)
            .await?;
        Ok(())
    }

    async fn insert_published_if_same(
        conn: &mut PgConnection,
        events: &[&NewEvent],
        rows: &[DeliveryRow<'_>],
        owner: Option<&str>,
        known: &Fingerprints<'_>,
    ) -> StoreResult<bool> {
        Ok(published(INSERT_PUBLISHED_IF_SAME, events, rows, owner)
            .bind(&known.types)
            .bind(&known.fingerprints)
            .bind(known.at)
            .fetch_one(conn)
            .await?)
    }

    async fn claim(&self, claim: Claim<'_>) -> StoreResult<Vec<ClaimedDelivery>> {
        // The common case in one statement (no transaction, one round trip): due work of closed
        // circuits and connectors, SKIP LOCKED so instances take disjoint rows, leased and read
        // back with everything the attempts need. It also says whether some circuit's cool-off
        // is over; only then is the probe-aware claim below needed.
        let mut conn = self.claims.take().await?;
        let rows = sqlx::query(&FAST_CLAIM)
            .bind(claim.now)
            .bind(i64::from(claim.limit))
            .bind(&claim.skip.subscriptions)
            .bind(&claim.skip.connectors)
            .bind(claim.owner)
            .bind(claim.lease_until)
            .bind(claim.connectors)
            .bind(claim.loaded)
            .fetch_all(&mut *conn)
            .await?;
        conn.keep();
        let probes_due = rows
            .first()
            .map(|r| r.try_get::<bool, _>("probes_due"))
            .transpose()?
            .unwrap_or(false);
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            // The one row of an empty claim carries only the flag.
            if row.try_get::<Option<Uuid>, _>("id")?.is_some() {
                claimed.push(claimed_from_row(row, self.keyring())?);
            }
        }
        let room = claim.limit.saturating_sub(claimed.len() as u32);
        if probes_due && room > 0 {
            let rest = Claim {
                limit: room,
                ..claim
            };
            claimed.extend(self.claim_with_probes(rest).await?);
        }
        Ok(claimed)
    }

    /// The common group (no failures, each delivery once) is one statement; otherwise rounds
    /// of it in a transaction, then the circuit transitions of failing subscriptions in order.
    async fn record(
        &self,
        records: Vec<AttemptRecord>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        let (all_ok, failing) = split_by_failures(&records);
        let rounds = rounds_of_distinct_deliveries(&records);
        if failing.is_empty() && rounds.len() == 1 {
            // The common case: one statement, one round trip, atomic on its own.
            let mut conn = self.hot.take().await?;
            let moved = Self::apply_records(&mut *conn, &records, &all_ok, now).await?;
            conn.keep();
            return Ok(moved);
        }
        let mut conn = self.hot.take().await?;
        let mut tx = conn.begin().await?;
        // The writers run concurrently, and this transaction updates several subscription rows
        // (circuit breakers): taking them all first, in id order, is what keeps two groups from
        // each holding a row the other waits for (PostgreSQL would abort one as a deadlock, and
        // its attempts would wait for their leases to expire).
        let mut subscriptions: Vec<Uuid> =
            records.iter().filter_map(|r| r.subscription_id).collect();
        subscriptions.sort_unstable();
        subscriptions.dedup();
        if !subscriptions.is_empty() {
            sqlx::query("SELECT 1 FROM subscriptions WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&subscriptions)
                .execute(&mut *tx)
                .await?;
        }
        // A delivery recorded twice (a lease lost and won again) is applied in order: each
        // round holds every delivery at most once.
        let mut updated = vec![false; records.len()];
        for round in rounds {
            let subset: Vec<AttemptRecord> = round.iter().map(|&i| records[i].clone()).collect();
            let moved = Self::apply_records(&mut *tx, &subset, &all_ok, now).await?;
            for (&i, moved) in round.iter().zip(moved) {
                updated[i] = moved;
            }
        }

        // Circuit breakers of subscriptions with a failure: their attempts one by one, in the
        // order they happened (those with only successes were reset above).
        for record in records
            .iter()
            .filter(|r| r.subscription_id.is_some_and(|s| failing.contains(&s)))
        {
            apply_to_circuit(&mut *tx, record, now).await?;
        }
        commit::<Self>(tx).await?;
        conn.keep();
        Ok(updated)
    }

    async fn notify_peers(&self) {
        use std::sync::atomic::Ordering;
        let announcer = &self.announcing;
        announcer.dirty.store(true, Ordering::Release);
        if announcer.running.swap(true, Ordering::AcqRel) {
            return;
        }
        // The pool reads and writes share (a NOTIFY keeps no connection).
        let (pool, announcer) = (self.reader().clone(), self.announcing.clone());
        tokio::spawn(async move {
            loop {
                // Cleared before sending: anything committed from here on is covered by this
                // NOTIFY or by the next round.
                while announcer.dirty.swap(false, Ordering::AcqRel) {
                    if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(WORK_CHANNEL)
                        .bind(&announcer.token)
                        .execute(&pool)
                        .await
                    {
                        tracing::debug!(error = %e, "NOTIFY failed; peers fall back to polling");
                    }
                    tokio::time::sleep(ANNOUNCE_EVERY).await;
                }
                announcer.running.store(false, Ordering::Release);
                // A publish that found `running` still set just before it was cleared.
                if !announcer.dirty.load(Ordering::Acquire)
                    || announcer.running.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        });
    }

    async fn wait_for_peers(
        &self,
        wake: Arc<tokio::sync::Notify>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        while !*stop.borrow() {
            let mut listener = match sqlx::postgres::PgListener::connect_with(self.reader()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; relying on polling for now");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            if let Err(e) = listener.listen(WORK_CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; relying on polling for now");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = stop.changed() => return,
                }
            }
            loop {
                tokio::select! {
                    received = listener.recv() => match received {
                        // Its own engine was woken when the work was committed.
                        Ok(notice) if notice.payload() == self.announcing.token => {}
                        Ok(_) => wake.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                            break;
                        }
                    },
                    _ = stop.changed() => return,
                }
            }
            // A wake after reconnecting catches anything announced while we were away.
            wake.notify_one();
        }
    }
}

impl PostgresStore {
    /// Inserts the attempts, moves the deliveries still leased by their recorder, writes the
    /// dead letters and resets the circuits of `succeeded_subscriptions`, in one statement.
    /// `records` must name each delivery at most once. Returns, per record, whether its
    /// delivery moved.
    async fn apply_records<'e>(
        executor: impl sqlx::PgExecutor<'e>,
        records: &[AttemptRecord],
        succeeded_subscriptions: &[Uuid],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        let changes: Vec<_> = records.iter().map(AttemptRecord::delivery_change).collect();
        let delivery_ids: Vec<Uuid> = records.iter().map(|r| r.delivery_id).collect();
        let moved: Vec<Uuid> = sqlx::query_scalar(
            "WITH r AS ( \
               SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::text[], \
                 $6::int[], $7::text[], $8::text[], $9::bigint[], $10::timestamptz[], $11::text[], \
                 $12::timestamptz[], $13::text[], $14::text[], $15::uuid[], $18::uuid[], $19::text[], \
                 $20::bool[], $21::uuid[], $23::text[], $24::text[], $25::bigint[], $26::text[]) \
               AS r(attempt_id, delivery_id, event_id, attempt, outcome, response_status, \
                 response_body, error, duration_ms, started_at, status, next_at, last_error, \
                 owner, dead_letter_id, subscription_id, connector, quiet, notice_id, reported, \
                 external_id, retry_after_ms, body_sha256)), \
             a AS ( \
               INSERT INTO attempts (id, delivery_id, event_id, attempt, outcome, response_status, \
                 response_body, error, duration_ms, started_at, subscription_id, connector, \
                 reported, external_id, retry_after_ms, body_sha256) \
               SELECT attempt_id, delivery_id, event_id, attempt, outcome, response_status, \
                 response_body, error, duration_ms, started_at, subscription_id, connector, \
                 reported, external_id, retry_after_ms, body_sha256 FROM r), \
             u AS ( \
               UPDATE deliveries d SET status = r.status, attempts = r.attempt, \
                 next_attempt_at = COALESCE(r.next_at, d.next_attempt_at), last_error = r.last_error, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $16 \
               FROM r WHERE d.id = ANY($2) AND d.id = r.delivery_id \
                 AND d.status = 'in_flight' AND d.lease_owner = r.owner \
               RETURNING d.id), \
             dl AS ( \
               INSERT INTO dead_letters (id, delivery_id, event_id, attempts, last_error, created_at, \
                 event_type) \
               SELECT r.dead_letter_id, r.delivery_id, r.event_id, r.attempt, r.last_error, $16, \
                 (SELECT e.event_type FROM events e WHERE e.id = r.event_id) \
               FROM r JOIN u ON u.id = r.delivery_id WHERE r.status = 'dead'), \
             dead AS ( \
               INSERT INTO hub_notices (id, kind, subscription_id, delivery_id, connector, detail, \
                 created_at) \
               SELECT r.notice_id, $22, r.subscription_id, r.delivery_id, r.connector, r.last_error, $16 \
               FROM r JOIN u ON u.id = r.delivery_id WHERE r.status = 'dead' AND NOT r.quiet), \
             s AS ( \
               UPDATE subscriptions SET consecutive_failures = 0, circuit_state = 'closed', \
                 circuit_open_until = NULL, circuit_trips = 0 \
               WHERE id = ANY($17) AND (consecutive_failures <> 0 OR circuit_state <> 'closed')) \
             SELECT id FROM u",
        )
        .bind(column(records, |_| Uuid::now_v7()))
        .bind(&delivery_ids)
        .bind(column(records, |r| r.event_id))
        .bind(column(records, |r| r.attempt as i32))
        .bind(column(records, AttemptRecord::outcome))
        .bind(column(records, |r| r.response_status.map(i32::from)))
        .bind(column(records, |r| r.response_body.as_deref()))
        .bind(column(records, |r| r.error.as_deref()))
        .bind(column(records, |r| r.duration_ms as i64))
        .bind(column(records, |r| r.started_at))
        .bind(column(&changes, |c| c.0))
        .bind(column(&changes, |c| c.1))
        .bind(column(&changes, |c| c.2.as_deref()))
        .bind(column(records, |r| r.owner.as_str()))
        .bind(column(records, |_| Uuid::now_v7()))
        .bind(now)
        .bind(succeeded_subscriptions)
        .bind(column(records, |r| r.subscription_id))
        .bind(column(records, |r| r.connector.as_deref()))
        .bind(column(records, |r| r.quiet))
        .bind(column(records, |_| Uuid::now_v7()))
        .bind(notice::DELIVERY_DEAD)
        .bind(column(records, AttemptRecord::reported))
        .bind(column(records, AttemptRecord::external_id))
        .bind(column(records, AttemptRecord::retry_after_ms))
        .bind(column(records, |r| r.body_sha256.as_deref()))
        .fetch_all(executor)
        .await?;
        let moved: std::collections::HashSet<Uuid> = moved.into_iter().collect();
        Ok(records
            .iter()
            .map(|r| moved.contains(&r.delivery_id))
            .collect())
    }
}
