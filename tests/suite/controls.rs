//! The delivery controls end to end, over HTTP into a real receiver: payload filters (a
//! refused event gets no delivery; a bad filter is a 422 naming where), and pause (held, then
//! delivered on resume; `enabled: false` still means "take nothing").

use std::time::Duration;

use integrations_hub_testkit::fixtures::{SECRET, fast};
use integrations_hub_testkit::receiver::{Receiver, Reply};
use integrations_hub_testkit::{Backend, TestHub, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    filters_take_only_matching_events_and_bad_ones_are_422s_naming_where,
    a_paused_subscription_keeps_what_is_published_and_delivers_it_on_resume,
    the_hub_tells_about_itself_in_hub_events_and_never_about_its_own,
    an_ordered_rate_limited_subscription_keeps_each_keys_order_and_its_rate,
);

const HUB_EVENTS: [&str; 5] = [
    "hub.delivery.dead",
    "hub.circuit.opened",
    "hub.circuit.closed",
    "hub.subscription.disabled",
    "hub.connector.failed",
];

/// The payloads of the hub events of `event_type` `receiver` got at `path`.
fn told(receiver: &Receiver, path: &str, event_type: &str) -> Vec<Value> {
    (receiver.requests_to(path).iter())
        .map(|r| r.json())
        .filter(|body| body["event_type"] == event_type)
        .map(|body| body["payload"].clone())
        .collect()
}

/// Waits until `receiver` got `n` hub events of `event_type` at `path`.
async fn wait_told(receiver: &Receiver, path: &str, event_type: &str, n: usize) -> Vec<Value> {
    let started = std::time::Instant::now();
    loop {
        let got = told(receiver, path, event_type);
        if got.len() >= n {
            return got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{n} × {event_type} never arrived: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn filters_take_only_matching_events_and_bad_ones_are_422s_naming_where(backend: Backend) {
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let ok = Receiver::start(Reply::Status(200)).await;
    let subscribe = |filter: Value| json!({"url": ok.url("/big"), "secret": SECRET, "events": ["order.paid"], "filter": filter});
    let bad = subscribe(json!({"payload.total": {"$gte": 100, "$between": [1, 2]}}));
    let problem = hub.post_json("/api/v1/subscriptions", &bad, 422).await;
    assert_eq!(
        problem["errors"][0]["field"], "filter.payload.total.$between",
        "{problem}"
    );
    let message = problem["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("$between"), "{message}");
    let wrong_root = subscribe(json!({"total": 1}));
    let problem = hub
        .post_json("/api/v1/subscriptions", &wrong_root, 422)
        .await;
    assert_eq!(problem["errors"][0]["field"], "filter.total", "{problem}");

    let filter =
        json!({"payload.total": {"$gte": 100}, "payload.currency": {"$in": ["EUR", "USD"]}});
    let sub = hub
        .post_json("/api/v1/subscriptions", &subscribe(filter.clone()), 201)
        .await;
    assert_eq!(sub["filter"], filter);
    assert_eq!(sub["paused"], false);
    let big = hub
        .publish("order.paid", json!({"total": 150, "currency": "EUR"}))
        .await;
    assert_eq!(big["deliveries"], 1);
    let small = hub
        .publish("order.paid", json!({"total": 50, "currency": "EUR"}))
        .await;
    assert_eq!(
        small["deliveries"], 0,
        "refused by the filter: no delivery at all"
    );
    let other = hub
        .publish("order.paid", json!({"total": 500, "currency": "JPY"}))
        .await;
    assert_eq!(other["deliveries"], 0);
    hub.wait_delivered(big["id"].as_str().expect("id")).await;
    assert_eq!(ok.requests_to("/big").len(), 1);

    // Removed: every event of its types again.
    let path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    let cleared = hub.patch_json(&path, &json!({"filter": null}), 200).await;
    assert_eq!(cleared["filter"], Value::Null);
    let again = hub.publish("order.paid", json!({"total": 1})).await;
    assert_eq!(again["deliveries"], 1);
    let bad_patch = json!({"filter": {"$or": [{"payload.a": {"$regex": "x"}}]}});
    let problem = hub.patch_json(&path, &bad_patch, 422).await;
    assert_eq!(
        problem["errors"][0]["field"], "filter.$or[0].payload.a.$regex",
        "{problem}"
    );
}

async fn a_paused_subscription_keeps_what_is_published_and_delivers_it_on_resume(backend: Backend) {
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let ok = Receiver::start(Reply::Status(200)).await;
    let sub = hub.subscribe(&ok.url("/hook"), json!(["a"])).await;
    let path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    let paused = hub.patch_json(&path, &json!({"paused": true}), 200).await;
    assert_eq!(paused["paused"], true);

    let mut ids = Vec::new();
    for n in 0..3 {
        let published = hub.publish("a", json!({"n": n})).await;
        assert_eq!(published["deliveries"], 1, "created while paused");
        ids.push(published["id"].as_str().expect("id").to_owned());
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(ok.requests().is_empty(), "nothing attempted while paused");
    for id in &ids {
        assert_eq!(hub.event(id).await["deliveries"][0]["status"], "pending");
    }
    let stats = hub.get_json(&format!("{path}/stats?window=1h"), 200).await;
    assert_eq!(
        stats["backlog"]["pending"], 3,
        "held deliveries are backlog"
    );

    let resumed = hub.patch_json(&path, &json!({"paused": false}), 200).await;
    assert_eq!(resumed["paused"], false);
    for id in &ids {
        hub.wait_delivered(id).await;
    }
    assert_eq!(ok.requests_to("/hook").len(), 3);

    // Disabled is another thing: what is published meanwhile is not for it.
    hub.patch_json(&path, &json!({"enabled": false}), 200).await;
    let skipped = hub.publish("a", json!({})).await;
    assert_eq!(skipped["deliveries"], 0);
    hub.patch_json(&path, &json!({"paused": null}), 422).await;
}

async fn the_hub_tells_about_itself_in_hub_events_and_never_about_its_own(backend: Backend) {
    let vars = fast(&[("IH_DELIVERY_MAX_ATTEMPTS", "1")]);
    let Some(hub) = TestHub::start_with(backend, &vars).await else {
        return;
    };
    let ops = Receiver::start(Reply::Status(200)).await;
    hub.subscribe(&ops.url("/ops"), json!(HUB_EVENTS)).await;
    // A receiver of notices that fails: its dead notices are told of nowhere.
    let ops_down = Receiver::start(Reply::Status(500)).await;
    let ops_down_sub = hub
        .subscribe(&ops_down.url("/ops-down"), json!(["hub.delivery.dead"]))
        .await;

    let failing = Receiver::start(Reply::Status(500)).await;
    let down = hub.subscribe(&failing.url("/down"), json!(["a"])).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(hub.publish_id("a", json!({"n": n})).await);
    }
    for id in &ids {
        hub.wait_status(id, "dead").await;
    }
    let dead = wait_told(&ops, "/ops", "hub.delivery.dead", 10).await;
    let first = dead.iter().find(|d| d["event_id"] == ids[0].as_str());
    let first = first.expect("the first event's dead notice");
    assert_eq!(first["event_type"], "a");
    assert_eq!(first["subscription_id"], down["id"]);
    assert_eq!(first["url"], failing.url("/down"));
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["last_error"], "HTTP 500");
    let opened = wait_told(&ops, "/ops", "hub.circuit.opened", 1).await;
    assert_eq!(opened[0]["subscription_id"], down["id"]);
    assert!(opened[0]["open_until"].is_string(), "{opened:?}");

    // 410: disabled, and said why; an operator's disable too.
    let gone = Receiver::start(Reply::Status(410)).await;
    let retired = hub.subscribe(&gone.url("/gone"), json!(["b"])).await;
    let id = hub.publish_id("b", json!({})).await;
    hub.wait_status(&id, "dead").await;
    let other = hub.subscribe(&ops.url("/other"), json!(["c"])).await;
    let path = format!(
        "/api/v1/subscriptions/{}",
        other["id"].as_str().expect("id")
    );
    hub.patch_json(&path, &json!({"enabled": false}), 200).await;
    let disabled = wait_told(&ops, "/ops", "hub.subscription.disabled", 2).await;
    let reason = |sub: &Value| {
        let notice = disabled.iter().find(|d| d["subscription_id"] == sub["id"]);
        notice.map(|d| d["reason"].clone())
    };
    assert_eq!(reason(&retired), Some(json!("gone")));
    assert_eq!(reason(&other), Some(json!("operator")));

    // A connector file that does not load.
    std::fs::write(hub.connectors_dir.join("broken.wasm"), b"not a component").expect("write");
    let failed = wait_told(&ops, "/ops", "hub.connector.failed", 1).await;
    assert_eq!(failed[0]["connector"], "broken");
    assert!(
        failed[0]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("not a WebAssembly file"))
    );

    // The failing receiver of notices got ten of them, each dead at once, and then its circuit
    // opened: all of it quietly. Every hub.* event is about a delivery of another event.
    ops_down
        .wait_for("/ops-down", 10, Duration::from_secs(20))
        .await;
    let sub = format!(
        "/api/v1/subscriptions/{}",
        ops_down_sub["id"].as_str().expect("id")
    );
    let started = std::time::Instant::now();
    while hub.get_json(&sub, 200).await["circuit"]["state"] != "open" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "its circuit never opened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (event_type, expected) in [("hub.delivery.dead", 11), ("hub.circuit.opened", 1)] {
        let path = format!("/api/v1/events?event_type={event_type}&limit=100");
        let listed = hub.get_json(&path, 200).await;
        let listed = listed["data"].as_array().map_or(0, Vec::len);
        assert_eq!(
            listed, expected,
            "{event_type}: none about deliveries of hub.* events"
        );
    }
}

async fn an_ordered_rate_limited_subscription_keeps_each_keys_order_and_its_rate(backend: Backend) {
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    // The first attempts fail: the heads they hit are retried, holding back only their keys.
    receiver.script([Reply::Status(500), Reply::Status(503), Reply::Status(500)]);
    let body = |rate: Value| {
        json!({"url": receiver.url("/ordered"), "secret": SECRET, "events": ["o"],
               "ordered": true, "rate_limit": rate})
    };
    let problem = hub
        .post_json(
            "/api/v1/subscriptions",
            &body(json!({"per_second": 0})),
            422,
        )
        .await;
    assert_eq!(
        problem["errors"][0]["field"], "rate_limit.per_second",
        "{problem}"
    );
    let limit = json!({"per_second": 20, "burst": 5});
    let sub = hub
        .post_json("/api/v1/subscriptions", &body(limit.clone()), 201)
        .await;
    assert_eq!(
        (&sub["ordered"], &sub["rate_limit"]),
        (&json!(true), &limit)
    );
    let bad_key = json!({"event_type": "o", "payload": {}, "ordering_key": ""});
    hub.post_json("/api/v1/events", &bad_key, 422).await;

    let events: Vec<Value> = (0..60)
        .map(|n| {
            json!({"event_type": "o", "payload": {"key": n % 4, "seq": n / 4},
                        "ordering_key": format!("key-{}", n % 4)})
        })
        .collect();
    // An unlimited subscription beside it is not held back.
    let other = Receiver::start(Reply::Status(200)).await;
    hub.subscribe(&other.url("/free"), json!(["o"])).await;
    let ids = hub.publish_batch(&events).await;
    other.wait_for("/free", 60, Duration::from_secs(20)).await;
    let limited_so_far = receiver.requests_to("/ordered").len();
    assert!(
        limited_so_far < 60,
        "the limited one still drains: {limited_so_far}"
    );
    for id in &ids {
        let event = hub.event(id).await;
        let started = std::time::Instant::now();
        while !hub.event(id).await["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["status"] == "succeeded"))
        {
            assert!(started.elapsed() < Duration::from_secs(20), "{event}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let requests = receiver.requests_to("/ordered");
    assert_eq!(requests.len(), 63, "60 deliveries and 3 retries");
    // Per key, attempts never go back: a retry repeats its head, the next comes after it.
    for key in 0..4 {
        let seqs: Vec<i64> = (requests.iter().map(|r| r.json()["payload"].clone()))
            .filter(|p| p["key"] == key)
            .map(|p| p["seq"].as_i64().unwrap_or(-1))
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "key {key}: {seqs:?}");
        let mut delivered = seqs.clone();
        delivered.dedup();
        assert_eq!(delivered, (0..15).collect::<Vec<_>>(), "key {key}");
    }
    // At most 20 a second plus the burst of 5, in any one-second window.
    let arrivals: Vec<_> = requests.iter().map(|r| r.at).collect();
    for (i, at) in arrivals.iter().enumerate() {
        let window = arrivals[i..]
            .iter()
            .take_while(|t| t.duration_since(*at) < Duration::from_secs(1));
        assert!(
            window.count() <= 25,
            "more than 25 within a second of request {i}"
        );
    }
}
