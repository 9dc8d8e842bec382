//! The hub's domain: subscriptions, events, deliveries, attempts and dead letters, as every
//! layer speaks of them. Nothing here knows about SQL or HTTP: the store maps these to rows, the
//! API to its response types (`api/`), so neither leaks into the other.

pub mod circuit;
pub mod filter;
pub mod names;
pub mod notice;
mod query;
pub mod rate;
pub mod trace;

pub use query::{
    DeadLetterFilter, DeliveryCounts, DeliveryLine, DestinationStats, EventFilter, EventSummary,
    Feed, MAX_LATENCY_SAMPLE, Percentiles, StatsOf, TypeMatch,
};

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// How long a rotated-out subscription secret stays valid for signatures.
pub const SECRET_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// The current time at the precision every backend stores (microseconds), so what is written
/// reads back equal.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// State of a subscription's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    pub const ALL: [Self; 3] = [Self::Closed, Self::Open, Self::HalfOpen];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// The circuit breaker as shown on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circuit {
    pub state: CircuitState,
    pub consecutive_failures: u32,
}

/// A subscription: the events it takes and where they go, a webhook URL or a connector
/// instance. The secret is deliberately not a field: it is only read by the delivery engine
/// through [`Store::subscription_secrets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: Uuid,
    /// The webhook URL; empty when the destination is a connector instance.
    pub url: String,
    /// The connector instance events go to, instead of a URL.
    pub instance: Option<InstanceRef>,
    pub events: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// Which events of its types it takes (`model/filter.rs`); `None` takes them all.
    pub filter: Option<filter::Filter>,
    /// Deliveries are created and held, not attempted, until it is resumed.
    pub paused: bool,
    /// Deliveries of events sharing an ordering key go one at a time, in publish order.
    pub ordered: bool,
    /// At most this many deliveries a second (plus a burst), across all instances.
    pub rate_limit: Option<rate::RateLimit>,
    /// The transform its webhook deliveries go through.
    pub transform: Option<TransformRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub circuit: Circuit,
}

impl Circuit {
    /// A new subscription's: closed, no failures.
    pub const CLOSED: Circuit = Circuit {
        state: CircuitState::Closed,
        consecutive_failures: 0,
    };
}

/// The transform component a webhook subscription's deliveries go through, and its settings
/// (`connectors/transform.rs`). Stored as this JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransformRef {
    pub name: String,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

impl TransformRef {
    /// Settings one transform may have.
    pub const MAX_SETTINGS: usize = 32;
    /// Bytes of one setting's value.
    pub const MAX_VALUE: usize = 4096;
}

/// A connector instance as a subscription names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRef {
    pub id: Uuid,
    /// The connector (component) it runs.
    pub connector: String,
    pub name: String,
}

/// One configured destination of a connector: the component, and settings of its own (a
/// Slack workspace and channel, a Discord webhook), so one component serves many destinations.
/// The default instance of a connector is not stored: its settings come from `IH_<NAME>_<KEY>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorInstance {
    pub id: Uuid,
    pub connector: String,
    pub name: String,
    /// Setting values by key (the manifest's `config`).
    pub settings: Settings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A connector instance's setting values by key. `Debug` shows the keys only: values may be
/// secrets (tokens).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Settings(pub BTreeMap<String, String>);

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl ConnectorInstance {
    pub fn reference(&self) -> InstanceRef {
        InstanceRef {
            id: self.id,
            connector: self.connector.clone(),
            name: self.name.clone(),
        }
    }
}

/// What deleting a connector instance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceDeletion {
    Deleted,
    NotFound,
    /// Live subscriptions deliver to it: delete or repoint them first.
    InUse(Vec<Uuid>),
}

/// A validated subscription to create: the subscription as it will read back (its circuit
/// closed, updated when created) and its first secret.
#[derive(Clone)]
pub struct NewSubscription {
    pub subscription: Subscription,
    /// The signing secret of a webhook; `None` for a connector instance (nothing is signed).
    pub secret: Option<String>,
}

impl fmt::Debug for NewSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSubscription")
            .field("subscription", &self.subscription)
            .field("secret", &"[redacted]")
            .finish()
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
    /// `Some(None)` removes the filter.
    pub filter: Option<Option<filter::Filter>>,
    pub paused: Option<bool>,
    pub ordered: Option<bool>,
    /// `Some(None)` removes the limit.
    pub rate_limit: Option<Option<rate::RateLimit>>,
    /// `Some(None)` removes the transform.
    pub transform: Option<Option<TransformRef>>,
}

impl fmt::Debug for SubscriptionPatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionPatch")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

/// The due time of a held delivery (its subscription is paused): never reached, so claims pass
/// over it; resuming makes it due.
pub fn held_until() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_214_400, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// An event to store, with its payload exactly as the client sent it (a JSON object), so the
/// bytes that are signed later are the bytes that were accepted.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub event_type: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    /// Events sharing it reach an `ordered` subscription one at a time, in publish order.
    pub ordering_key: Option<String>,
    /// The W3C `traceparent` of the request that published it (`trace.rs`).
    pub traceparent: Option<String>,
}

/// A stored event as returned by a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedEvent {
    pub id: Uuid,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    /// How many destinations (subscriptions and connectors) got a delivery.
    pub deliveries: u32,
    /// How many of those this instance's engine started at once, unclaimed
    /// (`store/handoff.rs`); the others wait to be claimed.
    pub started: u32,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Webhook {
        subscription_id: Uuid,
        url: String,
    },
    /// A connector's default instance, through its binding.
    Connector {
        connector: String,
    },
    /// A connector instance, through a subscription.
    Instance {
        subscription_id: Uuid,
        connector: String,
        instance: String,
    },
}

/// Lifecycle of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::InFlight,
        Self::Succeeded,
        Self::Dead,
        Self::Cancelled,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// How one attempt ended, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
        }
    }

    pub const ALL: [Self; 2] = [Self::Succeeded, Self::Failed];
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
    /// The event's `traceparent`, passed on (as a child) to the calls this delivery makes.
    pub traceparent: Option<String>,
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
        /// The transform the body goes through first.
        transform: Option<TransformRef>,
    },
    Connector {
        name: String,
        /// A subscription's instance (its settings, and the subscription whose circuit breaker
        /// the attempt feeds); `None` for the default instance (settings from the environment).
        instance: Option<InstanceTarget>,
    },
}

/// The instance a claimed connector delivery goes to.
#[derive(Debug, Clone)]
pub struct InstanceTarget {
    pub subscription_id: Uuid,
    pub id: Uuid,
    pub settings: Settings,
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
            Target::Connector { name, instance } => f
                .debug_struct("Connector")
                .field("name", name)
                .field("instance", &instance.as_ref().map(|i| i.id))
                .finish(),
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
    /// For webhooks and connector instances: the subscription, whose circuit breaker this
    /// attempt feeds.
    pub subscription_id: Option<Uuid>,
    /// The endpoint answered 410 Gone: disable the subscription.
    pub gone: bool,
    /// For connectors (default instance or an instance): its name, kept on the attempt for the
    /// connector's statistics.
    pub connector: Option<String>,
    /// An attempt of one of the hub's own events (`hub.*`): it produces no notices
    /// (`model/notice.rs`), so a failing receiver of notices never feeds itself.
    pub quiet: bool,
    /// What the connector reported, when a connector answered.
    pub report: Option<ConnectorReport>,
    /// The SHA-256 (hex) of the body a transform made, when one was sent.
    pub body_sha256: Option<String>,
}

/// What a connector said of one attempt, kept on its record (upstream status goes to
/// `response_status`, a reason to `error`, or to `response_body` for a skip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorReport {
    pub kind: ReportKind,
    /// The upstream's id for what was created (`ok`).
    pub external_id: Option<String>,
    /// The delay the connector asked for (`retry`).
    pub retry_after_ms: Option<u64>,
}

/// Which answer a connector gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Ok,
    Skipped,
    Retry,
    Permanent,
}

impl ReportKind {
    pub const ALL: [Self; 4] = [Self::Ok, Self::Skipped, Self::Retry, Self::Permanent];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Skipped => "skipped",
            Self::Retry => "retry",
            Self::Permanent => "permanent",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
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
    pub outcome: AttemptOutcome,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub started_at: DateTime<Utc>,
    /// What the connector reported (connector attempts only).
    pub report: Option<ConnectorReport>,
    /// The SHA-256 (hex) of the body a transform made (transformed webhooks only).
    pub body_sha256: Option<String>,
}

/// A dead letter as shown by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
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

/// One page of a list ordered by id: at most `limit` items after the id `after` (the last one
/// of the previous page, in the list's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<Uuid>,
    pub limit: u32,
}

/// A claim of due deliveries by one engine (see `Store::claim_deliveries`).
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The lease owner: the claiming engine.
    pub owner: &'a str,
    pub now: DateTime<Utc>,
    /// When the leases expire unless the attempts are recorded first.
    pub lease_until: DateTime<Utc>,
    /// Most deliveries to take.
    pub limit: u32,
    /// Destinations to leave alone (those the engine already runs at their cap).
    pub skip: &'a Skip,
    /// The connectors this engine can run now (default instance active); their bindings'
    /// deliveries are claimed, those of others wait (pending) for an instance that has them.
    pub connectors: &'a [String],
    /// The connectors whose component is loaded here: deliveries to their instances are
    /// claimed, those of others wait.
    pub loaded: &'a [String],
}

/// A connector's durable claim on the event types it takes: once a connector has been active,
/// its events get deliveries whether or not it is loaded at that moment (they wait while it is
/// missing, failed or inactive), until an operator unbinds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorBinding {
    pub name: String,
    /// Event types, or `*`.
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Its deliveries not finished yet (waiting, due or in flight).
    pub pending: u64,
}

/// Destinations a claim leaves alone: those the engine already runs at their cap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skip {
    pub subscriptions: Vec<Uuid>,
    pub connectors: Vec<String>,
}
