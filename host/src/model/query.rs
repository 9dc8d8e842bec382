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

/// What a live feed shows next, and where it continues from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// New events, oldest first (no delivery counts: they are new).
    pub events: Vec<EventSummary>,
    /// New attempts, oldest first.
    pub attempts: Vec<super::AttemptView>,
    pub event_cursor: Uuid,
    pub attempt_cursor: Uuid,
}

/// Whose statistics: the whole hub's, a subscription's deliveries, or a connector's (its
/// default instance and all its instances).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsOf<'a> {
    Hub,
    Subscription(Uuid),
    Connector(&'a str),
}

/// Most attempt durations a latency figure is computed from (the latest in the window): enough
/// for a p99 with 20 values above it, and cheap to read at a million attempts (bench-queries).
pub const MAX_LATENCY_SAMPLE: u32 = 2_000;

/// What a destination's attempts in a window came to, and its backlog now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationStats {
    pub attempts: u64,
    pub succeeded: u64,
    /// Durations of the latest attempts in the window (at most [`MAX_LATENCY_SAMPLE`]).
    pub durations_ms: Vec<u64>,
    /// The latest successful attempt, whenever it was.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The latest failed attempt, whenever it was, and its error.
    pub last_failure: Option<(DateTime<Utc>, Option<String>)>,
    /// Deliveries not finished (pending or in flight).
    pub pending: u64,
    pub oldest_pending_created_at: Option<DateTime<Utc>>,
}

/// Latency percentiles (nearest rank) of a sample of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    /// How many durations they were computed from.
    pub sampled: u64,
}

impl Percentiles {
    /// `None` for an empty sample.
    pub fn of(mut durations: Vec<u64>) -> Option<Self> {
        if durations.is_empty() {
            return None;
        }
        durations.sort_unstable();
        let rank = |p: usize| {
            let index = (durations.len() * p).div_ceil(100).max(1) - 1;
            durations[index]
        };
        Some(Self {
            p50: rank(50),
            p95: rank(95),
            p99: rank(99),
            sampled: durations.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(Percentiles::of(Vec::new()), None);
        let one = Percentiles::of(vec![7]).expect("one");
        assert_eq!((one.p50, one.p95, one.p99, one.sampled), (7, 7, 7, 1));
        let hundred = Percentiles::of((1..=100).rev().collect()).expect("hundred");
        assert_eq!((hundred.p50, hundred.p95, hundred.p99), (50, 95, 99));
        let ten = Percentiles::of((1..=10).collect()).expect("ten");
        assert_eq!((ten.p50, ten.p95, ten.p99), (5, 10, 10));
    }

    #[test]
    fn a_type_filter_is_exact_or_a_prefix() {
        assert_eq!(
            TypeMatch::parse("order.paid"),
            TypeMatch::Exact("order.paid".into())
        );
        assert_eq!(
            TypeMatch::parse("order."),
            TypeMatch::Prefix("order.".into())
        );
        assert_eq!(
            TypeMatch::parse("order.*"),
            TypeMatch::Prefix("order.".into())
        );
    }
}
