//! The visibility API over HTTP, on both backends: searching events, a subscription's
//! deliveries, dead letters by filter and bulk replay by the same filter; bad filters get a 400
//! naming the parameter.

use integrations_hub_testkit::fixtures::SECRET;
use integrations_hub_testkit::fixtures::fast;
use integrations_hub_testkit::receiver::{
    Receiver, Reply, verify_seed_signature, verify_standard_signature,
};
use integrations_hub_testkit::{Backend, TestHub, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    events_are_searched_by_type_subscription_and_delivery_state,
    dead_letters_are_listed_and_replayed_by_filter,
    bad_filters_are_400s_naming_the_parameter,
    a_test_event_is_signed_sent_and_reported_not_stored,
    stats_show_attempts_latency_circuit_and_backlog,
    the_live_feed_shows_new_events_and_attempts_and_ends_at_shutdown,
);

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn events_are_searched_by_type_subscription_and_delivery_state(backend: Backend) {
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let ok = Receiver::start(Reply::Status(200)).await;
    let orders = hub
        .subscribe(&ok.url("/orders"), json!(["order.created", "order.paid"]))
        .await;
    let orders_id = orders["id"].as_str().expect("id");
    let created = hub.publish_id("order.created", json!({"n": 1})).await;
    let paid = hub.publish_id("order.paid", json!({"n": 2})).await;
    let other = hub.publish_id("user.created", json!({"n": 3})).await;
    hub.wait_delivered(&created).await;
    hub.wait_delivered(&paid).await;

    let all = hub.get_json("/api/v1/events", 200).await;
    assert_eq!(
        ids(&all),
        [other.as_str(), paid.as_str(), created.as_str()],
        "newest first"
    );
    assert_eq!(all["data"][1]["deliveries"]["succeeded"], 1, "{all}");
    assert_eq!(all["data"][0]["deliveries"]["succeeded"], 0);
    assert!(
        all["data"][0].get("payload").is_none(),
        "lists carry no payload"
    );

    let prefix = hub.get_json("/api/v1/events?event_type=order.", 200).await;
    assert_eq!(ids(&prefix), [paid.as_str(), created.as_str()]);
    let star = hub.get_json("/api/v1/events?event_type=order.*", 200).await;
    assert_eq!(ids(&star), [paid.as_str(), created.as_str()]);
    let exact = hub
        .get_json("/api/v1/events?event_type=order.paid", 200)
        .await;
    assert_eq!(ids(&exact), [paid.as_str()]);
    let of_sub = hub
        .get_json(&format!("/api/v1/events?subscription_id={orders_id}"), 200)
        .await;
    assert_eq!(ids(&of_sub), [paid.as_str(), created.as_str()]);
    let succeeded = hub
        .get_json("/api/v1/events?delivery_status=succeeded", 200)
        .await;
    assert_eq!(ids(&succeeded), [paid.as_str(), created.as_str()]);
    let waiting = hub
        .get_json("/api/v1/events?delivery_status=pending,dead", 200)
        .await;
    assert!(ids(&waiting).is_empty(), "{waiting}");

    let first = hub.get_json("/api/v1/events?limit=2", 200).await;
    assert_eq!(ids(&first), [other.as_str(), paid.as_str()]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a full page has a cursor");
    let rest = hub
        .get_json(&format!("/api/v1/events?limit=2&cursor={cursor}"), 200)
        .await;
    assert_eq!(ids(&rest), [created.as_str()]);
    assert_eq!(rest["next_cursor"], Value::Null);

    let deliveries = hub
        .get_json(
            &format!("/api/v1/subscriptions/{orders_id}/deliveries"),
            200,
        )
        .await;
    let lines = deliveries["data"].as_array().expect("data");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event_id"], paid.as_str());
    assert_eq!(lines[0]["event_type"], "order.paid");
    assert_eq!(lines[0]["status"], "succeeded");
    assert_eq!(lines[0]["attempts"], 1);
    assert_eq!(lines[0]["last_response_status"], 200);
    let none = hub
        .get_json(
            &format!("/api/v1/subscriptions/{orders_id}/deliveries?status=dead"),
            200,
        )
        .await;
    assert!(ids(&none).is_empty());
    hub.expect(
        hub.get("/api/v1/subscriptions/0190a0a0-0000-7000-8000-000000000000/deliveries"),
        404,
    )
    .await;
}

async fn dead_letters_are_listed_and_replayed_by_filter(backend: Backend) {
    let vars = fast(&[("IH_DELIVERY_MAX_ATTEMPTS", "1")]);
    let Some(hub) = TestHub::start_with(backend, &vars).await else {
        return;
    };
    let failing = Receiver::start(Reply::Status(500)).await;
    let sub = hub
        .subscribe(
            &failing.url("/down"),
            json!(["order.created", "user.created"]),
        )
        .await;
    let order = hub.publish_id("order.created", json!({})).await;
    let user = hub.publish_id("user.created", json!({})).await;
    hub.wait_status(&order, "dead").await;
    hub.wait_status(&user, "dead").await;

    let all = hub.get_json("/api/v1/admin/dead-letters", 200).await;
    assert_eq!(all["data"].as_array().expect("data").len(), 2);
    // The hub's own figures count them, with its attempts and open circuits.
    let hub_stats = hub.get_json("/api/v1/stats?window=1h", 200).await;
    assert_eq!(hub_stats["dead_letters"], 2, "{hub_stats}");
    assert_eq!(hub_stats["attempts"], 2);
    assert_eq!(hub_stats["failed"], 2);
    assert_eq!(hub_stats["last_failure"]["error"], "HTTP 500");
    assert!(hub_stats["open_circuits"].as_u64().is_some());
    assert!(hub_stats.get("circuit").is_none());
    let orders = hub
        .get_json("/api/v1/admin/dead-letters?event_type=order.", 200)
        .await;
    let data = orders["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{orders}");
    assert_eq!(data[0]["event_id"], order.as_str());
    assert_eq!(data[0]["event_type"], "order.created");
    let sub_id = sub["id"].as_str().expect("id");
    let of_sub = hub
        .get_json(
            &format!("/api/v1/admin/dead-letters?subscription_id={sub_id}&event_type=user.created"),
            200,
        )
        .await;
    assert_eq!(of_sub["data"][0]["event_id"], user.as_str());

    failing.script([Reply::Status(200)]);
    let replayed = hub
        .post_json(
            "/api/v1/admin/dead-letters/replay",
            &json!({"event_type": "order.*"}),
            202,
        )
        .await;
    assert_eq!(
        replayed["replayed"], 1,
        "what the list showed, and only that"
    );
    hub.wait_delivered(&order).await;
    let still = hub.event(&user).await;
    assert_eq!(still["deliveries"][0]["status"], "dead");
}

async fn bad_filters_are_400s_naming_the_parameter(backend: Backend) {
    let Some(hub) = TestHub::start(backend).await else {
        return;
    };
    for (query, field) in [
        ("event_type=Order", "event_type"),
        ("delivery_status=lost", "delivery_status"),
        ("since=yesterday", "since"),
        ("subscription_id=42", "subscription_id"),
        ("connector=Not%20A%20Name", "connector"),
        (
            "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "until",
        ),
        ("colour=red", "colour"),
        ("until=", "until"),
    ] {
        let problem = hub
            .expect(hub.get(&format!("/api/v1/events?{query}")), 400)
            .await;
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    let problem = hub
        .expect(
            hub.get("/api/v1/admin/dead-letters?event_type=order.*&event_type=x"),
            400,
        )
        .await;
    assert_eq!(problem["errors"][0]["field"], "event_type", "{problem}");
    let sub = hub
        .subscribe("https://example.com/hook", json!(["a"]))
        .await;
    let path = format!(
        "/api/v1/subscriptions/{}/deliveries?status=gone",
        sub["id"].as_str().expect("id")
    );
    let problem = hub.expect(hub.get(&path), 400).await;
    assert_eq!(problem["errors"][0]["field"], "status", "{problem}");
}

async fn a_test_event_is_signed_sent_and_reported_not_stored(backend: Backend) {
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(204)).await;
    let sub = hub.subscribe(&receiver.url("/hook"), json!(["a"])).await;
    let path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    // Disabled: a test still goes out.
    hub.patch_json(&path, &json!({"enabled": false}), 200).await;
    let sent = hub
        .post_json(&format!("{path}/test"), &json!(null), 200)
        .await;
    assert_eq!(sent["succeeded"], true, "{sent}");
    assert_eq!(sent["response_status"], 204);
    assert_eq!(sent["event_type"], "hub.test");
    let got = receiver
        .wait_for("/hook", 1, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(
        got[0].header("webhook-id"),
        sent["event_id"].as_str().expect("id")
    );
    assert_eq!(
        got[0].header("x-team"),
        "ops",
        "the subscription's headers go too"
    );
    assert!(verify_seed_signature(SECRET, &got[0]));
    assert!(verify_standard_signature(SECRET, &got[0]));
    assert_eq!(got[0].json()["event_type"], "hub.test");

    receiver.script([Reply::Status(503)]);
    let failed = hub
        .post_json(&format!("{path}/test"), &json!(null), 200)
        .await;
    assert_eq!(failed["succeeded"], false);
    assert_eq!(failed["response_status"], 503);
    assert_eq!(failed["error"], "HTTP 503");
    // Nothing is stored: no event, no attempt, nothing to deliver.
    let events = hub.get_json("/api/v1/events", 200).await;
    assert!(ids(&events).is_empty(), "{events}");
    hub.expect(
        hub.post(&format!(
            "/api/v1/subscriptions/{}/test",
            "0190a0a0-0000-7000-8000-000000000000"
        )),
        404,
    )
    .await;
}

async fn stats_show_attempts_latency_circuit_and_backlog(backend: Backend) {
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let ok = Receiver::start(Reply::Status(200)).await;
    let sub = hub.subscribe(&ok.url("/hook"), json!(["a"])).await;
    let path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    for n in 0..2 {
        let id = hub.publish_id("a", json!({"n": n})).await;
        hub.wait_delivered(&id).await;
    }
    let stats = hub.get_json(&format!("{path}/stats?window=1h"), 200).await;
    assert_eq!(stats["window"], "1h");
    assert_eq!(stats["attempts"], 2, "{stats}");
    assert_eq!(stats["succeeded"], 2);
    assert_eq!(stats["failed"], 0);
    assert_eq!(stats["success_rate"], 1.0);
    assert_eq!(stats["latency_ms"]["sampled"], 2);
    assert!(stats["latency_ms"]["p99"].as_u64().is_some());
    assert!(stats["last_success_at"].is_string());
    assert_eq!(stats["last_failure"], Value::Null);
    assert_eq!(stats["backlog"]["pending"], 0);
    assert_eq!(stats["backlog"]["oldest_pending_age_seconds"], Value::Null);
    assert_eq!(stats["circuit"]["state"], "closed");
    let day = hub.get_json(&format!("{path}/stats"), 200).await;
    assert_eq!(day["window"], "24h", "the default window");

    let problem = hub
        .expect(hub.get(&format!("{path}/stats?window=2h")), 400)
        .await;
    assert_eq!(problem["errors"][0]["field"], "window", "{problem}");
    hub.expect(
        hub.get("/api/v1/subscriptions/0190a0a0-0000-7000-8000-000000000000/stats"),
        404,
    )
    .await;
    let slack = hub.get_json("/api/v1/connectors/slack/stats", 200).await;
    assert_eq!(slack["attempts"], 0);
    assert!(slack.get("circuit").is_none());
    hub.expect(hub.get("/api/v1/connectors/nosuch/stats"), 404)
        .await;
}

async fn the_live_feed_shows_new_events_and_attempts_and_ends_at_shutdown(backend: Backend) {
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let ok = Receiver::start(Reply::Status(200)).await;
    hub.subscribe(&ok.url("/hook"), json!(["a"])).await;
    let before = hub.publish_id("a", json!({"before": true})).await;
    hub.wait_delivered(&before).await;

    let mut feed = hub.get("/api/v1/feed").send().await.expect("feed");
    assert_eq!(feed.status(), 200);
    assert!(
        feed.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/event-stream")
    );
    let id = hub.publish_id("a", json!({"live": true})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut text = String::new();
    let saw = |text: &str, kind: &str, needle: &str| {
        text.split("\n\n")
            .any(|message| message.contains(&format!("event: {kind}")) && message.contains(needle))
    };
    while !(saw(&text, "event", &format!("\"id\":\"{id}\""))
        && saw(&text, "attempt", &format!("\"event_id\":\"{id}\"")))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the feed showed only: {text}"
        );
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), feed.chunk())
            .await
            .expect("a message or a keep-alive within 5 s")
            .expect("read");
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("the feed stays open"),
        ));
    }
    assert!(
        !text.contains(&before),
        "only what happened after it opened: {text}"
    );
    // A feed never holds up a shutdown.
    let (stopped, _db) = hub.stop().await;
    stopped.expect("clean stop with a feed open");
}
