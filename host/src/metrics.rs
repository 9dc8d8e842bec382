//! Prometheus metrics (SPEC §8), kept in one prometheus-client registry and served at `/metrics`.
//!
//! Label values that come from clients (event types) are bounded: after
//! [`MAX_EVENT_TYPE_LABELS`] distinct values, new ones are counted under `other`, so a client
//! cannot grow the registry without limit.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
pub struct EventTypeLabels {
    pub event_type: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the hub, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_duration: HistogramFamily<RouteLabels>,
    events_published: Family<EventTypeLabels, Counter>,
    event_types_seen: Mutex<HashSet<String>>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "ih_http_requests",
            "HTTP requests served, by method, route template and status",
            http_requests.clone(),
        );
        let http_request_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "ih_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            http_request_duration.clone(),
        );
        let events_published = Family::<EventTypeLabels, Counter>::default();
        registry.register(
            "ih_events_published",
            "Events accepted and stored, by event type",
            events_published.clone(),
        );
        Self {
            registry,
            http_requests,
            http_request_duration,
            events_published,
            event_types_seen: Mutex::new(HashSet::new()),
        }
    }

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
