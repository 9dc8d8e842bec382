//! New deliveries handed straight to this instance's engine as their event is written, already
//! leased to it: at a moderate rate most deliveries are then never claimed, which saves a
//! statement, its commit and the engine's wake-up per delivery (README, Performance).
//!
//! Only what a claim would take at once is handed: a plain webhook subscription's delivery, due
//! now, whose circuit is closed, which is neither paused nor rate limited nor waiting behind an
//! earlier event of its ordering key; and only while the engine has room for it (it reserves a
//! slot of its subscription: `delivery/worker/handoff.rs`). Everything else is written
//! `pending` and claimed as before.
//!
//! Invariants (contract test `new_deliveries_are_handed_to_the_engine_leased_or_left_pending`):
//! - a handed delivery is written `in_flight`, leased to the engine, by the statement or
//!   transaction that writes its event; the engine gets it only once that committed;
//! - a reservation that is not started (the write failed) gives its slot back when dropped; a
//!   delivery leased but never started (the engine stopped meanwhile) goes back to `pending`
//!   with the engine's other leases on shutdown, or when its lease expires.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::plan::{DeliveryRow, Direct};
use crate::model::{ClaimedDelivery, NewEvent, Target};

/// What the store asks of a local delivery engine that takes new deliveries directly.
pub trait Handoff: Send + Sync + fmt::Debug {
    /// The engine's lease owner id.
    fn owner(&self) -> &str;
    /// Until when a delivery handed at `now` is leased.
    fn lease_until(&self, now: DateTime<Utc>) -> DateTime<Utc>;
    /// Room for one delivery to `subscription`, held until started or dropped; `None` when
    /// the engine has no room for it now (or has older work to claim first).
    fn reserve(&self, subscription: Uuid) -> Option<Box<dyn Reserved>>;
}

/// Room an engine keeps for one delivery (see [`Handoff::reserve`]).
pub trait Reserved: Send {
    /// Starts the attempt of `delivery`, whose lease is committed.
    fn start(self: Box<Self>, delivery: ClaimedDelivery);
}

/// Deliveries handed to the engine, started once their rows are committed.
#[derive(Default)]
#[must_use = "handed deliveries start only when told to, after their commit"]
pub(super) struct Handed(Vec<(Box<dyn Reserved>, ClaimedDelivery)>);

impl Handed {
    /// How many were handed for `event`.
    pub fn of(&self, event: Uuid) -> u32 {
        self.0.iter().filter(|(_, d)| d.event_id == event).count() as u32
    }

    /// Starts them: their rows are committed.
    pub fn start(self) {
        for (room, delivery) in self.0 {
            room.start(delivery);
        }
    }
}

/// Leases to `engine` each of `rows` it has room for among those it may take, and answers them
/// as the deliveries to start after the commit. `rows` are those of `events`.
pub(super) fn hand_off(
    engine: &dyn Handoff,
    events: &[&NewEvent],
    rows: &mut [DeliveryRow<'_>],
    now: DateTime<Utc>,
) -> Handed {
    let events: HashMap<Uuid, &NewEvent> = events.iter().map(|e| (e.id, *e)).collect();
    let until = engine.lease_until(now);
    let mut handed = Vec::new();
    for row in rows.iter_mut() {
        let (Some(subscription_id), Some(direct)) = (row.subscription, row.direct) else {
            continue;
        };
        // Behind an earlier event of its key, or not due yet: left for a claim.
        if row.ordering_key.is_some() || row.due > now {
            continue;
        }
        let Some(event) = events.get(&row.event_id) else {
            continue;
        };
        let Some(room) = engine.reserve(subscription_id) else {
            continue;
        };
        row.leased_until = Some(until);
        handed.push((room, delivery(row.id, event, subscription_id, direct)));
    }
    Handed(handed)
}

fn delivery(id: Uuid, event: &NewEvent, subscription_id: Uuid, direct: &Direct) -> ClaimedDelivery {
    ClaimedDelivery {
        id,
        event_id: event.id,
        event_type: event.event_type.clone(),
        event_created_at: event.created_at,
        payload: event.payload.clone(),
        attempts: 0,
        target: Target::Webhook {
            subscription_id,
            url: direct.url.clone(),
            headers: direct.headers.clone(),
            secrets: direct.secrets.clone(),
            transform: direct.transform.clone(),
        },
        traceparent: event.traceparent.clone(),
    }
}

/// The engine deliveries are handed to, if any (`None` until one registers).
#[derive(Debug, Default)]
pub(crate) struct Taker(std::sync::RwLock<Option<Arc<dyn Handoff>>>);

impl Taker {
    pub fn set(&self, engine: Option<Arc<dyn Handoff>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = engine;
    }

    pub fn get(&self) -> Option<Arc<dyn Handoff>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
