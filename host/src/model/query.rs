//! What the visibility queries ask and answer: events by filter, a subscription's deliveries,
//! dead letters by filter.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::DeliveryStatus;

/// Which event types a list takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeMatch {
    /// This type only.
    Exact(String),
    /// Every type that starts with this (`order.` takes `order.created` and `order.paid`).
    Prefix(String),
}

impl TypeMatch {
    /// `order.created` is exact; `order.` and `order.*` are the prefix `order.`.
    pub fn parse(raw: &str) -> Self {
        match raw.strip_suffix('*') {
            Some(prefix) => TypeMatch::Prefix(prefix.to_owned()),
            None if raw.ends_with('.') => TypeMatch::Prefix(raw.to_owned()),
            None => TypeMatch::Exact(raw.to_owned()),
        }
    }
}

/// Which events a list takes; all given filters combine.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event_type: Option<TypeMatch>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// With a delivery to this subscription.
    pub subscription_id: Option<Uuid>,
    /// With a delivery to this connector (its default instance or any of its instances).
    pub connector: Option<String>,
    /// With a delivery in any of these states (none given: any event).
    pub delivery_status: Vec<DeliveryStatus>,
}

/// How many of an event's deliveries are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub pending: u32,
    pub in_flight: u32,
    pub succeeded: u32,
    pub dead: u32,
    pub cancelled: u32,
}

impl DeliveryCounts {
    pub fn add(&mut self, status: DeliveryStatus, n: u32) {
        let slot = match status {
            DeliveryStatus::Pending => &mut self.pending,
            DeliveryStatus::InFlight => &mut self.in_flight,
            DeliveryStatus::Succeeded => &mut self.succeeded,
            DeliveryStatus::Dead => &mut self.dead,
            DeliveryStatus::Cancelled => &mut self.cancelled,
        };
        *slot = slot.saturating_add(n);
    }
}

/// An event in a list: no payload, its deliveries counted by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSummary {
    pub id: Uuid,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    pub deliveries: DeliveryCounts,
}

/// One delivery in a subscription's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryLine {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts spent from the current budget.
    pub attempts: u32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The HTTP status of the latest attempt, when it got an answer.
    pub last_response_status: Option<u16>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which dead letters a list or a bulk replay takes; all given filters combine.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Dead-lettered at or after.
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before.
    pub until: Option<DateTime<Utc>>,
    pub subscription_id: Option<Uuid>,
    /// Deliveries to this connector (its default instance or any of its instances).
    pub connector: Option<String>,
    pub event_type: Option<TypeMatch>,
}
