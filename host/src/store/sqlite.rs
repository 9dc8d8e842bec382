//! SQLite backend: the zero-setup default.
//!
//! SQLite allows one writer at a time, so the store keeps a pool with exactly one writer
//! connection (transactions queue in the pool instead of failing with `SQLITE_BUSY`) beside a
//! pool of readers; in WAL mode readers never block the writer. `synchronous=FULL` makes a commit
//! durable before the API answers, so an acknowledged event survives power loss, not just a crash.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use uuid::Uuid;

use super::{
    AttemptRecord, AttemptResult, AttemptView, Backend, Circuit, CircuitState, ClaimedDelivery,
    DeadLetter, Decision, DeliveryStatus, DeliverySummary, Destination, EventDetail,
    IDEMPOTENCY_TTL, INSERT_CHUNK, IdempotencyKey, KeyClaims, MAX_BULK_REPLAY, Match,
    NewSubscription, OutboxStats, PublishOutcome, PublishRequest, PublishedEvent, ReplayFilter,
    ReplayOutcome, SECRET_GRACE, Skip, Store, StoreError, StoreResult, Subscription,
    SubscriptionPatch, Target, circuit, decode_headers, decode_ids, distinct_types, encode_ids,
    encode_json, events_to_write, from_micros, group_outcomes, in_order, plan_deliveries,
    to_micros,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Readers beside the single writer.
const READERS: u32 = 4;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

const SUBSCRIPTION_COLUMNS: &str = "id, url, description, events, headers, enabled, circuit_state, consecutive_failures, created_at, updated_at";

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
    pub async fn connect(url: &str) -> StoreResult<Self> {
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
        let mut writer_options = SqlitePoolOptions::new()
            .max_connections(1)
            // As PostgreSQL's pools: see `group::MAX_WAIT`.
            .acquire_timeout(Duration::from_secs(5));
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
                .connect_with(options.read_only(true))
                .await?
        };
        Ok(Self { writer, reader })
    }

    async fn live_subscription(
        tx: &mut Transaction<'_, Sqlite>,
        id: Uuid,
    ) -> StoreResult<Option<Subscription>> {
        let row = sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ? AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        row.as_ref().map(subscription_from_row).transpose()
    }

    async fn published_events(
        conn: &mut sqlx::SqliteConnection,
        ids: &[Uuid],
    ) -> StoreResult<Vec<PublishedEvent>> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT e.id, e.event_type, e.created_at, \
                 (SELECT COUNT(*) FROM deliveries d WHERE d.event_id = e.id) AS deliveries \
                 FROM events e WHERE e.id IN (",
            );
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            for row in q.build().fetch_all(&mut *conn).await? {
                found.push(PublishedEvent {
                    id: row.try_get("id")?,
                    event_type: row.try_get("event_type")?,
                    created_at: from_micros(row.try_get("created_at")?)?,
                    deliveries: row.try_get::<i64, _>("deliveries")? as u32,
                });
            }
        }
        in_order(ids, found)
    }
}

impl SqliteStore {
    /// Claims an idempotency key for a publish of `ids`: `None` when claimed (new, or expired
    /// and taken over), otherwise what the request is answered instead.
    async fn claim_key(
        tx: &mut Transaction<'_, Sqlite>,
        key: &IdempotencyKey,
        ids: &[Uuid],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PublishOutcome>> {
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (key, fingerprint, event_ids, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             event_ids = excluded.event_ids, created_at = excluded.created_at, expires_at = excluded.expires_at \
             WHERE idempotency_keys.expires_at <= ?4",
        )
        .bind(&key.key)
        .bind(&key.fingerprint)
        .bind(encode_ids(ids))
        .bind(to_micros(now))
        .bind(to_micros(now + IDEMPOTENCY_TTL))
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            return Ok(None);
        }
        let row = sqlx::query("SELECT fingerprint, event_ids FROM idempotency_keys WHERE key = ?")
            .bind(&key.key)
            .fetch_one(&mut **tx)
            .await?;
        let fingerprint: String = row.try_get("fingerprint")?;
        if fingerprint != key.fingerprint {
            return Ok(Some(PublishOutcome::KeyMismatch));
        }
        let first = decode_ids(&row.try_get::<String, _>("event_ids")?)?;
        Ok(Some(PublishOutcome::Replayed(
            Self::published_events(tx, &first).await?,
        )))
    }
}

impl SqliteStore {
    /// Applies one attempt record inside `tx` (see [`Store::record_attempt`]).
    async fn record_one(
        tx: &mut Transaction<'_, Sqlite>,
        record: &AttemptRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let at = to_micros(now);
        let succeeded = record.result == AttemptResult::Succeeded;
        sqlx::query(
            "INSERT INTO attempts (id, delivery_id, event_id, attempt, outcome, response_status, response_body, \
             error, duration_ms, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(Uuid::now_v7())
        .bind(record.delivery_id)
        .bind(record.event_id)
        .bind(i64::from(record.attempt))
        .bind(record.outcome())
        .bind(record.response_status.map(i64::from))
        .bind(&record.response_body)
        .bind(&record.error)
        .bind(record.duration_ms as i64)
        .bind(to_micros(record.started_at))
        .execute(&mut **tx)
        .await?;

        let (status, next_at, error) = record.delivery_change();
        let next_at = next_at.map(to_micros);
        let updated = sqlx::query(
            "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = COALESCE(?, next_attempt_at), \
             last_error = ?, lease_owner = NULL, lease_expires_at = NULL, updated_at = ? \
             WHERE id = ? AND status = 'in_flight' AND lease_owner = ?",
        )
        .bind(status)
        .bind(i64::from(record.attempt))
        .bind(next_at)
        .bind(&error)
        .bind(at)
        .bind(record.delivery_id)
        .bind(&record.owner)
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if updated && record.result == AttemptResult::Dead {
            sqlx::query(
                "INSERT INTO dead_letters (id, delivery_id, event_id, attempts, last_error, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(Uuid::now_v7())
            .bind(record.delivery_id)
            .bind(record.event_id)
            .bind(i64::from(record.attempt))
            .bind(&error)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }

        if let Some(sub) = record.subscription_id {
            if succeeded {
                sqlx::query(
                    "UPDATE subscriptions SET consecutive_failures = 0, circuit_state = 'closed', \
                     circuit_open_until = NULL, circuit_trips = 0 \
                     WHERE id = ? AND (consecutive_failures <> 0 OR circuit_state <> 'closed')",
                )
                .bind(sub)
                .execute(&mut **tx)
                .await?;
            } else {
                let row = sqlx::query(
                    "UPDATE subscriptions SET consecutive_failures = consecutive_failures + 1 WHERE id = ? \
                     RETURNING consecutive_failures, circuit_state, circuit_trips",
                )
                .bind(sub)
                .fetch_optional(&mut **tx)
                .await?;
                if let Some(row) = row {
                    let failures = row.try_get::<i64, _>("consecutive_failures")?.max(0) as u32;
                    let state: String = row.try_get("circuit_state")?;
                    let trips = row.try_get::<i64, _>("circuit_trips")?.max(0) as u32;
                    if circuit::opens(&state, failures) {
                        let open_until = to_micros(now + circuit::cooloff(trips + 1));
                        sqlx::query(
                            "UPDATE subscriptions SET circuit_state = 'open', circuit_open_until = ?, \
                             circuit_trips = circuit_trips + 1 WHERE id = ?",
                        )
                        .bind(open_until)
                        .bind(sub)
                        .execute(&mut **tx)
                        .await?;
                        // Waiting work moves past the cool-off, so claims never wade through it.
                        sqlx::query(
                            "UPDATE deliveries SET next_attempt_at = ? \
                             WHERE subscription_id = ? AND status = 'pending' AND next_attempt_at < ?",
                        )
                        .bind(open_until)
                        .bind(sub)
                        .bind(open_until)
                        .execute(&mut **tx)
                        .await?;
                    }
                }
                if record.gone {
                    sqlx::query(
                        "UPDATE subscriptions SET enabled = 0, disabled_reason = ?, updated_at = ? WHERE id = ?",
                    )
                    .bind("the endpoint answered 410 Gone")
                    .bind(at)
                    .bind(sub)
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
        Ok(updated)
    }
}

fn subscription_from_row(row: &SqliteRow) -> StoreResult<Subscription> {
    let events: String = row.try_get("events")?;
    let headers: String = row.try_get("headers")?;
    let circuit_state: String = row.try_get("circuit_state")?;
    Ok(Subscription {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        events: serde_json::from_str(&events)
            .map_err(|e| StoreError::Corrupt(format!("subscription events: {e}")))?,
        enabled: row.try_get("enabled")?,
        description: row.try_get("description")?,
        headers: decode_headers(&headers)?,
        created_at: from_micros(row.try_get("created_at")?)?,
        updated_at: from_micros(row.try_get("updated_at")?)?,
        circuit: Circuit {
            state: CircuitState::parse(&circuit_state)?,
            consecutive_failures: row.try_get::<i64, _>("consecutive_failures")? as u32,
        },
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn create_subscription(&self, new: NewSubscription) -> StoreResult<Subscription> {
        let at = to_micros(new.created_at);
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO subscriptions (id, url, description, events, headers, enabled, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(new.id)
        .bind(&new.url)
        .bind(&new.description)
        .bind(encode_json(&new.events))
        .bind(encode_json(&new.headers))
        .bind(new.enabled)
        .bind(at)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO subscription_secrets (subscription_id, secret, created_at) VALUES (?, ?, ?)")
            .bind(new.id)
            .bind(&new.secret)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        let created = Self::live_subscription(&mut tx, new.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("subscription vanished after insert".into()))?;
        tx.commit().await?;
        Ok(created)
    }

    async fn get_subscription(&self, id: Uuid) -> StoreResult<Option<Subscription>> {
        let row = sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ? AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(subscription_from_row).transpose()
    }

    async fn list_subscriptions(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Subscription>> {
        let rows = sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions \
             WHERE deleted_at IS NULL AND (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(subscription_from_row).collect()
    }

    async fn update_subscription(
        &self,
        id: Uuid,
        patch: SubscriptionPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Subscription>> {
        let mut tx = self.writer.begin().await?;
        let Some(current) = Self::live_subscription(&mut tx, id).await? else {
            return Ok(None);
        };
        let at = to_micros(now);
        let enabled = patch.enabled.unwrap_or(current.enabled);
        sqlx::query(
            "UPDATE subscriptions SET url = ?, events = ?, enabled = ?, description = ?, headers = ?, \
             disabled_reason = CASE WHEN ? THEN NULL ELSE disabled_reason END, updated_at = ? WHERE id = ?",
        )
        .bind(patch.url.as_ref().unwrap_or(&current.url))
        .bind(encode_json(patch.events.as_ref().unwrap_or(&current.events)))
        .bind(enabled)
        .bind(patch.description.clone().unwrap_or(current.description.clone()))
        .bind(encode_json(patch.headers.as_ref().unwrap_or(&current.headers)))
        .bind(enabled)
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if let Some(secret) = &patch.secret {
            let current_secret: Option<String> = sqlx::query_scalar(
                "SELECT secret FROM subscription_secrets WHERE subscription_id = ? AND expires_at IS NULL",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if current_secret.as_deref() != Some(secret.as_str()) {
                sqlx::query("DELETE FROM subscription_secrets WHERE subscription_id = ? AND expires_at <= ?")
                    .bind(id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE subscription_secrets SET expires_at = ? WHERE subscription_id = ? AND expires_at IS NULL",
                )
                .bind(to_micros(now + SECRET_GRACE))
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO subscription_secrets (subscription_id, secret, created_at) VALUES (?, ?, ?)")
                    .bind(id)
                    .bind(secret)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let updated = Self::live_subscription(&mut tx, id).await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn delete_subscription(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<u64>> {
        let at = to_micros(now);
        let mut tx = self.writer.begin().await?;
        let deleted = sqlx::query(
            "UPDATE subscriptions SET deleted_at = ?, enabled = 0, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(at)
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        let cancelled = sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, \
             last_error = 'subscription deleted', updated_at = ? \
             WHERE subscription_id = ? AND status IN ('pending', 'in_flight')",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Nothing will be signed for a deleted subscription again: its secrets go now.
        sqlx::query("DELETE FROM subscription_secrets WHERE subscription_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(cancelled))
    }

    async fn subscription_secrets(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Vec<String>> {
        let secrets = sqlx::query_scalar(
            "SELECT secret FROM subscription_secrets \
             WHERE subscription_id = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY id DESC",
        )
        .bind(id)
        .bind(to_micros(now))
        .fetch_all(&self.reader)
        .await?;
        Ok(secrets)
    }

    async fn publish_group(
        &self,
        requests: Vec<PublishRequest>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PublishOutcome>> {
        let mut tx = self.writer.begin().await?;
        let mut decisions = Vec::with_capacity(requests.len());
        let mut claims = KeyClaims::default();
        for (i, request) in requests.iter().enumerate() {
            let Some(key) = &request.idempotency else {
                decisions.push(Decision::Write);
                continue;
            };
            if let Some(first) = claims.claimed_by(key) {
                decisions.push(Decision::SameKeyAs(first));
                continue;
            }
            let ids: Vec<Uuid> = request.events.iter().map(|e| e.id).collect();
            match Self::claim_key(&mut tx, key, &ids, now).await? {
                None => {
                    claims.claim(key, i);
                    decisions.push(Decision::Write);
                }
                Some(answer) => decisions.push(Decision::Answered(answer)),
            }
        }

        let events = events_to_write(&requests, &decisions);
        // Subscriptions matching each distinct event type of the group.
        let mut matches: HashMap<&str, Vec<Match>> = HashMap::new();
        for event_type in distinct_types(&events) {
            let subs: Vec<(Uuid, Option<i64>)> = sqlx::query_as(
                "SELECT id, CASE WHEN circuit_state = 'open' THEN circuit_open_until END \
                 FROM subscriptions WHERE deleted_at IS NULL AND enabled = 1 \
                 AND EXISTS (SELECT 1 FROM json_each(subscriptions.events) WHERE value = ? OR value = '*') \
                 ORDER BY id",
            )
            .bind(event_type)
            .fetch_all(&mut *tx)
            .await?;
            let subs = subs
                .into_iter()
                .map(|(id, until)| {
                    Ok(Match {
                        id,
                        blocked_until: until.map(from_micros).transpose()?,
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            matches.insert(event_type, subs);
        }
        let (rows, counts) = plan_deliveries(&events, &matches);
        for chunk in events.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (id, event_type, payload, created_at) ",
            );
            q.push_values(chunk, |mut row, e| {
                row.push_bind(e.id)
                    .push_bind(&e.event_type)
                    .push_bind(&e.payload)
                    .push_bind(to_micros(e.created_at));
            });
            q.build().execute(&mut *tx).await?;
        }
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO deliveries (id, event_id, kind, subscription_id, connector, next_attempt_at, created_at, updated_at) ",
            );
            q.push_values(chunk, |mut row, d| {
                let at = to_micros(d.at);
                row.push_bind(d.id)
                    .push_bind(d.event_id)
                    .push_bind(if d.subscription.is_some() {
                        "webhook"
                    } else {
                        "connector"
                    })
                    .push_bind(d.subscription)
                    .push_bind(d.connector)
                    .push_bind(to_micros(d.due))
                    .push_bind(at)
                    .push_bind(at);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(group_outcomes(&requests, decisions, &counts))
    }

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<EventDetail>> {
        let mut conn = self.reader.acquire().await?;
        let Some(event) =
            sqlx::query("SELECT id, event_type, payload, created_at FROM events WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
        else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT d.id, d.kind, d.subscription_id, s.url, d.connector, d.status, d.attempts, \
             d.next_attempt_at, d.last_error, d.updated_at \
             FROM deliveries d LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE d.event_id = ? ORDER BY d.id",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        let deliveries = rows
            .iter()
            .map(|row| {
                let status = DeliveryStatus::parse(&row.try_get::<String, _>("status")?)?;
                Ok(DeliverySummary {
                    id: row.try_get("id")?,
                    destination: destination_from_row(row)?,
                    status,
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                    next_attempt_at: match status {
                        DeliveryStatus::Pending => {
                            Some(from_micros(row.try_get("next_attempt_at")?)?)
                        }
                        _ => None,
                    },
                    last_error: row.try_get("last_error")?,
                    updated_at: from_micros(row.try_get("updated_at")?)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(EventDetail {
            id: event.try_get("id")?,
            event_type: event.try_get("event_type")?,
            payload: event.try_get("payload")?,
            created_at: from_micros(event.try_get("created_at")?)?,
            deliveries,
        }))
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        skip: &Skip,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let at = to_micros(now);
        let mut tx = self.writer.begin().await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT d.id, d.event_id, d.kind, d.subscription_id, d.connector, d.attempts, \
             e.event_type, e.payload, e.created_at AS event_created_at, s.url, s.headers, s.circuit_state \
             FROM deliveries d JOIN events e ON e.id = d.event_id \
             LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= ",
        );
        q.push_bind(at)
            .push(" AND (d.kind = 'connector' OR (s.enabled = 1 AND (s.circuit_open_until IS NULL OR s.circuit_open_until <= ")
            .push_bind(at)
            .push(")))");
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
        q.push(" ORDER BY d.next_attempt_at LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&mut *tx).await?;

        let mut probes: HashMap<Uuid, bool> = HashMap::new();
        let mut chosen = Vec::with_capacity(rows.len());
        for row in &rows {
            let sub: Option<Uuid> = row.try_get("subscription_id")?;
            let state: Option<String> = row.try_get("circuit_state")?;
            if let (Some(sub), Some(state)) = (sub, state.as_deref())
                && state != "closed"
            {
                // Cool-off over: exactly one probe; the rest wait for its verdict.
                if probes.contains_key(&sub) {
                    continue;
                }
                let took = sqlx::query(
                    "UPDATE subscriptions SET circuit_state = 'half_open', circuit_open_until = ? \
                     WHERE id = ? AND (circuit_open_until IS NULL OR circuit_open_until <= ?)",
                )
                .bind(to_micros(lease_until))
                .bind(sub)
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                probes.insert(sub, took);
                if !took {
                    continue;
                }
            }
            chosen.push(row);
        }
        if chosen.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }

        let ids: Vec<Uuid> = chosen
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "UPDATE deliveries SET status = 'in_flight', lease_owner = ",
            );
            q.push_bind(owner)
                .push(", lease_expires_at = ")
                .push_bind(to_micros(lease_until))
                .push(", updated_at = ")
                .push_bind(at)
                .push(" WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }

        let subs: Vec<Uuid> = {
            let mut v: Vec<Uuid> = chosen
                .iter()
                .filter_map(|r| {
                    r.try_get::<Option<Uuid>, _>("subscription_id")
                        .ok()
                        .flatten()
                })
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let mut secrets: HashMap<Uuid, Vec<String>> = HashMap::new();
        for chunk in subs.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT subscription_id, secret FROM subscription_secrets WHERE (expires_at IS NULL OR expires_at > ",
            );
            q.push_bind(at).push(") AND subscription_id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(") ORDER BY id DESC");
            for row in q.build().fetch_all(&mut *tx).await? {
                secrets
                    .entry(row.try_get("subscription_id")?)
                    .or_default()
                    .push(row.try_get("secret")?);
            }
        }
        tx.commit().await?;

        chosen
            .into_iter()
            .map(|row| {
                let target = Target::from_parts(
                    &row.try_get::<String, _>("kind")?,
                    row.try_get("subscription_id")?,
                    row.try_get("url")?,
                    row.try_get("headers")?,
                    row.try_get("connector")?,
                    row.try_get::<Option<Uuid>, _>("subscription_id")?
                        .and_then(|sub| secrets.get(&sub).cloned())
                        .unwrap_or_default(),
                )?;
                Ok(ClaimedDelivery {
                    id: row.try_get("id")?,
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("event_type")?,
                    event_created_at: from_micros(row.try_get("event_created_at")?)?,
                    payload: row.try_get("payload")?,
                    attempts: row.try_get::<i64, _>("attempts")?.max(0) as u32,
                    target,
                })
            })
            .collect()
    }

    async fn record_attempts(
        &self,
        records: Vec<AttemptRecord>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        // One writer, no round trips: the group's gain here is one commit (one flush) for all,
        // so each record keeps its simple statements.
        let mut tx = self.writer.begin().await?;
        let mut all = Vec::with_capacity(records.len());
        for record in &records {
            all.push(Self::record_one(&mut tx, record, now).await?);
        }
        tx.commit().await?;
        Ok(all)
    }

    async fn release_expired_leases(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let at = to_micros(now);
        let released = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
             next_attempt_at = ?1, updated_at = ?1 WHERE status = 'in_flight' AND lease_expires_at <= ?1",
        )
        .bind(at)
        .execute(&self.writer)
        .await?;
        Ok(released.rows_affected())
    }

    async fn release_deliveries(
        &self,
        owner: &str,
        ids: &[Uuid],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut released = 0;
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = ",
            );
            q.push_bind(to_micros(now))
                .push(" WHERE status = 'in_flight' AND lease_owner = ")
                .push_bind(owner)
                .push(" AND id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            released += q.build().execute(&self.writer).await?.rows_affected();
        }
        Ok(released)
    }

    async fn release_leases(&self, owner: &str, now: DateTime<Utc>) -> StoreResult<u64> {
        let at = to_micros(now);
        let released = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
             next_attempt_at = ?1, updated_at = ?1 WHERE status = 'in_flight' AND lease_owner = ?2",
        )
        .bind(at)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(released.rows_affected())
    }

    async fn list_attempts(&self, event_id: Uuid) -> StoreResult<Vec<AttemptView>> {
        let rows = sqlx::query(
            "SELECT a.id, a.event_id, a.delivery_id, d.kind, d.subscription_id, s.url, d.connector, a.attempt, \
             a.outcome, a.response_status, a.response_body, a.error, a.duration_ms, a.started_at \
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
             LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE a.event_id = ? ORDER BY a.started_at, a.id LIMIT 1000",
        )
        .bind(event_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AttemptView {
                    id: row.try_get("id")?,
                    event_id: row.try_get("event_id")?,
                    delivery_id: row.try_get("delivery_id")?,
                    destination: destination_from_row(row)?,
                    attempt: row.try_get::<i64, _>("attempt")?.max(0) as u32,
                    succeeded: row.try_get::<String, _>("outcome")? == "succeeded",
                    response_status: row
                        .try_get::<Option<i64>, _>("response_status")?
                        .map(|s| s as u16),
                    response_body: row.try_get("response_body")?,
                    error: row.try_get("error")?,
                    duration_ms: row.try_get::<i64, _>("duration_ms")?.max(0) as u64,
                    started_at: from_micros(row.try_get("started_at")?)?,
                })
            })
            .collect()
    }

    async fn list_dead_letters(
        &self,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT dl.id, dl.event_id, dl.delivery_id, d.kind, d.subscription_id, s.url, d.connector, \
             dl.attempts, dl.last_error, dl.created_at, dl.replayed_at \
             FROM dead_letters dl JOIN deliveries d ON d.id = dl.delivery_id \
             LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE (?1 IS NULL OR dl.id < ?1) ORDER BY dl.id DESC LIMIT ?2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    id: row.try_get("id")?,
                    event_id: row.try_get("event_id")?,
                    delivery_id: row.try_get("delivery_id")?,
                    destination: destination_from_row(row)?,
                    attempts: row.try_get::<i64, _>("attempts")?.max(0) as u32,
                    last_error: row.try_get("last_error")?,
                    created_at: from_micros(row.try_get("created_at")?)?,
                    replayed_at: row
                        .try_get::<Option<i64>, _>("replayed_at")?
                        .map(from_micros)
                        .transpose()?,
                })
            })
            .collect()
    }

    async fn replay_dead_letter(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<ReplayOutcome> {
        let at = to_micros(now);
        let mut tx = self.writer.begin().await?;
        let Some(row) = sqlx::query(
            "SELECT dl.delivery_id, dl.replayed_at, d.kind, s.deleted_at FROM dead_letters dl \
             JOIN deliveries d ON d.id = dl.delivery_id LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE dl.id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(ReplayOutcome::NotFound);
        };
        if row.try_get::<Option<i64>, _>("replayed_at")?.is_some() {
            return Ok(ReplayOutcome::AlreadyReplayed);
        }
        if row.try_get::<String, _>("kind")? == "webhook"
            && row.try_get::<Option<i64>, _>("deleted_at")?.is_some()
        {
            return Ok(ReplayOutcome::SubscriptionDeleted);
        }
        let delivery_id: Uuid = row.try_get("delivery_id")?;
        sqlx::query("UPDATE dead_letters SET replayed_at = ? WHERE id = ?")
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?1, last_error = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?1 WHERE id = ?2 AND status = 'dead'",
        )
        .bind(at)
        .bind(delivery_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ReplayOutcome::Replayed { delivery_id })
    }

    async fn replay_dead_letters(
        &self,
        filter: ReplayFilter,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let at = to_micros(now);
        let mut tx = self.writer.begin().await?;
        let rows = sqlx::query(
            "SELECT dl.id, dl.delivery_id FROM dead_letters dl JOIN deliveries d ON d.id = dl.delivery_id \
             LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE dl.replayed_at IS NULL AND (?1 IS NULL OR dl.created_at >= ?1) AND (?2 IS NULL OR dl.created_at < ?2) \
             AND (?3 IS NULL OR d.subscription_id = ?3) AND (?4 IS NULL OR d.connector = ?4) \
             AND (d.kind = 'connector' OR s.deleted_at IS NULL) ORDER BY dl.id LIMIT ?5",
        )
        .bind(filter.since.map(to_micros))
        .bind(filter.until.map(to_micros))
        .bind(filter.subscription_id)
        .bind(&filter.connector)
        .bind(i64::from(MAX_BULK_REPLAY))
        .fetch_all(&mut *tx)
        .await?;
        let pairs: Vec<(Uuid, Uuid)> = rows
            .iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("delivery_id")?)))
            .collect::<StoreResult<_>>()?;
        for chunk in pairs.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("UPDATE dead_letters SET replayed_at = ");
            q.push_bind(at).push(" WHERE id IN (");
            let mut list = q.separated(", ");
            for (id, _) in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
            let mut q = QueryBuilder::<Sqlite>::new(
                "UPDATE deliveries SET status = 'pending', attempts = 0, last_error = NULL, lease_owner = NULL, \
                 lease_expires_at = NULL, next_attempt_at = ",
            );
            q.push_bind(at)
                .push(", updated_at = ")
                .push_bind(at)
                .push(" WHERE status = 'dead' AND id IN (");
            let mut list = q.separated(", ");
            for (_, delivery) in chunk {
                list.push_bind(*delivery);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(pairs.len() as u64)
    }

    async fn outbox_stats(&self, _now: DateTime<Utc>) -> StoreResult<OutboxStats> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM deliveries \
             WHERE status IN ('pending', 'in_flight')",
        )
        .fetch_one(&self.reader)
        .await?;
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM subscriptions WHERE deleted_at IS NULL AND circuit_state <> 'closed'",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(OutboxStats {
            pending: row.try_get::<i64, _>("pending")?.max(0) as u64,
            oldest_pending_created_at: row
                .try_get::<Option<i64>, _>("oldest")?
                .map(from_micros)
                .transpose()?,
            open_circuits: open.max(0) as u64,
        })
    }

    async fn prune(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let mut tx = self.writer.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.created_at < ?1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status IN ('pending', 'in_flight')) \
             ORDER BY e.created_at LIMIT ?2)",
        )
        .bind(to_micros(before))
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= ?")
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}

fn destination_from_row(row: &SqliteRow) -> StoreResult<Destination> {
    Destination::from_parts(
        &row.try_get::<String, _>("kind")?,
        row.try_get("subscription_id")?,
        row.try_get("url")?,
        row.try_get("connector")?,
    )
}
