//! The store's operations, each algorithm written once for both backends: every [`Dialect`] is
//! a [`Store`]. Statements are shared text with `$n` placeholders; where a backend's text or
//! method differs, the dialect supplies it (`sql.rs`). A new store operation starts here.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::common::{Notify, commit, hand_back, live_subscription, requeue_dead};
use super::plan::encode_json;
use super::rows::{self, attempt_views, destination_columns, subscription_columns};
use super::sql::{Arg, Conn, DbRow, Dialect};
use super::{Store, StoreError, StoreResult};
use super::{instances, notices, publish, queries, rollup, secrets};
use crate::model::{
    AttemptRecord, AttemptView, Backend, Claim, ClaimedDelivery, ConnectorBinding,
    ConnectorInstance, DeadLetter, DeadLetterFilter, DeliveryLine, DeliveryStatus,
    DestinationStats, EventDetail, EventFilter, EventSummary, Feed, InstanceDeletion,
    MAX_BULK_REPLAY, NewSubscription, OutboxStats, PageRequest, PublishOutcome, PublishRequest,
    ReplayOutcome, StatsOf, Subscription, SubscriptionPatch, held_until, notice,
};

/// Hands `owner`'s in-flight deliveries back to `pending`; `only` narrows them down (`{ids}`).
const RELEASE: &str = "UPDATE deliveries SET status = 'pending', lease_owner = NULL, \
     lease_expires_at = NULL, next_attempt_at = $1, updated_at = $1 WHERE status = 'in_flight'";

/// Runs a read on a reader connection and decodes every row with `decode`.
async fn read_all<D: Dialect, T>(
    store: &D,
    sql: &str,
    args: &[Arg<'_>],
    decode: impl Fn(&<D::Conn as Conn>::Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let rows = store.reader().acquire().await?.rows(sql, args).await?;
    rows.iter().map(decode).collect()
}

#[async_trait::async_trait]
impl<D: Dialect> Store for D {
    fn backend(&self) -> Backend {
        D::BACKEND
    }

    async fn ping(&self) -> StoreResult<()> {
        self.reader().acquire().await?.exec("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn create_subscription(&self, new: NewSubscription) -> StoreResult<Subscription> {
        let mut conn = self.writer().take().await?;
        let mut tx = conn.begin().await?;
        let NewSubscription {
            subscription: new,
            secret,
        } = new;
        let headers = encode_json(&new.headers);
        let instance = new.instance.as_ref().map(|i| i.id);
        let filter = new.filter.as_ref().map(|f| f.source().to_string());
        let transform = new.transform.as_ref().map(encode_json);
        tx.exec(
            "INSERT INTO subscriptions (id, url, description, events, headers, enabled, created_at, \
             updated_at, instance_id, filter, paused, ordered, rate_per_second, rate_burst, transform) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                Arg::Uuid(new.id),
                Arg::Text(&new.url),
                Arg::OptText(new.description.as_deref()),
                Arg::Names(&new.events),
                Arg::Json(&headers),
                Arg::Bool(new.enabled),
                Arg::Time(new.created_at),
                Arg::OptUuid(instance),
                Arg::OptText(filter.as_deref()),
                Arg::Bool(new.paused),
                Arg::Bool(new.ordered),
                Arg::OptInt(new.rate_limit.map(|r| r.per_second.into())),
                Arg::OptInt(new.rate_limit.map(|r| r.burst.into())),
                Arg::OptText(transform.as_deref()),
            ],
        )
        .await?;
        if let Some(secret) = &secret {
            secrets::add(&mut *tx, self.keyring(), new.id, secret, new.created_at).await?;
        }
        let created = live_subscription::<D>(&mut tx, new.id, "")
            .await?
            .ok_or_else(|| StoreError::Corrupt("subscription vanished after insert".into()))?;
        commit::<D>(tx).await?;
        conn.keep();
        Ok(created)
    }

    async fn get_subscription(&self, id: Uuid) -> StoreResult<Option<Subscription>> {
        live_subscription::<D>(&mut *self.reader().acquire().await?, id, "").await
    }

    async fn list_subscriptions(&self, page: PageRequest) -> StoreResult<Vec<Subscription>> {
        let sql = concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM subscriptions WHERE deleted_at IS NULL AND ($1 IS NULL OR id > $1) \
             ORDER BY id LIMIT $2"
        );
        let args = [Arg::OptUuid(page.after), Arg::Int(page.limit.into())];
        read_all(self, sql, &args, rows::subscription).await
    }

    async fn update_subscription(
        &self,
        id: Uuid,
        patch: SubscriptionPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Subscription>> {
        let mut conn = self.writer().take().await?;
        let mut tx = conn.begin().await?;
        // Locked: two concurrent patches apply one after the other, neither is lost.
        let Some(current) = live_subscription::<D>(&mut tx, id, D::lock(" FOR UPDATE")).await?
        else {
            return Ok(None);
        };
        let enabled = patch.enabled.unwrap_or(current.enabled);
        let paused = patch.paused.unwrap_or(current.paused);
        let headers = encode_json(patch.headers.as_ref().unwrap_or(&current.headers));
        let description = patch.description.clone().unwrap_or(current.description);
        let filter = patch.filter.clone().unwrap_or(current.filter);
        let filter = filter.as_ref().map(|f| f.source().to_string());
        let ordered = patch.ordered.unwrap_or(current.ordered);
        let rate = patch.rate_limit.unwrap_or(current.rate_limit);
        let transform = patch.transform.clone().unwrap_or(current.transform);
        let transform = transform.as_ref().map(encode_json);
        tx.exec(
            "UPDATE subscriptions SET url = $1, events = $2, enabled = $3, description = $4, headers = $5, \
             disabled_reason = CASE WHEN $3 THEN NULL ELSE disabled_reason END, updated_at = $6, \
             filter = $8, paused = $9, ordered = $10, rate_per_second = $11, rate_burst = $12, \
             transform = $13 WHERE id = $7",
            &[
                Arg::Text(patch.url.as_ref().unwrap_or(&current.url)),
                Arg::Names(patch.events.as_ref().unwrap_or(&current.events)),
                Arg::Bool(enabled),
                Arg::OptText(description.as_deref()),
                Arg::Json(&headers),
                Arg::Time(now),
                Arg::Uuid(id),
                Arg::OptText(filter.as_deref()),
                Arg::Bool(paused),
                Arg::Bool(ordered),
                Arg::OptInt(rate.map(|r| r.per_second.into())),
                Arg::OptInt(rate.map(|r| r.burst.into())),
                Arg::OptText(transform.as_deref()),
            ],
        )
        .await?;
        if current.enabled && !enabled {
            let notice = Notify::about(id, Some("operator"));
            notice
                .write(&mut *tx, notice::SUBSCRIPTION_DISABLED, now)
                .await?;
        }
        if paused != current.paused {
            // Pausing holds what waits (claims never wade through it); resuming makes it due.
            let (from, to) = if paused {
                (None, held_until())
            } else {
                (Some(held_until()), now)
            };
            tx.exec(
                "UPDATE deliveries SET next_attempt_at = $1, updated_at = $2 \
                 WHERE subscription_id = $3 AND status = 'pending' \
                 AND ($4 IS NULL OR next_attempt_at = $4)",
                &[
                    Arg::Time(to),
                    Arg::Time(now),
                    Arg::Uuid(id),
                    Arg::OptTime(from),
                ],
            )
            .await?;
        }
        if let Some(secret) = &patch.secret {
            secrets::rotate(&mut *tx, self.keyring(), id, secret, now).await?;
        }
        let updated = live_subscription::<D>(&mut tx, id, "").await?;
        commit::<D>(tx).await?;
        conn.keep();
        Ok(updated)
    }

    async fn delete_subscription(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<u64>> {
        let mut conn = self.writer().take().await?;
        let mut tx = conn.begin().await?;
        let deleted = tx
            .exec(
                "UPDATE subscriptions SET deleted_at = $1, enabled = FALSE, updated_at = $1 \
                 WHERE id = $2 AND deleted_at IS NULL",
                &[Arg::Time(now), Arg::Uuid(id)],
            )
            .await?;
        if deleted == 0 {
            return Ok(None);
        }
        let cancelled = tx
            .exec(
                "UPDATE deliveries SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, \
                 last_error = 'subscription deleted', updated_at = $1 \
                 WHERE subscription_id = $2 AND status IN ('pending', 'in_flight')",
                &[Arg::Time(now), Arg::Uuid(id)],
            )
            .await?;
        // Nothing will be signed for a deleted subscription again: its secrets go now.
        tx.exec(
            "DELETE FROM subscription_secrets WHERE subscription_id = $1",
            &[Arg::Uuid(id)],
        )
        .await?;
        commit::<D>(tx).await?;
        conn.keep();
        Ok(Some(cancelled))
    }

    async fn subscription_secrets(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Vec<String>> {
        let sql = "SELECT key_id, secret FROM subscription_secrets \
             WHERE subscription_id = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY id DESC";
        let args = [Arg::Uuid(id), Arg::Time(now)];
        read_all(self, sql, &args, |row| {
            self.keyring()
                .open(id, &row.text("key_id")?, &row.text("secret")?)
        })
        .await
    }

    async fn reseal_secrets(&self) -> StoreResult<u64> {
        secrets::reseal(self).await
    }

    async fn publish_group(
        &self,
        requests: Vec<PublishRequest>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PublishOutcome>> {
        publish::group(self, requests, now).await
    }

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<EventDetail>> {
        let mut conn = self.reader().acquire().await?;
        let Some(event) = conn
            .row(
                "SELECT id, event_type, CAST(payload AS TEXT) AS payload, created_at FROM events WHERE id = $1",
                &[Arg::Uuid(id)],
            )
            .await?
        else {
            return Ok(None);
        };
        let deliveries = conn
            .rows(
                concat!(
                    "SELECT d.id, ",
                    destination_columns!(),
                    ", d.status, d.attempts, d.next_attempt_at, d.last_error, d.updated_at \
                     FROM deliveries d LEFT JOIN subscriptions s ON s.id = d.subscription_id \
                     WHERE d.event_id = $1 ORDER BY d.id"
                ),
                &[Arg::Uuid(id)],
            )
            .await?
            .iter()
            .map(rows::delivery_summary)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(EventDetail {
            id: event.uuid("id")?,
            event_type: event.text("event_type")?,
            payload: event.text("payload")?,
            created_at: event.time("created_at")?,
            deliveries,
        }))
    }

    async fn claim_deliveries(&self, claim: Claim<'_>) -> StoreResult<Vec<ClaimedDelivery>> {
        self.claim(claim).await
    }

    async fn release_deliveries(
        &self,
        owner: &str,
        ids: &[Uuid],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        // Unattempted: they keep their due time.
        hand_back(self, owner, ids, None, now).await
    }

    async fn postpone_deliveries(
        &self,
        owner: &str,
        ids: &[Uuid],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        hand_back(self, owner, ids, Some(until), now).await
    }

    async fn record_attempts(
        &self,
        records: Vec<AttemptRecord>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        self.record(records, now).await
    }

    async fn release_expired_leases(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let sql = format!("{RELEASE} AND lease_expires_at <= $1");
        let mut conn = self.writer().take().await?;
        let released = conn.exec(&sql, &[Arg::Time(now)]).await?;
        conn.keep();
        Ok(released)
    }

    async fn release_leases(&self, owner: &str, now: DateTime<Utc>) -> StoreResult<u64> {
        let sql = format!("{RELEASE} AND lease_owner = $2");
        let mut conn = self.writer().take().await?;
        let released = conn.exec(&sql, &[Arg::Time(now), Arg::Text(owner)]).await?;
        conn.keep();
        Ok(released)
    }

    async fn list_attempts(&self, event_id: Uuid) -> StoreResult<Vec<AttemptView>> {
        let sql = concat!(
            attempt_views!(),
            " WHERE a.event_id = $1 ORDER BY a.started_at, a.id LIMIT 1000"
        );
        read_all(self, sql, &[Arg::Uuid(event_id)], rows::attempt_view).await
    }

    async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<DeadLetter>> {
        queries::list_dead_letters(self, filter, page).await
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<EventSummary>> {
        queries::list_events(self, filter, page).await
    }

    async fn feed(
        &self,
        after_event: Option<Uuid>,
        after_attempt: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Feed> {
        queries::feed(self, after_event, after_attempt, limit).await
    }

    async fn destination_stats(
        &self,
        of: StatsOf<'_>,
        since: DateTime<Utc>,
    ) -> StoreResult<DestinationStats> {
        queries::destination_stats(self, of, since).await
    }

    async fn roll_up_attempts(&self, now: DateTime<Utc>, max_buckets: u32) -> StoreResult<u32> {
        rollup::roll_up(self, now, max_buckets).await
    }

    async fn subscription_deliveries(
        &self,
        subscription_id: Uuid,
        statuses: &[DeliveryStatus],
        page: PageRequest,
    ) -> StoreResult<Vec<DeliveryLine>> {
        queries::subscription_deliveries(self, subscription_id, statuses, page).await
    }

    async fn replay_dead_letter(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<ReplayOutcome> {
        let mut conn = self.writer().take().await?;
        let mut tx = conn.begin().await?;
        // Locked: of two concurrent replays of one dead letter, the second sees `replayed_at`.
        let sql = format!(
            "SELECT dl.delivery_id, dl.replayed_at, d.kind, s.deleted_at FROM dead_letters dl \
             JOIN deliveries d ON d.id = dl.delivery_id LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE dl.id = $1{}",
            D::lock(" FOR UPDATE OF dl")
        );
        let Some(row) = tx.row(&sql, &[Arg::Uuid(id)]).await? else {
            return Ok(ReplayOutcome::NotFound);
        };
        if row.opt_time("replayed_at")?.is_some() {
            return Ok(ReplayOutcome::AlreadyReplayed);
        }
        if row.text("kind")? == "webhook" && row.opt_time("deleted_at")?.is_some() {
            return Ok(ReplayOutcome::SubscriptionDeleted);
        }
        let delivery_id = row.uuid("delivery_id")?;
        requeue_dead(&mut *tx, &[id], &[delivery_id], now).await?;
        commit::<D>(tx).await?;
        conn.keep();
        Ok(ReplayOutcome::Replayed { delivery_id })
    }

    async fn replay_dead_letters(
        &self,
        filter: DeadLetterFilter,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut conn = self.writer().take().await?;
        let mut tx = conn.begin().await?;
        let mut w = queries::dead_letters_where(&filter);
        w.push("dl.replayed_at IS NULL", []);
        w.push("(d.kind = 'connector' OR s.deleted_at IS NULL)", []);
        let limit = w.limit(MAX_BULK_REPLAY);
        let sql = format!(
            "SELECT dl.id, dl.delivery_id FROM dead_letters dl JOIN deliveries d ON d.id = dl.delivery_id \
             JOIN events e ON e.id = dl.event_id LEFT JOIN subscriptions s ON s.id = d.subscription_id \
             WHERE {} ORDER BY dl.id LIMIT {limit}{}",
            w.sql(),
            D::lock(" FOR UPDATE OF dl SKIP LOCKED")
        );
        let rows = tx.rows(&sql, &w.args).await?;
        let ids = rows
            .iter()
            .map(|r| r.uuid("id"))
            .collect::<StoreResult<Vec<_>>>()?;
        let deliveries = rows
            .iter()
            .map(|r| r.uuid("delivery_id"))
            .collect::<StoreResult<Vec<_>>>()?;
        requeue_dead(&mut *tx, &ids, &deliveries, now).await?;
        commit::<D>(tx).await?;
        conn.keep();
        Ok(ids.len() as u64)
    }

    async fn outbox_stats(&self, _now: DateTime<Utc>) -> StoreResult<OutboxStats> {
        let mut conn = self.reader().acquire().await?;
        let (pending, oldest_pending_created_at) =
            queries::backlog(&mut *conn, StatsOf::Hub).await?;
        Ok(OutboxStats {
            pending,
            oldest_pending_created_at,
            open_circuits: queries::open_circuits(&mut *conn).await?,
        })
    }

    async fn open_circuits(&self) -> StoreResult<u64> {
        queries::open_circuits(&mut *self.reader().acquire().await?).await
    }

    async fn notify_connector_failed(
        &self,
        connector: &str,
        problem: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        notices::connector_failed(self, connector, problem, now).await
    }

    async fn publish_notices(&self, limit: u32) -> StoreResult<u32> {
        notices::publish(self, limit).await
    }

    async fn count_dead_letters(&self, since: DateTime<Utc>) -> StoreResult<u64> {
        let mut conn = self.reader().acquire().await?;
        let row = conn
            .row(
                "SELECT COUNT(*) AS n FROM dead_letters WHERE created_at >= $1",
                &[Arg::Time(since)],
            )
            .await?;
        row.map_or(Ok(0), |row| row.get::<u64>("n"))
    }

    async fn prune(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let mut conn = self.writer().take().await?;
        let mut tx = conn.begin().await?;
        let sql = format!(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status IN ('pending', 'in_flight')) \
             ORDER BY e.created_at LIMIT $2{})",
            D::lock(" FOR UPDATE SKIP LOCKED")
        );
        let deleted = tx
            .exec(&sql, &[Arg::Time(before), Arg::Int(limit.into())])
            .await?;
        tx.exec(
            "DELETE FROM idempotency_keys WHERE expires_at <= $1",
            &[Arg::Time(now)],
        )
        .await?;
        tx.exec(
            "DELETE FROM attempt_buckets WHERE bucket < $1",
            &[Arg::Time(before)],
        )
        .await?;
        commit::<D>(tx).await?;
        conn.keep();
        Ok(deleted)
    }

    async fn bind_connector(
        &self,
        name: &str,
        events: &[String],
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut conn = self.writer().take().await?;
        let changed = conn
            .exec(
                "INSERT INTO connector_bindings (name, events, created_at, updated_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (name) DO UPDATE SET events = excluded.events, updated_at = excluded.updated_at \
                 WHERE connector_bindings.events <> excluded.events",
                &[Arg::Text(name), Arg::Names(events), Arg::Time(now)],
            )
            .await?;
        conn.keep();
        Ok(changed == 1)
    }

    async fn connector_bindings(&self) -> StoreResult<Vec<ConnectorBinding>> {
        let sql = "SELECT b.name, b.events, b.created_at, b.updated_at, \
             (SELECT COUNT(*) FROM deliveries d WHERE d.connector = b.name \
              AND d.status IN ('pending', 'in_flight')) AS pending \
             FROM connector_bindings b ORDER BY b.name";
        read_all(self, sql, &[], rows::connector_binding).await
    }

    async fn unbind_connector(&self, name: &str, now: DateTime<Utc>) -> StoreResult<Option<u64>> {
        let mut conn = self.writer().take().await?;
        let mut tx = conn.begin().await?;
        let removed = tx
            .exec(
                "DELETE FROM connector_bindings WHERE name = $1",
                &[Arg::Text(name)],
            )
            .await?;
        if removed == 0 {
            return Ok(None);
        }
        let cancelled = tx
            .exec(
                "UPDATE deliveries SET status = 'cancelled', last_error = 'connector unbound', \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
                 WHERE connector = $2 AND status IN ('pending', 'in_flight')",
                &[Arg::Time(now), Arg::Text(name)],
            )
            .await?;
        commit::<D>(tx).await?;
        conn.keep();
        Ok(Some(cancelled))
    }

    async fn report_connectors(
        &self,
        instance: &str,
        loaded: &[(String, bool)],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut conn = self.writer().take().await?;
        let mut tx = conn.begin().await?;
        let gone = format!(
            "DELETE FROM connector_presence WHERE instance = $1 AND {}",
            D::name_not_in("name", 2)
        );
        let names: Vec<String> = loaded.iter().map(|(name, _)| name.clone()).collect();
        tx.exec(&gone, &[Arg::Text(instance), Arg::Names(&names)])
            .await?;
        for (name, active) in loaded {
            let active = *active;
            tx.exec(
                "INSERT INTO connector_presence (instance, name, seen_at, active) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (instance, name) DO UPDATE SET seen_at = excluded.seen_at, active = excluded.active",
                &[Arg::Text(instance), Arg::Text(name), Arg::Time(now), Arg::Bool(active)],
            )
            .await?;
        }
        commit::<D>(tx).await?;
        conn.keep();
        Ok(())
    }

    async fn defer_waiting_connectors(
        &self,
        alive_since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut conn = self.writer().take().await?;
        let mut tx = conn.begin().await?;
        tx.exec(
            "UPDATE deliveries SET status = 'cancelled', last_error = 'connector unbound', updated_at = $1 \
             WHERE status = 'pending' AND connector IS NOT NULL AND next_attempt_at <= $1 \
             AND NOT EXISTS (SELECT 1 FROM connector_bindings b WHERE b.name = deliveries.connector)",
            &[Arg::Time(now)],
        )
        .await?;
        // A retried delivery keeps the error of its last attempt; a fresh one says why it waits.
        let deferred = tx
            .exec(
                "UPDATE deliveries SET next_attempt_at = $1, updated_at = $2, \
                 last_error = CASE WHEN attempts = 0 \
                   THEN 'waiting: no instance runs connector ' || connector ELSE last_error END \
                 WHERE status = 'pending' AND connector IS NOT NULL AND next_attempt_at <= $2 \
                 AND NOT EXISTS (SELECT 1 FROM connector_presence p \
                   WHERE p.name = deliveries.connector AND p.seen_at > $3 AND p.active = $4)",
                &[
                    Arg::Time(until),
                    Arg::Time(now),
                    Arg::Time(alive_since),
                    Arg::Bool(true),
                ],
            )
            .await?;
        // A connector instance's deliveries need its component loaded somewhere (its default
        // instance need not be active: the instance has settings of its own).
        let waiting = tx
            .exec(
                "UPDATE deliveries SET next_attempt_at = $1, updated_at = $2, \
                 last_error = CASE WHEN attempts = 0 \
                   THEN 'waiting: no instance has the connector of this subscription' ELSE last_error END \
                 WHERE status = 'pending' AND next_attempt_at <= $2 AND subscription_id IN \
                   (SELECT s.id FROM subscriptions s JOIN connector_instances ci ON ci.id = s.instance_id \
                    WHERE s.instance_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM connector_presence p \
                      WHERE p.name = ci.connector AND p.seen_at > $3))",
                &[Arg::Time(until), Arg::Time(now), Arg::Time(alive_since)],
            )
            .await?;
        commit::<D>(tx).await?;
        conn.keep();
        Ok(deferred + waiting)
    }

    async fn create_connector_instance(
        &self,
        instance: ConnectorInstance,
    ) -> StoreResult<Option<ConnectorInstance>> {
        instances::create(self, instance).await
    }

    async fn connector_instances(&self, connector: &str) -> StoreResult<Vec<ConnectorInstance>> {
        instances::list(self, connector).await
    }

    async fn connector_instance(
        &self,
        connector: &str,
        name: &str,
    ) -> StoreResult<Option<ConnectorInstance>> {
        instances::get(self, connector, name).await
    }

    async fn update_connector_instance(
        &self,
        id: Uuid,
        settings: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ConnectorInstance>> {
        instances::update(self, id, settings, now).await
    }

    async fn delete_connector_instance(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<InstanceDeletion> {
        instances::delete(self, id, now).await
    }

    fn hand_off_to(&self, engine: Option<Arc<dyn super::Handoff>>) {
        self.pools().taker.set(engine);
    }

    fn destination_reads(&self) -> super::DestinationReads {
        self.pools().remembered.reads()
    }

    async fn announce_work(&self) {
        self.notify_peers().await;
    }

    async fn listen_for_work(
        &self,
        wake: Arc<tokio::sync::Notify>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        self.wait_for_peers(wake, stop).await;
    }
}
