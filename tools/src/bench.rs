//! The load benchmark behind the `bench-load` binary (and its CI smoke test).
//!
//! It drives a real hub process over real HTTP into a local receiver that verifies both
//! signatures of every webhook and checks off every (event, subscription) pair, so a lost or
//! duplicated delivery shows up in the report. Three phases, each on its own fresh set of
//! sequence numbers:
//!
//! 1. **single** — `single_events` events by single `POST /api/v1/events`, as fast as
//!    `publishers` concurrent connections go; then waits for every delivery.
//! 2. **batch** — `batch_events` events by `POST /api/v1/events/batch` (`batch_size` per request):
//!    a backlog the engine drains while the hub's resident memory is sampled.
//! 3. **latency** — open loop at `rate` events/s for `latency_seconds`: each event is sent at its
//!    scheduled time, and latency counts from that time (no coordinated omission), so a
//!    stalled hub shows as latency instead of as a lower rate;
//! 4. **low** — the same at `low_rate` (400 events/s by default): a moderate, realistic load,
//!    where fixed costs per round are paid by few deliveries.
//!
//! The hub's CPU time and resident memory are read from `/proc/<pid>` (Linux), so they are the
//! hub's own, not the benchmark's; PostgreSQL's CPU time is the postmaster's and its
//! children's (a local server only), read the same way.

// A benchmark's output is its report.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use integrations_hub_testkit::{Backend, HubProcess, TestDb};

const EVENT_TYPE: &str = "bench.event";
/// A delivery that has not arrived this long after the last one did is reported missing.
const STALL: Duration = Duration::from_secs(30);
/// Most publish requests in flight in the open-loop phase (beyond it, sends are late and the
/// lateness counts as latency).
const MAX_OUTSTANDING: usize = 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub backends: Vec<Backend>,
    /// Subscriptions (K); every event goes to each of them.
    pub subscriptions: usize,
    pub single_events: usize,
    pub batch_events: usize,
    pub batch_size: usize,
    /// Open-loop publish rate of the latency phase (events/s); 0 skips the phase.
    pub rate: f64,
    /// Open-loop publish rate of the low-rate phase (events/s); 0 skips the phase.
    pub low_rate: f64,
    pub latency_seconds: f64,
    /// Size of each event's payload (JSON object, padded to this many bytes).
    pub payload_bytes: usize,
    /// Concurrent publishing connections in the closed-loop phases.
    pub publishers: usize,
    /// How to start the hub: the program and its arguments (its `IH_*` come from the benchmark).
    pub hub_program: std::path::PathBuf,
    pub hub_args: Vec<String>,
    /// Extra `IH_*` variables for the hub.
    pub hub_vars: Vec<(String, String)>,
    /// A payload filter every subscription carries (one every event passes: what it costs).
    pub filter: Option<serde_json::Value>,
    /// A transform every subscription carries (`{"name", "settings"}`, one of `transforms/`,
    /// deployed into the hub's directory before the run).
    pub transform: Option<serde_json::Value>,
}

impl Options {
    /// The full run the README's figures come from.
    pub fn full(hub_program: std::path::PathBuf, hub_args: Vec<String>) -> Self {
        Self {
            backends: vec![Backend::Sqlite, Backend::Postgres],
            subscriptions: 1,
            single_events: 30_000,
            batch_events: 100_000,
            batch_size: 500,
            rate: 2_500.0,
            low_rate: 400.0,
            latency_seconds: 10.0,
            payload_bytes: 1024,
            publishers: 64,
            hub_program,
            hub_args,
            hub_vars: Vec::new(),
            filter: None,
            transform: None,
        }
    }

    /// A few hundred events: proves the benchmark still works (CI), measures nothing.
    pub fn smoke(hub_program: std::path::PathBuf, hub_args: Vec<String>) -> Self {
        Self {
            subscriptions: 2,
            single_events: 200,
            batch_events: 300,
            batch_size: 100,
            rate: 200.0,
            low_rate: 100.0,
            latency_seconds: 1.0,
            publishers: 8,
            ..Self::full(hub_program, hub_args)
        }
    }
}

/// Figures of one phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseReport {
    pub name: &'static str,
    pub events: usize,
    /// Deliveries expected (events × subscriptions).
    pub expected: usize,
    pub publish_seconds: f64,
    pub accepted_per_second: f64,
    /// Publishes refused or failed (non-202); their events are not expected.
    pub publish_errors: usize,
    pub delivered: usize,
    pub duplicates: usize,
    pub missing: usize,
    pub bad_signatures: usize,
    /// From the first publish to the last delivery.
    pub end_to_end_per_second: f64,
    /// Between the 10th and the 90th percentile of arrivals.
    pub steady_per_second: f64,
    pub latency_ms: Latency,
    pub hub_cpu_seconds: f64,
    pub cpu_seconds_per_1000: f64,
    /// PostgreSQL's CPU seconds per 1,000 deliveries (= ms per delivery); `None` on SQLite or
    /// a server this machine does not run.
    pub db_cpu_seconds_per_1000: Option<f64>,
    pub peak_rss_mib: f64,
}

/// Publish-to-delivery latency in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Everything measured on one backend.
#[derive(Debug, Clone)]
pub struct BackendReport {
    pub backend: Backend,
    pub phases: Vec<PhaseReport>,
    /// Hub peak RSS over the whole run (`VmHWM`).
    pub hub_peak_rss_mib: f64,
}

impl BackendReport {
    pub fn clean(&self) -> bool {
        self.phases
            .iter()
            .all(|p| p.missing == 0 && p.duplicates == 0 && p.bad_signatures == 0)
    }
}

/// Runs the benchmark on each backend in turn; `None` for a backend that is not reachable
/// (Postgres outside CI).
pub async fn run(options: &Options) -> Vec<Option<BackendReport>> {
    let mut reports = Vec::new();
    for &backend in &options.backends {
        reports.push(run_backend(options, backend).await);
    }
    reports
}

/// Copies the built transform `transform` names (`transforms/<name>`) into the hub's directory
/// and waits until the hub lists it active.
async fn install_transform(
    client: &reqwest::Client,
    hub: &HubProcess,
    transform: &serde_json::Value,
) {
    let name = transform["name"].as_str().unwrap_or_default();
    let stem = format!("{}_transform", name.replace('-', "_"));
    integrations_hub_testkit::deploy(
        hub.connectors_dir(),
        &format!("{stem}.wasm"),
        &integrations_hub_testkit::built_wasm(&stem),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list: serde_json::Value = client
            .get(format!("{}/api/v1/transforms", hub.base))
            .send()
            .await
            .expect("list transforms")
            .json()
            .await
            .expect("transforms JSON");
        let active = list["data"].as_array().into_iter().flatten();
        if active
            .into_iter()
            .any(|t| t["name"] == name && t["status"] == "active")
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "transform {name} never loaded: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_backend(options: &Options, backend: Backend) -> Option<BackendReport> {
    let db = TestDb::create(backend).await?;
    let receiver = BenchReceiver::start().await;
    let mut vars: Vec<(String, String)> = vec![
        ("IH_ALLOW_PRIVATE_DESTINATIONS".into(), "true".into()),
        // The hub's defaults otherwise; the harness's small pool is for tests.
        ("IH_DATABASE_MAX_CONNECTIONS".into(), "16".into()),
    ];
    vars.extend(options.hub_vars.iter().cloned());
    let vars_ref: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let hub =
        HubProcess::start_program(&options.hub_program, &options.hub_args, &db, &vars_ref).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.publishers.max(MAX_OUTSTANDING))
        .build()
        .expect("HTTP client");

    if let Some(transform) = &options.transform {
        install_transform(&client, &hub, transform).await;
    }
    for k in 0..options.subscriptions {
        let mut subscription = serde_json::json!({
            "url": receiver.url(k),
            "secret": SECRET,
            "events": [EVENT_TYPE],
            "enabled": true,
            "description": format!("bench subscription {k}"),
        });
        if let Some(filter) = &options.filter {
            subscription["filter"] = filter.clone();
        }
        if let Some(transform) = &options.transform {
            subscription["transform"] = transform.clone();
        }
        let response = client
            .post(format!("{}/api/v1/subscriptions", hub.base))
            .json(&subscription)
            .send()
            .await
            .expect("create subscription");
        assert_eq!(response.status().as_u16(), 201, "creating a subscription");
    }

    let pid = hub.pid();
    let db_pid = match backend {
        Backend::Postgres => postmaster_of(&db.url).await,
        Backend::Sqlite => None,
    };
    let mut phases = Vec::new();
    let mut next_seq = 0u64;
    let open_loop = |rate: f64| (rate * options.latency_seconds).round() as usize;
    let plan: [(&'static str, usize); 4] = [
        ("single", options.single_events),
        ("batch", options.batch_events),
        ("latency", open_loop(options.rate)),
        ("low", open_loop(options.low_rate)),
    ];
    for (name, events) in plan {
        if events == 0 {
            continue;
        }
        let phase = Phase {
            name,
            first_seq: next_seq,
            events,
            subscriptions: options.subscriptions,
        };
        next_seq += events as u64;
        let pids = Pids {
            hub: pid,
            db: db_pid,
        };
        phases.push(run_phase(options, &hub.base, &client, &receiver, pids, phase).await);
    }
    let hub_peak_rss_mib = proc_status_kib(pid, "VmHWM:") as f64 / 1024.0;
    drop(hub);
    Some(BackendReport {
        backend,
        phases,
        hub_peak_rss_mib,
    })
}

/// A range of sequence numbers published and checked off together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phase {
    pub(crate) name: &'static str,
    pub(crate) first_seq: u64,
    pub(crate) events: usize,
    pub(crate) subscriptions: usize,
}

/// The processes whose CPU a phase measures.
#[derive(Debug, Clone, Copy)]
struct Pids {
    hub: u32,
    /// PostgreSQL's postmaster, when it runs here.
    db: Option<u32>,
}

async fn run_phase(
    options: &Options,
    base: &str,
    client: &reqwest::Client,
    receiver: &BenchReceiver,
    pids: Pids,
    phase: Phase,
) -> PhaseReport {
    let pid = pids.hub;
    receiver.begin(phase);
    let cpu_before = proc_cpu_seconds(pid);
    let db_cpu_before = pids.db.map(postgres_cpu_seconds);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_rss(pid, sampling.clone()));
    let started = Instant::now();

    let publisher = Publisher::new(base, client, options.payload_bytes, phase);
    let errors = match phase.name {
        "single" => publisher.closed_loop(options.publishers, 1).await,
        "batch" => {
            publisher
                .closed_loop(options.publishers.min(8), options.batch_size)
                .await
        }
        "low" => publisher.open_loop(options.low_rate).await,
        _ => publisher.open_loop(options.rate).await,
    };
    let publish_seconds = started.elapsed().as_secs_f64();
    let accepted = phase.events - errors.len();

    let expected = accepted * phase.subscriptions;
    receiver.wait(expected, STALL).await;
    let finished = receiver.last_arrival().unwrap_or_else(Instant::now);
    sampling.store(false, Ordering::Relaxed);
    let peak_rss_kib = sampler.await.unwrap_or(0);
    let hub_cpu_seconds = proc_cpu_seconds(pid) - cpu_before;
    let db_cpu_seconds = (pids.db.zip(db_cpu_before))
        .map(|(db, before)| (postgres_cpu_seconds(db) - before).max(0.0));

    let tally = receiver.tally(&errors);
    let per_1000 = |seconds: f64| seconds / (tally.delivered.max(1) as f64 / 1000.0);
    let end_to_end = finished.duration_since(started).as_secs_f64();
    PhaseReport {
        name: phase.name,
        events: phase.events,
        expected,
        publish_seconds,
        accepted_per_second: accepted as f64 / publish_seconds,
        publish_errors: errors.len(),
        delivered: tally.delivered,
        duplicates: tally.duplicates,
        missing: tally.missing,
        bad_signatures: tally.bad_signatures,
        end_to_end_per_second: tally.delivered as f64 / end_to_end,
        steady_per_second: tally.steady_per_second,
        latency_ms: tally.latency,
        hub_cpu_seconds,
        cpu_seconds_per_1000: per_1000(hub_cpu_seconds),
        db_cpu_seconds_per_1000: db_cpu_seconds.map(per_1000),
        peak_rss_mib: peak_rss_kib as f64 / 1024.0,
    }
}

/// Publishes one phase's events.
pub(crate) struct Publisher {
    base: String,
    client: reqwest::Client,
    payload_bytes: usize,
    phase: Phase,
    outcomes: Arc<Outcomes>,
    /// Events carry the ordering key `k<seq % keys>`.
    keys: Option<u64>,
}

/// How publish requests ended, by kind ("202", "503", "connect error", …).
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    counts: Mutex<std::collections::BTreeMap<String, usize>>,
    /// The longest any publish request took to be answered (or to fail).
    slowest: Mutex<Duration>,
}

impl Outcomes {
    /// Counts one outcome; the first few of each failing kind are printed, not thousands.
    fn count(&self, kind: &str, took: Duration, detail: impl FnOnce() -> String) {
        {
            let mut slowest = self.slowest.lock().expect("lock");
            *slowest = (*slowest).max(took);
        }
        let mut counts = self.counts.lock().expect("lock");
        let n = counts.entry(kind.to_owned()).or_default();
        *n += 1;
        if *n <= 3 && kind != "202" {
            eprintln!("publish refused: {}", detail());
        }
    }

    /// The longest a publish request took.
    pub(crate) fn slowest(&self) -> Duration {
        *self.slowest.lock().expect("lock")
    }

    /// Requests per outcome.
    pub(crate) fn snapshot(&self) -> std::collections::BTreeMap<String, usize> {
        self.counts.lock().expect("lock").clone()
    }
}

impl Publisher {
    pub(crate) fn new(
        base: &str,
        client: &reqwest::Client,
        payload_bytes: usize,
        phase: Phase,
    ) -> Self {
        Self {
            base: base.to_owned(),
            client: client.clone(),
            payload_bytes,
            phase,
            outcomes: Arc::default(),
            keys: None,
        }
    }

    /// Events get the ordering key `k<seq % keys>`.
    pub(crate) fn with_keys(mut self, keys: u64) -> Self {
        self.keys = Some(keys.max(1));
        self
    }

    /// How the requests so far ended.
    pub(crate) fn outcomes(&self) -> Arc<Outcomes> {
        self.outcomes.clone()
    }

    /// The event with sequence number `seq`, scheduled at `sent_us` (µs since the epoch),
    /// padded to the configured payload size.
    fn event(&self, seq: u64, sent_us: u64) -> String {
        let mut payload = format!("{{\"seq\":{seq},\"sent_us\":{sent_us},\"pad\":\"");
        // `"}` closes the pad and the object.
        let pad = self.payload_bytes.saturating_sub(payload.len() + 2);
        payload.extend(std::iter::repeat_n('x', pad));
        payload.push_str("\"}");
        match self.keys {
            Some(keys) => format!(
                "{{\"event_type\":\"{EVENT_TYPE}\",\"ordering_key\":\"k{}\",\"payload\":{payload}}}",
                seq % keys
            ),
            None => format!("{{\"event_type\":\"{EVENT_TYPE}\",\"payload\":{payload}}}"),
        }
    }

    /// `workers` connections publish as fast as the hub accepts, `per_request` events per
    /// request (1: single publish; more: batch publish). Returns the sequence numbers refused.
    pub(crate) async fn closed_loop(&self, workers: usize, per_request: usize) -> Vec<u64> {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers.max(1) {
            let next = next.clone();
            let this = self.clone_ref();
            tasks.spawn(async move {
                let mut refused = Vec::new();
                loop {
                    let offset = next.fetch_add(per_request as u64, Ordering::Relaxed);
                    if offset >= this.phase.events as u64 {
                        return refused;
                    }
                    let count = (per_request as u64).min(this.phase.events as u64 - offset);
                    let seqs: Vec<u64> = (0..count)
                        .map(|i| this.phase.first_seq + offset + i)
                        .collect();
                    if !this.send(&seqs, now_us()).await {
                        refused.extend(seqs);
                    }
                }
            });
        }
        let mut refused = Vec::new();
        while let Some(done) = tasks.join_next().await {
            refused.extend(done.expect("publisher task"));
        }
        refused
    }

    /// Sends one event every `1/rate` s on schedule, whatever the hub's pace.
    pub(crate) async fn open_loop(&self, rate: f64) -> Vec<u64> {
        let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
        let outstanding = Arc::new(tokio::sync::Semaphore::new(MAX_OUTSTANDING));
        let start = Instant::now();
        let start_us = now_us();
        let mut tasks = tokio::task::JoinSet::new();
        let mut refused = Vec::new();
        for i in 0..self.phase.events as u64 {
            let due = interval.mul_f64(i as f64);
            tokio::time::sleep_until((start + due).into()).await;
            let permit = outstanding
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore open");
            let this = self.clone_ref();
            let seq = self.phase.first_seq + i;
            let scheduled = start_us + due.as_micros() as u64;
            tasks.spawn(async move {
                let ok = this.send(&[seq], scheduled).await;
                drop(permit);
                (!ok).then_some(seq)
            });
            while let Some(done) = tasks.try_join_next() {
                refused.extend(done.expect("publish task"));
            }
        }
        while let Some(done) = tasks.join_next().await {
            refused.extend(done.expect("publish task"));
        }
        refused
    }

    fn clone_ref(&self) -> Arc<Self> {
        Arc::new(Self {
            base: self.base.clone(),
            client: self.client.clone(),
            payload_bytes: self.payload_bytes,
            phase: self.phase,
            outcomes: self.outcomes.clone(),
            keys: self.keys,
        })
    }

    /// Publishes `seqs` (one event: single publish; more: one batch). True when accepted.
    async fn send(&self, seqs: &[u64], sent_us: u64) -> bool {
        let (url, body) = if let [seq] = seqs {
            (
                format!("{}/api/v1/events", self.base),
                self.event(*seq, sent_us),
            )
        } else {
            let mut body = String::from("{\"events\":[");
            for (i, seq) in seqs.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&self.event(*seq, sent_us));
            }
            body.push_str("]}");
            (format!("{}/api/v1/events/batch", self.base), body)
        };
        let started = Instant::now();
        match self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 202 => {
                // The body may be cut short (a hub killed mid-answer): then the outcome is
                // unknown, and the event counts as not accepted.
                let complete = r.bytes().await.is_ok();
                let kind = if complete { "202" } else { "202, body cut off" };
                self.outcomes.count(kind, started.elapsed(), || kind.into());
                complete
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                self.outcomes.count(status.as_str(), started.elapsed(), || {
                    format!("{status} {text}")
                });
                false
            }
            Err(e) => {
                let kind = if e.is_connect() {
                    "connect error"
                } else if e.is_timeout() {
                    "timeout"
                } else {
                    "connection error"
                };
                self.outcomes.count(kind, started.elapsed(), || {
                    format!("{kind}: {}", integrations_hub::egress::describe(&e))
                });
                false
            }
        }
    }
}

pub(crate) const SECRET: &str = "bench-secret-0123456789abcdef";

/// The receiving end: verifies both signatures and checks off each (event, subscription).
pub(crate) struct BenchReceiver {
    base: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ReceiverState {
    phase: Mutex<Option<Phase>>,
    /// Per (event, subscription) of the current phase: how often it arrived (saturating).
    seen: Mutex<Arc<Vec<AtomicU8>>>,
    arrivals: Mutex<Vec<Instant>>,
    /// Every arrival of this phase in the order it came: sequence number and time.
    sequence: Mutex<Vec<(u64, Instant)>>,
    /// (event, subscription) pairs of this phase seen at least once.
    distinct: AtomicU64,
    latency_us: Mutex<Option<Histogram<u64>>>,
    bad_signatures: AtomicU64,
    arrived: tokio::sync::Notify,
    key: Vec<u8>,
    /// How long each answer takes (an endpoint's own work).
    delay: Duration,
    /// Per (event, subscription): requests being answered right now.
    active: Mutex<Arc<Vec<AtomicU8>>>,
    /// Requests that arrived while another for the same (event, subscription) was being
    /// answered: the same attempt running twice at once.
    overlaps: AtomicU64,
}

#[derive(Deserialize)]
struct Body {
    payload: BenchPayload,
}

#[derive(Deserialize)]
struct BenchPayload {
    seq: u64,
    sent_us: u64,
}

pub(crate) struct Tally {
    pub(crate) delivered: usize,
    pub(crate) duplicates: usize,
    pub(crate) missing: usize,
    pub(crate) bad_signatures: usize,
    pub(crate) steady_per_second: f64,
    pub(crate) latency: Latency,
}

impl BenchReceiver {
    pub(crate) async fn start() -> Self {
        Self::start_with_delay(Duration::ZERO).await
    }

    /// A receiver that takes `delay` to answer each webhook.
    pub(crate) async fn start_with_delay(delay: Duration) -> Self {
        let state = Arc::new(ReceiverState {
            key: SECRET.as_bytes().to_vec(),
            delay,
            ..ReceiverState::default()
        });
        let app = axum::Router::new()
            .route("/hook/{k}", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, state, task }
    }

    /// Every arrival of this phase so far, in order: sequence number and time.
    pub(crate) fn sequence(&self) -> Vec<(u64, Instant)> {
        self.state.sequence.lock().expect("lock").clone()
    }

    pub(crate) fn url(&self, subscription: usize) -> String {
        format!("{}/hook/{subscription}", self.base)
    }

    pub(crate) fn begin(&self, phase: Phase) {
        let slots = phase.events * phase.subscriptions;
        *self.state.seen.lock().expect("lock") =
            Arc::new((0..slots).map(|_| AtomicU8::new(0)).collect());
        *self.state.active.lock().expect("lock") =
            Arc::new((0..slots).map(|_| AtomicU8::new(0)).collect());
        self.state.overlaps.store(0, Ordering::Relaxed);
        self.state.arrivals.lock().expect("lock").clear();
        self.state.sequence.lock().expect("lock").clear();
        *self.state.latency_us.lock().expect("lock") =
            Some(Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"));
        self.state.bad_signatures.store(0, Ordering::Relaxed);
        self.state.distinct.store(0, Ordering::Relaxed);
        *self.state.phase.lock().expect("lock") = Some(phase);
    }

    fn arrived_count(&self) -> usize {
        self.state.arrivals.lock().expect("lock").len()
    }

    pub(crate) fn last_arrival(&self) -> Option<Instant> {
        self.state.arrivals.lock().expect("lock").last().copied()
    }

    /// Waits until `expected` deliveries arrived, or none arrived for `stall`.
    pub(crate) async fn wait(&self, expected: usize, stall: Duration) {
        let mut last_count = self.arrived_count();
        let mut last_progress = Instant::now();
        loop {
            let notified = self.state.arrived.notified();
            let count = self.distinct();
            if count >= expected {
                return;
            }
            let arrived = self.arrived_count();
            if arrived != last_count {
                last_count = arrived;
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= stall {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    pub(crate) fn distinct(&self) -> usize {
        self.state.distinct.load(Ordering::Relaxed) as usize
    }

    /// Counts what arrived; `refused` events were never accepted, so they are not missing.
    /// Waits until no event outside `refused` is missing, or nothing arrived for `stall`.
    /// Returns how many are still missing.
    pub(crate) async fn wait_none_missing(&self, refused: &[u64], stall: Duration) -> usize {
        let mut last_count = self.arrived_count();
        let mut last_progress = Instant::now();
        loop {
            let missing = self.tally(refused).missing;
            if missing == 0 {
                return 0;
            }
            let arrived = self.arrived_count();
            if arrived != last_count {
                last_count = arrived;
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= stall {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Requests that overlapped another for the same (event, subscription) in this phase.
    pub(crate) fn overlaps(&self) -> usize {
        self.state.overlaps.load(Ordering::Relaxed) as usize
    }

    pub(crate) fn tally(&self, refused: &[u64]) -> Tally {
        let phase = self.state.phase.lock().expect("lock").expect("phase begun");
        let seen = self.state.seen.lock().expect("lock").clone();
        let refused: std::collections::HashSet<u64> = refused.iter().copied().collect();
        let (mut delivered, mut duplicates, mut missing) = (0, 0, 0);
        for (slot, count) in seen.iter().enumerate() {
            let count = usize::from(count.load(Ordering::Relaxed));
            let seq = phase.first_seq + (slot / phase.subscriptions) as u64;
            match count {
                0 if !refused.contains(&seq) => missing += 1,
                0 => {}
                n => {
                    delivered += 1;
                    duplicates += n - 1;
                }
            }
        }
        let arrivals = self.state.arrivals.lock().expect("lock").clone();
        let steady_per_second = steady_rate(&arrivals);
        let latency = self
            .state
            .latency_us
            .lock()
            .expect("lock")
            .as_ref()
            .map(|h| Latency {
                p50: h.value_at_quantile(0.50) as f64 / 1000.0,
                p90: h.value_at_quantile(0.90) as f64 / 1000.0,
                p99: h.value_at_quantile(0.99) as f64 / 1000.0,
                max: h.max() as f64 / 1000.0,
            })
            .unwrap_or_default();
        Tally {
            delivered,
            duplicates,
            missing,
            bad_signatures: self.state.bad_signatures.load(Ordering::Relaxed) as usize,
            steady_per_second,
            latency,
        }
    }
}

impl Drop for BenchReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Deliveries per second between the 10th and 90th percentile arrival: the rate once the
/// engine is going and before the tail.
fn steady_rate(arrivals: &[Instant]) -> f64 {
    if arrivals.len() < 10 {
        return 0.0;
    }
    let (lo, hi) = (arrivals.len() / 10, arrivals.len() * 9 / 10);
    let span = arrivals[hi].duration_since(arrivals[lo]).as_secs_f64();
    if span <= 0.0 {
        return 0.0;
    }
    (hi - lo) as f64 / span
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    Path(k): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = Instant::now();
    let received_us = now_us();
    if !verify(&state.key, &headers, &body) {
        state.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(parsed) = serde_json::from_slice::<Body>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let Some(phase) = *state.phase.lock().expect("lock") else {
        return StatusCode::OK;
    };
    let seq = parsed.payload.seq;
    if seq < phase.first_seq || seq >= phase.first_seq + phase.events as u64 {
        // A straggler of an earlier phase (a retry): acknowledged, not counted here.
        return StatusCode::OK;
    }
    let slot = (seq - phase.first_seq) as usize * phase.subscriptions + k;
    if !state.delay.is_zero() {
        let active = state.active.lock().expect("lock").clone();
        if let Some(counter) = active.get(slot) {
            if counter.fetch_add(1, Ordering::AcqRel) > 0 {
                state.overlaps.fetch_add(1, Ordering::Relaxed);
            }
            // Released even when the hub hangs up first and this handler is dropped.
            let _answering = Answering(counter);
            tokio::time::sleep(state.delay).await;
        }
    }
    let seen = state.seen.lock().expect("lock").clone();
    if let Some(count) = seen.get(slot)
        && count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_add(1)) == Ok(0)
    {
        state.distinct.fetch_add(1, Ordering::Relaxed);
    }
    state.arrivals.lock().expect("lock").push(now);
    state.sequence.lock().expect("lock").push((seq, now));
    if let Some(h) = state.latency_us.lock().expect("lock").as_mut() {
        let _ = h.record(received_us.saturating_sub(parsed.payload.sent_us).max(1));
    }
    state.arrived.notify_waiters();
    StatusCode::OK
}

/// One request being answered, for overlap detection; dropped when the answer is done or the
/// connection is gone.
struct Answering<'a>(&'a AtomicU8);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Checks the Standard Webhooks signature and the seed's hex signature of a request.
fn verify(key: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    use base64::Engine;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let mut standard = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    standard.update(header("webhook-id").as_bytes());
    standard.update(b".");
    standard.update(header("webhook-timestamp").as_bytes());
    standard.update(b".");
    standard.update(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(standard.finalize().into_bytes())
    );
    let standard_ok = header("webhook-signature")
        .split(' ')
        .any(|entry| entry == expected);

    let mut seed = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    seed.update(header("x-webhook-timestamp").as_bytes());
    seed.update(b".");
    seed.update(body);
    let seed_ok =
        hex::decode(header("x-webhook-signature")).is_ok_and(|sig| seed.verify_slice(&sig).is_ok());
    standard_ok && seed_ok
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// User + system CPU seconds of a process (`/proc/<pid>/stat`, in USER_HZ = 100 ticks/s).
pub(crate) fn proc_cpu_seconds(pid: u32) -> f64 {
    proc_stat(pid).map_or(0.0, |s| s.cpu_seconds)
}

/// What the benchmark reads of `/proc/<pid>/stat`.
struct ProcStat {
    name: String,
    parent: u32,
    /// User + system.
    cpu_seconds: f64,
    /// User + system of its children that have exited and been waited for.
    children_cpu_seconds: f64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is parenthesised and may hold spaces: fields count from after it.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 4 (ppid) and 14–17 (utime, stime, cutime, cstime) of the whole line: 1 and 11–14
    // after the name.
    let ticks = |at: &[usize]| -> f64 {
        let sum: u64 = (at.iter())
            .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
            .sum();
        sum as f64 / 100.0
    };
    Some(ProcStat {
        name,
        parent: fields.get(1)?.parse().ok()?,
        cpu_seconds: ticks(&[11, 12]),
        children_cpu_seconds: ticks(&[13, 14]),
    })
}

/// Every process of this machine, as `/proc` lists them.
fn processes() -> Vec<(u32, ProcStat)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    (entries.flatten())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .collect()
}

/// The postmaster of the server at `url`: the parent of the backend serving a connection to
/// it, when that process runs on this machine (`None` for a remote server).
async fn postmaster_of(url: &str) -> Option<u32> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .ok()?;
    let stat = proc_stat(u32::try_from(backend).ok()?)?;
    let _ = conn.close().await;
    (stat.name == "postgres").then_some(stat.parent)
}

/// CPU seconds of a PostgreSQL server: its live children (backends, writers), then the
/// postmaster with the children it has reaped (closed connections). In that order, a child that
/// exits in between is counted twice rather than lost, so a phase's difference never goes
/// negative from it.
fn postgres_cpu_seconds(postmaster: u32) -> f64 {
    let children: f64 = (processes().iter())
        .filter(|(_, s)| s.parent == postmaster)
        .map(|(_, s)| s.cpu_seconds)
        .sum();
    let own = proc_stat(postmaster).map_or(0.0, |s| s.cpu_seconds + s.children_cpu_seconds);
    children + own
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`).
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Highest RSS seen while `running`, sampled every 50 ms.
async fn sample_rss(pid: u32, running: Arc<AtomicBool>) -> u64 {
    let mut peak = 0;
    while running.load(Ordering::Relaxed) {
        peak = peak.max(proc_status_kib(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peak.max(proc_status_kib(pid, "VmRSS:"))
}

/// The machine the figures come from.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {memory:.0} GiB")
}

/// The report as printed.
pub fn render(options: &Options, reports: &[Option<BackendReport>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "machine: {}", machine());
    let _ = writeln!(
        out,
        "load: {} subscription(s), {} B payloads, {} publishers; single {} events, batch {} \
         events ({} per request), latency phase {} events/s and low phase {} events/s for {} s \
         each",
        options.subscriptions,
        options.payload_bytes,
        options.publishers,
        options.single_events,
        options.batch_events,
        options.batch_size,
        options.rate,
        options.low_rate,
        options.latency_seconds,
    );
    if let Some(filter) = &options.filter {
        let _ = writeln!(out, "every subscription filters: {filter}");
    }
    if let Some(transform) = &options.transform {
        let _ = writeln!(out, "every subscription transforms: {transform}");
    }
    for (backend, report) in options.backends.iter().zip(reports) {
        let name = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        let Some(report) = report else {
            let _ = writeln!(
                out,
                "\n[{name}] SKIPPED: PostgreSQL is not reachable (see IH_TEST_POSTGRES_URL)"
            );
            continue;
        };
        let _ = writeln!(
            out,
            "\n[{name}]  hub peak RSS over the run: {:.1} MiB",
            report.hub_peak_rss_mib
        );
        let _ = writeln!(
            out,
            "{:<8} {:>8} {:>11} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>5} {:>5} {:>9} {:>8} {:>8}",
            "phase",
            "events",
            "accepted/s",
            "e2e dlv/s",
            "steady/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "dup",
            "miss",
            "cpu s/1k",
            "pg s/1k",
            "RSS MiB"
        );
        for p in &report.phases {
            let _ = writeln!(
                out,
                "{:<8} {:>8} {:>11.0} {:>10.0} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>5} {:>5} {:>9.3} {:>8} {:>8.1}",
                p.name,
                p.events,
                p.accepted_per_second,
                p.end_to_end_per_second,
                p.steady_per_second,
                p.latency_ms.p50,
                p.latency_ms.p90,
                p.latency_ms.p99,
                p.latency_ms.max,
                p.duplicates,
                p.missing,
                p.cpu_seconds_per_1000,
                p.db_cpu_seconds_per_1000
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.3}")),
                p.peak_rss_mib,
            );
            if p.publish_errors > 0 || p.bad_signatures > 0 {
                let _ = writeln!(
                    out,
                    "         ! {} publishes refused, {} bad signatures",
                    p.publish_errors, p.bad_signatures
                );
            }
        }
    }
    out
}
