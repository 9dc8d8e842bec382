//! The engine's side of the hand-over at publish (`store/handoff.rs`): room reserved in the
//! engine's slots and its destination's share for each delivery the store hands over, and the
//! delivery sent to the engine's loop once its lease is committed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::{Dest, Engine, Slot};
use crate::model::ClaimedDelivery;
use crate::store::{Handoff, Reserved};

/// What the store registers for `engine`: see [`Taker`].
pub(super) fn taker(engine: &Arc<Engine>) -> Arc<dyn Handoff> {
    Arc::new(Taker {
        engine: Arc::downgrade(engine),
        owner: engine.owner.clone(),
        lease: engine.lease,
    })
}

/// A delivery handed over as its event was written, with the slot reserved for it.
pub(super) struct Handed {
    pub delivery: ClaimedDelivery,
    pub permit: OwnedSemaphorePermit,
    pub slot: Slot,
}

/// The engine as the store sees it while it takes new deliveries directly. It holds the
/// engine weakly: the store must not keep alive an engine whose task is gone.
#[derive(Debug)]
struct Taker {
    engine: Weak<Engine>,
    owner: String,
    lease: TimeDelta,
}

impl Handoff for Taker {
    fn owner(&self) -> &str {
        &self.owner
    }

    fn lease_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.lease
    }

    fn reserve(&self, subscription: uuid::Uuid) -> Option<Box<dyn Reserved>> {
        let engine = self.engine.upgrade()?;
        if !engine.caught_up.load(Ordering::Acquire) {
            return None;
        }
        let permit = engine.slots.clone().try_acquire_owned().ok()?;
        let slot = engine.take_slot(Dest::Subscription(subscription))?;
        Some(Box::new(Room {
            permit,
            slot,
            to: engine.handed.clone(),
        }))
    }
}

/// A slot reserved for a delivery being written (see [`Taker`]); given back if dropped.
struct Room {
    permit: OwnedSemaphorePermit,
    slot: Slot,
    to: mpsc::UnboundedSender<Handed>,
}

impl Reserved for Room {
    fn start(self: Box<Self>, delivery: ClaimedDelivery) {
        let Room { permit, slot, to } = *self;
        // A loop that has stopped released its leases, or they expire.
        let _ = to.send(Handed {
            delivery,
            permit,
            slot,
        });
    }
}
