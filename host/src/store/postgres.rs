//! PostgreSQL backend: for production and for several hub instances sharing one database.
//!
//! Bulk writes use `UNNEST` over array parameters, so a publish of one event or of a thousand is
//! the same handful of prepared statements, one round trip each.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::{
    AttemptRecord, AttemptResult, AttemptView, Backend, Circuit, CircuitState, ClaimedDelivery,
    DeadLetter, Decision, DeliveryStatus, DeliverySummary, Destination, EventDetail,
    IDEMPOTENCY_TTL, IdempotencyKey, KeyClaims, MAX_BULK_REPLAY, Match, NewSubscription,
    OutboxStats, PublishOutcome, PublishRequest, PublishedEvent, ReplayFilter, ReplayOutcome,
    SECRET_GRACE, Skip, Store, StoreError, StoreResult, Subscription, SubscriptionPatch, Target,
    circuit, decode_headers, decode_ids, distinct_types, encode_ids, encode_json, events_to_write,
    group_outcomes, in_order, plan_deliveries, rounds_of_distinct_deliveries, split_by_failures,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Planner settings of the delivery hot path's connections. Its statements are primary-key
/// lookups and one ordered walk of `deliveries_due` that stops at its limit; nothing else is ever
/// cheaper. But a queue table's statistics are stale by nature (a burst of 100,000 rows lands
/// between two autoanalyze runs), and then the planner sorts every pending row, or bitmap-scans an
/// index full of dead entries, or scans the table. Measured with 100,000 pending: 400 ms per
/// claim instead of 0.4 ms. These keep the index plans on those connections only. (Plain index
/// scans also mark dead entries as they pass, which bitmap scans never do.)
const HOT_PATH_SETTINGS: [(&str, &str); 3] = [
    ("enable_sort", "off"),
    ("enable_bitmapscan", "off"),
    ("enable_seqscan", "off"),
];

/// The channel instances use to wake each other (`LISTEN`/`NOTIFY`).
const WORK_CHANNEL: &str = "ih_work";

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Set while a NOTIFY is queued, so a burst of publishes sends one.
    announcing: std::sync::Arc<Announcer>,
    /// Connections of the delivery hot path (claims, attempt records): see [`HOT_PATH_SETTINGS`].
    hot: PgPool,
}

/// Coalesces `NOTIFY`s: the first publish after a quiet spell is announced at once; a burst
/// sends one more at most every [`ANNOUNCE_EVERY`], covering everything committed meanwhile.
#[derive(Debug, Default)]
struct Announcer {
    /// Work was committed since the last `NOTIFY` went out.
    dirty: std::sync::atomic::AtomicBool,
    /// A sender task is running.
    running: std::sync::atomic::AtomicBool,
}

/// Shortest gap between two `NOTIFY`s of one instance under load. Peers are woken at most this
/// late (this instance's own engine is woken directly); each `NOTIFY` takes a database-wide lock
/// at commit, so one per publish would cost every instance.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(5);

const SUBSCRIPTION_COLUMNS: &str = "id, url, description, events, headers::text AS headers, enabled, circuit_state, \
     consecutive_failures, created_at, updated_at";

impl PostgresStore {
    /// Connects to `url` with up to `max_connections` connections and applies the migrations
    /// (sqlx takes an advisory lock, so instances starting together migrate once).
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        // JIT compilation pays off for long analytical queries; the hub's are all short, and
        // JIT would turn a sub-millisecond claim into 200 ms of compiling.
        let options = PgConnectOptions::from_str(url)?
            .application_name("integrations-hub")
            .options([("jit", "off")]);
        // Of the connection budget, a few serve the delivery hot path: one claiming loop and
        // the attempt-record writers.
        let hot_connections = (max_connections / 3).clamp(1, 6);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.saturating_sub(hot_connections).max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let hot = PgPoolOptions::new()
            .max_connections(hot_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.options(HOT_PATH_SETTINGS.iter().copied()))
            .await?;
        Ok(Self {
            pool,
            hot,
            announcing: Default::default(),
        })
    }

    /// The pool, for tests and tools that need raw access.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn live_subscription(
        tx: &mut Transaction<'_, Postgres>,
        id: Uuid,
    ) -> StoreResult<Option<Subscription>> {
        let row = sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        row.as_ref().map(subscription_from_row).transpose()
    }

    async fn published_events(
        conn: &mut sqlx::PgConnection,
        ids: &[Uuid],
    ) -> StoreResult<Vec<PublishedEvent>> {
        let rows = sqlx::query(
            "SELECT e.id, e.event_type, e.created_at, \
             (SELECT COUNT(*) FROM deliveries d WHERE d.event_id = e.id) AS deliveries \
             FROM events e WHERE e.id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
        let found = rows
            .iter()
            .map(|row| {
                Ok(PublishedEvent {
                    id: row.try_get("id")?,
                    event_type: row.try_get("event_type")?,
                    created_at: row.try_get("created_at")?,
                    deliveries: row.try_get::<i64, _>("deliveries")? as u32,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        in_order(ids, found)
    }
}

impl PostgresStore {
    /// Claims an idempotency key for a publish of `ids`: `None` when claimed (new, or expired
    /// and taken over), otherwise what the request is answered instead.
    async fn claim_key(
        tx: &mut Transaction<'_, Postgres>,
        key: &IdempotencyKey,
        ids: &[Uuid],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PublishOutcome>> {
        // A concurrent request with the same key waits here for the first to commit, then
        // sees its live record and replays it.
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (key, fingerprint, event_ids, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             event_ids = excluded.event_ids, created_at = excluded.created_at, expires_at = excluded.expires_at \
             WHERE idempotency_keys.expires_at <= $4",
        )
        .bind(&key.key)
        .bind(&key.fingerprint)
        .bind(encode_ids(ids))
        .bind(now)
        .bind(now + IDEMPOTENCY_TTL)
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            return Ok(None);
        }
        let row = sqlx::query("SELECT fingerprint, event_ids FROM idempotency_keys WHERE key = $1")
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
                 $12::timestamptz[], $13::text[], $14::text[], $15::uuid[]) \
               AS r(attempt_id, delivery_id, event_id, attempt, outcome, response_status, \
                 response_body, error, duration_ms, started_at, status, next_at, last_error, \
                 owner, dead_letter_id)), \
             a AS ( \
               INSERT INTO attempts (id, delivery_id, event_id, attempt, outcome, response_status, \
                 response_body, error, duration_ms, started_at) \
               SELECT attempt_id, delivery_id, event_id, attempt, outcome, response_status, \
                 response_body, error, duration_ms, started_at FROM r), \
             u AS ( \
               UPDATE deliveries d SET status = r.status, attempts = r.attempt, \
                 next_attempt_at = COALESCE(r.next_at, d.next_attempt_at), last_error = r.last_error, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $16 \
               FROM r WHERE d.id = ANY($2) AND d.id = r.delivery_id \
                 AND d.status = 'in_flight' AND d.lease_owner = r.owner \
               RETURNING d.id), \
             dl AS ( \
               INSERT INTO dead_letters (id, delivery_id, event_id, attempts, last_error, created_at) \
               SELECT r.dead_letter_id, r.delivery_id, r.event_id, r.attempt, r.last_error, $16 \
               FROM r JOIN u ON u.id = r.delivery_id WHERE r.status = 'dead'), \
             s AS ( \
               UPDATE subscriptions SET consecutive_failures = 0, circuit_state = 'closed', \
                 circuit_open_until = NULL, circuit_trips = 0 \
               WHERE id = ANY($17) AND (consecutive_failures <> 0 OR circuit_state <> 'closed')) \
             SELECT id FROM u",
        )
        .bind(records.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(&delivery_ids)
        .bind(records.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.attempt as i32).collect::<Vec<_>>())
        .bind(records.iter().map(AttemptRecord::outcome).collect::<Vec<_>>())
        .bind(
            records
                .iter()
                .map(|r| r.response_status.map(i32::from))
                .collect::<Vec<_>>(),
        )
        .bind(
            records
                .iter()
                .map(|r| r.response_body.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(records.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.duration_ms as i64).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.started_at).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.1).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.2.as_deref()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.owner.as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(now)
        .bind(succeeded_subscriptions)
        .fetch_all(executor)
        .await?;
        let moved: std::collections::HashSet<Uuid> = moved.into_iter().collect();
        Ok(records
            .iter()
            .map(|r| moved.contains(&r.delivery_id))
            .collect())
    }
}

impl PostgresStore {
    /// The claim when some circuit's cool-off is over: due work of every live subscription,
    /// with at most one probe per subscription whose circuit is not closed (the conditional
    /// UPDATE admits exactly one across instances), in one transaction.
    async fn claim_with_probes(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        skip: &Skip,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut tx = self.hot.begin().await?;
        // SKIP LOCKED: instances claiming at the same moment take disjoint rows, never wait.
        let rows = sqlx::query(
            "SELECT d.id, d.subscription_id, s.circuit_state \
             FROM deliveries d LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
             AND (d.kind = 'connector' OR (s.enabled AND (s.circuit_open_until IS NULL OR s.circuit_open_until <= $1))) \
             AND (d.subscription_id IS NULL OR NOT (d.subscription_id = ANY ($3))) \
             AND (d.connector IS NULL OR NOT (d.connector = ANY ($4))) \
             ORDER BY d.next_attempt_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED",
        )
        .bind(now)
        .bind(i64::from(limit))
        .bind(&skip.subscriptions)
        .bind(&skip.connectors)
        .fetch_all(&mut *tx)
        .await?;

        let mut probes: HashMap<Uuid, bool> = HashMap::new();
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let sub: Option<Uuid> = row.try_get("subscription_id")?;
            let state: Option<String> = row.try_get("circuit_state")?;
            if let (Some(sub), Some(state)) = (sub, state.as_deref())
                && state != "closed"
            {
                // Cool-off over: exactly one probe across all instances (the conditional
                // UPDATE serialises them); the rest wait for its verdict.
                if probes.contains_key(&sub) {
                    continue;
                }
                let took = sqlx::query(
                    "UPDATE subscriptions SET circuit_state = 'half_open', circuit_open_until = $1 \
                     WHERE id = $2 AND (circuit_open_until IS NULL OR circuit_open_until <= $3)",
                )
                .bind(lease_until)
                .bind(sub)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                probes.insert(sub, took);
                if !took {
                    continue;
                }
            }
            ids.push(row.try_get::<Uuid, _>("id")?);
        }
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        // Leases taken and everything the attempts need read back, in one round trip.
        let claimed = sqlx::query(&LEASE_AND_READ)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;

        claimed.iter().map(claimed_from_row).collect()
    }
}

/// The common-case claim (see [`Store::claim_deliveries`]), built once.
static FAST_CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH picked AS ( \
               SELECT d.id FROM deliveries d LEFT JOIN subscriptions s ON s.id = d.subscription_id \
               WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
               AND (d.kind = 'connector' OR (s.enabled AND s.circuit_state = 'closed')) \
               AND (d.subscription_id IS NULL OR NOT (d.subscription_id = ANY ($3))) \
               AND (d.connector IS NULL OR NOT (d.connector = ANY ($4))) \
               ORDER BY d.next_attempt_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED), \
             claimed AS ( \
               UPDATE deliveries SET status = 'in_flight', lease_owner = $5, lease_expires_at = $6, updated_at = $1 \
               WHERE id IN (SELECT id FROM picked) \
               RETURNING id, event_id, kind, subscription_id, connector, attempts, next_attempt_at, updated_at), \
             got AS ({CLAIMED_ROWS}) \
             SELECT p.probes_due, got.* FROM ( \
               SELECT EXISTS (SELECT 1 FROM subscriptions WHERE enabled AND circuit_state <> 'closed' \
                 AND (circuit_open_until IS NULL OR circuit_open_until <= $1)) AS probes_due) p \
             LEFT JOIN got ON TRUE ORDER BY got.next_attempt_at"
    )
});

/// Leases the deliveries `$4` for `$1` until `$2` and reads them back (probe-aware claim).
static LEASE_AND_READ: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH claimed AS ( \
               UPDATE deliveries SET status = 'in_flight', lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
               WHERE id = ANY($4) \
               RETURNING id, event_id, kind, subscription_id, connector, attempts, next_attempt_at, updated_at) \
             {CLAIMED_ROWS} ORDER BY c.next_attempt_at"
    )
});

/// Reads claimed rows back (`claimed` is a CTE of leased deliveries) with the event, the
/// subscription and its valid secrets, newest first.
const CLAIMED_ROWS: &str = "SELECT c.id, c.event_id, c.kind, c.subscription_id, c.connector, c.attempts, \
     c.next_attempt_at, e.event_type, e.payload::text AS payload, e.created_at AS event_created_at, \
     s.url, s.headers::text AS headers, \
     ARRAY(SELECT ss.secret FROM subscription_secrets ss WHERE ss.subscription_id = c.subscription_id \
           AND (ss.expires_at IS NULL OR ss.expires_at > c.updated_at) ORDER BY ss.id DESC) AS secrets \
     FROM claimed c JOIN events e ON e.id = c.event_id \
     LEFT JOIN subscriptions s ON s.id = c.subscription_id";

fn claimed_from_row(row: &PgRow) -> StoreResult<ClaimedDelivery> {
    let target = Target::from_parts(
        &row.try_get::<String, _>("kind")?,
        row.try_get("subscription_id")?,
        row.try_get("url")?,
        row.try_get("headers")?,
        row.try_get("connector")?,
        row.try_get("secrets")?,
    )?;
    Ok(ClaimedDelivery {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        event_created_at: row.try_get("event_created_at")?,
        payload: row.try_get("payload")?,
        attempts: row.try_get::<i32, _>("attempts")?.max(0) as u32,
        target,
    })
}

fn subscription_from_row(row: &PgRow) -> StoreResult<Subscription> {
    let headers: String = row.try_get("headers")?;
    let circuit_state: String = row.try_get("circuit_state")?;
    Ok(Subscription {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        events: row.try_get("events")?,
        enabled: row.try_get("enabled")?,
        description: row.try_get("description")?,
        headers: decode_headers(&headers)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        circuit: Circuit {
            state: CircuitState::parse(&circuit_state)?,
            consecutive_failures: row.try_get::<i32, _>("consecutive_failures")?.max(0) as u32,
        },
    })
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_subscription(&self, new: NewSubscription) -> StoreResult<Subscription> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO subscriptions (id, url, description, events, headers, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $7)",
        )
        .bind(new.id)
        .bind(&new.url)
        .bind(&new.description)
        .bind(&new.events)
        .bind(encode_json(&new.headers))
        .bind(new.enabled)
        .bind(new.created_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO subscription_secrets (subscription_id, secret, created_at) VALUES ($1, $2, $3)")
            .bind(new.id)
            .bind(&new.secret)
            .bind(new.created_at)
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
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
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
             WHERE deleted_at IS NULL AND ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(subscription_from_row).collect()
    }

    async fn update_subscription(
        &self,
        id: Uuid,
        patch: SubscriptionPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Subscription>> {
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE: two concurrent patches apply one after the other, neither is lost.
        let locked: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM subscriptions WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if locked.is_none() {
            return Ok(None);
        }
        let Some(current) = Self::live_subscription(&mut tx, id).await? else {
            return Ok(None);
        };
        let enabled = patch.enabled.unwrap_or(current.enabled);
        sqlx::query(
            "UPDATE subscriptions SET url = $1, events = $2, enabled = $3, description = $4, headers = $5::jsonb, \
             disabled_reason = CASE WHEN $3 THEN NULL ELSE disabled_reason END, updated_at = $6 WHERE id = $7",
        )
        .bind(patch.url.as_ref().unwrap_or(&current.url))
        .bind(patch.events.as_ref().unwrap_or(&current.events))
        .bind(enabled)
        .bind(patch.description.clone().unwrap_or(current.description.clone()))
        .bind(encode_json(patch.headers.as_ref().unwrap_or(&current.headers)))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if let Some(secret) = &patch.secret {
            let current_secret: Option<String> = sqlx::query_scalar(
                "SELECT secret FROM subscription_secrets WHERE subscription_id = $1 AND expires_at IS NULL",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if current_secret.as_deref() != Some(secret.as_str()) {
                sqlx::query("DELETE FROM subscription_secrets WHERE subscription_id = $1 AND expires_at <= $2")
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE subscription_secrets SET expires_at = $1 WHERE subscription_id = $2 AND expires_at IS NULL",
                )
                .bind(now + SECRET_GRACE)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO subscription_secrets (subscription_id, secret, created_at) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(secret)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let updated = Self::live_subscription(&mut tx, id).await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn delete_subscription(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<u64>> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(
            "UPDATE subscriptions SET deleted_at = $1, enabled = FALSE, updated_at = $1 \
             WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        let cancelled = sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, \
             last_error = 'subscription deleted', updated_at = $1 \
             WHERE subscription_id = $2 AND status IN ('pending', 'in_flight')",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Nothing will be signed for a deleted subscription again: its secrets go now.
        sqlx::query("DELETE FROM subscription_secrets WHERE subscription_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(cancelled))
    }

    async fn subscription_secrets(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Vec<String>> {
        let secrets = sqlx::query_scalar(
            "SELECT secret FROM subscription_secrets \
             WHERE subscription_id = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY id DESC",
        )
        .bind(id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(secrets)
    }

    async fn publish_group(
        &self,
        requests: Vec<PublishRequest>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PublishOutcome>> {
        let mut tx = self.pool.begin().await?;
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
        let mut matches: HashMap<&str, Vec<Match>> = HashMap::new();
        for event_type in distinct_types(&events) {
            let subs: Vec<(Uuid, Option<DateTime<Utc>>)> = sqlx::query_as(
                "SELECT id, CASE WHEN circuit_state = 'open' THEN circuit_open_until END \
                 FROM subscriptions WHERE deleted_at IS NULL AND enabled \
                 AND ($1 = ANY (events) OR '*' = ANY (events)) ORDER BY id",
            )
            .bind(event_type)
            .fetch_all(&mut *tx)
            .await?;
            let subs = subs
                .into_iter()
                .map(|(id, blocked_until)| Match { id, blocked_until })
                .collect();
            matches.insert(event_type, subs);
        }
        let (rows, counts) = plan_deliveries(&events, &matches);
        if !events.is_empty() {
            sqlx::query(
                "INSERT INTO events (id, event_type, payload, created_at) \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[]::json[], $4::timestamptz[])",
            )
            .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.payload.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.created_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if !rows.is_empty() {
            sqlx::query(
                "INSERT INTO deliveries (id, event_id, kind, subscription_id, connector, next_attempt_at, created_at, updated_at) \
                 SELECT d.id, d.event_id, CASE WHEN d.sub IS NULL THEN 'connector' ELSE 'webhook' END, d.sub, d.connector, d.due, d.at, d.at \
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::timestamptz[], $6::timestamptz[]) \
                 AS d(id, event_id, sub, connector, at, due)",
            )
            .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.subscription).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.connector).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.due).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await.map_err(StoreError::from_commit)?;
        Ok(group_outcomes(&requests, decisions, &counts))
    }

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<EventDetail>> {
        let mut conn = self.pool.acquire().await?;
        let Some(event) = sqlx::query(
            "SELECT id, event_type, payload::text AS payload, created_at FROM events WHERE id = $1",
        )
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
             WHERE d.event_id = $1 ORDER BY d.id",
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
                    attempts: row.try_get::<i32, _>("attempts")?.max(0) as u32,
                    next_attempt_at: match status {
                        DeliveryStatus::Pending => Some(row.try_get("next_attempt_at")?),
                        _ => None,
                    },
                    last_error: row.try_get("last_error")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(EventDetail {
            id: event.try_get("id")?,
            event_type: event.try_get("event_type")?,
            payload: event.try_get("payload")?,
            created_at: event.try_get("created_at")?,
            deliveries,
        }))
    }

    async fn announce_work(&self) {
        use std::sync::atomic::Ordering;
        let announcer = &self.announcing;
        announcer.dirty.store(true, Ordering::Release);
        if announcer.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (pool, announcer) = (self.pool.clone(), self.announcing.clone());
        tokio::spawn(async move {
            loop {
                // Cleared before sending: anything committed from here on is covered by this
                // NOTIFY or by the next round.
                while announcer.dirty.swap(false, Ordering::AcqRel) {
                    if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
                        .bind(WORK_CHANNEL)
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

    async fn listen_for_work(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        while !*stop.borrow() {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&self.pool).await {
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

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        skip: &Skip,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        // The common case in one statement (no transaction, one round trip): due work of closed
        // circuits and connectors, SKIP LOCKED so instances take disjoint rows, leased and read
        // back with everything the attempts need. It also says whether some circuit's cool-off
        // is over; only then is the probe-aware claim below needed.
        let rows = sqlx::query(&FAST_CLAIM)
            .bind(now)
            .bind(i64::from(limit))
            .bind(&skip.subscriptions)
            .bind(&skip.connectors)
            .bind(owner)
            .bind(lease_until)
            .fetch_all(&self.hot)
            .await?;
        let probes_due = rows
            .first()
            .map(|r| r.try_get::<bool, _>("probes_due"))
            .transpose()?
            .unwrap_or(false);
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            // The one row of an empty claim carries only the flag.
            if row.try_get::<Option<Uuid>, _>("id")?.is_some() {
                claimed.push(claimed_from_row(row)?);
            }
        }
        let room = limit.saturating_sub(claimed.len() as u32);
        if probes_due && room > 0 {
            claimed.extend(
                self.claim_with_probes(owner, now, lease_until, room, skip)
                    .await?,
            );
        }
        Ok(claimed)
    }

    async fn record_attempts(
        &self,
        records: Vec<AttemptRecord>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        let (all_ok, failing) = split_by_failures(&records);
        let rounds = rounds_of_distinct_deliveries(&records);
        if failing.is_empty() && rounds.len() == 1 {
            // The common case: one statement, one round trip, atomic on its own.
            return Self::apply_records(&self.hot, &records, &all_ok, now).await;
        }
        let mut tx = self.hot.begin().await?;
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
            let succeeded = record.result == AttemptResult::Succeeded;
            if let Some(sub) = record.subscription_id {
                if succeeded {
                    sqlx::query(
                        "UPDATE subscriptions SET consecutive_failures = 0, circuit_state = 'closed', \
                         circuit_open_until = NULL, circuit_trips = 0 \
                         WHERE id = $1 AND (consecutive_failures <> 0 OR circuit_state <> 'closed')",
                    )
                    .bind(sub)
                    .execute(&mut *tx)
                    .await?;
                } else {
                    let row = sqlx::query(
                        "UPDATE subscriptions SET consecutive_failures = consecutive_failures + 1 WHERE id = $1 \
                         RETURNING consecutive_failures, circuit_state, circuit_trips",
                    )
                    .bind(sub)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = row {
                        let failures = row.try_get::<i32, _>("consecutive_failures")?.max(0) as u32;
                        let state: String = row.try_get("circuit_state")?;
                        let trips = row.try_get::<i32, _>("circuit_trips")?.max(0) as u32;
                        if circuit::opens(&state, failures) {
                            let open_until = now + circuit::cooloff(trips + 1);
                            sqlx::query(
                                "UPDATE subscriptions SET circuit_state = 'open', circuit_open_until = $1, \
                                 circuit_trips = circuit_trips + 1 WHERE id = $2",
                            )
                            .bind(open_until)
                            .bind(sub)
                            .execute(&mut *tx)
                            .await?;
                            // Waiting work moves past the cool-off, so claims never wade through it.
                            sqlx::query(
                                "UPDATE deliveries SET next_attempt_at = $1 \
                                 WHERE subscription_id = $2 AND status = 'pending' AND next_attempt_at < $1",
                            )
                            .bind(open_until)
                            .bind(sub)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                    if record.gone {
                        sqlx::query(
                            "UPDATE subscriptions SET enabled = FALSE, disabled_reason = $1, updated_at = $2 WHERE id = $3",
                        )
                        .bind("the endpoint answered 410 Gone")
                        .bind(now)
                        .bind(sub)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(updated)
    }

    async fn release_expired_leases(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let released = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
             next_attempt_at = $1, updated_at = $1 WHERE status = 'in_flight' AND lease_expires_at <= $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(released.rows_affected())
    }

    async fn release_deliveries(
        &self,
        owner: &str,
        ids: &[Uuid],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let released = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
             WHERE status = 'in_flight' AND lease_owner = $2 AND id = ANY($3)",
        )
        .bind(now)
        .bind(owner)
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(released.rows_affected())
    }

    async fn release_leases(&self, owner: &str, now: DateTime<Utc>) -> StoreResult<u64> {
        let released = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
             next_attempt_at = $1, updated_at = $1 WHERE status = 'in_flight' AND lease_owner = $2",
        )
        .bind(now)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(released.rows_affected())
    }

    async fn list_attempts(&self, event_id: Uuid) -> StoreResult<Vec<AttemptView>> {
        let rows = sqlx::query(
            "SELECT a.id, a.event_id, a.delivery_id, d.kind, d.subscription_id, s.url, d.connector, a.attempt, \
             a.outcome, a.response_status, a.response_body, a.error, a.duration_ms, a.started_at \
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
             LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE a.event_id = $1 ORDER BY a.started_at, a.id LIMIT 1000",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AttemptView {
                    id: row.try_get("id")?,
                    event_id: row.try_get("event_id")?,
                    delivery_id: row.try_get("delivery_id")?,
                    destination: destination_from_row(row)?,
                    attempt: row.try_get::<i32, _>("attempt")?.max(0) as u32,
                    succeeded: row.try_get::<String, _>("outcome")? == "succeeded",
                    response_status: row
                        .try_get::<Option<i32>, _>("response_status")?
                        .map(|s| s as u16),
                    response_body: row.try_get("response_body")?,
                    error: row.try_get("error")?,
                    duration_ms: row.try_get::<i64, _>("duration_ms")?.max(0) as u64,
                    started_at: row.try_get("started_at")?,
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
             WHERE ($1::uuid IS NULL OR dl.id < $1) ORDER BY dl.id DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    id: row.try_get("id")?,
                    event_id: row.try_get("event_id")?,
                    delivery_id: row.try_get("delivery_id")?,
                    destination: destination_from_row(row)?,
                    attempts: row.try_get::<i32, _>("attempts")?.max(0) as u32,
                    last_error: row.try_get("last_error")?,
                    created_at: row.try_get("created_at")?,
                    replayed_at: row.try_get("replayed_at")?,
                })
            })
            .collect()
    }

    async fn replay_dead_letter(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<ReplayOutcome> {
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE OF dl: two concurrent replays of one dead letter serialise; the second sees
        // replayed_at set and gets 409.
        let Some(row) = sqlx::query(
            "SELECT dl.delivery_id, dl.replayed_at, d.kind, s.deleted_at FROM dead_letters dl \
             JOIN deliveries d ON d.id = dl.delivery_id LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE dl.id = $1 FOR UPDATE OF dl",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(ReplayOutcome::NotFound);
        };
        if row
            .try_get::<Option<DateTime<Utc>>, _>("replayed_at")?
            .is_some()
        {
            return Ok(ReplayOutcome::AlreadyReplayed);
        }
        if row.try_get::<String, _>("kind")? == "webhook"
            && row
                .try_get::<Option<DateTime<Utc>>, _>("deleted_at")?
                .is_some()
        {
            return Ok(ReplayOutcome::SubscriptionDeleted);
        }
        let delivery_id: Uuid = row.try_get("delivery_id")?;
        sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1, last_error = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 WHERE id = $2 AND status = 'dead'",
        )
        .bind(now)
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
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT dl.id, dl.delivery_id FROM dead_letters dl JOIN deliveries d ON d.id = dl.delivery_id \
             LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE dl.replayed_at IS NULL AND ($1::timestamptz IS NULL OR dl.created_at >= $1) \
             AND ($2::timestamptz IS NULL OR dl.created_at < $2) \
             AND ($3::uuid IS NULL OR d.subscription_id = $3) AND ($4::text IS NULL OR d.connector = $4) \
             AND (d.kind = 'connector' OR s.deleted_at IS NULL) ORDER BY dl.id LIMIT $5 FOR UPDATE OF dl SKIP LOCKED",
        )
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.subscription_id)
        .bind(&filter.connector)
        .bind(i64::from(MAX_BULK_REPLAY))
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<Uuid> = rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        let deliveries: Vec<Uuid> = rows
            .iter()
            .map(|r| r.try_get("delivery_id"))
            .collect::<Result<_, _>>()?;
        if !ids.is_empty() {
            sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = ANY($2)")
                .bind(now)
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE deliveries SET status = 'pending', attempts = 0, last_error = NULL, lease_owner = NULL, \
                 lease_expires_at = NULL, next_attempt_at = $1, updated_at = $1 WHERE status = 'dead' AND id = ANY($2)",
            )
            .bind(now)
            .bind(&deliveries)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    async fn outbox_stats(&self, _now: DateTime<Utc>) -> StoreResult<OutboxStats> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM deliveries \
             WHERE status IN ('pending', 'in_flight')",
        )
        .fetch_one(&self.pool)
        .await?;
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM subscriptions WHERE deleted_at IS NULL AND circuit_state <> 'closed'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(OutboxStats {
            pending: row.try_get::<i64, _>("pending")?.max(0) as u64,
            oldest_pending_created_at: row.try_get("oldest")?,
            open_circuits: open.max(0) as u64,
        })
    }

    async fn prune(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status IN ('pending', 'in_flight')) \
             ORDER BY e.created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}

fn destination_from_row(row: &PgRow) -> StoreResult<Destination> {
    Destination::from_parts(
        &row.try_get::<String, _>("kind")?,
        row.try_get("subscription_id")?,
        row.try_get("url")?,
        row.try_get("connector")?,
    )
}
