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

pub mod group;
mod postgres;
mod sqlite;

use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// The connection broke while a commit was on its way: the write may or may not be stored.
    #[error("database connection lost while committing; the outcome is unknown: {0}")]
    CommitUncertain(#[source] sqlx::Error),
    /// A write waited too long for the database and was given up, unwritten.
    #[error("database unavailable: {0}")]
    TimedOut(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The failure of a group commit, shared by every request of the group.
    #[error("{0}")]
    Shared(Arc<StoreError>),
}

impl StoreError {
    /// Whether the database could not be reached (nothing was written; try again later).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_)
            | StoreError::TimedOut(_)
            | StoreError::CommitUncertain(_) => true,
            StoreError::Shared(inner) => inner.is_unavailable(),
            _ => false,
        }
    }

    /// Whether the write may have been stored although it failed (see `CommitUncertain`).
    pub fn is_uncertain(&self) -> bool {
        match self {
            StoreError::CommitUncertain(_) => true,
            StoreError::Shared(inner) => inner.is_uncertain(),
            _ => false,
        }
    }

    /// A failed COMMIT: an answer from the server means it did not commit; a broken connection
    /// means nobody knows.
    pub fn from_commit(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_) => {
                StoreError::CommitUncertain(e)
            }
            other => other.into(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            sqlx::Error::Database(ref db) if is_unavailable_code(db.as_ref()) => {
                StoreError::Unavailable(e)
            }
            other => StoreError::Database(other),
        }
    }
}

/// Whether a database error means "the database cannot serve now" rather than "the statement
/// is wrong": Postgres SQLSTATEs, and SQLite's primary result codes.
fn is_unavailable_code(error: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = error.code() else {
        return false;
    };
    if error
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        // SQLite reports extended codes (778 = IOERR_WRITE): the low byte is the primary code.
        // BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN.
        return code
            .parse::<i32>()
            .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 8 | 10 | 13 | 14));
    }
    // Postgres: connection exceptions, shutdown, too many connections, read-only, disk full,
    // database missing, login refused.
    matches!(
        code.as_ref(),
        "08000"
            | "08001"
            | "08003"
            | "08004"
            | "08006"
            | "57P01"
            | "57P02"
            | "57P03"
            | "53300"
            | "53100"
            | "25006"
            | "3D000"
            | "28000"
            | "28P01"
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

/// One publish request: its events (one, or a batch) and its idempotency key.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub events: Vec<NewEvent>,
    pub idempotency: Option<IdempotencyKey>,
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

/// A delivery claimed by a worker, with everything needed to attempt it.
#[derive(Clone)]
pub struct ClaimedDelivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_created_at: DateTime<Utc>,
    /// The payload exactly as accepted.
    pub payload: String,
    /// Attempts already spent from the current budget.
    pub attempts: u32,
    pub target: Target,
}

impl fmt::Debug for ClaimedDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedDelivery")
            .field("id", &self.id)
            .field("event_id", &self.event_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Where a claimed delivery goes, with what the attempt needs.
#[derive(Clone)]
pub enum Target {
    Webhook {
        subscription_id: Uuid,
        url: String,
        headers: BTreeMap<String, String>,
        /// Valid secrets, newest first (rotation).
        secrets: Vec<String>,
    },
    Connector {
        name: String,
    },
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Webhook {
                subscription_id,
                url,
                ..
            } => f
                .debug_struct("Webhook")
                .field("subscription_id", subscription_id)
                .field("url", url)
                .finish_non_exhaustive(),
            Target::Connector { name } => f.debug_struct("Connector").field("name", name).finish(),
        }
    }
}

impl Target {
    /// Rebuilds a claimed delivery's target from the columns both backends select, with the
    /// subscription's valid secrets (newest first).
    fn from_parts(
        kind: &str,
        subscription_id: Option<Uuid>,
        url: Option<String>,
        headers: Option<String>,
        connector: Option<String>,
        secrets: Vec<String>,
    ) -> StoreResult<Self> {
        match (kind, subscription_id, connector) {
            ("webhook", Some(subscription_id), _) => Ok(Target::Webhook {
                subscription_id,
                url: url.unwrap_or_default(),
                headers: decode_headers(headers.as_deref().ok_or_else(|| {
                    StoreError::Corrupt("webhook delivery without its subscription".into())
                })?)?,
                secrets,
            }),
            ("connector", _, Some(name)) => Ok(Target::Connector { name }),
            (other, _, _) => Err(StoreError::Corrupt(format!(
                "claimed delivery of kind {other:?} without its target"
            ))),
        }
    }
}

/// How an attempt ended, as decided by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Succeeded,
    /// Failed; try again at this time.
    Retry(DateTime<Utc>),
    /// Failed for good: budget spent or a permanent failure. Writes a dead letter.
    Dead,
}

/// One finished attempt, to record with its effect on the delivery (and subscription).
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    /// The lease owner that ran the attempt; a lost lease records the attempt but leaves the
    /// delivery to its new owner.
    pub owner: String,
    /// 1-based number of this attempt within the current budget.
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub result: AttemptResult,
    /// For webhooks: the subscription, whose circuit breaker this attempt feeds.
    pub subscription_id: Option<Uuid>,
    /// The endpoint answered 410 Gone: disable the subscription.
    pub gone: bool,
}

/// Circuit breaker policy (SPEC §6).
pub mod circuit {
    use chrono::TimeDelta;

    /// Consecutive failed attempts that open the circuit.
    pub const THRESHOLD: u32 = 10;
    /// First cool-off; doubles with each consecutive opening.
    pub const BASE_COOLOFF: TimeDelta = TimeDelta::seconds(30);
    pub const MAX_COOLOFF: TimeDelta = TimeDelta::minutes(10);

    /// Whether a failed attempt opens the circuit: a failed probe (half-open) re-opens it, and a
    /// closed circuit opens at [`THRESHOLD`] consecutive failures.
    pub fn opens(state: &str, consecutive_failures: u32) -> bool {
        state == "half_open" || (state == "closed" && consecutive_failures >= THRESHOLD)
    }

    /// Cool-off after the `trips`-th consecutive opening (1-based).
    pub fn cooloff(trips: u32) -> TimeDelta {
        let factor = 1i32 << trips.saturating_sub(1).min(10);
        (BASE_COOLOFF * factor).min(MAX_COOLOFF)
    }
}

/// An attempt as shown by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub delivery_id: Uuid,
    pub destination: Destination,
    pub attempt: u32,
    pub succeeded: bool,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub started_at: DateTime<Utc>,
}

/// A dead letter as shown by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: Uuid,
    pub event_id: Uuid,
    pub delivery_id: Uuid,
    pub destination: Destination,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
}

/// What replaying one dead letter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    Replayed {
        delivery_id: Uuid,
    },
    NotFound,
    AlreadyReplayed,
    /// The delivery's subscription was deleted: there is nowhere to deliver to.
    SubscriptionDeleted,
}

/// Which dead letters a bulk replay takes (all filters combine).
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub subscription_id: Option<Uuid>,
    pub connector: Option<String>,
}

/// Most dead letters one bulk replay takes; call again for more.
pub const MAX_BULK_REPLAY: u32 = 10_000;

/// Backlog figures for the outbox gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Deliveries not finished (pending or in flight).
    pub pending: u64,
    pub oldest_pending_created_at: Option<DateTime<Utc>>,
    /// Live subscriptions whose circuit is not closed.
    pub open_circuits: u64,
}

/// Destinations a claim leaves alone: those the engine already runs at their cap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skip {
    pub subscriptions: Vec<Uuid>,
    pub connectors: Vec<String>,
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
    ) -> StoreResult<PublishOutcome> {
        let request = PublishRequest {
            events,
            idempotency,
        };
        self.publish_group(vec![request], now)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("a publish was not answered".into()))
    }

    /// Several publish requests in one transaction (group commit): each outcome, in request
    /// order, is what [`Store::publish`] of that request alone would have answered. A key used
    /// twice in one group behaves as two requests in a row (the second replays the first).
    async fn publish_group(
        &self,
        requests: Vec<PublishRequest>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PublishOutcome>>;

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<EventDetail>>;

    /// Claims up to `limit` due deliveries for `owner` until `lease_until`: pending ones whose
    /// time has come, skipping disabled subscriptions and open circuits, with at most one probe
    /// per subscription whose cool-off has passed. Instances never claim the same row twice
    /// (`FOR UPDATE SKIP LOCKED` on Postgres, the single writer on SQLite).
    ///
    /// Deliveries of the subscriptions and connectors in `skip` are left alone (the engine
    /// passes those it already runs at their cap).
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        skip: &Skip,
    ) -> StoreResult<Vec<ClaimedDelivery>>;

    /// Hands claimed deliveries back to `pending`, unattempted.
    async fn release_deliveries(
        &self,
        owner: &str,
        ids: &[Uuid],
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// Records a finished attempt and applies its result to the delivery (when `owner` still
    /// holds the lease) and to the subscription's circuit breaker, in one transaction. Returns
    /// whether the delivery was updated.
    async fn record_attempt(&self, record: AttemptRecord, now: DateTime<Utc>) -> StoreResult<bool> {
        self.record_attempts(vec![record], now)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("an attempt record was not answered".into()))
    }

    /// Records several attempts in one transaction, each as [`Store::record_attempt`] would,
    /// in order (so a subscription's circuit breaker sees them as they happened). Returns, per
    /// record, whether its delivery was updated.
    async fn record_attempts(
        &self,
        records: Vec<AttemptRecord>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>>;

    /// Returns in-flight deliveries whose lease expired to `pending` (their worker died).
    async fn release_expired_leases(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Returns every delivery `owner` still holds to `pending` (graceful shutdown).
    async fn release_leases(&self, owner: &str, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Attempts of an event, oldest first (at most 1,000).
    async fn list_attempts(&self, event_id: Uuid) -> StoreResult<Vec<AttemptView>>;

    /// Dead letters, newest first, starting after `before` (a dead letter id).
    async fn list_dead_letters(
        &self,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<DeadLetter>>;

    /// Queues a dead letter's delivery again with a fresh attempt budget.
    async fn replay_dead_letter(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<ReplayOutcome>;

    /// Replays every dead letter matching `filter` not replayed yet (at most [`MAX_BULK_REPLAY`]).
    async fn replay_dead_letters(
        &self,
        filter: ReplayFilter,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    async fn outbox_stats(&self, now: DateTime<Utc>) -> StoreResult<OutboxStats>;

    /// Deletes up to `limit` finished events created before `before` (with their deliveries,
    /// attempts and dead letters) and expired idempotency keys. Returns the events deleted.
    async fn prune(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64>;

    /// Tells other instances that new work was committed (Postgres `NOTIFY`, sent after the
    /// publish transaction, never inside it). Best effort: the poll is the fallback.
    async fn announce_work(&self) {}

    /// Wakes `wake` whenever another instance announces work, until `stop` turns true.
    /// A single instance (SQLite) has no peers: it just waits for `stop`.
    async fn listen_for_work(
        &self,
        wake: Arc<tokio::sync::Notify>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let _ = wake;
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                return;
            }
        }
    }
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

/// What a group publish decided about one request before writing anything.
#[derive(Debug)]
enum Decision {
    /// Its events are written in this transaction.
    Write,
    /// Answered without writing (a live idempotency key: replayed, or a mismatch).
    Answered(PublishOutcome),
    /// Its idempotency key was claimed by an earlier request (this index) of the same group.
    SameKeyAs(usize),
}

/// One delivery row to insert with its event.
#[derive(Debug)]
struct DeliveryRow<'a> {
    id: Uuid,
    event_id: Uuid,
    subscription: Option<Uuid>,
    connector: Option<&'a str>,
    /// When the event was created (the delivery's creation time).
    at: DateTime<Utc>,
    /// When it is first due: at once, or when its subscription's open circuit cools off.
    due: DateTime<Utc>,
}

/// A subscription an event type matches, with the end of its circuit's cool-off if it is open:
/// new deliveries wait for it, so a claim never walks past blocked work. (Not while half-open:
/// the probe's answer comes within one attempt, and a success must not leave them waiting.)
#[derive(Debug, Clone, Copy)]
struct Match {
    id: Uuid,
    blocked_until: Option<DateTime<Utc>>,
}

/// Idempotency keys claimed for writing within one group, with the claiming request.
#[derive(Debug, Default)]
struct KeyClaims<'a> {
    written: HashMap<&'a str, usize>,
}

impl<'a> KeyClaims<'a> {
    /// The request that already claimed `key` for writing in this group, if any.
    fn claimed_by(&self, key: &IdempotencyKey) -> Option<usize> {
        self.written.get(key.key.as_str()).copied()
    }

    fn claim(&mut self, key: &'a IdempotencyKey, request: usize) {
        self.written.insert(&key.key, request);
    }
}

/// The events of the requests decided [`Decision::Write`], in request order.
fn events_to_write<'a>(
    requests: &'a [PublishRequest],
    decisions: &[Decision],
) -> Vec<&'a NewEvent> {
    requests
        .iter()
        .zip(decisions)
        .filter(|(_, d)| matches!(d, Decision::Write))
        .flat_map(|(r, _)| r.events.iter())
        .collect()
}

/// The distinct event types of `events`, in first-seen order.
fn distinct_types<'a>(events: &[&'a NewEvent]) -> Vec<&'a str> {
    let mut types: Vec<&str> = Vec::new();
    for e in events {
        if !types.contains(&e.event_type.as_str()) {
            types.push(&e.event_type);
        }
    }
    types
}

/// One delivery per matching subscription and per routed connector of each event; returns the
/// rows and the number of deliveries per event.
fn plan_deliveries<'a>(
    events: &[&'a NewEvent],
    matches: &HashMap<&str, Vec<Match>>,
) -> (Vec<DeliveryRow<'a>>, HashMap<Uuid, u32>) {
    let mut rows = Vec::new();
    let mut counts = HashMap::with_capacity(events.len());
    for event in events {
        let subs = matches
            .get(event.event_type.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        rows.extend(subs.iter().map(|s| {
            DeliveryRow {
                id: Uuid::now_v7(),
                event_id: event.id,
                subscription: Some(s.id),
                connector: None,
                at: event.created_at,
                due: s
                    .blocked_until
                    .map_or(event.created_at, |until| until.max(event.created_at)),
            }
        }));
        rows.extend(event.connectors.iter().map(|c| DeliveryRow {
            id: Uuid::now_v7(),
            event_id: event.id,
            subscription: None,
            connector: Some(c.as_str()),
            at: event.created_at,
            due: event.created_at,
        }));
        counts.insert(event.id, (subs.len() + event.connectors.len()) as u32);
    }
    (rows, counts)
}

/// Turns the decisions of a committed group into one outcome per request.
fn group_outcomes(
    requests: &[PublishRequest],
    decisions: Vec<Decision>,
    counts: &HashMap<Uuid, u32>,
) -> Vec<PublishOutcome> {
    let created = |r: &PublishRequest| -> Vec<PublishedEvent> {
        r.events
            .iter()
            .map(|e| PublishedEvent {
                id: e.id,
                event_type: e.event_type.clone(),
                created_at: e.created_at,
                deliveries: counts.get(&e.id).copied().unwrap_or(0),
            })
            .collect()
    };
    let fingerprint = |i: usize| requests[i].idempotency.as_ref().map(|k| &k.fingerprint);
    decisions
        .into_iter()
        .enumerate()
        .map(|(i, decision)| match decision {
            Decision::Write => PublishOutcome::Created(created(&requests[i])),
            Decision::Answered(outcome) => outcome,
            Decision::SameKeyAs(first) if fingerprint(first) == fingerprint(i) => {
                PublishOutcome::Replayed(created(&requests[first]))
            }
            Decision::SameKeyAs(_) => PublishOutcome::KeyMismatch,
        })
        .collect()
}

impl AttemptRecord {
    /// What the attempt does to its delivery: the new status, the next attempt time (retries)
    /// and the error shown on the delivery.
    fn delivery_change(&self) -> (&'static str, Option<DateTime<Utc>>, Option<String>) {
        let last_error = self
            .error
            .clone()
            .or_else(|| self.response_status.map(|s| format!("HTTP {s}")));
        match self.result {
            AttemptResult::Succeeded => ("succeeded", None, None),
            AttemptResult::Retry(when) => ("pending", Some(when), last_error),
            AttemptResult::Dead => ("dead", None, last_error),
        }
    }

    /// The attempt's `outcome` column.
    fn outcome(&self) -> &'static str {
        if self.result == AttemptResult::Succeeded {
            "succeeded"
        } else {
            "failed"
        }
    }
}

/// Splits the subscriptions of `records`: those whose every attempt succeeded (their circuit
/// breakers can be reset in one statement) and those with a failure (their attempts must be
/// applied one by one, in order).
fn split_by_failures(records: &[AttemptRecord]) -> (Vec<Uuid>, HashSet<Uuid>) {
    let failed: HashSet<Uuid> = records
        .iter()
        .filter(|r| r.result != AttemptResult::Succeeded)
        .filter_map(|r| r.subscription_id)
        .collect();
    let mut ok: Vec<Uuid> = records
        .iter()
        .filter_map(|r| r.subscription_id)
        .filter(|s| !failed.contains(s))
        .collect();
    ok.sort();
    ok.dedup();
    (ok, failed)
}

/// Splits `records` (by index) into rounds in which each delivery appears at most once,
/// keeping the order of a delivery's records across rounds. Almost always one round; a delivery
/// recorded twice (a lease lost and won again) puts its second record in a second round.
fn rounds_of_distinct_deliveries(records: &[AttemptRecord]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<Uuid, usize> = HashMap::with_capacity(records.len());
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let round = seen.entry(r.delivery_id).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(i);
        *round += 1;
    }
    rounds
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
