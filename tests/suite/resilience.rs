//! Crash and scale safety: `kill -9` of the real binary mid-delivery, and two instances sharing
//! one PostgreSQL database.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use integrations_hub_testkit::receiver::{Receiver, Reply};
use integrations_hub_testkit::{Api, Backend, HubProcess, TestDb, TestHub, backend_tests};
use serde_json::{Value, json};

backend_tests!(kill_9_mid_delivery_loses_no_accepted_event);

/// Publishes events `from..from + count` (type `n`, payload `{"i": i}`) in batches of 50.
async fn publish_batches(hub: &Api, from: usize, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in (from..from + count).collect::<Vec<_>>().chunks(50) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"event_type": "n", "payload": {"i": i}}))
            .collect();
        ids.extend(hub.publish_batch(&events).await);
    }
    ids
}

/// Distinct event ids delivered, and how many deliveries were duplicates.
fn delivered(receiver: &Receiver) -> (HashMap<String, usize>, usize) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in receiver.requests() {
        *seen.entry(r.header("webhook-id").to_owned()).or_default() += 1;
    }
    let duplicates = seen.values().map(|n| n - 1).sum();
    (seen, duplicates)
}

async fn kill_9_mid_delivery_loses_no_accepted_event(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Slow(Duration::from_millis(20), 200)).await;
    let vars = [
        ("IH_ALLOW_PRIVATE_DESTINATIONS", "true"),
        ("IH_DELIVERY_TIMEOUT_SECONDS", "1"),
        ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
        ("IH_DELIVERY_CONCURRENCY", "8"),
    ];
    let hub = HubProcess::start(&db, &vars).await;
    hub.subscribe(&receiver.url("/k"), json!(["*"])).await;
    let mut accepted = publish_batches(&hub, 0, 300).await;
    receiver.wait_for("/k", 20, Duration::from_secs(15)).await;
    hub.kill9();
    let before_restart = receiver.requests().len();
    assert!(
        before_restart < 300,
        "the kill landed mid-delivery ({before_restart} delivered)"
    );

    let hub = HubProcess::start(&db, &vars).await;
    accepted.extend(publish_batches(&hub, 300, 100).await);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Settled: nothing left to do, including the re-attempts of what was in flight at the kill.
        if db.unfinished_deliveries().await == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries still unfinished 60 s after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (seen, duplicates) = delivered(&receiver);
    let missing = accepted.iter().filter(|id| !seen.contains_key(*id)).count();
    assert_eq!(
        missing, 0,
        "{missing} accepted events never delivered after kill -9"
    );
    eprintln!(
        "kill -9 ({backend:?}): {} events accepted, all delivered; {duplicates} duplicate deliveries (at-least-once)",
        accepted.len()
    );
    assert!(
        duplicates <= 8,
        "duplicates are bounded by the in-flight window (8): {duplicates}"
    );
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_postgres_deliver_everything_once() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Slow(Duration::from_millis(2), 200)).await;
    let vars = [
        ("IH_ALLOW_PRIVATE_DESTINATIONS", "true"),
        ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
        ("IH_DELIVERY_CONCURRENCY", "16"),
    ];
    let shared = db.share();
    let one = TestHub::start_on(db, &vars).await;
    let two = TestHub::start_on(shared, &vars).await;
    one.subscribe(&receiver.url("/two"), json!(["*"])).await;
    // Both instances take publishes; both deliver.
    let started = Instant::now();
    let (a, b) = tokio::join!(
        publish_batches(&one, 0, 1000),
        publish_batches(&two, 1000, 1000)
    );
    let accepted: Vec<String> = a.into_iter().chain(b).collect();
    assert_eq!(accepted.len(), 2000);
    receiver
        .wait_for("/two", 2000, Duration::from_secs(90))
        .await;
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (seen, duplicates) = delivered(&receiver);
    assert!(
        accepted.iter().all(|id| seen.contains_key(id)),
        "every event delivered"
    );
    assert_eq!(duplicates, 0, "no event delivered twice without a crash");
    assert_eq!(
        receiver.overlaps(),
        0,
        "no attempt ran twice at the same time"
    );
    let user_agents: std::collections::HashSet<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("user-agent").to_owned())
        .collect();
    assert_eq!(user_agents.len(), 1);
    eprintln!("two instances: 2000 events published and delivered in {elapsed:?}");
    // Both instances did part of the work: each counts its own deliveries.
    for hub in [&one, &two] {
        let done = hub
            .metric("ih_deliveries_total{kind=\"webhook\",outcome=\"succeeded\"}")
            .await;
        assert!(done > 0.0, "{} delivered nothing", hub.base);
    }
}
