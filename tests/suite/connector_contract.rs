//! The connector contract 0.2 end to end (`wit/connector.wit`), with the fixture component in a
//! real hub on both backends: what a connector reports (upstream status, external id, skipped,
//! retry delay) lands on the attempt record; the invocation context; the per-instance kv store;
//! settings validated by the connector; log lines with fields.

use std::time::{Duration, Instant};

use integrations_hub_testkit::{
    Api, Backend, HubProcess, TestDb, TestHub, backend_tests, deploy, fixture_wasm,
};
use serde_json::{Value, json};

backend_tests!(
    what_a_connector_reports_is_recorded_on_its_attempts,
    instances_get_their_context_and_their_own_kv_store,
    connector_logs_carry_fields_and_the_delivery,
);

const WAIT: Duration = Duration::from_secs(20);

async fn fixture_hub(backend: Backend) -> Option<TestHub> {
    let hub = TestHub::start_with(
        backend,
        &[
            ("IH_DELIVERY_BACKOFF_BASE_SECONDS", "0.05"),
            ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
            ("IH_DELIVERY_MAX_ATTEMPTS", "2"),
        ],
    )
    .await?;
    deploy(
        &hub.connectors_dir,
        "fixture.wasm",
        &fixture_wasm("fixture", "1.0.0"),
    );
    wait_active(&hub.api, "fixture").await;
    Some(hub)
}

async fn wait_active(api: &Api, name: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let list = api.get_json("/api/v1/connectors", 200).await;
        let found = (list["data"].as_array().expect("data").iter())
            .find(|c| c["name"] == name && c["status"] == "active")
            .cloned();
        if let Some(found) = found {
            return found;
        }
        assert!(Instant::now() < deadline, "{name} never active: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes `event_type`, waits for its one delivery to reach `status`, answers its attempts.
async fn attempts_once(
    hub: &TestHub,
    event_type: &str,
    payload: Value,
    status: &str,
) -> Vec<Value> {
    let id = hub.publish_id(event_type, payload).await;
    hub.wait_status(&id, status).await;
    hub.attempts(&id).await
}

async fn what_a_connector_reports_is_recorded_on_its_attempts(backend: Backend) {
    let Some(hub) = fixture_hub(backend).await else {
        return;
    };
    let fixture = wait_active(&hub.api, "fixture").await;
    assert_eq!(fixture["contract"], "0.2.0", "{fixture}");

    // ok, with the upstream's status and id.
    let tries = attempts_once(
        &hub,
        "fixture.ok",
        json!({"status": 201, "external_id": "msg-42"}),
        "succeeded",
    )
    .await;
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0]["outcome"], "succeeded");
    assert_eq!(tries[0]["response_status"], 201);
    assert_eq!(
        tries[0]["report"],
        json!({"kind": "ok", "external_id": "msg-42", "retry_after_ms": null})
    );

    // skipped: the delivery ends after one attempt, recorded as skipped with the reason.
    let tries = attempts_once(
        &hub,
        "fixture.skip",
        json!({"reason": "not for this channel"}),
        "succeeded",
    )
    .await;
    assert_eq!(tries.len(), 1, "{tries:?}");
    assert_eq!(tries[0]["report"]["kind"], "skipped");
    assert_eq!(tries[0]["response_body"], "not for this channel");
    assert_eq!(tries[0]["error"], Value::Null);

    // retry, with the delay asked for and the upstream's 429, on each attempt; then dead.
    let tries = attempts_once(&hub, "fixture.retry", json!({"after_ms": 300}), "dead").await;
    assert_eq!(tries.len(), 2, "{tries:?}");
    for attempt in &tries {
        assert_eq!(attempt["response_status"], 429);
        assert_eq!(
            attempt["report"],
            json!({"kind": "retry", "external_id": null, "retry_after_ms": 300})
        );
    }

    // permanent: dead after one attempt.
    let tries = attempts_once(&hub, "fixture.forbidden", json!({}), "dead").await;
    assert_eq!(tries.len(), 1, "{tries:?}");
    assert_eq!(tries[0]["report"]["kind"], "permanent");

    // A sandbox failure is not a report.
    let tries = attempts_once(&hub, "fixture.trap", json!({}), "dead").await;
    assert_eq!(tries[0]["report"], Value::Null, "{}", tries[0]);
    assert!(
        hub.metric("ih_connector_invocations_total{connector=\"fixture\",outcome=\"skipped\"}")
            .await
            >= 1.0
    );
}

/// Splits the fixture's `.context` report: attempt, max attempts, delivery, instance,
/// subscription, remaining ms.
fn context_of(attempt: &Value) -> Vec<String> {
    let text = attempt["report"]["external_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a context report: {attempt}"));
    text.split('/').map(str::to_owned).collect()
}

async fn instances_get_their_context_and_their_own_kv_store(backend: Backend) {
    let Some(hub) = fixture_hub(backend).await else {
        return;
    };
    // The default instance: no instance or subscription; attempt 1 of 2; time left.
    let tries = attempts_once(&hub, "fixture.context", json!({}), "succeeded").await;
    let context = context_of(&tries[0]);
    assert_eq!(context[..2], ["1", "2"], "{context:?}");
    assert_eq!(context[2], tries[0]["delivery_id"].as_str().expect("id"));
    assert_eq!(context[3..5], ["-", "-"]);
    let remaining: u64 = context[5].parse().expect("remaining ms");
    assert!(remaining > 0 && remaining <= 10_000, "{remaining}");

    // The connector validates an instance's settings itself.
    let instances = "/api/v1/connectors/fixture/instances";
    let refused = json!({"name": "a", "settings": {"label": "invalid"}});
    let problem = hub.post_json(instances, &refused, 422).await;
    assert_eq!(problem["errors"][0]["field"], "settings.label", "{problem}");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("may not be \"invalid\""),
        "{problem}"
    );
    let instance = hub
        .post_json(
            instances,
            &json!({"name": "a", "settings": {"label": "A"}}),
            201,
        )
        .await;
    let body = json!({
        "events": ["fixture.context", "fixture.count"],
        "connector": {"name": "fixture", "instance": "a"},
    });
    let sub = hub.post_json("/api/v1/subscriptions", &body, 201).await;

    // Published to both the default instance (by the manifest) and instance a.
    let id = hub.publish_id("fixture.context", json!({})).await;
    hub.wait_status(&id, "succeeded").await;
    let tries = hub.attempts(&id).await;
    let of_a = (tries.iter())
        .find(|t| t["destination"]["kind"] == "instance")
        .expect("instance a's attempt");
    let context = context_of(of_a);
    assert_eq!(context[3], instance["id"].as_str().expect("instance id"));
    assert_eq!(context[4], sub["id"].as_str().expect("subscription id"));

    // kv: each instance counts its own calls, and the count survives between calls.
    let mut counts = Vec::new();
    for _ in 0..3 {
        let id = hub.publish_id("fixture.count", json!({})).await;
        hub.wait_status(&id, "succeeded").await;
        let tries = hub.attempts(&id).await;
        let mut pair: Vec<(String, String)> = (tries.iter())
            .map(|t| {
                (
                    t["destination"]["kind"].as_str().expect("kind").to_owned(),
                    t["report"]["external_id"]
                        .as_str()
                        .expect("count")
                        .to_owned(),
                )
            })
            .collect();
        pair.sort();
        counts.push(pair);
    }
    let expected: Vec<Vec<(String, String)>> = (1..=3)
        .map(|n| {
            vec![
                ("connector".to_owned(), n.to_string()),
                ("instance".to_owned(), n.to_string()),
            ]
        })
        .collect();
    assert_eq!(counts, expected);
}

async fn connector_logs_carry_fields_and_the_delivery(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let hub = HubProcess::start(&db, &[]).await;
    deploy(
        hub.connectors_dir(),
        "fixture.wasm",
        &fixture_wasm("fixture", "1.0.0"),
    );
    wait_active(&hub.api, "fixture").await;
    let id = hub.api.publish_id("fixture.ok", json!({})).await;
    hub.api.wait_status(&id, "succeeded").await;
    let deadline = Instant::now() + WAIT;
    let line: Value = loop {
        let found = hub
            .log()
            .into_iter()
            .find(|l| l.contains(&format!("ok {id}")));
        if let Some(line) = found {
            break serde_json::from_str(&line).expect("a JSON log line");
        }
        assert!(
            Instant::now() < deadline,
            "the connector's line was never logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = line.to_string();
    assert!(
        text.contains(&format!("event_id=\\\"{id}\\\"")) && text.contains("attempt=\\\"1\\\""),
        "fields are logged: {text}"
    );
    assert!(
        !text.contains("Bad Key"),
        "a bad field key is dropped: {text}"
    );
    assert!(text.contains("\"connector\":\"fixture\""), "{text}");
    assert!(text.contains("delivery"), "{text}");
}
