//! Connector instances end to end: one component (the built-in Slack connector), several
//! configured destinations created through the API, each delivering with its own settings to a
//! fake Slack, changed without a restart; subscriptions to them behave as subscriptions.

use std::time::Duration;

use integrations_hub_testkit::receiver::{Receiver, Reply};
use integrations_hub_testkit::{Backend, TestHub, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    slack_instances_deliver_with_their_own_settings,
    an_instance_works_while_the_default_one_is_inactive,
    bad_instances_and_subscriptions_get_clear_errors,
);

const WAIT: Duration = Duration::from_secs(20);
const DEFAULT_TOKEN: &str = "xoxb-default-token-0123456789";
const ALERTS_TOKEN: &str = "xoxb-alerts-token-9876543210";

/// A hub whose Slack connector may reach `fake`; with `token`, its default instance is active.
async fn hub(backend: Backend, fake: &Receiver, token: Option<&str>) -> Option<TestHub> {
    let host = fake.base.trim_start_matches("http://").to_owned();
    let mut vars = vec![
        ("IH_ALLOW_PRIVATE_DESTINATIONS", "true"),
        ("IH_DELIVERY_BACKOFF_BASE_SECONDS", "0.05"),
        ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
        ("IH_SLACK_ALLOWED_HOSTS", host.as_str()),
    ];
    let base = fake.url("/api");
    if let Some(token) = token {
        vars.push(("IH_SLACK_BOT_TOKEN", token));
        vars.push(("IH_SLACK_API_BASE_URL", base.as_str()));
    }
    TestHub::start_with(backend, &vars).await
}

/// Creates Slack instance `name` posting to `fake` as `token` in `channel`.
async fn alerts_instance(hub: &TestHub, fake: &Receiver, token: &str, channel: &str) -> Value {
    let body = json!({
        "name": "alerts",
        "settings": {
            "bot_token": token,
            "default_channel": channel,
            "api_base_url": fake.url("/api"),
        },
    });
    hub.post_json("/api/v1/connectors/slack/instances", &body, 201)
        .await
}

async fn subscribe_to_alerts(hub: &TestHub, events: Value) -> Value {
    let body = json!({"events": events, "connector": {"name": "slack", "instance": "alerts"}});
    hub.post_json("/api/v1/subscriptions", &body, 201).await
}

async fn slack_instances_deliver_with_their_own_settings(backend: Backend) {
    let fake = Receiver::start(Reply::Json(200, json!({"ok": true, "ts": "1.2"}))).await;
    let Some(hub) = hub(backend, &fake, Some(DEFAULT_TOKEN)).await else {
        return;
    };
    let created = alerts_instance(&hub, &fake, ALERTS_TOKEN, "#alerts").await;
    assert_eq!(created["connector"], "slack");
    assert_eq!(created["name"], "alerts");
    assert_eq!(created["settings"]["default_channel"], "#alerts");
    assert_eq!(
        created["settings"]["bot_token"],
        Value::Null,
        "a secret setting is never returned: {created}"
    );
    let listed = hub
        .get_json("/api/v1/connectors/slack/instances", 200)
        .await;
    assert_eq!(listed["data"][0]["id"], created["id"]);
    assert!(!listed.to_string().contains(ALERTS_TOKEN));

    let sub = subscribe_to_alerts(&hub, json!(["order.created"])).await;
    assert_eq!(sub["url"], Value::Null);
    assert_eq!(sub["instance"]["connector"], "slack");
    assert_eq!(sub["instance"]["name"], "alerts");

    // The instance's event types are the subscription's; the default instance (bound to
    // request_submitted by its manifest) gets nothing of them.
    let first = hub
        .publish("order.created", json!({"title": "Order 1 created"}))
        .await;
    assert_eq!(first["deliveries"], 1, "{first}");
    let id = first["id"].as_str().expect("id");
    let event = hub.wait_status(id, "succeeded").await;
    let destination = &event["deliveries"][0]["destination"];
    assert_eq!(destination["kind"], "instance", "{event}");
    assert_eq!(destination["instance"], "alerts");
    assert_eq!(destination["subscription_id"], sub["id"]);
    let posted = fake.wait_for("/api/chat.postMessage", 1, WAIT).await;
    assert_eq!(
        posted[0].header("authorization"),
        format!("Bearer {ALERTS_TOKEN}")
    );
    assert_eq!(posted[0].json()["channel"], "#alerts");

    // New settings apply to the next delivery, without a restart.
    let patch = json!({"settings": {"default_channel": "#ops"}});
    let changed = hub
        .patch_json("/api/v1/connectors/slack/instances/alerts", &patch, 200)
        .await;
    assert_eq!(changed["settings"]["default_channel"], "#ops");
    let second = hub
        .publish_id("order.created", json!({"title": "Order 2 created"}))
        .await;
    hub.wait_status(&second, "succeeded").await;
    let posted = fake.wait_for("/api/chat.postMessage", 2, WAIT).await;
    assert_eq!(posted[1].json()["channel"], "#ops");
    assert_eq!(
        posted[1].header("authorization"),
        format!("Bearer {ALERTS_TOKEN}"),
        "an absent key stays as it was"
    );

    // The default instance still works from the environment, beside the instance.
    let default = hub
        .publish_id("request_submitted", json!({"title": "Access"}))
        .await;
    hub.wait_status(&default, "succeeded").await;
    let posted = fake.wait_for("/api/chat.postMessage", 3, WAIT).await;
    assert_eq!(
        posted[2].header("authorization"),
        format!("Bearer {DEFAULT_TOKEN}")
    );

    // An instance in use is not deleted; once its subscription is gone, it is.
    let path = "/api/v1/connectors/slack/instances/alerts";
    let refused = hub.expect(hub.delete(path), 409).await;
    assert!(
        refused["detail"]
            .as_str()
            .expect("detail")
            .contains(sub["id"].as_str().expect("id")),
        "{refused}"
    );
    let sub_path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    hub.delete_path(&sub_path, 204).await;
    hub.delete_path(path, 204).await;
    hub.expect(hub.get(path), 404).await;
    // Its past deliveries still name it.
    let event = hub.event(id).await;
    assert_eq!(event["deliveries"][0]["destination"]["instance"], "alerts");
    // The name is free again.
    alerts_instance(&hub, &fake, ALERTS_TOKEN, "#alerts").await;
}

/// Without `IH_SLACK_BOT_TOKEN` the default instance is inactive; an instance with a token of
/// its own delivers all the same, and its failures feed its subscription's circuit.
async fn an_instance_works_while_the_default_one_is_inactive(backend: Backend) {
    let fake = Receiver::start(Reply::Json(200, json!({"ok": true, "ts": "1.2"}))).await;
    let Some(hub) = hub(backend, &fake, None).await else {
        return;
    };
    let listing = hub.get_json("/api/v1/connectors", 200).await;
    let slack = listing["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|c| c["name"] == "slack")
        .expect("slack listed")
        .clone();
    assert_eq!(slack["status"], "inactive", "{slack}");

    alerts_instance(&hub, &fake, ALERTS_TOKEN, "#alerts").await;
    let sub = subscribe_to_alerts(&hub, json!(["*"])).await;
    let id = hub.publish_id("anything.happened", json!({})).await;
    hub.wait_status(&id, "succeeded").await;
    let posted = fake.wait_for("/api/chat.postMessage", 1, WAIT).await;
    assert_eq!(
        posted[0].header("authorization"),
        format!("Bearer {ALERTS_TOKEN}")
    );

    // Slack answers invalid_auth: permanent, dead after one attempt, recorded on the
    // subscription like any webhook failure.
    fake.script([Reply::Json(
        200,
        json!({"ok": false, "error": "invalid_auth"}),
    )]);
    let id = hub.publish_id("anything.happened", json!({})).await;
    hub.wait_status(&id, "dead").await;
    let attempts = hub.attempts(&id).await;
    assert_eq!(attempts.len(), 1);
    assert!(
        attempts[0]["error"]
            .as_str()
            .expect("error")
            .contains("invalid_auth"),
        "{attempts:?}"
    );
    let sub_path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    let sub = hub.get_json(&sub_path, 200).await;
    assert_eq!(sub["circuit"]["consecutive_failures"], 1, "{sub}");
    // The connector's statistics count its instances' attempts.
    let stats = hub
        .get_json("/api/v1/connectors/slack/stats?window=1h", 200)
        .await;
    assert_eq!(
        (stats["attempts"].as_u64(), stats["succeeded"].as_u64()),
        (Some(2), Some(1)),
        "{stats}"
    );
    let sub_stats = hub.get_json(&format!("{sub_path}/stats"), 200).await;
    assert_eq!(sub_stats["failed"], 1, "{sub_stats}");
}

async fn bad_instances_and_subscriptions_get_clear_errors(backend: Backend) {
    let fake = Receiver::start(Reply::Json(200, json!({"ok": true}))).await;
    let Some(hub) = hub(backend, &fake, Some(DEFAULT_TOKEN)).await else {
        return;
    };
    let instances = "/api/v1/connectors/slack/instances";
    let field = |problem: &Value, i: usize| problem["errors"][i]["field"].clone();

    let unknown = json!({"name": "x", "settings": {"bot_token": "t", "colour": "red"}});
    let problem = hub.post_json(instances, &unknown, 422).await;
    assert_eq!(field(&problem, 0), "settings.colour", "{problem}");
    let missing = json!({"name": "x", "settings": {"default_channel": "#a"}});
    let problem = hub.post_json(instances, &missing, 422).await;
    assert_eq!(field(&problem, 0), "settings.bot_token", "{problem}");
    let bad_name = json!({"name": "Not A Name", "settings": {"bot_token": "t"}});
    let problem = hub.post_json(instances, &bad_name, 422).await;
    assert_eq!(field(&problem, 0), "name", "{problem}");
    let nowhere = json!({"name": "x", "settings": {}});
    let problem = hub
        .post_json("/api/v1/connectors/nosuch/instances", &nowhere, 422)
        .await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("not loaded"),
        "{problem}"
    );

    // The connector checks the values itself (its WIT 0.2 `validate`).
    let not_a_token = json!({"name": "x", "settings": {"bot_token": "t"}});
    let problem = hub.post_json(instances, &not_a_token, 422).await;
    assert_eq!(field(&problem, 0), "settings.bot_token", "{problem}");
    let message = problem["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("slack refused these settings") && message.contains("xoxb-"),
        "{problem}"
    );
    let bad_channel = json!({"name": "x", "settings": {"bot_token": ALERTS_TOKEN, "default_channel": "two words"}});
    let problem = hub.post_json(instances, &bad_channel, 422).await;
    assert_eq!(field(&problem, 0), "settings.default_channel", "{problem}");

    alerts_instance(&hub, &fake, ALERTS_TOKEN, "#alerts").await;
    let again = json!({"name": "alerts", "settings": {"bot_token": ALERTS_TOKEN}});
    hub.post_json(instances, &again, 409).await;
    let not_a_token = json!({"settings": {"bot_token": "t"}});
    let problem = hub
        .patch_json(&format!("{instances}/alerts"), &not_a_token, 422)
        .await;
    assert_eq!(field(&problem, 0), "settings.bot_token", "{problem}");
    let removes_required = json!({"settings": {"bot_token": null}});
    let problem = hub
        .patch_json(&format!("{instances}/alerts"), &removes_required, 422)
        .await;
    assert_eq!(field(&problem, 0), "settings.bot_token", "{problem}");
    hub.expect(hub.get(&format!("{instances}/nosuch")), 404)
        .await;

    let subscriptions = "/api/v1/subscriptions";
    let no_instance =
        json!({"events": ["a"], "connector": {"name": "slack", "instance": "nosuch"}});
    let problem = hub.post_json(subscriptions, &no_instance, 422).await;
    assert_eq!(field(&problem, 0), "connector.instance", "{problem}");
    let both = json!({
        "events": ["a"],
        "url": "https://example.com/hook",
        "secret": "whsec-0123456789abcdef",
        "connector": {"name": "slack", "instance": "alerts"},
    });
    let problem = hub.post_json(subscriptions, &both, 422).await;
    assert_eq!(field(&problem, 0), "connector", "{problem}");
    let neither = json!({"events": ["a"]});
    let problem = hub.post_json(subscriptions, &neither, 422).await;
    assert_eq!(field(&problem, 0), "url", "{problem}");
    // A webhook without a secret gets a generated one (tests/suite/security.rs); a connector
    // subscription takes none.
    let signed_connector = json!({"events": ["a"], "secret": "whsec-0123456789abcdef",
        "connector": {"name": "slack", "instance": "alerts"}});
    let problem = hub.post_json(subscriptions, &signed_connector, 422).await;
    assert_eq!(field(&problem, 0), "secret", "{problem}");

    // A connector subscription has no URL or secret to change.
    let sub = subscribe_to_alerts(&hub, json!(["a"])).await;
    let path = format!("{subscriptions}/{}", sub["id"].as_str().expect("id"));
    let problem = hub
        .patch_json(&path, &json!({"url": "https://example.com/x"}), 422)
        .await;
    assert_eq!(field(&problem, 0), "url", "{problem}");
    let renamed = hub
        .patch_json(&path, &json!({"events": ["a", "b"]}), 200)
        .await;
    assert_eq!(renamed["events"], json!(["a", "b"]));
    assert_eq!(renamed["instance"]["name"], "alerts");
}
