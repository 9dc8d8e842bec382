//! Prometheus metrics, kept in one prometheus-client registry and served at `/metrics`, in the
//! OpenMetrics text format or, for scrapers that ask for it, Prometheus text 0.0.4
//! ([`to_prometheus_text`]).
//!
//! Label values that come from clients (event types) are bounded: after
//! [`MAX_EVENT_TYPE_LABELS`] distinct values, new ones are counted under `other`, so a client
//! cannot grow the registry without limit. Every series whose labels are known in advance
//! (delivery kinds and outcomes; each loaded connector's outcomes) exists at 0 from the start,
//! so alerts and dashboards see a zero, not "no data".

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{AttemptResult, OutboxStats};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Distinct `event_type` label values kept before new ones are folded into `other`.
pub const MAX_EVENT_TYPE_LABELS: usize = 1000;

/// The `kind` label values of deliveries.
pub const DELIVERY_KINDS: [&str; 2] = ["webhook", "connector"];
/// The `outcome` label values of `ih_deliveries_total`.
const DELIVERY_OUTCOMES: [&str; 3] = ["succeeded", "failed", "dead"];
/// The `how` label values of `ih_deliveries_started_total`: claimed from the store, or handed
/// to the engine as their event was written (`store/handoff.rs`).
pub const START_WAYS: [&str; 2] = ["claimed", "handed"];
/// The `outcome` label values of `ih_transform_calls_total` (`Connectors::transform`).
pub const TRANSFORM_OUTCOMES: [&str; 4] = ["ok", "dropped", "failed", "unavailable"];
/// The `outcome` label values of `ih_connector_invocations_total` (`CallOutcome::label` in
/// `connectors/outcome.rs`).
pub const CONNECTOR_OUTCOMES: [&str; 8] = [
    "ok",
    "skipped",
    "retry",
    "permanent",
    "timeout",
    "memory",
    "trap",
    "unavailable",
];

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
pub struct StartLabels {
    /// One of [`START_WAYS`].
    pub how: String,
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
pub struct TransformOutcomeLabels {
    pub transform: String,
    /// One of [`TRANSFORM_OUTCOMES`].
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransformLabels {
    pub transform: String,
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
                registry.register(
                    "ih_build",
                    "The hub's version (always 1)",
                    Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
                );
                registry.register_collector(Box::new(ProcessCollector));
                let metrics = Self {
                    registry,
                    event_types_seen: Mutex::new(HashSet::new()),
                    $($field,)*
                };
                for kind in DELIVERY_KINDS {
                    for outcome in DELIVERY_OUTCOMES {
                        drop(metrics.deliveries.get_or_create(&DeliveryLabels {
                            kind: kind.to_owned(),
                            outcome: outcome.to_owned(),
                        }));
                    }
                }
                for how in START_WAYS {
                    drop(metrics.deliveries_started.get_or_create(&StartLabels {
                        how: how.to_owned(),
                    }));
                }
                metrics
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
    deliveries_started: Family<StartLabels, Counter> = "ih_deliveries_started",
        "Deliveries this instance took up to attempt, by how it got them (claimed, or handed over as their event was written)";
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
    transform_calls: Family<TransformOutcomeLabels, Counter> = "ih_transform_calls",
        "Transform calls by transform and outcome (ok, dropped, failed, unavailable)";
    transform_duration: HistogramFamily<TransformLabels> = "ih_transform_call_duration_seconds",
        "Duration of one transform call, instantiation included";
    transform_held: Family<TransformLabels, Counter> = "ih_transform_held",
        "Deliveries held (not attempted) because their transform is not loaded";
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts a delivery this engine took up, `how` it came ([`START_WAYS`]).
    pub fn delivery_started(&self, how: &'static str) {
        self.deliveries_started
            .get_or_create(&StartLabels { how: how.into() })
            .inc();
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

    /// Makes a loaded connector's series exist at 0 (every outcome, refusals, durations).
    pub fn connector_loaded(&self, connector: &str) {
        for outcome in CONNECTOR_OUTCOMES {
            drop(
                self.connector_invocations
                    .get_or_create(&ConnectorOutcomeLabels {
                        connector: connector.to_owned(),
                        outcome: outcome.to_owned(),
                    }),
            );
        }
        let labels = ConnectorLabels {
            connector: connector.to_owned(),
        };
        drop(self.connector_http_denied.get_or_create(&labels));
        drop(self.connector_duration.get_or_create(&labels));
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

    /// Exports a loaded transform's series at 0.
    pub fn transform_loaded(&self, transform: &str) {
        for outcome in TRANSFORM_OUTCOMES {
            drop(self.transform_calls.get_or_create(&TransformOutcomeLabels {
                transform: transform.to_owned(),
                outcome: outcome.to_owned(),
            }));
        }
        let labels = TransformLabels {
            transform: transform.to_owned(),
        };
        drop(self.transform_duration.get_or_create(&labels));
        drop(self.transform_held.get_or_create(&labels));
    }

    /// Counts a delivery held for its transform.
    pub fn transform_held(&self, transform: &str) {
        self.transform_held
            .get_or_create(&TransformLabels {
                transform: transform.to_owned(),
            })
            .inc();
    }

    /// Counts one transform call. Names are bounded by the files deployed and the names
    /// subscriptions give (validated names, one per subscription at most).
    pub fn transform_called(&self, transform: &str, outcome: &str, duration: Duration) {
        let labels = TransformLabels {
            transform: transform.to_owned(),
        };
        self.transform_calls
            .get_or_create(&TransformOutcomeLabels {
                transform: transform.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if outcome != "unavailable" {
            self.transform_duration
                .get_or_create(&labels)
                .observe(duration.as_secs_f64());
        }
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

/// OpenMetrics text as Prometheus text 0.0.4, for scrapers that ask for the classic format:
/// a counter's `# HELP`/`# TYPE` name its `_total` series, an info metric becomes a gauge of its
/// `_info` series, and the lines 0.0.4 does not know (`# UNIT`, `# EOF`) go. Samples are the same
/// text in both formats.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    // A family's metadata, renamed by its TYPE (which follows its HELP).
    let metadata = |name: &str, kind: &str| -> (String, String) {
        match kind {
            "counter" => (format!("{name}_total"), "counter".to_owned()),
            "info" => (format!("{name}_info"), "gauge".to_owned()),
            other => (name.to_owned(), other.to_owned()),
        }
    };
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut out = String::with_capacity(openmetrics.len());
    for (i, line) in lines.iter().enumerate() {
        if *line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (series, kind) = metadata(name, kind);
            out.push_str(&format!("# TYPE {series} {kind}\n"));
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = lines
                .get(i + 1)
                .and_then(|next| next.strip_prefix("# TYPE "))
                .and_then(|t| t.split_once(' '))
                .filter(|(typed, _)| *typed == name)
                .map_or("untyped", |(_, kind)| kind);
            let (series, _) = metadata(name, kind);
            out.push_str(&format!("# HELP {series} {help}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `process_*` metrics read from `/proc/self` at each scrape (Linux; elsewhere none): CPU time,
/// resident and virtual memory, open and maximum file descriptors, start time.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(process) = process::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(process.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                process.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                process.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                process.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                process.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                process.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// What `/proc/self` tells of this process.
mod process {
    pub struct Process {
        pub cpu_seconds: f64,
        pub resident_bytes: f64,
        pub virtual_bytes: f64,
        pub open_fds: f64,
        pub max_fds: f64,
        pub start_time_seconds: f64,
    }

    /// Clock ticks per second of `/proc/self/stat`'s times: 100 on every Linux the hub targets
    /// (`sysconf(_SC_CLK_TCK)`, fixed by the kernel's USER_HZ).
    const TICKS: f64 = 100.0;
    const PAGE: f64 = 4096.0;

    pub fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (in parentheses, which may hold spaces).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        let (utime, stime, start_ticks) = (field(14)?, field(15)?, field(22)?);
        let (virtual_bytes, resident_pages) = (field(23)?, field(24)?);
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()?
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse::<f64>().ok())
            .unwrap_or(0.0);
        Some(Process {
            cpu_seconds: (utime + stime) / TICKS,
            resident_bytes: resident_pages * PAGE,
            virtual_bytes,
            open_fds,
            max_fds,
            start_time_seconds: boot + start_ticks / TICKS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_series_exist_at_zero_and_the_classic_format_names_counters_by_their_series() {
        let m = Metrics::new();
        m.connector_loaded("slack");
        let text = m.encode();
        for series in [
            "ih_deliveries_total{kind=\"webhook\",outcome=\"dead\"} 0",
            "ih_deliveries_total{kind=\"connector\",outcome=\"succeeded\"} 0",
            "ih_connector_invocations_total{connector=\"slack\",outcome=\"unavailable\"} 0",
            "ih_connector_http_denied_total{connector=\"slack\"} 0",
            "ih_build_info{version=",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        let classic = to_prometheus_text(&text);
        assert!(
            classic.contains("# TYPE ih_deliveries_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# HELP ih_deliveries_total Delivery attempts"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE ih_build_info gauge\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE ih_outbox_pending gauge\n"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"));
        if cfg!(target_os = "linux") {
            for process in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
            ] {
                assert!(text.contains(process), "{process} missing");
            }
            assert!(
                classic.contains("# TYPE process_cpu_seconds_total counter"),
                "{classic}"
            );
        }
    }

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
