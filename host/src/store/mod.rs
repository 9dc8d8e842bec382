//! Durable storage: one [`Store`] trait, its algorithms written once (`common.rs`) over two
//! dialects (`sqlite.rs`, `postgres.rs`).
//!
//! All SQL of the hub lives under this module. The rest of the code speaks in the domain types
//! of [`crate::model`] and never sees a row.
//!
//! Where things are:
//! - `common.rs`: every store operation's algorithm (a new operation starts here);
//! - `plan.rs`: the pure parts (publish-group decisions, delivery rows, record grouping);
//! - `rows.rs`: rows to domain types; `sql.rs`: the seam a backend implements;
//! - `sqlite.rs`, `postgres.rs`: connecting, claims, bulk inserts, wake-ups between instances;
//! - `group.rs`: group commit of publishes and attempt records; `error.rs`: [`StoreError`].
//!
//! Invariants every backend keeps (checked by the contract suite in `tests/`, run against both):
//! - an event and all of its deliveries are written in one transaction ([`Store::publish`]), so an
//!   accepted event always has its outbox rows;
//! - an idempotency key maps to exactly one publish while it is live (24 h);
//! - a deleted subscription is soft-deleted: its history (deliveries, attempts) stays readable,
//!   its pending deliveries become `cancelled` in the same transaction;
//! - timestamps are UTC with microsecond precision, so what is written reads back equal.

mod common;
mod error;
pub mod group;
mod handoff;
mod instances;
mod kept;
mod notices;
mod ops;
mod plan;
mod postgres;
mod publish;
mod queries;
mod remembered;
mod rollup;
mod rows;
mod seal;
mod secrets;
mod sql;
mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::Config;
use crate::model::{
    AttemptRecord, AttemptView, Backend, Claim, ClaimedDelivery, ConnectorBinding,
    ConnectorInstance, DeadLetter, DeadLetterFilter, DeliveryLine, DeliveryStatus,
    DestinationStats, EventDetail, EventFilter, EventSummary, Feed, IdempotencyKey,
    InstanceDeletion, NewEvent, NewSubscription, OutboxStats, PageRequest, PublishOutcome,
    PublishRequest, ReplayOutcome, StatsOf, Subscription, SubscriptionPatch,
};

pub use error::{StoreError, StoreResult};
pub use handoff::{Handoff, Reserved};
pub use postgres::PostgresStore;
pub use remembered::DestinationReads;
pub use seal::{Keyring, key_id};
pub use sqlite::SqliteStore;

/// Storage operations of the hub. Object-safe, so the backend is chosen at run time.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    fn backend(&self) -> Backend;

    /// Checks that the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Seals every subscription secret that is stored plain or under another key than the
    /// first one; returns how many. Fails, changing nothing more, when a secret is sealed with
    /// a key the keyring does not hold.
    async fn reseal_secrets(&self) -> StoreResult<u64>;

    async fn create_subscription(&self, new: NewSubscription) -> StoreResult<Subscription>;

    /// A subscription that exists and is not deleted.
    async fn get_subscription(&self, id: Uuid) -> StoreResult<Option<Subscription>>;

    /// Live subscriptions in id (= creation) order.
    async fn list_subscriptions(&self, page: PageRequest) -> StoreResult<Vec<Subscription>>;

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
    /// rotated out less than [`crate::model::SECRET_GRACE`] ago, newest first.
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
        only(self.publish_group(vec![request], now).await?)
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
    async fn claim_deliveries(&self, claim: Claim<'_>) -> StoreResult<Vec<ClaimedDelivery>>;

    /// Hands claimed deliveries back to `pending`, unattempted, due at `until` (their transform
    /// is not loaded here yet).
    async fn postpone_deliveries(
        &self,
        owner: &str,
        ids: &[Uuid],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

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
        only(self.record_attempts(vec![record], now).await?)
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

    /// Dead letters matching `filter`, newest first.
    async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<DeadLetter>>;

    /// Events matching `filter`, newest first, with their deliveries counted by state.
    async fn list_events(
        &self,
        filter: &EventFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<EventSummary>>;

    /// Events and attempts newer than the cursors (oldest first, at most `limit` of each); with
    /// no cursors, nothing but the cursors of now.
    async fn feed(
        &self,
        after_event: Option<Uuid>,
        after_attempt: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Feed>;

    /// What the attempts of `of` since `since` came to, and its backlog.
    async fn destination_stats(
        &self,
        of: StatsOf<'_>,
        since: DateTime<Utc>,
    ) -> StoreResult<DestinationStats>;

    /// Counts the attempts of up to `max_buckets` finished 5-minute buckets not counted yet into
    /// the figures statistics read (`store/rollup.rs`); answers how many buckets it counted.
    async fn roll_up_attempts(&self, now: DateTime<Utc>, max_buckets: u32) -> StoreResult<u32>;

    /// A subscription's deliveries (in any of `statuses`; none given: all), newest first.
    async fn subscription_deliveries(
        &self,
        subscription_id: Uuid,
        statuses: &[DeliveryStatus],
        page: PageRequest,
    ) -> StoreResult<Vec<DeliveryLine>>;

    /// Queues a dead letter's delivery again with a fresh attempt budget.
    async fn replay_dead_letter(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<ReplayOutcome>;

    /// Replays every dead letter matching `filter` not replayed yet (at most [`crate::model::MAX_BULK_REPLAY`]).
    async fn replay_dead_letters(
        &self,
        filter: DeadLetterFilter,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    async fn outbox_stats(&self, now: DateTime<Utc>) -> StoreResult<OutboxStats>;

    /// Live subscriptions whose circuit is not closed now.
    async fn open_circuits(&self) -> StoreResult<u64>;

    /// Notes that connector file `connector` failed to load, for a `hub.connector.failed` event.
    async fn notify_connector_failed(
        &self,
        connector: &str,
        problem: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Publishes up to `limit` of the hub's notices as `hub.*` events (`model/notice.rs`), each
    /// once, removing them in the same transaction; answers how many.
    async fn publish_notices(&self, limit: u32) -> StoreResult<u32>;

    /// How many deliveries were dead-lettered at or after `since`.
    async fn count_dead_letters(&self, since: DateTime<Utc>) -> StoreResult<u64>;

    /// Binds connector `name` to `events` (or changes what it is bound to): from now on every
    /// publish of those types gets a delivery for it, whether or not it is loaded then. Returns
    /// whether anything changed (binding the same again writes nothing).
    async fn bind_connector(
        &self,
        name: &str,
        events: &[String],
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Every binding, by name, with its unfinished deliveries counted.
    async fn connector_bindings(&self) -> StoreResult<Vec<ConnectorBinding>>;

    /// Removes a binding and cancels its unfinished deliveries (an attempt in flight is still
    /// recorded, but moves nothing), in one transaction. Returns the number cancelled, or `None`
    /// when there is no such binding.
    async fn unbind_connector(&self, name: &str, now: DateTime<Utc>) -> StoreResult<Option<u64>>;

    /// Records that `instance` has exactly the connectors `loaded` (by name, with whether it
    /// runs their default instance), as of `now`.
    async fn report_connectors(
        &self,
        instance: &str,
        loaded: &[(String, bool)],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Moves due deliveries that no live instance (reported since `alive_since`) can take to
    /// `until`, unattempted, noting why they wait (claims then never wade through them): those
    /// of a binding whose connector no instance runs, and those of a subscription whose
    /// connector instance's component no instance has loaded. Cancels due ones whose connector
    /// is no longer bound (a publish that raced an unbind). Returns the number deferred.
    async fn defer_waiting_connectors(
        &self,
        alive_since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// Creates a connector instance; `None` when `connector` already has a live instance of
    /// that name.
    async fn create_connector_instance(
        &self,
        instance: ConnectorInstance,
    ) -> StoreResult<Option<ConnectorInstance>>;

    /// The live instances of `connector`, by name.
    async fn connector_instances(&self, connector: &str) -> StoreResult<Vec<ConnectorInstance>>;

    async fn connector_instance(
        &self,
        connector: &str,
        name: &str,
    ) -> StoreResult<Option<ConnectorInstance>>;

    /// Replaces a live instance's settings; `None` when there is no such instance.
    async fn update_connector_instance(
        &self,
        id: Uuid,
        settings: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ConnectorInstance>>;

    /// Deletes an instance, unless live subscriptions deliver to it.
    async fn delete_connector_instance(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<InstanceDeletion>;

    /// Deletes up to `limit` finished events created before `before` (with their deliveries,
    /// attempts and dead letters) and expired idempotency keys. Returns the events deleted.
    async fn prune(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64>;

    /// Hands the deliveries of events published from now on to `engine`, already leased, as far
    /// as it has room (`handoff.rs`); `None` stops it (an engine that stops).
    fn hand_off_to(&self, engine: Option<Arc<dyn Handoff>>);

    /// How publish groups found their destinations: remembered and checked by the insert, or
    /// read first (`remembered.rs`; SQLite always reads).
    fn destination_reads(&self) -> DestinationReads;

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

/// The one answer of a group of one.
fn only<T>(mut answers: Vec<T>) -> StoreResult<T> {
    answers
        .pop()
        .ok_or_else(|| StoreError::Corrupt("a request of a group was not answered".into()))
}

/// Opens the database named by the configuration, creating it (SQLite) if needed, and applies
/// the embedded migrations.
pub async fn connect(config: &Config) -> StoreResult<Arc<dyn Store>> {
    let url = config.database_url.as_str();
    let keyring = Keyring::new(&config.encryption_keys);
    let store: Arc<dyn Store> = if config.database_url.is_postgres() {
        Arc::new(PostgresStore::connect(url, config.database_max_connections, keyring).await?)
    } else {
        Arc::new(SqliteStore::connect(url, keyring).await?)
    };
    // Before anything reads a secret: rows stored plain or under a retired key are sealed
    // with the first key now, and a missing key stops start-up here, naming its id.
    let resealed = store.reseal_secrets().await?;
    if resealed > 0 {
        tracing::info!(resealed, key_id = ?config.encryption_keys.first().map(key_id), "subscription secrets sealed with the first IH_ENCRYPTION_KEY");
    }
    Ok(store)
}

/// What a serving hub holds for as long as it runs so that no second hub serves the same
/// SQLite file (nothing for PostgreSQL, which serves many): see `sqlite::exclusive`.
pub async fn hold_database(config: &Config) -> StoreResult<Option<std::fs::File>> {
    if config.database_url.is_postgres() {
        return Ok(None);
    }
    sqlite::exclusive(config.database_url.as_str()).await
}

/// Applies pending migrations without starting anything else (`integrations-hub migrate`).
pub async fn migrate(config: &Config) -> StoreResult<()> {
    // Both constructors migrate; connecting is all it takes.
    connect(config).await.map(drop)
}
