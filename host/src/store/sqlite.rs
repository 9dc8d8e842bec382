//! SQLite backend: the zero-setup default.
//!
//! SQLite allows one writer at a time, so the store keeps a pool with exactly one writer
//! connection (transactions queue in the pool instead of failing with `SQLITE_BUSY`) beside a
//! pool of readers; in WAL mode readers never block the writer. `synchronous=FULL` makes a commit
//! durable before the API answers, so an acknowledged event survives power loss, not just a crash.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::common::{
    ATTEMPT_COLUMNS, CLOSE_CIRCUITS, HEAD_OF_ITS_KEY, INSERT_ATTEMPTS, admit_probes, admit_rated,
    attempt_args, commit, placeholders, record_one,
};
use super::kept::Kept;
use super::plan::{DeliveryRow, rounds_of_distinct_deliveries, split_by_failures};
use super::rows;
use super::seal::Keyring;
use super::sql::{Arg, Conn, DbRow, Dialect, Pools, driver};
use super::{StoreError, StoreResult};
use crate::model::{AttemptRecord, AttemptResult, Backend, Claim, ClaimedDelivery, NewEvent};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Readers beside the single writer.
const READERS: u32 = 4;

#[derive(Debug)]
pub struct SqliteStore {
    /// A single writer connection beside the readers.
    pools: Pools<Sqlite>,
}

/// How long a starting hub waits for the database file's lock: a hub being replaced may take a
/// few seconds to let go of it.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Takes `<database>.lock` exclusively for a hub serving the SQLite database at `url` (an OS
/// lock, released when the file is dropped or the process ends however it ends); `None` for an
/// in-memory database. SQLite would let a second hub open the same file and both would claim
/// the same deliveries under separate leases: a second hub is refused instead, after
/// [`LOCK_WAIT`]. (Tools and tests that open the store beside a hub do not take it.)
pub async fn exclusive(url: &str) -> StoreResult<Option<std::fs::File>> {
    let options = SqliteConnectOptions::from_str(url)?;
    let database = options.get_filename();
    if database.as_os_str() == ":memory:" || url.contains(":memory:") {
        return Ok(None);
    }
    if let Some(parent) = database.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
    }
    let mut path = database.as_os_str().to_owned();
    path.push(".lock");
    let path = std::path::PathBuf::from(path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Connect(format!("cannot create {}: {e}", path.display())))?;
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Connect(format!(
                    "another integrations-hub is using this file (it holds {}): SQLite serves one \
                     hub at a time; stop the other, or use PostgreSQL for several instances",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Connect(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )));
            }
        }
    }
}

/// Whether the writer connection may be used again: only when sqlx has no transaction open on
/// it; otherwise the pool closes it (SQLite rolls back whatever was left open) and opens a
/// fresh one.
///
/// Why: on a full or failing disk SQLite may roll a transaction back by itself (SQLITE_FULL,
/// SQLITE_IOERR). sqlx's own ROLLBACK then fails and its transaction depth stays at 1, so the
/// next `begin` would become a SAVEPOINT inside a transaction that is never committed: every
/// later write acknowledged, then lost. A connection whose depth is not back to 0 is discarded
/// instead. (A transaction dropped on an error path may not have run its queued ROLLBACK yet
/// when this looks: that connection is discarded too, which costs one reconnect after a failed
/// write and nothing on the hot path.)
fn outside_transaction(conn: &sqlx::SqliteConnection) -> bool {
    use sqlx::Connection as _;
    let idle = !conn.is_in_transaction();
    if !idle {
        tracing::warn!("the SQLite writer was released inside a transaction; reconnecting");
    }
    idle
}

impl SqliteStore {
    /// Opens (creating file and folder if needed) and migrates the database at `url`
    /// (`sqlite://path/to/file.db`, or `sqlite::memory:` for a throwaway database).
    pub async fn connect(url: &str, keyring: Keyring) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let filename = options.get_filename().to_path_buf();
        let in_memory = filename.as_os_str() == ":memory:" || url.contains(":memory:");
        if !in_memory && let Some(parent) = filename.parent().filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
        }

        // A file's connection does not break while idle: no check before each use (a round
        // trip to its thread).
        let mut writer_options = SqlitePoolOptions::new()
            .max_connections(1)
            // As PostgreSQL's pools: see `group::MAX_WAIT`.
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false);
        if !in_memory {
            // (An in-memory database lives in its one connection: it cannot be replaced.)
            writer_options = writer_options.after_release(|conn, _| {
                Box::pin(std::future::ready(Ok(outside_transaction(conn))))
            });
        }
        let writer = writer_options.connect_with(options.clone()).await?;
        MIGRATOR.run(&writer).await?;
        // An in-memory database exists once per connection: everything goes through the writer.
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(READERS)
                .acquire_timeout(Duration::from_secs(10))
                .test_before_acquire(false)
                .connect_with(options.read_only(true))
                .await?
        };
        Ok(Self {
            pools: Pools {
                reader,
                // The one connection every write shares, kept (an in-memory database's also
                // serves the reads, which take it from the pool: none kept).
                writer: Kept::new(writer, usize::from(!in_memory)),
                keyring,
                taker: Default::default(),
                remembered: Default::default(),
            },
        })
    }
}

/// How the hub's values are stored in SQLite: timestamps as integer microseconds since the
/// epoch, name lists as JSON arrays, id lists as one placeholder per id.
mod repr {
    use chrono::{DateTime, Utc};
    use sqlx::query::Query;
    use sqlx::sqlite::{SqliteArguments, SqliteQueryResult, SqliteRow};
    use sqlx::{Row, Sqlite};
    use uuid::Uuid;

    use crate::store::plan::encode_json;
    use crate::store::sql::Arg;
    use crate::store::{StoreError, StoreResult};

    /// Well under SQLite's 32,766 bound parameters.
    pub const IDS_PER_STATEMENT: usize = 500;

    pub fn bind<'q>(
        q: Query<'q, Sqlite, SqliteArguments<'q>>,
        arg: Arg<'q>,
    ) -> Query<'q, Sqlite, SqliteArguments<'q>> {
        match arg {
            Arg::Uuid(v) => q.bind(v),
            Arg::OptUuid(v) => q.bind(v),
            Arg::Text(v) | Arg::Json(v) => q.bind(v),
            Arg::OptText(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
            Arg::Time(v) => q.bind(v.timestamp_micros()),
            Arg::OptTime(v) => q.bind(v.map(|t| t.timestamp_micros())),
            Arg::Names(v) => q.bind(encode_json(&v)),
            Arg::Uuids(v) => q.bind(encode_json(&v)),
        }
    }

    pub fn id_list(first: usize, ids: &[Uuid]) -> (String, Vec<Arg<'_>>) {
        let list = (first..first + ids.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        (list, ids.iter().map(|id| Arg::Uuid(*id)).collect())
    }

    pub fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    pub fn int(row: &SqliteRow, col: &str) -> StoreResult<i64> {
        Ok(row.try_get(col)?)
    }

    pub fn opt_int(row: &SqliteRow, col: &str) -> StoreResult<Option<i64>> {
        Ok(row.try_get(col)?)
    }

    pub fn time(row: &SqliteRow, col: &str) -> StoreResult<DateTime<Utc>> {
        from_micros(row.try_get(col)?)
    }

    pub fn opt_time(row: &SqliteRow, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        row.try_get::<Option<i64>, _>(col)?
            .map(from_micros)
            .transpose()
    }

    pub fn names(row: &SqliteRow, col: &str) -> StoreResult<Vec<String>> {
        serde_json::from_str(&row.try_get::<String, _>(col)?)
            .map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
    }

    fn from_micros(us: i64) -> StoreResult<DateTime<Utc>> {
        DateTime::from_timestamp_micros(us)
            .ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} out of range")))
    }
}

driver!(Sqlite, SqliteConnection, SqliteRow, repr);

impl Dialect for SqliteStore {
    type Db = Sqlite;
    type Conn = SqliteConnection;

    const BACKEND: Backend = Backend::Sqlite;
    const MATCHING_DESTINATIONS: &'static str = "SELECT id, NULL AS connector, \
         CASE WHEN circuit_state = 'open' THEN circuit_open_until END AS blocked_until, paused, filter, \
         ordered, (circuit_state = 'closed' AND rate_per_second IS NULL AND instance_id IS NULL \
           AND paused = 0) AS direct, url, headers, transform, \
         (SELECT json_group_array(ss.key_id || ':' || ss.secret ORDER BY ss.id DESC) \
           FROM subscription_secrets ss WHERE ss.subscription_id = subscriptions.id \
           AND (ss.expires_at IS NULL OR ss.expires_at > $2)) AS secrets \
         FROM subscriptions WHERE deleted_at IS NULL AND enabled = 1 \
         AND EXISTS (SELECT 1 FROM json_each(subscriptions.events) WHERE value = $1 OR value = '*') \
         UNION ALL SELECT NULL, name, NULL, 0, NULL, 0, 0, NULL, NULL, NULL, NULL FROM connector_bindings \
         WHERE EXISTS (SELECT 1 FROM json_each(connector_bindings.events) WHERE value = $1 OR value = '*') \
         ORDER BY id, connector";
    const ROW_LOCKS: bool = false;

    fn name_not_in(column: &str, n: usize) -> String {
        format!("{column} NOT IN (SELECT value FROM json_each(${n}))")
    }

    fn pools(&self) -> &Pools<Sqlite> {
        &self.pools
    }

    /// Each statement (up to 500 rows) is a round trip to SQLite's thread; a publish that fits
    /// in one of each (every single publish) sends both as one command, run in order.
    async fn insert_published(
        conn: &mut SqliteConnection,
        events: &[&NewEvent],
        rows: &[DeliveryRow<'_>],
        owner: Option<&str>,
    ) -> StoreResult<()> {
        let fits = events.len() <= repr::IDS_PER_STATEMENT && rows.len() <= repr::IDS_PER_STATEMENT;
        if fits && !events.is_empty() && !rows.is_empty() {
            let mut q = QueryBuilder::<Sqlite>::new("");
            push_events(&mut q, events);
            q.push("; ");
            push_deliveries(&mut q, rows, owner);
            q.build().execute(&mut *conn).await?;
            return Ok(());
        }
        for chunk in events.chunks(repr::IDS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("");
            push_events(&mut q, chunk);
            q.build().execute(&mut *conn).await?;
        }
        for chunk in rows.chunks(repr::IDS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("");
            push_deliveries(&mut q, chunk, owner);
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// One transaction on the single writer (so instances never take the same row), with one
    /// probe per subscription whose cool-off is over.
    async fn claim(&self, claim: Claim<'_>) -> StoreResult<Vec<ClaimedDelivery>> {
        let (now, lease_until, skip) = (claim.now, claim.lease_until, claim.skip);
        let at = now.timestamp_micros();
        let mut conn = self.writer().take().await?;
        let mut tx = conn.begin().await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT d.id, d.event_id, d.kind, d.subscription_id, d.connector, d.attempts, \
             e.event_type, e.payload, e.created_at AS event_created_at, e.traceparent, s.url, s.headers, s.transform, s.circuit_state, \
             s.rate_per_second, \
             ci.id AS instance_id, ci.connector AS instance_connector, ci.name AS instance_name, \
             ci.settings AS instance_settings \
             FROM deliveries d JOIN events e ON e.id = d.event_id \
             LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             LEFT JOIN connector_instances ci ON ci.id = s.instance_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= ",
        );
        // Connector deliveries only for connectors running here; the rest wait for an instance
        // that has them (SQLite accepts an empty `IN ()`).
        q.push_bind(at)
            .push(" AND ((d.kind = 'connector' AND d.connector IN (");
        let mut list = q.separated(", ");
        for name in claim.connectors {
            list.push_bind(name.as_str());
        }
        q.push(
            ")) OR (s.enabled = 1 AND s.paused = 0 AND (s.rate_per_second IS NULL \
             OR s.rate_allow_at IS NULL OR s.rate_allow_at <= ",
        )
        .push_bind(at)
        .push(") AND (s.circuit_open_until IS NULL OR s.circuit_open_until <= ")
        .push_bind(at)
        // A connector instance's deliveries only where its component is loaded.
        .push(") AND (s.instance_id IS NULL OR ci.connector IN (");
        let mut list = q.separated(", ");
        for name in claim.loaded {
            list.push_bind(name.as_str());
        }
        q.push("))))");
        if !skip.subscriptions.is_empty() {
            q.push(" AND (d.subscription_id IS NULL OR d.subscription_id NOT IN (");
            let mut list = q.separated(", ");
            for id in &skip.subscriptions {
                list.push_bind(*id);
            }
            q.push("))");
        }
        if !skip.connectors.is_empty() {
            q.push(" AND (d.connector IS NULL OR d.connector NOT IN (");
            let mut list = q.separated(", ");
            for name in &skip.connectors {
                list.push_bind(name.as_str());
            }
            q.push("))");
        }
        q.push(" AND ")
            .push(HEAD_OF_ITS_KEY)
            .push(" ORDER BY d.next_attempt_at LIMIT ")
            .push_bind(i64::from(claim.limit));
        let candidates = q.build().fetch_all(&mut *tx).await?;
        let chosen = admit_probes(&mut *tx, &candidates, now, lease_until).await?;
        let chosen = admit_rated(&mut *tx, chosen, now, "").await?;
        if chosen.is_empty() {
            commit::<Self>(tx).await?;
            conn.keep();
            return Ok(Vec::new());
        }

        let ids = chosen
            .iter()
            .map(|r| r.uuid("id"))
            .collect::<StoreResult<Vec<_>>>()?;
        tx.exec_in(
            "UPDATE deliveries SET status = 'in_flight', lease_owner = $1, lease_expires_at = $2, \
             updated_at = $3 WHERE id IN ({ids})",
            &[
                Arg::Text(claim.owner),
                Arg::Time(lease_until),
                Arg::Time(now),
            ],
            &ids,
        )
        .await?;

        let mut subs = chosen
            .iter()
            .filter_map(|r| r.opt_uuid("subscription_id").transpose())
            .collect::<StoreResult<Vec<_>>>()?;
        subs.sort_unstable();
        subs.dedup();
        let mut secrets: HashMap<Uuid, Vec<String>> = HashMap::new();
        for row in tx
            .rows_in(
                "SELECT subscription_id, key_id || ':' || secret AS secret FROM subscription_secrets \
                 WHERE (expires_at IS NULL OR expires_at > $1) AND subscription_id IN ({ids}) ORDER BY id DESC",
                &[Arg::Time(now)],
                &subs,
            )
            .await?
        {
            secrets
                .entry(row.uuid("subscription_id")?)
                .or_default()
                .push(row.text("secret")?);
        }
        commit::<Self>(tx).await?;
        conn.keep();

        chosen
            .into_iter()
            .map(|row| {
                let secrets = row
                    .opt_uuid("subscription_id")?
                    .and_then(|sub| secrets.get(&sub).cloned())
                    .unwrap_or_default();
                rows::claimed(row, self.keyring(), secrets)
            })
            .collect()
    }

    /// One transaction, one commit (one flush) for the group. The common group (every attempt
    /// a success, each delivery once) is three statements whatever its size; any other applies
    /// its records one by one, in order (dead letters, circuit breakers).
    async fn record(
        &self,
        records: Vec<AttemptRecord>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        let mut conn = self.writer().take().await?;
        let mut tx = conn.begin().await?;
        let moved = if records.iter().all(|r| r.result == AttemptResult::Succeeded)
            && rounds_of_distinct_deliveries(&records).len() == 1
        {
            let (succeeded, _) = split_by_failures(&records);
            record_successes(&mut tx, &records, &succeeded, now).await?
        } else {
            let mut moved = Vec::with_capacity(records.len());
            for record in &records {
                moved.push(record_one(&mut *tx, record, now).await?);
            }
            moved
        };
        commit::<Self>(tx).await?;
        conn.keep();
        Ok(moved)
    }
}

/// Successful attempts of distinct deliveries: their rows inserted, the deliveries still leased
/// by their recorder moved (`UPDATE … FROM (VALUES …)`) and the circuits of `subscriptions`
/// reset, as one command of three statements per 500 records (SQLite runs them in order; `$n`
/// numbers the command's values), instead of three commands per record: each command is a
/// round trip to SQLite's thread. Returns, per record, whether its delivery moved.
async fn record_successes(
    conn: &mut SqliteConnection,
    records: &[AttemptRecord],
    subscriptions: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<Vec<bool>> {
    const MOVE_COLUMNS: usize = 3;
    let mut moved = HashSet::with_capacity(records.len());
    let chunks = records.chunks(repr::IDS_PER_STATEMENT);
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.enumerate() {
        let mut args: Vec<Arg<'_>> = chunk.iter().flat_map(attempt_args).collect();
        let mut sql = format!(
            "{INSERT_ATTEMPTS} VALUES {};",
            placeholders(1, chunk.len(), ATTEMPT_COLUMNS)
        );
        args.push(Arg::Time(now));
        let first = args.len() + 1;
        for r in chunk {
            args.extend([
                Arg::Uuid(r.delivery_id),
                Arg::Int(r.attempt.into()),
                Arg::Text(&r.owner),
            ]);
        }
        // VALUES columns are named column1, column2, … in SQLite.
        sql.push_str(&format!(
            " UPDATE deliveries SET status = 'succeeded', attempts = r.column2, last_error = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ${now} \
             FROM (VALUES {rows}) AS r WHERE deliveries.id = r.column1 \
             AND deliveries.status = 'in_flight' AND deliveries.lease_owner = r.column3 \
             RETURNING deliveries.id;",
            now = first - 1,
            rows = placeholders(first, chunk.len(), MOVE_COLUMNS)
        ));
        if i == last && !subscriptions.is_empty() {
            let (list, ids) = repr::id_list(args.len() + 1, subscriptions);
            sql.push(' ');
            sql.push_str(&CLOSE_CIRCUITS.replace("{ids}", &list));
            args.extend(ids);
        }
        for row in conn.rows(&sql, &args).await? {
            moved.insert(row.uuid("id")?);
        }
    }
    Ok(records
        .iter()
        .map(|r| moved.contains(&r.delivery_id))
        .collect())
}

/// `INSERT INTO events …` of `events`, onto `q`.
fn push_events<'a>(q: &mut QueryBuilder<'a, Sqlite>, events: &[&'a NewEvent]) {
    q.push("INSERT INTO events (id, event_type, payload, created_at, ordering_key, traceparent) ");
    q.push_values(events, |mut row, e| {
        row.push_bind(e.id)
            .push_bind(&e.event_type)
            .push_bind(&e.payload)
            .push_bind(e.created_at.timestamp_micros())
            .push_bind(e.ordering_key.as_deref())
            .push_bind(e.traceparent.as_deref());
    });
}

/// `INSERT INTO deliveries …` of `rows`, onto `q`; those with a `leased_until` leased to
/// `owner`.
fn push_deliveries<'a>(
    q: &mut QueryBuilder<'a, Sqlite>,
    rows: &[DeliveryRow<'a>],
    owner: Option<&'a str>,
) {
    q.push(
        "INSERT INTO deliveries (id, event_id, kind, subscription_id, connector, next_attempt_at, \
         created_at, updated_at, ordering_key, status, lease_owner, lease_expires_at) ",
    );
    q.push_values(rows, |mut row, d| {
        let at = d.at.timestamp_micros();
        let leased = d.leased_until.map(|until| until.timestamp_micros());
        row.push_bind(d.id)
            .push_bind(d.event_id)
            .push_bind(if d.subscription.is_some() {
                "webhook"
            } else {
                "connector"
            })
            .push_bind(d.subscription)
            .push_bind(d.connector)
            .push_bind(d.due.timestamp_micros())
            .push_bind(at)
            .push_bind(at)
            .push_bind(d.ordering_key)
            .push_bind(if leased.is_some() {
                "in_flight"
            } else {
                "pending"
            })
            .push_bind(owner.filter(|_| leased.is_some()))
            .push_bind(leased);
    });
}
