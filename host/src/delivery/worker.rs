//! The delivery engine: claims due deliveries in batches, runs up to
//! `IH_DELIVERY_CONCURRENCY` attempts at once over one shared HTTP client, and records each
//! attempt with its consequence (succeeded, retry at a time, dead letter).
//!
//! Invariants:
//! - a delivery is attempted only while this instance holds its lease; the lease outlives the
//!   attempt timeout by [`lease_margin`], and an expired lease is released by any instance;
//! - every attempt is recorded, even when the lease was lost meanwhile (history is never
//!   dropped), but only the lease holder moves the delivery on;
//! - new work wakes the loop at once ([`Notify`]); the poll interval is only the fallback;
//! - while it has no older work to claim, the deliveries of events published here are handed to
//!   it as they are written, leased, with a slot reserved (`store/handoff.rs`): no claim, no
//!   wake-up;
//! - on shutdown no new claim is made, in-flight attempts get a bounded grace, and whatever is
//!   still leased is handed back as `pending`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::retry::{Answer, Next, RetryPolicy};
use super::send::Sender;
use crate::config::DeliveryConfig;
use crate::connectors::Connectors;
use crate::metrics::Metrics;
use crate::model::trace::{self, TraceParent};
use crate::model::{
    self, AttemptRecord, AttemptResult, Claim, ClaimedDelivery, Skip, Target, notice,
};
use crate::store::Store;
use crate::store::group::GroupCommit;

mod handoff;
use handoff::Handed;

/// How long a delivery whose transform is not loaded waits before it is looked at again (a
/// transform dropped into the directory loads within about two seconds).
pub const TRANSFORM_WAIT: Duration = Duration::from_secs(5);

/// How long a lease outlives the attempt timeout: as long again (at least 1 s), so a live worker
/// always records its attempt before the lease expires, and a crashed instance's work is picked
/// up after twice the timeout.
pub fn lease_margin(timeout: Duration) -> Duration {
    timeout.max(Duration::from_secs(1))
}

/// Most deliveries claimed in one round trip.
pub const MAX_CLAIM_BATCH: usize = 256;
/// Idle subscriptions remembered by the per-subscription share (beyond this, idle ones are
/// forgotten as their attempts end).
pub const MAX_TRACKED_SUBSCRIPTIONS: usize = 10_000;
/// An attempt running this long marks its endpoint as slow: see [`Engine::per_subscription_cap`].
pub const SLOW_ATTEMPT: Duration = Duration::from_secs(1);
/// How long a delivery to a connector not running here waits before it is looked at again.
pub const WAITING_RECHECK: Duration = Duration::from_secs(5);
/// Extra time in-flight attempts get to finish on shutdown, beyond the attempt timeout.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The delivery engine of one hub instance.
#[derive(Debug)]
pub struct Engine {
    store: Arc<dyn Store>,
    sender: Sender,
    config: DeliveryConfig,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    connectors: Arc<Connectors>,
    /// Writes finished attempts in groups (one transaction for all that finish together).
    recorder: GroupCommit<AttemptRecord, bool>,
    /// Lease owner id of this instance (unique per process start).
    owner: String,
    /// Attempts in flight per destination (subscription or connector), so one destination (say,
    /// an endpoint that hangs until the timeout) can never take every slot: see
    /// [`Engine::per_subscription_cap`].
    busy: Mutex<HashMap<Dest, Busy>>,
    /// The slots: `IH_DELIVERY_CONCURRENCY` attempts at once.
    slots: Arc<Semaphore>,
    /// How long a claim or a handed delivery is leased: the attempt budget and its margin.
    lease: TimeDelta,
    /// The last claim found no more due work than it could take: the store may hand new
    /// deliveries over directly (older work goes first otherwise).
    caught_up: AtomicBool,
    /// Deliveries handed over by the store (`store/handoff.rs`), to the loop that runs them.
    handed: mpsc::UnboundedSender<Handed>,
    handed_rx: Mutex<Option<mpsc::UnboundedReceiver<Handed>>>,
}

/// A destination as the per-destination share counts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Dest {
    Subscription(uuid::Uuid),
    Connector(String),
}

impl Dest {
    fn of(target: &Target) -> Self {
        match target {
            Target::Webhook {
                subscription_id, ..
            } => Self::Subscription(*subscription_id),
            // An instance is a subscription: it gets a subscription's share.
            Target::Connector {
                instance: Some(instance),
                ..
            } => Self::Subscription(instance.subscription_id),
            Target::Connector { name, .. } => Self::Connector(name.clone()),
        }
    }
}

/// Attempts in flight for one subscription, and whether its endpoint has proven fast.
#[derive(Debug, Default)]
struct Busy {
    started: Vec<Instant>,
    /// The last attempt to finish took less than [`SLOW_ATTEMPT`]. Until an endpoint proves
    /// fast it is treated as possibly slow, so a hanging one is capped from its first batch.
    fast: bool,
}

/// Whether a destination is not known to answer fast: it has not proven fast yet, or its oldest
/// attempt in flight has become slow.
fn possibly_slow(state: &Busy, now: Instant) -> bool {
    !state.fast
        || state
            .started
            .iter()
            .min()
            .is_some_and(|oldest| now.duration_since(*oldest) >= SLOW_ATTEMPT)
}

/// Keeps the map of destinations within [`MAX_TRACKED_SUBSCRIPTIONS`]: idle ones go first, those
/// not known to be fast before those that are.
fn forget_idle(busy: &mut HashMap<Dest, Busy>) {
    if busy.len() >= MAX_TRACKED_SUBSCRIPTIONS {
        busy.retain(|_, state| !state.started.is_empty() || state.fast);
    }
    if busy.len() >= MAX_TRACKED_SUBSCRIPTIONS {
        busy.retain(|_, state| !state.started.is_empty());
    }
}

/// Attempts in flight at possibly-slow destinations.
fn slow_in_flight(busy: &HashMap<Dest, Busy>, now: Instant) -> usize {
    busy.values()
        .filter(|state| possibly_slow(state, now))
        .map(|state| state.started.len())
        .sum()
}

/// Holds one of a subscription's slots until the attempt ends (even if it panics).
struct Slot {
    engine: Arc<Engine>,
    dest: Dest,
    started: Instant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut busy = self.engine.busy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = busy.get_mut(&self.dest) {
            if let Some(pos) = state.started.iter().position(|t| *t == self.started) {
                state.started.swap_remove(pos);
            }
            state.fast = self.started.elapsed() < SLOW_ATTEMPT;
            // What was learnt about an idle destination is kept, within a bound.
            if state.started.is_empty() && busy.len() > MAX_TRACKED_SUBSCRIPTIONS {
                busy.remove(&self.dest);
            }
        }
    }
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        config: DeliveryConfig,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
        sender: Sender,
        connectors: Arc<Connectors>,
    ) -> Self {
        let budget = config.timeout.max(connectors.timeout());
        let (handed, handed_rx) = mpsc::unbounded_channel();
        Self {
            slots: Arc::new(Semaphore::new(config.concurrency)),
            lease: TimeDelta::from_std(budget + lease_margin(budget)).unwrap_or(TimeDelta::MAX),
            caught_up: AtomicBool::new(false),
            handed,
            handed_rx: Mutex::new(Some(handed_rx)),
            recorder: crate::store::group::attempt_records(store.clone()),
            store,
            sender,
            policy: RetryPolicy::new(&config),
            config,
            metrics,
            wake,
            connectors,
            owner: super::instance_id(),
            busy: Mutex::new(HashMap::new()),
        }
    }

    /// The longest one attempt may take: a webhook's timeout or a connector's budget.
    fn attempt_budget(&self) -> Duration {
        self.config.timeout.max(self.connectors.timeout())
    }

    /// Most attempts the destinations (subscriptions, connectors) that are not known to be fast
    /// may have in flight here, together and each: three quarters of the slots. Destinations
    /// that answer within [`SLOW_ATTEMPT`] are not held back (the cap would only cost
    /// throughput).
    pub fn per_subscription_cap(&self) -> usize {
        (self.config.concurrency * 3 / 4).max(1)
    }

    /// Slots beyond the slow share for a destination's first attempt while it has nothing in
    /// flight (a new subscription, or one whose hung attempts have ended), so a new endpoint is
    /// tried at once even when others hang. An eighth of the slots; the last eighth always
    /// stays with the destinations known to be fast, however many endpoints hang.
    fn probe_allowance(&self) -> usize {
        self.config.concurrency / 8
    }

    /// Whether a destination must wait for an attempt to finish: it is possibly slow, and it
    /// holds the whole slow share itself or the possibly-slow destinations together do
    /// (`slow_total` counts them; it is only asked when needed, as it walks every destination).
    fn at_cap(&self, state: &Busy, now: Instant, slow_total: impl FnOnce() -> usize) -> bool {
        if !possibly_slow(state, now) {
            return false;
        }
        let cap = self.per_subscription_cap();
        if state.started.is_empty() {
            return slow_total() >= cap + self.probe_allowance();
        }
        state.started.len() >= cap || slow_total() >= cap
    }

    /// Takes a slot of destination `dest`, or `None` when it is at its cap.
    fn take_slot(self: &Arc<Self>, dest: Dest) -> Option<Slot> {
        let now = Instant::now();
        {
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            let state = busy.get(&dest);
            let fresh = Busy::default();
            if self.at_cap(state.unwrap_or(&fresh), now, || slow_in_flight(&busy, now)) {
                // Remembered even without a slot, so that the next claim skips it (see
                // `saturated`) instead of bringing back the same refused rows.
                if state.is_none() {
                    forget_idle(&mut busy);
                    busy.insert(dest, fresh);
                }
                return None;
            }
            busy.entry(dest.clone()).or_default().started.push(now);
        }
        Some(Slot {
            engine: self.clone(),
            dest,
            started: now,
        })
    }

    /// Starts an attempt if there is a free slot overall and for its subscription; otherwise
    /// hands the delivery back (`Some`).
    fn start(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        delivery: ClaimedDelivery,
    ) -> Option<ClaimedDelivery> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return Some(delivery);
        };
        let Some(slot) = self.take_slot(Dest::of(&delivery.target)) else {
            return Some(delivery);
        };
        self.metrics.delivery_started("claimed");
        self.spawn_attempt(tasks, delivery, permit, slot);
        None
    }

    /// Runs the attempt of `delivery` in `tasks`, in a span of the publisher's trace.
    fn spawn_attempt(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        delivery: ClaimedDelivery,
        permit: OwnedSemaphorePermit,
        slot: Slot,
    ) {
        let span = tracing::info_span!("attempt", delivery_id = %delivery.id, event_id = %delivery.event_id, attempt = delivery.attempts + 1);
        // A span of the publisher's trace when traces are exported (`model/trace.rs`).
        if let Some(parent) = delivery.traceparent.as_deref().and_then(TraceParent::parse) {
            trace::adopt(&span, &parent);
        }
        tasks.spawn(
            self.clone()
                .attempt(delivery, permit, slot)
                .instrument(span),
        );
    }

    /// The destinations at their cap, which the next claim leaves alone.
    fn saturated(&self) -> Skip {
        let now = Instant::now();
        let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let slow_total = slow_in_flight(&busy, now);
        let mut skip = Skip::default();
        for (dest, state) in busy.iter() {
            if self.at_cap(state, now, || slow_total) {
                match dest {
                    Dest::Subscription(id) => skip.subscriptions.push(*id),
                    Dest::Connector(name) => skip.connectors.push(name.clone()),
                }
            }
        }
        skip
    }

    /// Reports the connectors this instance runs, then lets deliveries whose connector no
    /// live instance runs (missing, failed or inactive everywhere) wait [`WAITING_RECHECK`] at a
    /// time: claims never wade through them, and no instance delays one that has the connector.
    async fn defer_waiting_connectors(&self) {
        let now = model::now();
        let running = self.connectors.running();
        let loaded: Vec<(String, bool)> = (self.connectors.loaded().into_iter())
            .map(|name| {
                let runs = running.contains(&name);
                (name, runs)
            })
            .collect();
        if let Err(e) = self
            .store
            .report_connectors(&self.owner, &loaded, now)
            .await
        {
            tracing::warn!(error = %e, "reporting the running connectors failed");
            return;
        }
        let stale = (self.config.poll_interval * 3).max(WAITING_RECHECK);
        let alive_since = now - chrono::TimeDelta::from_std(stale).unwrap_or_default();
        let until = now + chrono::TimeDelta::from_std(WAITING_RECHECK).unwrap_or_default();
        match self
            .store
            .defer_waiting_connectors(alive_since, until, now)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deferred = n, "deliveries wait for their connector"),
            Err(e) => {
                tracing::warn!(error = %e, "deferring deliveries to absent connectors failed")
            }
        }
    }

    /// Runs until `shutdown` turns true, then drains and releases leases.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let semaphore = self.slots.clone();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let lease = self.lease;
        let mut next_reap = Instant::now();
        let Some(mut handed) = (self.handed_rx.lock())
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            tracing::error!("the delivery engine was started twice");
            return;
        };
        self.store.hand_off_to(Some(handoff::taker(&self)));
        tracing::info!(owner = %self.owner, concurrency = self.config.concurrency, "delivery engine started");

        while !*shutdown.borrow() {
            while tasks.try_join_next().is_some() {}
            if Instant::now() >= next_reap {
                next_reap = Instant::now() + self.config.poll_interval;
                match self.store.release_expired_leases(model::now()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(released = n, "re-queued deliveries whose lease expired")
                    }
                    Err(e) => tracing::warn!(error = %e, "releasing expired leases failed"),
                }
                self.defer_waiting_connectors().await;
            }

            let free = semaphore.available_permits().min(MAX_CLAIM_BATCH);
            let mut more = false;
            if free == 0 {
                // Work may be waiting that no claim has seen: it goes first when a slot frees.
                self.caught_up.store(false, Ordering::Release);
            }
            if free > 0 {
                let now = model::now();
                // Destinations at their share are not claimed for at all, so a hanging endpoint's
                // (or a looping connector's) backlog stays in the database instead of taking
                // slots here.
                let skip = self.saturated();
                let running = self.connectors.running();
                let loaded = self.connectors.loaded();
                let claim =
                    tracing::info_span!("claim", limit = free, claimed = tracing::field::Empty);
                let claimed = self
                    .store
                    .claim_deliveries(Claim {
                        owner: &self.owner,
                        now,
                        lease_until: now + lease,
                        limit: free as u32,
                        skip: &skip,
                        connectors: &running,
                        loaded: &loaded,
                    })
                    .instrument(claim.clone())
                    .await;
                if let Ok(batch) = &claimed {
                    claim.record("claimed", batch.len());
                }
                drop(claim);
                match claimed {
                    Ok(batch) => {
                        more = batch.len() == free;
                        let mut overflow = Vec::new();
                        for delivery in batch {
                            if let Some(delivery) = self.start(&mut tasks, delivery) {
                                overflow.push(delivery.id);
                            }
                        }
                        if !overflow.is_empty() {
                            // A subscription reached its share within this batch: the rest goes
                            // back to `pending` (not parked here, where it would hold slots the
                            // other subscriptions are owed) and is claimed when a slot frees.
                            more = false;
                            let released = self
                                .store
                                .release_deliveries(&self.owner, &overflow, model::now())
                                .await;
                            if let Err(e) = released {
                                tracing::warn!(error = %e, "handing back deliveries failed; their leases will expire");
                            }
                        }
                        self.caught_up.store(!more, Ordering::Release);
                    }
                    Err(e) => {
                        self.caught_up.store(false, Ordering::Release);
                        tracing::warn!(error = %e, "claiming deliveries failed; retrying shortly");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = shutdown.changed() => {}
                        }
                        continue;
                    }
                }
            }
            if more {
                continue;
            }
            // Out of slots (overall, or for a subscription with waiting work): the next finished
            // attempt frees one, so wait for that as well as for new work.
            let saturated =
                semaphore.available_permits() == 0 || self.saturated() != Skip::default();
            let poll = tokio::time::sleep(self.config.poll_interval);
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    () = self.wake.notified() => break,
                    () = &mut poll => break,
                    _ = shutdown.changed() => break,
                    Some(_) = tasks.join_next(), if saturated => break,
                    // Handed over already leased: started without a claim, and the loop waits on.
                    Some(new) = handed.recv() => {
                        self.metrics.delivery_started("handed");
                        self.spawn_attempt(&mut tasks, new.delivery, new.permit, new.slot);
                        while tasks.try_join_next().is_some() {}
                    }
                }
            }
        }

        // No more deliveries are handed over; those already on their way are run.
        self.store.hand_off_to(None);
        self.caught_up.store(false, Ordering::Release);
        while let Ok(new) = handed.try_recv() {
            self.metrics.delivery_started("handed");
            self.spawn_attempt(&mut tasks, new.delivery, new.permit, new.slot);
        }

        let in_flight = tasks.len();
        tracing::info!(
            in_flight,
            "delivery engine stopping: draining in-flight attempts"
        );
        let drained = tokio::time::timeout(self.attempt_budget() + SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                abandoned = tasks.len(),
                "grace period over; abandoning attempts"
            );
            tasks.abort_all();
        }
        // This instance runs no connector any more: others stop counting on it at once.
        let _ = self
            .store
            .report_connectors(&self.owner, &[], model::now())
            .await;
        match self.store.release_leases(&self.owner, model::now()).await {
            Ok(n) => tracing::info!(released = n, "delivery engine stopped"),
            Err(e) => {
                tracing::warn!(error = %e, "releasing leases on shutdown failed; they expire by themselves")
            }
        }
    }

    async fn attempt(
        self: Arc<Self>,
        delivery: ClaimedDelivery,
        _permit: OwnedSemaphorePermit,
        _slot: Slot,
    ) {
        let started_at = model::now();
        let clock = Instant::now();
        let number = delivery.attempts + 1;
        let (kind, subscription_id, outcome) = match &delivery.target {
            Target::Webhook {
                subscription_id,
                transform,
                ..
            } => {
                if let Some(transform) = transform
                    && let Err(why) = self.connectors.transform_available(&transform.name)
                {
                    // Never sent untransformed: it waits, unattempted, for the transform.
                    tracing::debug!(subscription_id = %subscription_id, reason = %why, "delivery held for its transform");
                    self.metrics.transform_held(&transform.name);
                    let now = model::now();
                    let ids = [delivery.id];
                    if let Err(e) = (self.store)
                        .postpone_deliveries(&self.owner, &ids, now + TRANSFORM_WAIT, now)
                        .await
                    {
                        tracing::warn!(error = %e, "holding a delivery failed; its lease expires");
                    }
                    return;
                }
                let outcome = self.sender.send(&delivery).await;
                ("webhook", Some(*subscription_id), outcome)
            }
            Target::Connector { name, instance } => {
                let runs = match instance {
                    Some(_) => self.connectors.is_loaded(name),
                    None => self.connectors.is_running(name),
                };
                if !runs {
                    // It stopped running here between the claim and now: the delivery goes back
                    // unattempted, for an instance (or a later version) that runs it.
                    let ids = [delivery.id];
                    if let Err(e) = self
                        .store
                        .release_deliveries(&self.owner, &ids, model::now())
                        .await
                    {
                        tracing::warn!(error = %e, "handing back a delivery failed; its lease expires");
                    }
                    return;
                }
                let outcome = self.sender.send(&delivery).await;
                let subscription_id = instance.as_ref().map(|i| i.subscription_id);
                ("connector", subscription_id, outcome)
            }
        };
        let elapsed = clock.elapsed();
        let now = model::now();

        let next = self.policy.next(outcome.answer, number);
        if let Next::RetryIn(delay) = next
            && delay < self.config.poll_interval
        {
            // Wake the loop when this retry falls due, instead of waiting for the poll.
            let wake = self.wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                wake.notify_one();
            });
        }
        let result = next.result(now);

        self.metrics
            .attempt_finished(kind, result, elapsed, delivery.event_created_at, now);
        match (&result, &outcome.error) {
            (AttemptResult::Succeeded, _) => {
                tracing::info!(attempt = number, status = outcome.status, "delivered")
            }
            (AttemptResult::Retry(at), error) => {
                tracing::info!(attempt = number, status = outcome.status, error = error.as_deref(), retry_at = %at, "attempt failed; will retry")
            }
            (AttemptResult::Dead, error) => {
                tracing::warn!(
                    attempt = number,
                    status = outcome.status,
                    error = error.as_deref(),
                    "delivery dead-lettered"
                )
            }
        }

        let record = AttemptRecord {
            delivery_id: delivery.id,
            event_id: delivery.event_id,
            owner: self.owner.clone(),
            attempt: number,
            started_at,
            duration_ms: elapsed.as_millis() as u64,
            response_status: outcome.status,
            response_body: outcome.body,
            error: outcome.error,
            result,
            subscription_id,
            gone: outcome.answer == Answer::Gone,
            connector: match &delivery.target {
                Target::Connector { name, .. } => Some(name.clone()),
                Target::Webhook { .. } => None,
            },
            quiet: notice::is_hub_event(&delivery.event_type),
            report: outcome.report,
            body_sha256: outcome.body_sha256,
        };
        // The store may be briefly unreachable: retry a few times; if it stays down, the lease
        // expires and the delivery is attempted again (at-least-once).
        for pause in [0u64, 200, 1000, 3000] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            match self.recorder.submit(record.clone()).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        "lease lost before the attempt was recorded; another owner takes it from here"
                    );
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "recording the attempt failed"),
            }
        }
        tracing::error!(
            "could not record the attempt; the delivery will be retried when its lease expires"
        );
    }
}
