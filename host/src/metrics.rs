//! Prometheus metrics, kept in one prometheus-client registry and served at `/metrics`.
//!
//! Label values that come from clients (event types) are bounded: after
//! [`MAX_EVENT_TYPE_LABELS`] distinct values, new ones are counted under `other`, so a client
//! cannot grow the registry without limit.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{AttemptResult, OutboxStats};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Distinct `event_type` label values kept before new ones are folded into `other`.
pub const MAX_EVENT_TYPE_LABELS: usize = 1000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route template (`/api/v1/subscriptions/{id}`), never the raw path.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `webhook` or `connector`.
    pub kind: String,
    /// `succeeded`, `failed` (a retry is scheduled) or `dead`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorOutcomeLabels {
    pub connector: String,
    /// `ok`, `retry`, `permanent`, `timeout`, `memory`, `trap` or `unavailable`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    pub connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventTypeLabels {
    pub event_type: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// A metric as it starts, before anything is counted.
trait Fresh {
    fn fresh() -> Self;
}

impl<L: EncodeLabelSet + Clone + Eq + std::hash::Hash> Fresh for Family<L, Counter> {
    fn fresh() -> Self {
        Family::default()
    }
}

impl<L: EncodeLabelSet + Clone + Eq + std::hash::Hash> Fresh for HistogramFamily<L> {
    fn fresh() -> Self {
        Family::new_with_constructor(latency_histogram as fn() -> Histogram)
    }
}

impl<N, A: Default> Fresh for Gauge<N, A> {
    fn fresh() -> Self {
        Gauge::default()
    }
}

/// Declares the hub's metrics once: each becomes a field of [`Metrics`], registered under its
/// name and help when the registry is built.
macro_rules! metrics {
    ($($vis:vis $field:ident: $ty:ty = $name:literal, $help:literal;)*) => {
        /// Every metric of the hub, registered once.
        #[derive(Debug)]
        pub struct Metrics {
            registry: Registry,
            event_types_seen: Mutex<HashSet<String>>,
            $($vis $field: $ty,)*
        }

        impl Metrics {
            pub fn new() -> Self {
                let mut registry = Registry::default();
                $(
                    let $field = <$ty as Fresh>::fresh();
                    registry.register($name, $help, $field.clone());
                )*
                Self {
                    registry,
                    event_types_seen: Mutex::new(HashSet::new()),
                    $($field,)*
                }
            }
        }
    };
}

metrics! {
    pub http_requests: Family<HttpLabels, Counter> = "ih_http_requests",
        "HTTP requests served, by method, route template and status";
    pub http_request_duration: HistogramFamily<RouteLabels> = "ih_http_request_duration_seconds",
        "Time to answer an HTTP request, by method and route template";
    events_published: Family<EventTypeLabels, Counter> = "ih_events_published",
        "Events accepted and stored, by event type";
    deliveries: Family<DeliveryLabels, Counter> = "ih_deliveries",
        "Delivery attempts by destination kind and outcome (succeeded, failed and retried, dead)";
    attempt_duration: HistogramFamily<KindLabels> = "ih_delivery_attempt_duration_seconds",
        "Duration of one delivery attempt";
    publish_to_delivery: HistogramFamily<KindLabels> = "ih_publish_to_delivery_seconds",
        "Time from event creation to its successful delivery";
    outbox_pending: Gauge = "ih_outbox_pending",
        "Deliveries not finished yet (pending or in flight)";
    outbox_oldest_age: Gauge<f64, AtomicU64> = "ih_outbox_oldest_pending_age_seconds",
        "Age of the oldest unfinished delivery";
    circuit_open: Gauge = "ih_circuit_open",
        "Subscriptions whose circuit breaker is open or half-open";
    connector_invocations: Family<ConnectorOutcomeLabels, Counter> = "ih_connector_invocations",
        "Connector calls by connector and outcome (ok, retry, permanent, timeout, memory, trap, unavailable)";
    connector_duration: HistogramFamily<ConnectorLabels> = "ih_connector_invocation_duration_seconds",
        "Duration of one connector call, instantiation included";
    connector_http_denied: Family<ConnectorLabels, Counter> = "ih_connector_http_denied",
        "Connector HTTP requests refused (outside the grant, or by the SSRF guard)";
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts one stored event of `event_type`.
    pub fn event_published(&self, event_type: &str) {
        let label = {
            let mut seen = self
                .event_types_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if seen.contains(event_type) {
                event_type.to_owned()
            } else if seen.len() < MAX_EVENT_TYPE_LABELS {
                seen.insert(event_type.to_owned());
                event_type.to_owned()
            } else {
                "other".to_owned()
            }
        };
        self.events_published
            .get_or_create(&EventTypeLabels { event_type: label })
            .inc();
    }

    /// Counts a finished attempt.
    pub fn attempt_finished(
        &self,
        kind: &str,
        result: AttemptResult,
        duration: Duration,
        event_created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let outcome = match result {
            AttemptResult::Succeeded => "succeeded",
            AttemptResult::Retry(_) => "failed",
            AttemptResult::Dead => "dead",
        };
        self.deliveries
            .get_or_create(&DeliveryLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        let kind = KindLabels {
            kind: kind.to_owned(),
        };
        self.attempt_duration
            .get_or_create(&kind)
            .observe(duration.as_secs_f64());
        if result == AttemptResult::Succeeded {
            let age = (now - event_created_at)
                .num_microseconds()
                .unwrap_or(i64::MAX) as f64
                / 1e6;
            self.publish_to_delivery
                .get_or_create(&kind)
                .observe(age.max(0.0));
        }
    }

    /// Counts one connector call. Connector names are bounded by the files the operator deploys.
    pub fn connector_invoked(&self, connector: &str, outcome: &str, duration: Duration) {
        self.connector_invocations
            .get_or_create(&ConnectorOutcomeLabels {
                connector: connector.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.connector_duration
            .get_or_create(&ConnectorLabels {
                connector: connector.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Counts an `http.send` the grant or the SSRF guard refused.
    pub fn connector_http_denied(&self, connector: &str) {
        self.connector_http_denied
            .get_or_create(&ConnectorLabels {
                connector: connector.to_owned(),
            })
            .inc();
    }

    /// Updates the backlog gauges.
    pub fn set_outbox(&self, stats: OutboxStats, now: DateTime<Utc>) {
        self.outbox_pending
            .set(stats.pending.min(i64::MAX as u64) as i64);
        let age = stats
            .oldest_pending_created_at
            .map(|t| ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0))
            .unwrap_or(0.0);
        self.outbox_oldest_age.set(age);
        self.circuit_open
            .set(stats.open_circuits.min(i64::MAX as u64) as i64);
    }

    /// The registry in the OpenMetrics text format that Prometheus scrapes.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_labels_are_bounded() {
        let m = Metrics::new();
        for i in 0..MAX_EVENT_TYPE_LABELS + 5 {
            m.event_published(&format!("type_{i}"));
        }
        m.event_published("type_0");
        let text = m.encode();
        assert!(
            text.contains("ih_events_published_total{event_type=\"type_0\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ih_events_published_total{event_type=\"other\"} 5"),
            "{text}"
        );
        assert!(!text.contains(&format!("type_{}\"", MAX_EVENT_TYPE_LABELS + 1)));
    }
}
