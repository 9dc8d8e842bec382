//! The delivery engine end to end: the real hub, a real local receiver, both backends.

use std::time::{Duration, Instant};

use integrations_hub_testkit::fixtures::{SECRET, fast};
use integrations_hub_testkit::receiver::{
    Receiver, Reply, verify_seed_signature, verify_standard_signature,
};
use integrations_hub_testkit::{Backend, TestHub, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    delivers_signed_webhooks_verifiable_both_ways,
    a_new_delivery_is_handed_to_the_idle_engine_and_sent_alike,
    filters_by_event_type_and_skips_disabled_subscriptions,
    retries_then_succeeds_with_attempts_in_order,
    dead_letters_then_replays_once,
    bulk_replay_requeues_by_subscription,
    honours_retry_after,
    records_a_timeout_as_such,
    delivers_a_batch_of_100_exactly_once_each,
    refuses_names_that_resolve_to_private_addresses,
    allowed_networks_open_one_by_one_and_metadata_never,
    the_publishers_trace_goes_on_to_webhooks_and_connector_calls,
    gone_disables_the_subscription,
    a_dead_endpoint_opens_its_circuit_without_slowing_a_healthy_one,
    rotated_secrets_sign_during_the_grace_period,
    graceful_stop_finishes_in_flight_attempts,
    a_crash_loses_nothing,
    redirects_are_failures_and_bodies_are_capped,
    hanging_endpoints_cannot_take_every_slot,
);

const WAIT: Duration = Duration::from_secs(15);

async fn delivers_signed_webhooks_verifiable_both_ways(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(200)).await;
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let sub = hub
        .subscribe(&receiver.url("/hook"), json!(["request_submitted"]))
        .await;
    let raw_payload = "{\"title\": \"Access to production DB\",\n \"requester\": \"alice@company.com\", \"n\": 1.50}";
    let response = hub
        .post("/api/v1/events")
        .header("content-type", "application/json")
        .body(format!(
            "{{\"event_type\": \"request_submitted\", \"payload\": {raw_payload}}}"
        ))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 202);
    let published: Value = response.json().await.expect("json");
    let id = published["id"].as_str().expect("id");

    let got = receiver.wait_for("/hook", 1, WAIT).await;
    let request = &got[0];
    assert!(
        verify_seed_signature(SECRET, request),
        "seed signature verifies"
    );
    assert!(
        verify_standard_signature(SECRET, request),
        "Standard Webhooks signature verifies"
    );
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(
        request.header("user-agent"),
        format!("integrations-hub/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(request.header("x-webhook-event"), "request_submitted");
    assert_eq!(request.header("x-webhook-event-id"), id);
    assert_eq!(request.header("webhook-id"), id);
    assert_eq!(
        request.header("webhook-timestamp"),
        request.header("x-webhook-timestamp")
    );
    assert_eq!(request.header("x-team"), "ops", "custom headers are sent");
    let body = String::from_utf8(request.body.to_vec()).expect("utf-8");
    assert!(
        body.contains(raw_payload),
        "payload bytes are delivered unchanged: {body}"
    );
    let parsed = request.json();
    assert_eq!(parsed["id"], id);
    assert_eq!(parsed["event_type"], "request_submitted");
    assert_eq!(parsed["created_at"], published["created_at"]);

    let detail = hub.wait_status(id, "succeeded").await;
    assert_eq!(detail["deliveries"][0]["attempts"], 1);
    let list = hub.attempts(id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["outcome"], "succeeded");
    assert_eq!(list[0]["response_status"], 200);
    assert_eq!(list[0]["destination"]["kind"], "webhook");
    assert_eq!(list[0]["destination"]["subscription_id"], sub["id"]);
    assert_eq!(
        hub.metric("ih_deliveries_total{kind=\"webhook\",outcome=\"succeeded\"}")
            .await,
        1.0
    );
    assert_eq!(
        hub.metric("ih_publish_to_delivery_seconds_count").await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), 1, "delivered once");
}

/// Published while the engine has room and nothing older to claim, a delivery is handed to it
/// as its event is written (`host/src/store/handoff.rs`) and goes out as a claimed one would:
/// signed with the subscription's secret, with its headers.
async fn a_new_delivery_is_handed_to_the_idle_engine_and_sent_alike(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(200)).await;
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    hub.subscribe(&receiver.url("/hook"), json!(["request_submitted"]))
        .await;
    // The first may meet an engine that has not claimed yet since it started; by the second,
    // it has, and found nothing older.
    for n in 1..=2 {
        let id = hub.publish_id("request_submitted", json!({"n": n})).await;
        receiver.wait_for("/hook", n, WAIT).await;
        hub.wait_status(&id, "succeeded").await;
    }
    for request in receiver.requests() {
        assert!(verify_seed_signature(SECRET, &request));
        assert!(verify_standard_signature(SECRET, &request));
        assert_eq!(request.header("x-team"), "ops");
    }
    let handed = (hub.metric("ih_deliveries_started_total{how=\"handed\"}")).await;
    let claimed = (hub.metric("ih_deliveries_started_total{how=\"claimed\"}")).await;
    assert_eq!(handed + claimed, 2.0, "each taken up once");
    assert!(handed >= 1.0, "the second is handed over: {handed}");
}

async fn filters_by_event_type_and_skips_disabled_subscriptions(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(204)).await;
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    hub.subscribe(&receiver.url("/x"), json!(["x"])).await;
    hub.subscribe(&receiver.url("/y"), json!(["y"])).await;
    hub.subscribe(&receiver.url("/all"), json!(["*"])).await;
    let disabled = hub
        .subscribe(&receiver.url("/disabled"), json!(["x"]))
        .await;
    hub.expect(
        hub.patch(&format!(
            "/api/v1/subscriptions/{}",
            disabled["id"].as_str().expect("id")
        ))
        .json(&json!({"enabled": false})),
        200,
    )
    .await;
    let id = hub.publish_id("x", json!({})).await;
    receiver.wait_for("/x", 1, WAIT).await;
    receiver.wait_for("/all", 1, WAIT).await;
    let e = hub.event(&id).await;
    assert_eq!(e["deliveries"].as_array().map(Vec::len), Some(2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.requests_to("/y").is_empty());
    assert!(receiver.requests_to("/disabled").is_empty());
}

async fn retries_then_succeeds_with_attempts_in_order(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::Status(500), Reply::Status(502)]);
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    hub.subscribe(&receiver.url("/flaky"), json!(["*"])).await;
    let id = hub.publish_id("order.created", json!({"order": 1})).await;
    receiver.wait_for("/flaky", 3, WAIT).await;
    let detail = hub.wait_status(&id, "succeeded").await;
    assert_eq!(detail["deliveries"][0]["attempts"], 3);
    let list = hub.attempts(&id).await;
    let summary: Vec<(u64, &str, u64)> = list
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().expect("attempt"),
                a["outcome"].as_str().expect("outcome"),
                a["response_status"].as_u64().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "failed", 500),
            (2, "failed", 502),
            (3, "succeeded", 200)
        ]
    );
    assert_eq!(list[0]["response_body"], "reply 500");
    assert_eq!(list[0]["error"], "HTTP 500");
    let times: Vec<&str> = list
        .iter()
        .map(|a| a["started_at"].as_str().expect("time"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {times:?}"
    );
    let gaps: Vec<Duration> = receiver
        .requests()
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .collect();
    // base 0.05 s: waits of at least 0.05 × 2^(n−1) × 0.8 (jitter) between attempts.
    assert!(
        gaps[0] >= Duration::from_millis(40),
        "first backoff honoured: {gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(80),
        "second backoff doubled: {gaps:?}"
    );
}

async fn dead_letters_then_replays_once(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(500)).await;
    let Some(hub) = TestHub::start_with(backend, &fast(&[("IH_DELIVERY_MAX_ATTEMPTS", "3")])).await
    else {
        return;
    };
    hub.subscribe(&receiver.url("/down"), json!(["*"])).await;
    let id = hub.publish_id("a", json!({"k": "v"})).await;
    let detail = hub.wait_status(&id, "dead").await;
    assert_eq!(detail["deliveries"][0]["attempts"], 3);
    assert_eq!(detail["deliveries"][0]["last_error"], "HTTP 500");
    assert_eq!(receiver.requests().len(), 3);

    let letters = hub.expect(hub.get("/api/v1/admin/dead-letters"), 200).await;
    let letter = &letters["data"][0];
    assert_eq!(letter["event_id"], id.as_str());
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["last_error"], "HTTP 500");
    assert_eq!(letter["replayed_at"], Value::Null);
    assert_eq!(letter["destination"]["kind"], "webhook");
    assert_eq!(
        hub.metric("ih_deliveries_total{kind=\"webhook\",outcome=\"dead\"}")
            .await,
        1.0
    );

    receiver.set_default(Reply::Status(200));
    let letter_id = letter["id"].as_str().expect("id");
    let replayed = hub
        .expect(
            hub.post(&format!("/api/v1/admin/dead-letters/{letter_id}/replay")),
            202,
        )
        .await;
    assert_eq!(replayed["delivery_id"], detail["deliveries"][0]["id"]);
    let done = hub.wait_status(&id, "succeeded").await;
    assert_eq!(done["deliveries"][0]["attempts"], 1, "a fresh budget");
    let list = hub.attempts(&id).await;
    assert_eq!(list.len(), 4, "history keeps the failed attempts");
    assert_eq!(list[3]["outcome"], "succeeded");

    hub.expect(
        hub.post(&format!("/api/v1/admin/dead-letters/{letter_id}/replay")),
        409,
    )
    .await;
    hub.expect(
        hub.post(&format!(
            "/api/v1/admin/dead-letters/{}/replay",
            uuid::Uuid::now_v7()
        )),
        404,
    )
    .await;
    let letters = hub.expect(hub.get("/api/v1/admin/dead-letters"), 200).await;
    assert!(letters["data"][0]["replayed_at"].is_string());
}

async fn bulk_replay_requeues_by_subscription(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(500)).await;
    let Some(hub) = TestHub::start_with(backend, &fast(&[("IH_DELIVERY_MAX_ATTEMPTS", "1")])).await
    else {
        return;
    };
    let first = hub.subscribe(&receiver.url("/first"), json!(["*"])).await;
    hub.subscribe(&receiver.url("/second"), json!(["*"])).await;
    let ids = [
        hub.publish_id("a", json!({})).await,
        hub.publish_id("a", json!({})).await,
    ];
    for id in &ids {
        let deadline = Instant::now() + WAIT;
        while hub.event(id).await["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .any(|d| d["status"] != "dead")
        {
            assert!(Instant::now() < deadline, "not all dead");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    receiver.set_default(Reply::Status(200));
    let body = hub
        .expect(
            hub.post("/api/v1/admin/dead-letters/replay")
                .json(&json!({"subscription_id": first["id"], "since": "2000-01-01T00:00:00Z"})),
            202,
        )
        .await;
    assert_eq!(
        body["replayed"], 2,
        "only the first subscription's dead letters"
    );
    receiver.wait_for("/first", 4, WAIT).await;
    let body = hub
        .expect(
            hub.post("/api/v1/admin/dead-letters/replay")
                .json(&json!({})),
            202,
        )
        .await;
    assert_eq!(body["replayed"], 2, "the rest");
    receiver.wait_for("/second", 4, WAIT).await;
    hub.expect(
        hub.post("/api/v1/admin/dead-letters/replay")
            .json(&json!({"since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"})),
        422,
    )
    .await;
}

async fn honours_retry_after(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::WithHeaders(429, vec![("retry-after", "1".into())])]);
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    hub.subscribe(&receiver.url("/limited"), json!(["*"])).await;
    let id = hub.publish_id("a", json!({})).await;
    let got = receiver.wait_for("/limited", 2, WAIT).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 was honoured: {gap:?}"
    );
    assert!(
        gap < Duration::from_secs(4),
        "not much later either: {gap:?}"
    );
    hub.wait_status(&id, "succeeded").await;
    assert_eq!(hub.attempts(&id).await[0]["response_status"], 429);
}

async fn records_a_timeout_as_such(backend: Backend) {
    let receiver = Receiver::start(Reply::Slow(Duration::from_secs(3), 200)).await;
    let Some(hub) = TestHub::start_with(
        backend,
        &fast(&[
            ("IH_DELIVERY_TIMEOUT_SECONDS", "0.3"),
            ("IH_DELIVERY_MAX_ATTEMPTS", "1"),
        ]),
    )
    .await
    else {
        return;
    };
    hub.subscribe(&receiver.url("/slow"), json!(["*"])).await;
    let id = hub.publish_id("a", json!({})).await;
    let detail = hub.wait_status(&id, "dead").await;
    let error = detail["deliveries"][0]["last_error"]
        .as_str()
        .expect("error");
    assert!(error.contains("timed out after 0.3s"), "{error}");
    let list = hub.attempts(&id).await;
    assert_eq!(list[0]["response_status"], Value::Null);
    let ms = list[0]["duration_ms"].as_u64().expect("duration");
    assert!((250..2000).contains(&ms), "bounded by the timeout: {ms} ms");
}

async fn delivers_a_batch_of_100_exactly_once_each(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(200)).await;
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    hub.subscribe(&receiver.url("/batch"), json!(["*"])).await;
    let events: Vec<Value> = (0..100)
        .map(|i| json!({"event_type": "n", "payload": {"i": i}}))
        .collect();
    hub.expect(
        hub.post("/api/v1/events/batch")
            .json(&json!({"events": events})),
        202,
    )
    .await;
    let got = receiver.wait_for("/batch", 100, WAIT).await;
    let mut seen: Vec<i64> = got
        .iter()
        .map(|r| r.json()["payload"]["i"].as_i64().expect("i"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    assert!(got.iter().all(|r| verify_seed_signature(SECRET, r)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), 100, "no duplicates");
}

/// A host name that resolves to a loopback address but is not `localhost` (which the API refuses
/// up front): the machine's own name, as `/etc/hosts` maps it on Debian and in containers.
async fn loopback_name() -> String {
    let mut candidates: Vec<String> = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| vec![h.trim().to_owned()])
        .unwrap_or_default();
    candidates.extend(["ip6-localhost", "ip6-loopback", "localhost.localdomain"].map(String::from));
    for name in candidates.into_iter().filter(|n| !n.is_empty()) {
        let addrs: Vec<_> = match tokio::net::lookup_host((name.as_str(), 80)).await {
            Ok(addrs) => addrs.collect(),
            Err(_) => continue,
        };
        if !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()) {
            return name;
        }
    }
    panic!("this machine has no host name that resolves to loopback (check /etc/hosts)");
}

async fn refuses_names_that_resolve_to_private_addresses(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(200)).await;
    // The guard is on: no IH_ALLOW_PRIVATE_DESTINATIONS.
    let Some(hub) = TestHub::start_with(
        backend,
        &[
            ("IH_DELIVERY_MAX_ATTEMPTS", "1"),
            ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
        ],
    )
    .await
    else {
        return;
    };
    let name = loopback_name().await;
    let port = receiver.base.rsplit(':').next().expect("port");
    hub.subscribe(&format!("http://{name}:{port}/internal"), json!(["*"]))
        .await;
    let id = hub.publish_id("a", json!({})).await;
    let detail = hub.wait_status(&id, "dead").await;
    let error = detail["deliveries"][0]["last_error"]
        .as_str()
        .expect("error");
    assert!(error.contains("blocked by the SSRF guard"), "{error}");
    assert!(error.contains("loopback"), "the reason is named: {error}");
    assert!(
        receiver.requests().is_empty(),
        "nothing reached the private address"
    );
}

/// `IH_ALLOWED_DESTINATION_CIDRS` opens the receiver's network (by name and by literal address)
/// and nothing else; metadata stays refused even with every private destination allowed.
async fn allowed_networks_open_one_by_one_and_metadata_never(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(200)).await;
    let chosen = [
        ("IH_ALLOWED_DESTINATION_CIDRS", "127.0.0.0/8"),
        ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
    ];
    let Some(hub) = TestHub::start_with(backend, &chosen).await else {
        return;
    };
    let name = loopback_name().await;
    let port = receiver.base.rsplit(':').next().expect("port");
    hub.subscribe(&format!("http://{name}:{port}/by-name"), json!(["*"]))
        .await;
    hub.subscribe(&receiver.url("/by-address"), json!(["*"]))
        .await;
    let id = hub.publish_id("a", json!({})).await;
    hub.wait_delivered(&id).await;
    assert_eq!(receiver.requests_to("/by-name").len(), 1);
    assert_eq!(receiver.requests_to("/by-address").len(), 1);
    for (url, rule) in [
        ("http://10.0.0.5/hook", "IH_ALLOWED_DESTINATION_CIDRS"),
        ("http://169.254.169.254/latest/meta-data/", "never allowed"),
    ] {
        let refused = hub
            .post_json(
                "/api/v1/subscriptions",
                &json!({"url": url, "secret": SECRET, "events": ["*"]}),
                422,
            )
            .await;
        assert!(refused.to_string().contains(rule), "{url}: {refused}");
    }
    drop(hub);

    let Some(open) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    for url in [
        "http://169.254.169.254/",
        "http://[fe80::1]/",
        "http://[::ffff:a9fe:a9fe]/",
    ] {
        let refused = open
            .post_json(
                "/api/v1/subscriptions",
                &json!({"url": url, "secret": SECRET, "events": ["*"]}),
                422,
            )
            .await;
        assert!(
            refused.to_string().contains("never allowed"),
            "{url}: {refused}"
        );
    }
}

async fn gone_disables_the_subscription(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(410)).await;
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let sub = hub.subscribe(&receiver.url("/gone"), json!(["*"])).await;
    let id = hub.publish_id("a", json!({})).await;
    let detail = hub.wait_status(&id, "dead").await;
    assert_eq!(detail["deliveries"][0]["attempts"], 1, "410 is final");
    let sub = hub
        .expect(
            hub.get(&format!(
                "/api/v1/subscriptions/{}",
                sub["id"].as_str().expect("id")
            )),
            200,
        )
        .await;
    assert_eq!(sub["enabled"], false);
    let published = hub.publish("a", json!({})).await;
    assert_eq!(
        published["deliveries"], 0,
        "a disabled subscription receives nothing new"
    );
}

async fn a_dead_endpoint_opens_its_circuit_without_slowing_a_healthy_one(backend: Backend) {
    let dead = Receiver::start(Reply::Status(503)).await;
    let healthy = Receiver::start(Reply::Status(200)).await;
    let Some(hub) = TestHub::start_with(
        backend,
        &fast(&[
            ("IH_DELIVERY_MAX_ATTEMPTS", "50"),
            ("IH_DELIVERY_BACKOFF_BASE_SECONDS", "0.01"),
            ("IH_DELIVERY_BACKOFF_MAX_SECONDS", "0.05"),
        ]),
    )
    .await
    else {
        return;
    };
    let broken = hub.subscribe(&dead.url("/dead"), json!(["dead"])).await;
    hub.subscribe(&healthy.url("/ok"), json!(["ok"])).await;
    for _ in 0..3 {
        hub.publish_id("dead", json!({})).await;
    }
    dead.wait_for("/dead", 10, WAIT).await;
    let path = format!(
        "/api/v1/subscriptions/{}",
        broken["id"].as_str().expect("id")
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let sub = hub.expect(hub.get(&path), 200).await;
        if sub["circuit"]["state"] == "open" {
            assert!(
                sub["circuit"]["consecutive_failures"]
                    .as_u64()
                    .expect("failures")
                    >= 10
            );
            break;
        }
        assert!(Instant::now() < deadline, "circuit never opened: {sub}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tried = dead.requests().len();
    // While open (30 s cool-off) the dead endpoint is left alone, and healthy deliveries are quick.
    let mut latencies = Vec::new();
    for i in 0..10 {
        let started = Instant::now();
        hub.publish_id("ok", json!({"i": i})).await;
        healthy.wait_for("/ok", i + 1, WAIT).await;
        latencies.push(started.elapsed());
    }
    let worst = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        worst < Duration::from_millis(1000),
        "healthy deliveries kept their latency: {latencies:?}"
    );
    assert_eq!(
        dead.requests().len(),
        tried,
        "no attempts while the circuit is open"
    );
}

async fn rotated_secrets_sign_during_the_grace_period(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(200)).await;
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let sub = hub.subscribe(&receiver.url("/rot"), json!(["*"])).await;
    let new_secret = "the-rotated-secret-0123456789";
    hub.expect(
        hub.patch(&format!(
            "/api/v1/subscriptions/{}",
            sub["id"].as_str().expect("id")
        ))
        .json(&json!({"secret": new_secret})),
        200,
    )
    .await;
    hub.publish_id("a", json!({})).await;
    let got = receiver.wait_for("/rot", 1, WAIT).await;
    assert!(
        verify_seed_signature(SECRET, &got[0]),
        "X-Webhook-Signature keeps the previous secret during the grace period"
    );
    assert!(verify_standard_signature(new_secret, &got[0]));
    assert!(
        verify_standard_signature(SECRET, &got[0]),
        "the old secret still verifies for 24 h"
    );
    assert_eq!(got[0].header("webhook-signature").split(' ').count(), 2);
}

async fn graceful_stop_finishes_in_flight_attempts(backend: Backend) {
    let receiver = Receiver::start(Reply::Slow(Duration::from_millis(700), 200)).await;
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    hub.subscribe(&receiver.url("/slow"), json!(["*"])).await;
    let id = hub.publish_id("a", json!({})).await;
    receiver.wait_for("/slow", 1, WAIT).await;
    let (result, db) = hub.stop().await;
    result.expect("graceful stop");
    let hub = TestHub::start_on(db, &fast(&[])).await;
    let detail = hub.event(&id).await;
    assert_eq!(
        detail["deliveries"][0]["status"], "succeeded",
        "the in-flight attempt finished: {detail}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 1);
}

async fn a_crash_loses_nothing(backend: Backend) {
    let receiver = Receiver::start(Reply::Slow(Duration::from_millis(300), 200)).await;
    let crashy = fast(&[("IH_DELIVERY_TIMEOUT_SECONDS", "1")]);
    let Some(hub) = TestHub::start_with(backend, &crashy).await else {
        return;
    };
    hub.subscribe(&receiver.url("/c"), json!(["*"])).await;
    let events: Vec<Value> = (0..50)
        .map(|i| json!({"event_type": "n", "payload": {"i": i}}))
        .collect();
    hub.expect(
        hub.post("/api/v1/events/batch")
            .json(&json!({"events": events})),
        202,
    )
    .await;
    receiver.wait_for("/c", 1, WAIT).await;
    // Crash with attempts in flight: their leases stay behind and must expire and be re-claimed.
    let db = hub.crash().await;
    let _hub = TestHub::start_on(db, &crashy).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen: Vec<i64> = receiver
            .requests()
            .iter()
            .map(|r| r.json()["payload"]["i"].as_i64().expect("i"))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() == 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 50 events delivered after the crash",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn redirects_are_failures_and_bodies_are_capped(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([
        Reply::WithHeaders(
            302,
            vec![("location", "http://169.254.169.254/latest/meta-data".into())],
        ),
        Reply::Big(500, 100_000),
    ]);
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    hub.subscribe(&receiver.url("/r"), json!(["*"])).await;
    let id = hub.publish_id("a", json!({})).await;
    hub.wait_status(&id, "succeeded").await;
    let list = hub.attempts(&id).await;
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["response_status"], 302);
    assert_eq!(list[0]["error"], "HTTP 302 (redirects are not followed)");
    assert_eq!(list[1]["response_status"], 500);
    assert_eq!(
        list[1]["response_body"].as_str().map(str::len),
        Some(4096),
        "first 4 KiB only"
    );
    assert_eq!(
        receiver.requests().len(),
        3,
        "the redirect target was never requested"
    );
}

async fn hanging_endpoints_cannot_take_every_slot(backend: Backend) {
    // Two hanging endpoints: each alone could hold three quarters of the slots, and together
    // they would hold all of them; the slow share is common to them.
    let hanging = [
        Receiver::start(Reply::Slow(Duration::from_secs(4), 200)).await,
        Receiver::start(Reply::Slow(Duration::from_secs(4), 200)).await,
    ];
    let healthy = Receiver::start(Reply::Status(200)).await;
    // 4 slots: the hanging endpoints may hold 3 of them, never the fourth.
    let Some(hub) = TestHub::start_with(
        backend,
        &fast(&[
            ("IH_DELIVERY_CONCURRENCY", "4"),
            ("IH_DELIVERY_TIMEOUT_SECONDS", "5"),
        ]),
    )
    .await
    else {
        return;
    };
    // The healthy endpoint has proven fast before the others start hanging.
    hub.subscribe(&healthy.url("/ok"), json!(["ok"])).await;
    hub.publish_id("ok", json!({})).await;
    healthy.wait_for("/ok", 1, WAIT).await;
    hub.subscribe(&hanging[0].url("/hang"), json!(["hang"]))
        .await;
    hub.subscribe(&hanging[1].url("/hang"), json!(["hang"]))
        .await;
    for _ in 0..10 {
        hub.publish_id("hang", json!({})).await;
    }
    let deadline = Instant::now() + WAIT;
    while hanging.iter().map(|r| r.requests().len()).sum::<usize>() < 3 {
        assert!(
            Instant::now() < deadline,
            "the hanging endpoints got 3 attempts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    hub.publish_id("ok", json!({})).await;
    healthy.wait_for("/ok", 2, WAIT).await;
    let latency = started.elapsed();
    assert!(
        latency < Duration::from_secs(2),
        "healthy delivery waited for the hanging endpoints: {latency:?}"
    );
    assert_eq!(
        hanging.iter().map(|r| r.requests().len()).sum::<usize>(),
        3,
        "the hanging endpoints together hold at most 3 of the 4 slots"
    );
}

/// A `traceparent` on a publish reaches every call its event causes: the same trace id and
/// flags, a parent id of the hub's own per call. A missing or malformed one sends none.
async fn the_publishers_trace_goes_on_to_webhooks_and_connector_calls(backend: Backend) {
    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let receiver = Receiver::start(Reply::Status(200)).await;
    let slack = Receiver::start(Reply::Json(200, json!({"ok": true, "ts": "1.2"}))).await;
    let slack_base = slack.url("/api");
    let slack_host = slack.base.trim_start_matches("http://").to_owned();
    let vars = fast(&[
        ("IH_SLACK_BOT_TOKEN", "xoxb-trace-test"),
        ("IH_SLACK_API_BASE_URL", &slack_base),
        ("IH_SLACK_ALLOWED_HOSTS", &slack_host),
    ]);
    let Some(hub) = TestHub::start_with(backend, &vars).await else {
        return;
    };
    hub.subscribe(&receiver.url("/traced"), json!(["*"])).await;
    let payload = json!({"title": "t", "requester": "r@example.com", "description": "d"});
    let publish = |traceparent: Option<&str>| {
        let mut request = hub
            .post("/api/v1/events")
            .json(&json!({"event_type": "request_submitted", "payload": payload}));
        if let Some(t) = traceparent {
            request = request.header("traceparent", t);
        }
        hub.expect(request, 202)
    };
    publish(Some(TRACE)).await;
    let webhook = receiver.wait_for("/traced", 1, WAIT).await;
    let call = slack.wait_for("/api/chat.postMessage", 1, WAIT).await;
    for got in [
        webhook[0].header("traceparent"),
        call[0].header("traceparent"),
    ] {
        let parts: Vec<&str> = got.split('-').collect();
        assert_eq!(parts.len(), 4, "{got}");
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
        );
        assert_ne!(parts[2], "00f067aa0ba902b7", "the hub's own parent id");
        assert!(
            parts[2].len() == 16 && parts[2] != "0000000000000000",
            "{got}"
        );
    }
    assert_ne!(
        webhook[0].header("traceparent"),
        call[0].header("traceparent"),
        "each call its own parent id"
    );

    publish(None).await;
    publish(Some("00-not-a-trace-01")).await;
    let webhooks = receiver.wait_for("/traced", 3, WAIT).await;
    for got in &webhooks[1..] {
        assert_eq!(got.header("traceparent"), "", "no trace to go on");
    }
}
