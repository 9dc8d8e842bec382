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
    Backend, Circuit, CircuitState, DeliveryStatus, DeliverySummary, Destination, EventDetail,
    IDEMPOTENCY_TTL, IdempotencyKey, NewEvent, NewSubscription, PublishOutcome, PublishedEvent,
    SECRET_GRACE, Store, StoreError, StoreResult, Subscription, SubscriptionPatch, decode_headers,
    decode_ids, encode_ids, encode_json, in_order,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

const SUBSCRIPTION_COLUMNS: &str = "id, url, description, events, headers::text AS headers, enabled, circuit_state, \
     consecutive_failures, created_at, updated_at";

impl PostgresStore {
    /// Connects to `url` with up to `max_connections` connections and applies the migrations
    /// (sqlx takes an advisory lock, so instances starting together migrate once).
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("integrations-hub");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
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

    async fn publish(
        &self,
        events: Vec<NewEvent>,
        idempotency: Option<IdempotencyKey>,
        now: DateTime<Utc>,
    ) -> StoreResult<PublishOutcome> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let mut tx = self.pool.begin().await?;

        if let Some(key) = &idempotency {
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
            .bind(encode_ids(&ids))
            .bind(now)
            .bind(now + IDEMPOTENCY_TTL)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !claimed {
                let row = sqlx::query(
                    "SELECT fingerprint, event_ids FROM idempotency_keys WHERE key = $1",
                )
                .bind(&key.key)
                .fetch_one(&mut *tx)
                .await?;
                let fingerprint: String = row.try_get("fingerprint")?;
                if fingerprint != key.fingerprint {
                    return Ok(PublishOutcome::KeyMismatch);
                }
                let first = decode_ids(&row.try_get::<String, _>("event_ids")?)?;
                let replayed = Self::published_events(&mut tx, &first).await?;
                return Ok(PublishOutcome::Replayed(replayed));
            }
        }

        let mut matches: HashMap<&str, Vec<Uuid>> = HashMap::new();
        for event in &events {
            if matches.contains_key(event.event_type.as_str()) {
                continue;
            }
            let subs: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM subscriptions WHERE deleted_at IS NULL AND enabled \
                 AND ($1 = ANY (events) OR '*' = ANY (events)) ORDER BY id",
            )
            .bind(&event.event_type)
            .fetch_all(&mut *tx)
            .await?;
            matches.insert(&event.event_type, subs);
        }

        sqlx::query(
            "INSERT INTO events (id, event_type, payload, created_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[]::json[], $4::timestamptz[])",
        )
        .bind(&ids)
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

        let mut published = Vec::with_capacity(events.len());
        let mut d_ids = Vec::new();
        let mut d_events = Vec::new();
        let mut d_subs: Vec<Option<Uuid>> = Vec::new();
        let mut d_connectors: Vec<Option<&str>> = Vec::new();
        let mut d_at = Vec::new();
        for event in &events {
            let subs = matches
                .get(event.event_type.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            for sub in subs {
                d_ids.push(Uuid::now_v7());
                d_events.push(event.id);
                d_subs.push(Some(*sub));
                d_connectors.push(None);
                d_at.push(event.created_at);
            }
            for connector in &event.connectors {
                d_ids.push(Uuid::now_v7());
                d_events.push(event.id);
                d_subs.push(None);
                d_connectors.push(Some(connector.as_str()));
                d_at.push(event.created_at);
            }
            published.push(PublishedEvent {
                id: event.id,
                event_type: event.event_type.clone(),
                created_at: event.created_at,
                deliveries: (subs.len() + event.connectors.len()) as u32,
            });
        }
        if !d_ids.is_empty() {
            sqlx::query(
                "INSERT INTO deliveries (id, event_id, kind, subscription_id, connector, next_attempt_at, created_at, updated_at) \
                 SELECT d.id, d.event_id, CASE WHEN d.sub IS NULL THEN 'connector' ELSE 'webhook' END, d.sub, d.connector, d.at, d.at, d.at \
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::timestamptz[]) AS d(id, event_id, sub, connector, at)",
            )
            .bind(&d_ids)
            .bind(&d_events)
            .bind(&d_subs)
            .bind(&d_connectors)
            .bind(&d_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(PublishOutcome::Created(published))
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
}

fn destination_from_row(row: &PgRow) -> StoreResult<Destination> {
    Destination::from_parts(
        &row.try_get::<String, _>("kind")?,
        row.try_get("subscription_id")?,
        row.try_get("url")?,
        row.try_get("connector")?,
    )
}
