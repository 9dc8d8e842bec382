//! Transforms end to end: the example transforms and the hostile fixture (`.wasm` files built
//! from `transforms/` and `tests/fixtures/transform`) loaded by a real hub, reshaping webhooks
//! into a real receiver that verifies both signatures over the body it got.

use std::time::{Duration, Instant};

use integrations_hub_testkit::fixtures::{SECRET, fast};
use integrations_hub_testkit::receiver::{
    Receiver, Reply, verify_seed_signature, verify_standard_signature,
};
use integrations_hub_testkit::{Backend, TestHub, backend_tests, built_wasm, deploy};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

backend_tests!(
    a_transformed_webhook_is_signed_as_sent,
    deliveries_wait_for_a_missing_transform_and_are_never_sent_untransformed,
    dropped_events_are_skipped_and_a_failing_transform_retries,
    hostile_transforms_are_contained,
    the_dry_run_answers_without_delivering,
);

const WAIT: Duration = Duration::from_secs(20);

/// Copies a built transform into the hub's directory and waits until it is listed active.
async fn install(hub: &TestHub, stem: &str, name: &str) {
    deploy(
        &hub.connectors_dir,
        &format!("{stem}.wasm"),
        &built_wasm(stem),
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let list = hub.get_json("/api/v1/transforms", 200).await;
        let found = list["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|t| t["name"] == name && t["status"] == "active" && t["kind"] == "transform");
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never loaded: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A subscription of `url` to `events` whose deliveries go through `transform`.
async fn subscribe(hub: &TestHub, url: &str, events: Value, transform: Value) -> Value {
    hub.post_json(
        "/api/v1/subscriptions",
        &json!({"url": url, "secret": SECRET, "events": events, "transform": transform}),
        201,
    )
    .await
}

async fn a_transformed_webhook_is_signed_as_sent(backend: Backend) {
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    install(&hub, "cloudevents_transform", "cloudevents").await;
    let sub = subscribe(
        &hub,
        &receiver.url("/ce"),
        json!(["order.paid"]),
        json!({"name": "cloudevents", "settings": {"source": "/shop"}}),
    )
    .await;
    assert_eq!(
        sub["transform"],
        json!({"name": "cloudevents", "settings": {"source": "/shop"}})
    );
    let id = hub.publish_id("order.paid", json!({"total": 12})).await;
    hub.wait_delivered(&id).await;
    let got = receiver.wait_for("/ce", 1, WAIT).await;
    let envelope = got[0].json();
    assert_eq!(envelope["specversion"], "1.0");
    assert_eq!(envelope["id"], id.as_str());
    assert_eq!(envelope["source"], "/shop");
    assert_eq!(envelope["type"], "order.paid");
    assert_eq!(envelope["data"], json!({"total": 12}));
    assert_eq!(
        got[0].header("content-type"),
        "application/cloudevents+json; charset=utf-8"
    );
    assert!(
        verify_seed_signature(SECRET, &got[0]),
        "seed signature over the sent body"
    );
    assert!(
        verify_standard_signature(SECRET, &got[0]),
        "Standard Webhooks signature"
    );
    assert_eq!(got[0].header("webhook-id"), id);
    let attempts = hub.attempts(&id).await;
    assert_eq!(
        attempts[0]["body_sha256"],
        hex::encode(Sha256::digest(&got[0].body)),
        "the attempt keeps the digest of what was sent"
    );

    // Removed: the hub's own envelope again, and no digest.
    hub.patch_json(
        &format!("/api/v1/subscriptions/{}", sub["id"].as_str().expect("id")),
        &json!({"transform": null}),
        200,
    )
    .await;
    let plain = hub.publish_id("order.paid", json!({"total": 13})).await;
    hub.wait_delivered(&plain).await;
    let got = receiver.wait_for("/ce", 2, WAIT).await;
    assert_eq!(got[1].json()["payload"], json!({"total": 13}));
    assert!(hub.attempts(&plain).await[0]["body_sha256"].is_null());
}

async fn deliveries_wait_for_a_missing_transform_and_are_never_sent_untransformed(
    backend: Backend,
) {
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    subscribe(
        &hub,
        &receiver.url("/slack"),
        json!(["*"]),
        json!({"name": "slack-text", "settings": {"title": "Paid"}}),
    )
    .await;
    let id = hub.publish_id("order.paid", json!({"total": 12})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receiver.requests().is_empty(),
        "nothing goes out untransformed"
    );
    let event = hub.event(&id).await;
    assert_eq!(event["deliveries"][0]["status"], "pending", "{event}");
    assert_eq!(
        event["deliveries"][0]["attempts"], 0,
        "holding spends no attempt"
    );
    assert!(
        hub.metric("ih_transform_held_total{transform=\"slack-text\"}")
            .await
            >= 1.0
    );

    install(&hub, "slack_text_transform", "slack-text").await;
    hub.wait_delivered(&id).await;
    let got = receiver.wait_for("/slack", 1, WAIT).await;
    let text = got[0].json()["text"].as_str().expect("text").to_owned();
    assert!(text.starts_with(&format!("*Paid* ({id})")), "{text}");
    assert!(text.contains("\"total\": 12"), "{text}");
    assert!(verify_standard_signature(SECRET, &got[0]));
}

async fn dropped_events_are_skipped_and_a_failing_transform_retries(backend: Backend) {
    let vars = fast(&[("IH_DELIVERY_MAX_ATTEMPTS", "2")]);
    let Some(hub) = TestHub::start_with(backend, &vars).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    install(&hub, "require_field_transform", "require-field").await;
    install(&hub, "fixture_transform", "fixture-transform").await;
    subscribe(
        &hub,
        &receiver.url("/paid"),
        json!(["order.updated"]),
        json!({"name": "require-field", "settings": {"pointer": "/status", "equals": "\"paid\""}}),
    )
    .await;
    let draft = hub
        .publish_id("order.updated", json!({"status": "draft"}))
        .await;
    let paid = hub
        .publish_id("order.updated", json!({"status": "paid"}))
        .await;
    hub.wait_delivered(&draft).await;
    hub.wait_delivered(&paid).await;
    let got = receiver.wait_for("/paid", 1, WAIT).await;
    assert_eq!(got.len(), 1, "only the paid order goes out");
    assert_eq!(got[0].json()["payload"], json!({"status": "paid"}));
    let skipped = hub.attempts(&draft).await;
    assert_eq!(skipped[0]["report"]["kind"], "skipped", "{}", skipped[0]);
    assert_eq!(
        skipped[0]["response_body"],
        "the payload's /status is \"draft\", not \"paid\""
    );

    subscribe(
        &hub,
        &receiver.url("/refused"),
        json!(["order.refused"]),
        json!({"name": "fixture-transform", "settings": {"mode": "error"}}),
    )
    .await;
    let refused = hub.publish_id("order.refused", json!({})).await;
    hub.wait_status(&refused, "dead").await;
    let attempts = hub.attempts(&refused).await;
    assert_eq!(attempts.len(), 2, "retried like any failed attempt");
    let error = attempts[1]["error"].as_str().expect("error");
    assert!(
        error.contains("refused the event: the fixture refuses this event"),
        "{error}"
    );
    assert!(receiver.requests_to("/refused").is_empty());
    assert!(
        hub.metric("ih_transform_calls_total{transform=\"require-field\",outcome=\"dropped\"}")
            .await
            >= 1.0
    );
}

async fn hostile_transforms_are_contained(backend: Backend) {
    let vars = fast(&[
        ("IH_DELIVERY_MAX_ATTEMPTS", "1"),
        ("IH_CONNECTOR_TIMEOUT_SECONDS", "1"),
        ("IH_CONNECTOR_MEMORY_MB", "32"),
    ]);
    let Some(hub) = TestHub::start_with(backend, &vars).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    install(&hub, "fixture_transform", "fixture-transform").await;
    let cases = [
        ("loop", "timed out"),
        ("memory", "memory limit"),
        ("trap", "the fixture transform panicked"),
        ("huge", "the limit is 1048576"),
        ("forge", "set the header webhook-signature"),
    ];
    let mut events = Vec::new();
    for (mode, _) in cases {
        subscribe(
            &hub,
            &receiver.url(&format!("/{mode}")),
            json!([format!("hostile.{mode}")]),
            json!({"name": "fixture-transform", "settings": {"mode": mode}}),
        )
        .await;
        events.push(hub.publish_id(&format!("hostile.{mode}"), json!({})).await);
    }
    for ((mode, expected), id) in cases.iter().zip(&events) {
        hub.wait_status(id, "dead").await;
        let attempts = hub.attempts(id).await;
        let error = attempts[0]["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{mode}: {error}");
    }
    assert!(
        receiver.requests().is_empty(),
        "nothing hostile reached the receiver"
    );
    // The hub still transforms after all that.
    subscribe(
        &hub,
        &receiver.url("/echo"),
        json!(["calm"]),
        json!({"name": "fixture-transform"}),
    )
    .await;
    let calm = hub.publish_id("calm", json!({"a": 1})).await;
    hub.wait_delivered(&calm).await;
    let got = receiver.wait_for("/echo", 1, WAIT).await;
    assert_eq!(got[0].json(), json!({"transformed": true, "a": 1}));
    assert_eq!(got[0].header("x-fixture-mode"), "echo");
    assert_eq!(
        got[0].header("content-type"),
        "application/vnd.fixture+json"
    );
}

async fn the_dry_run_answers_without_delivering(backend: Backend) {
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    install(&hub, "cloudevents_transform", "cloudevents").await;
    install(&hub, "fixture_transform", "fixture-transform").await;
    let event = json!({"event_type": "order.paid", "payload": {"total": 12}});
    let tested = hub
        .post_json(
            "/api/v1/transforms/cloudevents/test",
            &json!({"event": event, "settings": {"source": "/dry"}}),
            200,
        )
        .await;
    assert_eq!(tested["outcome"], "deliver", "{tested}");
    let body: Value = serde_json::from_str(tested["body"].as_str().expect("body")).expect("json");
    assert_eq!(body["source"], "/dry");
    assert_eq!(body["data"], json!({"total": 12}));
    assert_eq!(
        tested["body_sha256"],
        hex::encode(Sha256::digest(tested["body"].as_str().expect("body")))
    );
    assert_eq!(
        tested["content_type"],
        "application/cloudevents+json; charset=utf-8"
    );

    // In a subscription's context: its settings.
    let sub = subscribe(
        &hub,
        &receiver.url("/never"),
        json!(["order.paid"]),
        json!({"name": "cloudevents", "settings": {"source": "/from-sub"}}),
    )
    .await;
    let tested = hub
        .post_json(
            "/api/v1/transforms/cloudevents/test",
            &json!({"event": event, "subscription_id": sub["id"]}),
            200,
        )
        .await;
    let body: Value = serde_json::from_str(tested["body"].as_str().expect("body")).expect("json");
    assert_eq!(body["source"], "/from-sub");

    let failed = hub
        .post_json(
            "/api/v1/transforms/fixture-transform/test",
            &json!({"event": event, "settings": {"mode": "error"}}),
            200,
        )
        .await;
    assert_eq!(failed["outcome"], "failed");
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the fixture refuses this event")),
        "{failed}"
    );
    let dropped = hub
        .post_json(
            "/api/v1/transforms/fixture-transform/test",
            &json!({"event": event, "settings": {"mode": "drop"}}),
            200,
        )
        .await;
    assert_eq!(dropped["outcome"], "drop");
    assert_eq!(dropped["reason"], "dropped by the fixture");

    let missing = hub
        .post_json(
            "/api/v1/transforms/nope/test",
            &json!({"event": event}),
            404,
        )
        .await;
    assert!(
        missing["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nope")),
        "{missing}"
    );
    hub.post_json(
        "/api/v1/transforms/cloudevents/test",
        &json!({"event": {"event_type": "Bad Type", "payload": {}}}),
        422,
    )
    .await;
    // Bad transform fields are refused when a subscription names them.
    hub.post_json(
        "/api/v1/subscriptions",
        &json!({"url": receiver.url("/x"), "events": ["*"], "transform": {"name": "Bad Name"}}),
        422,
    )
    .await;
    hub.post_json(
        "/api/v1/subscriptions",
        &json!({"url": receiver.url("/x"), "events": ["*"],
                "transform": {"name": "cloudevents", "settings": {"Bad Key": "x"}}}),
        422,
    )
    .await;

    // Nothing was published, nothing delivered.
    let events = hub.get_json("/api/v1/events", 200).await;
    assert_eq!(events["data"], json!([]), "{events}");
    assert!(receiver.requests().is_empty());
}

/// Instances are kept between deliveries (instantiating costs more than a small transform's
/// work), but only for the subscription they served, only while they behave, and never for dry
/// runs (`host/src/connectors/transform.rs`). Storage plays no part: SQLite only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_instances_are_reused_only_within_one_subscription() {
    // A slow answer must not be retried: a retry would call the instance once more.
    let settings = fast(&[("IH_DELIVERY_TIMEOUT_SECONDS", "10")]);
    let Some(hub) = TestHub::start_with(Backend::Sqlite, &settings).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    install(&hub, "fixture_transform", "fixture-transform").await;
    let mut subs = Vec::new();
    for (path, mode) in [
        ("/a", "count"),
        ("/b", "count"),
        ("/noisy", "noisy-count"),
        ("/trap", "trap-count"),
    ] {
        let event = format!("count{}", path.replace('/', "."));
        subscribe(
            &hub,
            &receiver.url(path),
            json!([event]),
            json!({"name": "fixture-transform", "settings": {"mode": mode}}),
        )
        .await;
        subs.push(event);
    }
    // One at a time, so that each delivery can find the instance the previous one left.
    let deliver = async |event: &str, payload: Value| {
        let id = hub.publish_id(event, payload).await;
        hub.wait_delivered(&id).await;
    };
    let calls = |path: &str| -> Vec<u64> {
        (receiver.requests_to(path).iter())
            .map(|r| r.json()["calls"].as_u64().expect("calls"))
            .collect()
    };
    for _ in 0..3 {
        deliver("count.a", json!({})).await;
    }
    assert_eq!(calls("/a"), [1, 2, 3], "one instance served subscription a");
    deliver("count.b", json!({})).await;
    assert_eq!(calls("/b"), [1], "subscription b never shares a's instance");
    deliver("count.a", json!({})).await;
    assert_eq!(
        calls("/a"),
        [1, 2, 3, 4],
        "a's instance was kept aside meanwhile"
    );

    for _ in 0..2 {
        deliver("count.noisy", json!({})).await;
    }
    assert_eq!(
        calls("/noisy"),
        [1, 1],
        "an instance that wrote to stderr is not kept"
    );

    deliver("count.trap", json!({})).await;
    let trapped = hub.publish_id("count.trap", json!({"trap": true})).await;
    let deadline = Instant::now() + WAIT;
    while hub.attempts(&trapped).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the trapping delivery was never attempted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attempts = hub.attempts(&trapped).await;
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("panicked"),
        "{attempts:?}"
    );
    deliver("count.trap", json!({})).await;
    assert_eq!(
        calls("/trap"),
        [1, 1],
        "a trapped instance is never called again"
    );

    let tested = hub
        .post_json(
            "/api/v1/transforms/fixture-transform/test",
            &json!({"event": {"event_type": "count.a", "payload": {}}, "settings": {"mode": "count"}}),
            200,
        )
        .await;
    assert_eq!(
        tested["body"], r#"{"calls":1}"#,
        "a dry run gets a fresh instance"
    );
    deliver("count.a", json!({})).await;
    assert_eq!(
        calls("/a"),
        [1, 2, 3, 4, 5],
        "nor does it take or leave one"
    );
}

/// The Python example (`transforms/redact-py`), built here with componentize-py
/// (`IH_TEST_COMPONENTIZE_PY`; `.ci/run` installs it), runs in the hub like the Rust ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_written_in_python_redacts_fields() {
    let Some(wasm) = build_python_transform() else {
        return;
    };
    let Some(hub) = TestHub::start_with(Backend::Sqlite, &fast(&[])).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    deploy(&hub.connectors_dir, "redact_py_transform.wasm", &wasm);
    // A whole Python interpreter to compile: slower to load than the Rust examples.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let list = hub.get_json("/api/v1/transforms", 200).await;
        let entry = list["data"].as_array().and_then(|l| l.first()).cloned();
        match entry {
            Some(t) if t["status"] == "active" => {
                assert_eq!(t["name"], "redact-py");
                break;
            }
            Some(t) if t["status"] == "failed" => panic!("the Python transform failed: {t}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the Python transform never loaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    subscribe(
        &hub,
        &receiver.url("/redacted"),
        json!(["customer.created"]),
        json!({"name": "redact-py", "settings": {"fields": "email, card.number"}}),
    )
    .await;
    let id = hub
        .publish_id(
            "customer.created",
            json!({"name": "Ada", "email": "ada@example.com", "card": {"number": "4242", "brand": "visa"}}),
        )
        .await;
    hub.wait_delivered(&id).await;
    let got = receiver.wait_for("/redacted", 1, WAIT).await;
    let body = got[0].json();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(
        body["payload"],
        json!({"name": "Ada", "card": {"brand": "visa"}})
    );
    assert!(verify_standard_signature(SECRET, &got[0]));
    assert!(verify_seed_signature(SECRET, &got[0]));
}

/// `transforms/redact-py` as a component, or `None` (with a line) when componentize-py is not
/// installed outside CI.
fn build_python_transform() -> Option<Vec<u8>> {
    let tool =
        std::env::var("IH_TEST_COMPONENTIZE_PY").unwrap_or_else(|_| "componentize-py".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_owned();
    let out = tempfile::tempdir().expect("temporary directory");
    let wasm = out.path().join("redact_py_transform.wasm");
    let built = std::process::Command::new(&tool)
        .arg("-d")
        .arg(root.join("wit/transform"))
        .args(["-w", "transform", "componentize", "-p"])
        .arg(root.join("transforms/redact-py"))
        .args(["app", "-o"])
        .arg(&wasm)
        .output();
    match built {
        Ok(o) if o.status.success() => Some(std::fs::read(&wasm).expect("the built component")),
        Ok(o) => panic!(
            "componentize-py failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            integrations_hub_testkit::skip_unless_ci(
                "Python transform test",
                &format!("{tool} (IH_TEST_COMPONENTIZE_PY)"),
                &format!("{e}; pip install componentize-py==0.25.1"),
            );
            None
        }
    }
}
