//! Durable storage: one [`Store`] trait with a SQLite and a PostgreSQL backend.
//!
//! All SQL of the hub lives under this module. The rest of the code speaks in the domain types
//! defined here and never sees a row.
//!
//! Invariants every backend keeps (checked by the contract suite in `tests/`, run against both):
//! - an event and all of its deliveries are written in one transaction ([`Store::publish`]), so an
//!   accepted event always has its outbox rows;
//! - an idempotency key maps to exactly one publish while it is live (24 h);
//! - a deleted subscription is soft-deleted: its history (deliveries, attempts) stays readable,
//!   its pending deliveries become `cancelled` in the same transaction;
//! - timestamps are UTC with microsecond precision, so what is written reads back equal.

mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::Config;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// How long a rotated-out subscription secret stays valid for signatures.
pub const SECRET_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// Rows per multi-row INSERT: well under SQLite's 32,766 bound parameters.
const INSERT_CHUNK: usize = 500;

/// The current time at the precision every backend stores (microseconds).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A storage failure. `Unavailable` means the database could not be reached (the API answers
/// 503 and nothing was stored); anything else is a bug or corruption (500).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            sqlx::Error::Database(ref db) if is_unavailable_code(db.code().as_deref()) => {
                StoreError::Unavailable(e)
            }
            other => StoreError::Database(other),
        }
    }
}

/// SQLSTATEs (Postgres) and result codes (SQLite) that mean "the database cannot serve now"
/// rather than "the statement is wrong".
fn is_unavailable_code(code: Option<&str>) -> bool {
    matches!(
        code,
        // Postgres: connection exceptions, shutdown, too many connections, read-only, disk full,
        // database missing, login refused.
        Some("08000" | "08001" | "08003" | "08004" | "08006" | "57P01" | "57P02" | "57P03" | "53300" | "53100" | "25006"
            | "3D000" | "28000" | "28P01")
        // SQLite: BUSY, LOCKED, IOERR, FULL, READONLY, CANTOPEN (primary codes).
        | Some("5" | "6" | "10" | "13" | "8" | "14")
    )
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// State of a subscription's circuit breaker (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "closed" => Ok(CircuitState::Closed),
            "open" => Ok(CircuitState::Open),
            "half_open" => Ok(CircuitState::HalfOpen),
            other => Err(StoreError::Corrupt(format!(
                "unknown circuit state {other:?}"
            ))),
        }
    }
}

/// The circuit breaker as shown on a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Circuit {
    pub state: CircuitState,
    pub consecutive_failures: u32,
}

/// A webhook subscription. The secret is deliberately not a field: it is only read by the
/// delivery engine through [`Store::subscription_secrets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub circuit: Circuit,
}

/// A validated subscription to create.
#[derive(Clone)]
pub struct NewSubscription {
    pub id: Uuid,
    pub url: String,
    pub secret: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for NewSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSubscription")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// A validated partial update; `None` leaves a field as it is.
#[derive(Clone, Default)]
pub struct SubscriptionPatch {
    pub url: Option<String>,
    /// A new secret rotates: the previous one stays valid for [`SECRET_GRACE`].
    pub secret: Option<String>,
    pub events: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
    pub headers: Option<BTreeMap<String, String>>,
}

impl fmt::Debug for SubscriptionPatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionPatch")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// An event to store, with its payload exactly as the client sent it (a JSON object), so the
/// bytes that are signed later are the bytes that were accepted.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub event_type: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    /// Active connectors that take this event type; each gets a delivery.
    pub connectors: Vec<String>,
}

/// A stored event as returned by a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedEvent {
    pub id: Uuid,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    /// How many destinations (subscriptions and connectors) got a delivery.
    pub deliveries: u32,
}

/// The idempotency key of a publish request and a fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    /// Hash of the route and body: a key reused for a different request is refused.
    pub fingerprint: String,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// The events were stored, with their deliveries.
    Created(Vec<PublishedEvent>),
    /// The idempotency key was used within 24 h for the same request: nothing was created and
    /// these are the events the first request created.
    Replayed(Vec<PublishedEvent>),
    /// The idempotency key is live but was used for a different request.
    KeyMismatch,
}

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Destination {
    Webhook { subscription_id: Uuid, url: String },
    Connector { connector: String },
}

impl Destination {
    /// Rebuilds a destination from the columns every backend stores it in.
    fn from_parts(
        kind: &str,
        subscription_id: Option<Uuid>,
        url: Option<String>,
        connector: Option<String>,
    ) -> StoreResult<Self> {
        match (kind, subscription_id, connector) {
            ("webhook", Some(subscription_id), _) => Ok(Destination::Webhook {
                subscription_id,
                url: url.unwrap_or_default(),
            }),
            ("connector", _, Some(connector)) => Ok(Destination::Connector { connector }),
            (other, _, _) => Err(StoreError::Corrupt(format!(
                "delivery of kind {other:?} without its target"
            ))),
        }
    }
}

/// Lifecycle of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    InFlight,
    Succeeded,
    Dead,
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::InFlight => "in_flight",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "pending" => DeliveryStatus::Pending,
            "in_flight" => DeliveryStatus::InFlight,
            "succeeded" => DeliveryStatus::Succeeded,
            "dead" => DeliveryStatus::Dead,
            "cancelled" => DeliveryStatus::Cancelled,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unknown delivery status {other:?}"
                )));
            }
        })
    }
}

/// One delivery of an event, as shown with the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySummary {
    pub id: Uuid,
    pub destination: Destination,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// An event with its payload and deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDetail {
    pub id: Uuid,
    pub event_type: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub deliveries: Vec<DeliverySummary>,
}

/// Storage operations of the hub. Object-safe, so the backend is chosen at run time.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    fn backend(&self) -> Backend;

    /// Checks that the database answers.
    async fn ping(&self) -> StoreResult<()>;

    async fn create_subscription(&self, new: NewSubscription) -> StoreResult<Subscription>;

    /// A subscription that exists and is not deleted.
    async fn get_subscription(&self, id: Uuid) -> StoreResult<Option<Subscription>>;

    /// Live subscriptions in id (= creation) order, starting after `after`.
    async fn list_subscriptions(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Subscription>>;

    /// Applies a partial update; `None` when there is no such live subscription.
    async fn update_subscription(
        &self,
        id: Uuid,
        patch: SubscriptionPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Subscription>>;

    /// Soft-deletes a subscription and cancels its pending deliveries, in one transaction.
    /// Returns the number of cancelled deliveries, or `None` when there is no such subscription.
    async fn delete_subscription(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<u64>>;

    /// The secrets a signature must be made with at `now`: the current one first, then those
    /// rotated out less than [`SECRET_GRACE`] ago, newest first.
    async fn subscription_secrets(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Vec<String>>;

    /// Stores events and one pending delivery per matching destination (enabled live
    /// subscriptions whose `events` contain the type or `*`, plus each event's connectors), all in
    /// one transaction, together with the idempotency key if one is given.
    async fn publish(
        &self,
        events: Vec<NewEvent>,
        idempotency: Option<IdempotencyKey>,
        now: DateTime<Utc>,
    ) -> StoreResult<PublishOutcome>;

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<EventDetail>>;
}

/// Opens the database named by the configuration, creating it (SQLite) if needed, and applies
/// the embedded migrations.
pub async fn connect(config: &Config) -> StoreResult<Arc<dyn Store>> {
    let url = config.database_url.as_str();
    let store: Arc<dyn Store> = if config.database_url.is_postgres() {
        Arc::new(PostgresStore::connect(url, config.database_max_connections).await?)
    } else {
        Arc::new(SqliteStore::connect(url).await?)
    };
    Ok(store)
}

/// Applies pending migrations without starting anything else (`integrations-hub migrate`).
pub async fn migrate(config: &Config) -> StoreResult<()> {
    // Both constructors migrate; connecting is all it takes.
    connect(config).await.map(drop)
}

/// Converts between microseconds since the epoch (SQLite's representation) and timestamps.
fn from_micros(us: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} out of range")))
}

fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Event ids of an idempotency record, stored as a JSON array of strings.
fn encode_ids(ids: &[Uuid]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())
}

fn decode_ids(raw: &str) -> StoreResult<Vec<Uuid>> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("idempotency record: {e}")))
}

fn decode_headers(raw: &str) -> StoreResult<BTreeMap<String, String>> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("subscription headers: {e}")))
}

fn encode_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// Puts events back into the order of `ids` (the order the client sent them).
fn in_order(ids: &[Uuid], mut found: Vec<PublishedEvent>) -> StoreResult<Vec<PublishedEvent>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let pos = found.iter().position(|e| e.id == *id).ok_or_else(|| {
            StoreError::Corrupt(format!("idempotency record names missing event {id}"))
        })?;
        out.push(found.swap_remove(pos));
    }
    Ok(out)
}
