//! The connector catalog (Discord, Microsoft Teams, PagerDuty), each built with the author kit:
//! its real `.wasm` in a real hub, configured as an instance through the API and subscribed to,
//! delivering to a local fake of the service, on both backends.

use std::time::Duration;

use integrations_hub_testkit::receiver::{Receiver, Reply};
use integrations_hub_testkit::{Backend, TestHub, backend_tests, built_wasm, deploy};
use serde_json::{Value, json};

backend_tests!(
    discord_posts_embeds_through_its_webhook,
    teams_posts_adaptive_cards_through_its_webhook,
    pagerduty_triggers_and_resolves_by_dedup_key,
);

const WAIT: Duration = Duration::from_secs(20);

/// A hub with connector `name` deployed and allowed to reach `fake`; then instance `main` with
/// `settings`, and a subscription of it to `events`.
async fn hub_with(
    backend: Backend,
    name: &str,
    fake: &Receiver,
    settings: Value,
    events: Value,
) -> Option<TestHub> {
    let grant = fake.base.trim_start_matches("http://").to_owned();
    let variable = format!("IH_{}_ALLOWED_HOSTS", name.to_ascii_uppercase());
    let hub = TestHub::start_with(
        backend,
        &[
            ("IH_ALLOW_PRIVATE_DESTINATIONS", "true"),
            ("IH_DELIVERY_BACKOFF_BASE_SECONDS", "0.05"),
            ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
            (&variable, &grant),
        ],
    )
    .await?;
    deploy(
        &hub.connectors_dir,
        &format!("{name}.wasm"),
        &built_wasm(&format!("{name}_connector")),
    );
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let list = hub.get_json("/api/v1/connectors", 200).await;
        let listed = list["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|c| c["name"] == name && c["status"] != "failed" && c["contract"] == "0.2.0");
        if listed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never loaded: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let instances = format!("/api/v1/connectors/{name}/instances");
    hub.post_json(
        &instances,
        &json!({"name": "main", "settings": settings}),
        201,
    )
    .await;
    let subscription = json!({"events": events, "connector": {"name": name, "instance": "main"}});
    hub.post_json("/api/v1/subscriptions", &subscription, 201)
        .await;
    Some(hub)
}

/// The one attempt of `event`'s instance delivery, once it succeeded.
async fn delivered(hub: &TestHub, event: &str) -> Value {
    hub.wait_status(event, "succeeded").await;
    let tries = hub.attempts(event).await;
    assert_eq!(tries.len(), 1, "{tries:?}");
    tries[0].clone()
}

async fn discord_posts_embeds_through_its_webhook(backend: Backend) {
    let fake = Receiver::start(Reply::Json(200, json!({"id": "1180000000000000001"}))).await;
    let settings = json!({"webhook_url": fake.url("/api/webhooks/42/tok"), "username": "Orders"});
    let Some(hub) = hub_with(backend, "discord", &fake, settings, json!(["order.paid"])).await
    else {
        return;
    };
    // The connector checks its settings itself.
    let refused = json!({"name": "bad", "settings": {"webhook_url": "https://example.com/x"}});
    let problem = hub
        .post_json("/api/v1/connectors/discord/instances", &refused, 422)
        .await;
    assert_eq!(
        problem["errors"][0]["field"], "settings.webhook_url",
        "{problem}"
    );

    let payload =
        json!({"title": "Order 1042 paid", "description": "129.50 EUR", "customer": "ada"});
    let id = hub.publish_id("order.paid", payload).await;
    let attempt = delivered(&hub, &id).await;
    assert_eq!(attempt["report"]["external_id"], "1180000000000000001");
    let posted = fake.wait_for("/api/webhooks/42/tok", 1, WAIT).await;
    let body = posted[0].json();
    assert_eq!(body["username"], "Orders");
    assert_eq!(body["embeds"][0]["title"], "Order 1042 paid");
    assert_eq!(body["embeds"][0]["description"], "129.50 EUR");
    assert_eq!(body["embeds"][0]["fields"][0]["value"], "ada");
    assert_eq!(body["allowed_mentions"], json!({"parse": []}));
}

async fn teams_posts_adaptive_cards_through_its_webhook(backend: Backend) {
    let fake = Receiver::start(Reply::Status(202)).await;
    let settings = json!({"webhook_url": fake.url("/workflows/abc/triggers/manual/paths/invoke")});
    let Some(hub) = hub_with(
        backend,
        "teams",
        &fake,
        settings,
        json!(["deploy.finished"]),
    )
    .await
    else {
        return;
    };
    let payload = json!({"title": "Deploy 311 finished", "message": "All green", "env": "prod"});
    let id = hub.publish_id("deploy.finished", payload).await;
    let attempt = delivered(&hub, &id).await;
    assert_eq!(attempt["response_status"], 202);
    let posted = fake
        .wait_for("/workflows/abc/triggers/manual/paths/invoke", 1, WAIT)
        .await;
    let body = posted[0].json();
    assert_eq!(body["type"], "message");
    let card = &body["attachments"][0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["body"][0]["text"], "Deploy 311 finished");
    assert_eq!(
        card["body"][2]["facts"][0],
        json!({"title": "env", "value": "prod"})
    );
}

async fn pagerduty_triggers_and_resolves_by_dedup_key(backend: Backend) {
    let fake = Receiver::start(Reply::Json(
        202,
        json!({"status": "success", "message": "Event processed", "dedup_key": "api-health"}),
    ))
    .await;
    let key = "R0123456789abcdefghijklmnopqrstu";
    let settings = json!({"routing_key": key, "api_url": fake.url(""), "source": "checks"});
    let events = json!(["check.failed", "check.recovered"]);
    let Some(hub) = hub_with(backend, "pagerduty", &fake, settings, events).await else {
        return;
    };
    let failed = hub
        .publish_id(
            "check.failed",
            json!({"summary": "API down", "dedup_key": "api-health"}),
        )
        .await;
    let attempt = delivered(&hub, &failed).await;
    assert_eq!(attempt["report"]["external_id"], "api-health");
    let recovered = hub
        .publish_id("check.recovered", json!({"dedup_key": "api-health"}))
        .await;
    delivered(&hub, &recovered).await;
    let sent = fake.wait_for("/v2/enqueue", 2, WAIT).await;
    let (trigger, resolve) = (sent[0].json(), sent[1].json());
    assert_eq!(trigger["routing_key"], key);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["payload"]["summary"], "API down");
    assert_eq!(trigger["payload"]["source"], "checks");
    assert_eq!(
        resolve,
        json!({"routing_key": key, "event_action": "resolve", "dedup_key": "api-health"})
    );

    // A resolve without a dedup key is permanent: dead after one attempt, nothing sent.
    let orphan = hub.publish_id("check.recovered", json!({})).await;
    hub.wait_status(&orphan, "dead").await;
    let tries = hub.attempts(&orphan).await;
    assert_eq!(tries.len(), 1);
    assert!(
        tries[0]["error"]
            .as_str()
            .expect("error")
            .contains("dedup_key"),
        "{}",
        tries[0]
    );
    assert_eq!(fake.requests_to("/v2/enqueue").len(), 2);
}
