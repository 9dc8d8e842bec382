//! Connector benchmark: prints what one hub's connector runtime does on this machine.
//!
//! ```text
//! cargo run --release -p integrations-hub-tools --bin bench-connectors -- [seconds] [concurrency]
//! ```
//!
//! It loads the built connectors exactly as the hub does (the registry, the pooling engine, the
//! epoch ticker) and reports:
//! - load time of a component (compile + `manifest()` call);
//! - the latency of one trivial call, which is almost all instantiation (a fresh instance per
//!   call is the sandbox's rule);
//! - invocations per second for the trivial fixture and for the Slack connector posting to a
//!   local fake Slack API over real HTTP;
//! - resident memory per loaded connector (RSS growth over 20 more loaded copies);
//! - the latency of one call of the example transforms (`transforms/`): what a subscription's
//!   transform adds to each delivery.
//!
//! Figures, not assertions: compare runs on the same machine.

// A benchmark's output is its report.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use integrations_hub::config::{ConnectorConfig, Secret};
use integrations_hub::connectors::{
    CallContext, CallOutcome, Connectors, EventData, Reuse, TransformInput,
};
use integrations_hub::metrics::Metrics;
use integrations_hub_testkit::receiver::{Receiver, Reply};
use integrations_hub_testkit::{built_wasm, deploy, fixture_wasm};

const COPIES: usize = 20;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let concurrency: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(16);
    let rss_start = rss_kib();

    let fake = Receiver::start(Reply::Json(200, serde_json::json!({"ok": true}))).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    deploy(
        dir.path(),
        "fixture.wasm",
        &fixture_wasm("fixture", "1.0.0"),
    );
    for stem in ["require_field_transform", "cloudevents_transform"] {
        deploy(dir.path(), &format!("{stem}.wasm"), &built_wasm(stem));
    }
    let mut settings = BTreeMap::new();
    for (key, value) in [
        ("SLACK_BOT_TOKEN", "xoxb-bench".to_owned()),
        ("SLACK_API_BASE_URL", fake.url("/api")),
        (
            "SLACK_ALLOWED_HOSTS",
            fake.base.trim_start_matches("http://").to_owned(),
        ),
    ] {
        settings.insert(key.to_owned(), Secret::new(value));
    }
    let config = ConnectorConfig {
        dir: dir.path().to_owned(),
        timeout: Duration::from_secs(10),
        memory_mb: 64,
        settings,
        trusted_keys: Vec::new(),
    };
    // The fake upstream is on loopback.
    let policy = integrations_hub::egress::Policy::new(true, &[]);
    let client = integrations_hub::egress::build(Duration::from_secs(10), &policy, "bench")
        .expect("HTTP client");
    let started = Instant::now();
    let connectors = Connectors::start(
        &config,
        concurrency.max(64),
        client,
        policy,
        Arc::new(Metrics::new()),
        None,
    )
    .await
    .expect("connector runtime");
    let load = started.elapsed();
    let rss_loaded = rss_kib();
    let active: Vec<String> = connectors
        .list()
        .into_iter()
        .map(|c| format!("{} {:?}", c.name, c.status))
        .collect();
    println!("connectors: {active:?}");
    println!(
        "load (compile + manifest) of 4 components (slack built-in, fixture, 2 transforms): {:.0} ms",
        load.as_secs_f64() * 1e3
    );

    // What a transform adds to a delivery: one call at a time, in a fresh instance (dry runs)
    // and in one kept warm (deliveries).
    for ((name, settings), reuse) in [
        ("require-field", [("pointer", "/title")]),
        ("cloudevents", [("source", "/bench")]),
    ]
    .into_iter()
    .flat_map(|t| [(t, Reuse::Fresh), (t, Reuse::Warm)])
    {
        let mut samples = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let input = TransformInput {
                event: event("order.paid"),
                subscription_id: uuid::Uuid::nil(),
                url: "https://example.com/".into(),
                settings: settings
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            };
            let t = Instant::now();
            let made = connectors.transform(name, input, reuse).await;
            samples.push(t.elapsed());
            assert!(
                made.is_ok(),
                "the benchmark's transforms must succeed: {made:?}"
            );
        }
        samples.sort();
        println!(
            "transform {name}, sequential, {reuse:?} instance: p50 {:.1} µs, p99 {:.1} µs",
            percentile(&samples, 0.50).as_secs_f64() * 1e6,
            percentile(&samples, 0.99).as_secs_f64() * 1e6
        );
    }

    // Latency of a trivial call, one at a time (mostly instantiation).
    let mut samples = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        expect_ok(
            connectors
                .invoke("fixture", event("fixture.ok"), None, &context())
                .await,
        );
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "trivial call, sequential (instantiate + call): p50 {:.1} µs, p99 {:.1} µs",
        percentile(&samples, 0.50).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6
    );

    for (name, event_type) in [("fixture", "fixture.ok"), ("slack", "request_submitted")] {
        let rate = throughput(&connectors, name, event_type, concurrency, seconds).await;
        println!(
            "{name}: {rate:.0} invocations/s ({concurrency} concurrent, {seconds} s{})",
            if name == "slack" {
                ", each a real HTTP POST to a local fake Slack"
            } else {
                ""
            }
        );
    }
    let posted = fake.requests_to("/api/chat.postMessage").len();
    println!("fake Slack received {posted} messages");

    // Resident memory per loaded connector: load COPIES more, differently named.
    let before = rss_kib();
    for i in 0..COPIES {
        let name = format!("copy{i:02}");
        deploy(
            dir.path(),
            &format!("{name}.wasm"),
            &fixture_wasm(&name, "1.0.0"),
        );
    }
    connectors.rescan().await;
    let loaded = connectors.list().len();
    let after = rss_kib();
    println!(
        "RSS: {} MiB at start, {} MiB with 2 connectors loaded, {} MiB after the load runs; \
         +{} more connectors ({loaded} listed): +{:.1} MiB, {:.0} KiB per loaded connector",
        rss_start / 1024,
        rss_loaded / 1024,
        before / 1024,
        COPIES,
        (after.saturating_sub(before)) as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / COPIES as f64
    );
}

/// The `p` quantile of sorted `samples`.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]
}

fn event(event_type: &str) -> EventData {
    EventData {
        id: uuid::Uuid::now_v7().to_string(),
        event_type: event_type.to_owned(),
        created_at: chrono::Utc::now().to_rfc3339(),
        payload: r#"{"title":"Access to the billing dashboard","requester":"ada@example.com","description":"Needed for the quarterly review."}"#.to_owned(),
    }
}

/// A first attempt of a delivery to the default instance.
fn context() -> CallContext {
    CallContext {
        attempt: 1,
        max_attempts: 5,
        delivery_id: uuid::Uuid::now_v7(),
        instance_id: None,
        subscription_id: None,
        traceparent: None,
    }
}

fn expect_ok(outcome: CallOutcome) {
    assert!(
        matches!(outcome, CallOutcome::Delivered { .. }),
        "the benchmark's calls must succeed: {outcome:?}"
    );
}

async fn throughput(
    connectors: &Arc<Connectors>,
    name: &str,
    event_type: &str,
    concurrency: usize,
    seconds: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (connectors, done) = (connectors.clone(), done.clone());
        let (name, event_type) = (name.to_owned(), event_type.to_owned());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                expect_ok(
                    connectors
                        .invoke(&name, event(&event_type), None, &context())
                        .await,
                );
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await.expect("benchmark task");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Resident set size of this process, KiB (Linux; 0 elsewhere).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
