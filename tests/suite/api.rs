//! End to end: the real hub on port 0, over real HTTP, on both backends.

use integrations_hub_testkit::fixtures::FAST;
use integrations_hub_testkit::fixtures::SECRET;
use integrations_hub_testkit::receiver::{Receiver, Reply};
use integrations_hub_testkit::{Backend, HubProcess, TestDb, TestHub, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    readme_flow_create_publish_read_back,
    bad_input_gets_its_status_and_changes_nothing,
    subscriptions_paginate_with_cursors,
    patch_is_partial_and_secrets_are_never_returned,
    delete_cancels_pending_deliveries,
    idempotency_key_returns_the_first_response,
    batch_publish_is_ordered_bounded_and_atomic,
    api_keys_guard_every_api_route,
    ops_endpoints_work_without_a_key,
    request_ids_are_set_and_propagated,
    metrics_parse_with_the_official_parser_in_both_formats,
    logs_carry_numbers_keep_probes_quiet_and_tell_transitions_once,
    database_errors_name_the_database_and_the_cause_once,
    traces_go_to_an_otlp_collector_when_the_standard_variables_ask,
);

const HOOK: &str = "https://your-service.example.com/webhook";

async fn publish(hub: &TestHub, event_type: &str) -> Value {
    hub.publish(event_type, json!({"title": "Access to production DB"}))
        .await
}

async fn events_published(hub: &TestHub) -> u64 {
    hub.metric("ih_events_published_total").await as u64
}

/// A problem document (RFC 9457) for `expected` (the status itself was stated to `expect`).
fn assert_problem(body: &Value, expected: u16) {
    assert_eq!(body["status"], expected, "{body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem lacks {field}: {body}");
    }
}

async fn readme_flow_create_publish_read_back(backend: Backend) {
    let Some(hub) = TestHub::start(backend).await else {
        return;
    };
    let sub = hub
        .subscribe(HOOK, json!(["request_submitted", "request_approved"]))
        .await;
    assert_eq!(sub["enabled"], true);
    assert_eq!(
        sub["circuit"],
        json!({"state": "closed", "consecutive_failures": 0})
    );
    assert!(sub.get("secret").is_none());

    let payload = json!({
        "title": "Access to production DB",
        "requester": "alice@company.com",
        "description": "Need read access for quarterly report"
    });
    let published = hub
        .expect(
            hub.post("/api/v1/events")
                .json(&json!({"event_type": "request_submitted", "payload": payload})),
            202,
        )
        .await;
    assert_eq!(published["event_type"], "request_submitted");
    assert_eq!(published["deliveries"], 1);
    let id = published["id"].as_str().expect("id");
    assert_eq!(
        uuid::Uuid::parse_str(id).expect("uuid").get_version_num(),
        7
    );

    let event = hub
        .expect(hub.get(&format!("/api/v1/events/{id}")), 200)
        .await;
    assert_eq!(event["payload"], payload);
    assert_eq!(event["created_at"], published["created_at"]);
    let deliveries = event["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 1);
    // The engine may already be trying (example.com does not take webhooks).
    let status = deliveries[0]["status"].as_str().unwrap_or("");
    assert!(["pending", "in_flight"].contains(&status), "{event}");
    assert_eq!(deliveries[0]["destination"]["kind"], "webhook");
    assert_eq!(deliveries[0]["destination"]["subscription_id"], sub["id"]);
    assert_eq!(deliveries[0]["destination"]["url"], sub["url"]);

    let other = publish(&hub, "request_rejected").await;
    assert_eq!(
        other["deliveries"], 0,
        "the subscription does not take this type"
    );
    assert_eq!(events_published(&hub).await, 2);
}

async fn bad_input_gets_its_status_and_changes_nothing(backend: Backend) {
    let Some(hub) = TestHub::start_with(backend, &[("IH_MAX_PAYLOAD_BYTES", "2048")]).await else {
        return;
    };
    let sub = hub.subscribe(HOOK, json!(["a"])).await;
    let sub_id = sub["id"].as_str().expect("id");
    let valid_sub = json!({"url": "https://example.com/h", "secret": SECRET, "events": ["a"]});
    let big = "x".repeat(4096);

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, Option<&str>)> = vec![
        (
            "malformed JSON",
            hub.post("/api/v1/subscriptions").header("content-type", "application/json").body("{\"url\": "),
            400,
            None,
        ),
        (
            "trailing garbage",
            hub.post("/api/v1/events").header("content-type", "application/json").body(r#"{"event_type":"a","payload":{}} {}"#),
            400,
            None,
        ),
        ("wrong content type", hub.post("/api/v1/subscriptions").header("content-type", "text/plain").body(valid_sub.to_string()), 415, None),
        ("missing content type", hub.post("/api/v1/events").body(r#"{"event_type":"a","payload":{}}"#), 415, None),
        ("wrong field type", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://example.com/h", "secret": SECRET, "events": "a"})), 422, Some("events")),
        ("wrong element type", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://example.com/h", "secret": SECRET, "events": [1]})), 422, Some("events[0]")),
        ("missing field", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://example.com/h", "secret": SECRET})), 422, Some("events")),
        ("unknown field", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://example.com/h", "secret": SECRET, "events": ["a"], "evnets": []})), 422, Some("evnets")),
        ("short secret", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://example.com/h", "secret": "short", "events": ["a"]})), 422, Some("secret")),
        ("private literal url", hub.post("/api/v1/subscriptions").json(&json!({"url": "http://192.168.0.10/h", "secret": SECRET, "events": ["a"]})), 422, Some("url")),
        ("relative url", hub.post("/api/v1/subscriptions").json(&json!({"url": "/h", "secret": SECRET, "events": ["a"]})), 422, Some("url")),
        ("no events", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://example.com/h", "secret": SECRET, "events": []})), 422, Some("events")),
        ("bad event name", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://example.com/h", "secret": SECRET, "events": ["Not Valid"]})), 422, Some("events[0]")),
        ("reserved header", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://example.com/h", "secret": SECRET, "events": ["a"], "headers": {"X-Webhook-Signature": "x"}})), 422, Some("headers.X-Webhook-Signature")),
        // PostgreSQL cannot store NUL: refused on both backends alike, before the database.
        ("NUL in a description", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://example.com/h", "secret": SECRET, "events": ["a"], "description": "x\u{0}y"})), 422, Some("description")),
        ("NUL in a secret", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://example.com/h", "secret": "0123456789abcdef\u{0}", "events": ["a"]})), 422, Some("secret")),
        ("NUL in a url", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://example.com/\u{0}", "secret": SECRET, "events": ["a"]})), 422, Some("url")),
        ("NUL in a patched description", hub.patch(&format!("/api/v1/subscriptions/{sub_id}")).json(&json!({"description": "\u{0}"})), 422, Some("description")),
        ("credentials in a url", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://user:pw@example.com/h", "secret": SECRET, "events": ["a"]})), 422, Some("url")),
        ("star beside names", hub.post("/api/v1/subscriptions").json(&json!({"url": "https://example.com/h", "secret": SECRET, "events": ["*", "a"]})), 422, Some("events")),
        ("bad connector filter", hub.post("/api/v1/admin/dead-letters/replay").json(&json!({"connector": "x\u{0}"})), 422, Some("connector")),
        ("payload not an object", hub.post("/api/v1/events").json(&json!({"event_type": "a", "payload": [1]})), 422, Some("payload")),
        ("bad event type", hub.post("/api/v1/events").json(&json!({"event_type": "A B", "payload": {}})), 422, Some("event_type")),
        ("body over the cap", hub.post("/api/v1/events").json(&json!({"event_type": "a", "payload": {"big": big}})), 413, None),
        ("bad idempotency key", hub.post("/api/v1/events").header("idempotency-key", "").json(&json!({"event_type": "a", "payload": {}})), 400, Some("Idempotency-Key")),
        ("empty batch", hub.post("/api/v1/events/batch").json(&json!({"events": []})), 422, Some("events")),
        ("null in patch", hub.patch(&format!("/api/v1/subscriptions/{sub_id}")).json(&json!({"url": null})), 422, Some("url")),
        ("unknown id", hub.get(&format!("/api/v1/subscriptions/{}", uuid::Uuid::now_v7())), 404, None),
        ("unknown event", hub.get(&format!("/api/v1/events/{}", uuid::Uuid::now_v7())), 404, None),
        ("bad id format", hub.get("/api/v1/subscriptions/not-a-uuid"), 404, None),
        ("bad id format on delete", hub.delete("/api/v1/subscriptions/123"), 404, None),
        ("bad limit", hub.get("/api/v1/subscriptions?limit=501"), 400, Some("limit")),
        ("non-numeric limit", hub.get("/api/v1/subscriptions?limit=ten"), 400, Some("limit")),
        ("bad cursor", hub.get("/api/v1/subscriptions?cursor=%%%"), 400, Some("cursor")),
        ("unknown route", hub.get("/api/v1/nothing-here"), 404, None),
        ("wrong method", hub.delete("/api/v1/events"), 405, None),
    ];
    for (name, request, expected, field) in cases {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: body is not JSON: {e}"));
        assert_eq!(status, expected, "{name}: {body}");
        assert_eq!(content_type, "application/problem+json", "{name}");
        assert_problem(&body, expected);
        if let Some(field) = field {
            let fields: Vec<&str> = body["errors"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no errors in {body}"))
                .iter()
                .filter_map(|e| e["field"].as_str())
                .collect();
            assert!(
                fields.contains(&field),
                "{name}: expected field {field} in {body}"
            );
        }
    }

    // Nothing changed: one subscription (the one made above), untouched; no event stored.
    let list = hub.expect(hub.get("/api/v1/subscriptions"), 200).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["data"][0], sub);
    assert_eq!(events_published(&hub).await, 0);
}

async fn subscriptions_paginate_with_cursors(backend: Backend) {
    let Some(hub) = TestHub::start(backend).await else {
        return;
    };
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(hub.subscribe(HOOK, json!(["*"])).await["id"].clone());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/subscriptions?limit=2&cursor={c}"),
            None => "/api/v1/subscriptions?limit=2".to_owned(),
        };
        let page = hub.expect(hub.get(&path), 200).await;
        pages += 1;
        seen.extend(
            page["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|s| s["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, ids, "every subscription once, oldest first");
    assert_eq!(pages, 3);
    let all = hub.expect(hub.get("/api/v1/subscriptions"), 200).await;
    assert_eq!(all["data"].as_array().map(Vec::len), Some(5));
    assert_eq!(all["next_cursor"], Value::Null);
}

async fn patch_is_partial_and_secrets_are_never_returned(backend: Backend) {
    let Some(hub) = TestHub::start(backend).await else {
        return;
    };
    let sub = hub
        .post_json(
            "/api/v1/subscriptions",
            &json!({
                "url": "https://example.com/hook",
                "secret": SECRET,
                "events": ["a", "a", "b"],
                "description": "first",
                "headers": {"X-Team": "billing"}
            }),
            201,
        )
        .await;
    assert_eq!(sub["events"], json!(["a", "b"]), "duplicates dropped");
    assert_eq!(sub["headers"], json!({"x-team": "billing"}));
    let path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().expect("id"));

    let rotated = "a-brand-new-secret-value-42";
    let response = hub
        .patch(&path)
        .json(&json!({"enabled": false, "description": null, "secret": rotated}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    assert!(
        !text.contains(rotated) && !text.contains(SECRET),
        "secret leaked: {text}"
    );
    let patched: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["url"], sub["url"]);
    assert_eq!(patched["events"], sub["events"]);
    assert_eq!(patched["created_at"], sub["created_at"]);
    assert_ne!(patched["updated_at"], sub["updated_at"]);

    let got = hub.expect(hub.get(&path), 200).await;
    assert_eq!(got, patched);
    for listing in [hub.get("/api/v1/subscriptions"), hub.get(&path)] {
        let text = listing
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        assert!(
            !text.contains(rotated) && !text.contains(SECRET),
            "secret leaked: {text}"
        );
    }
    hub.expect(
        hub.patch(&format!("/api/v1/subscriptions/{}", uuid::Uuid::now_v7()))
            .json(&json!({})),
        404,
    )
    .await;
}

async fn delete_cancels_pending_deliveries(backend: Backend) {
    let Some(hub) = TestHub::start(backend).await else {
        return;
    };
    let sub = hub.subscribe(HOOK, json!(["a"])).await;
    let path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    let event = publish(&hub, "a").await;
    let body = hub.expect(hub.delete(&path), 204).await;
    assert_eq!(body, Value::Null, "204 has no body");
    let body = hub.expect(hub.get(&path), 404).await;
    assert_problem(&body, 404);
    let body = hub.expect(hub.delete(&path), 404).await;
    assert_problem(&body, 404);
    let detail = hub
        .expect(
            hub.get(&format!(
                "/api/v1/events/{}",
                event["id"].as_str().expect("id")
            )),
            200,
        )
        .await;
    assert_eq!(detail["deliveries"][0]["status"], "cancelled", "{detail}");
    assert_eq!(
        publish(&hub, "a").await["deliveries"],
        0,
        "deleted subscriptions match nothing"
    );
}

async fn idempotency_key_returns_the_first_response(backend: Backend) {
    let Some(hub) = TestHub::start(backend).await else {
        return;
    };
    hub.subscribe(HOOK, json!(["*"])).await;
    let body = json!({"event_type": "order.created", "payload": {"order": 42}});
    let first = hub
        .post("/api/v1/events")
        .header("Idempotency-Key", "order-42-created")
        .json(&body)
        .send()
        .await
        .expect("first");
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.expect("json");
    let second = hub
        .post("/api/v1/events")
        .header("Idempotency-Key", "order-42-created")
        .json(&body)
        .send()
        .await
        .expect("second");
    assert_eq!(second.status(), 202);
    assert_eq!(
        second
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(second.json::<Value>().await.expect("json"), first);
    assert_eq!(
        events_published(&hub).await,
        1,
        "the replay created nothing"
    );

    let problem = hub
        .expect(
            hub.post("/api/v1/events")
                .header("Idempotency-Key", "order-42-created")
                .json(&json!({"event_type": "order.created", "payload": {"order": 43}})),
            422,
        )
        .await;
    assert_problem(&problem, 422);
    hub.expect(
        hub.post("/api/v1/events")
            .header("Idempotency-Key", "order-43-created")
            .json(&body),
        202,
    )
    .await;
    assert_eq!(events_published(&hub).await, 2);
}

async fn batch_publish_is_ordered_bounded_and_atomic(backend: Backend) {
    let Some(hub) = TestHub::start(backend).await else {
        return;
    };
    hub.subscribe(HOOK, json!(["a"])).await;
    let events: Vec<Value> = (0..3)
        .map(|i| json!({"event_type": if i == 1 { "b" } else { "a" }, "payload": {"n": i}}))
        .collect();
    let body = hub
        .expect(
            hub.post("/api/v1/events/batch")
                .json(&json!({"events": events})),
            202,
        )
        .await;
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    let types: Vec<&str> = data
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert_eq!(types, ["a", "b", "a"]);
    let deliveries: Vec<u64> = data
        .iter()
        .filter_map(|e| e["deliveries"].as_u64())
        .collect();
    assert_eq!(deliveries, [1, 0, 1]);
    let second = hub
        .expect(
            hub.get(&format!(
                "/api/v1/events/{}",
                data[1]["id"].as_str().expect("id")
            )),
            200,
        )
        .await;
    assert_eq!(second["payload"], json!({"n": 1}));

    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"event_type": "a", "payload": {}}))
        .collect();
    let problem = hub
        .expect(
            hub.post("/api/v1/events/batch")
                .json(&json!({"events": too_many})),
            422,
        )
        .await;
    assert_problem(&problem, 422);

    let one_bad = json!({"events": [
        {"event_type": "a", "payload": {}},
        {"event_type": "a", "payload": "not an object"},
    ]});
    let problem = hub
        .expect(hub.post("/api/v1/events/batch").json(&one_bad), 422)
        .await;
    assert_problem(&problem, 422);
    assert_eq!(
        problem["errors"][0]["field"], "events[1].payload",
        "{problem}"
    );
    assert_eq!(
        events_published(&hub).await,
        3,
        "invalid batches store nothing"
    );
}

async fn api_keys_guard_every_api_route(backend: Backend) {
    let key = "test-api-key-0123456789abcdef";
    let Some(hub) = TestHub::start_with(
        backend,
        &[("IH_API_KEYS", &format!("other-key-00000000000000,{key}"))],
    )
    .await
    else {
        return;
    };
    // Every route of the OpenAPI document that declares security must refuse a missing or wrong key.
    let doc = hub.expect(hub.get("/openapi.json"), 200).await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let open = op["security"].as_array().is_some_and(|s| {
                s.iter()
                    .all(|r| r.as_object().is_some_and(|o| o.is_empty()))
            });
            let concrete = path.replace("{id}", &uuid::Uuid::now_v7().to_string());
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            for auth in [None, Some("Bearer wrong-key-0000000000000000"), Some(key)] {
                let mut request = hub.http.request(method.clone(), hub.url(&concrete));
                if let Some(a) = auth {
                    request = request.header(
                        "authorization",
                        if a.starts_with("Bearer") {
                            a.to_owned()
                        } else {
                            format!("Bearer {a}")
                        },
                    );
                }
                let response = request.send().await.expect("request");
                let status = response.status().as_u16();
                if open || auth == Some(key) {
                    assert_ne!(status, 401, "{method} {path} with {auth:?}");
                } else {
                    assert!(
                        path.starts_with("/api/"),
                        "only /api routes need a key: {path}"
                    );
                    assert_eq!(status, 401, "{method} {path} with {auth:?}");
                    assert!(response.headers().contains_key("www-authenticate"));
                    let body: Value = response.json().await.expect("problem");
                    assert_eq!(body["status"], 401);
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 9, "the document lists the routes ({checked})");
    hub.expect(
        hub.get("/api/v1/subscriptions")
            .header("authorization", format!("bearer {key}")),
        200,
    )
    .await;
}

async fn ops_endpoints_work_without_a_key(backend: Backend) {
    let Some(hub) =
        TestHub::start_with(backend, &[("IH_API_KEYS", "test-api-key-0123456789abcdef")]).await
    else {
        return;
    };
    let health = hub.expect(hub.get("/health"), 200).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(hub.expect(hub.get("/readyz"), 200).await, health);
    assert_eq!(hub.expect(hub.get("/livez"), 200).await["status"], "ok");
    assert_eq!(
        health["database"],
        match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    let metrics = hub.get("/metrics").send().await.expect("metrics");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    assert!(
        text.contains("ih_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"}"),
        "{text}"
    );
    assert!(
        text.contains("ih_http_request_duration_seconds_bucket"),
        "{text}"
    );
    let doc = hub.expect(hub.get("/openapi.json"), 200).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/api/v1/subscriptions",
        "/api/v1/subscriptions/{id}",
        "/api/v1/events",
        "/api/v1/events/batch",
        "/api/v1/events/{id}",
        "/health",
        "/livez",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let docs = hub.get("/docs/").send().await.expect("docs");
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.expect("html");
    assert!(html.contains("swagger"), "Swagger UI page");
    assert!(
        !html.contains("https://"),
        "no CDN: everything is served by the hub"
    );
    let bundle = hub
        .get("/docs/swagger-ui-bundle.js")
        .send()
        .await
        .expect("bundle");
    assert_eq!(bundle.status(), 200, "UI assets come from the binary");

    if backend == Backend::Postgres {
        // The database goes away: health says so and publishing fails cleanly with 503.
        hub.db().drop_now().await;
        let health = hub.expect(hub.get("/health"), 503).await;
        assert_eq!(health["status"], "unavailable");
        // Not ready, but alive: an orchestrator takes it out of rotation without restarting it.
        hub.expect(hub.get("/readyz"), 503).await;
        hub.expect(hub.get("/livez"), 200).await;
        let problem = hub
            .expect(
                hub.post("/api/v1/events")
                    .header("authorization", "Bearer test-api-key-0123456789abcdef")
                    .json(&json!({"event_type": "a", "payload": {}})),
                503,
            )
            .await;
        assert_problem(&problem, 503);
        assert!(
            !problem["detail"]
                .as_str()
                .unwrap_or("")
                .contains("ih_test_"),
            "no internals leak: {problem}"
        );
    }
}

async fn request_ids_are_set_and_propagated(backend: Backend) {
    let Some(hub) = TestHub::start(backend).await else {
        return;
    };
    let generated = hub.get("/health").send().await.expect("health");
    let id = generated
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let given = hub
        .get("/health")
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .expect("health");
    assert_eq!(
        given
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-me-123")
    );
    hub.stop().await.0.expect("graceful stop returns Ok");
}

/// The official Prometheus Python client's parser (`IH_TEST_PYTHON`, default `python3`, with
/// `prometheus_client` installed; `.ci/run` provides it) reads `text` as `format`; `None` when
/// it is not installed outside CI.
fn official_parse(format: &str, text: &str) -> Option<Value> {
    use std::io::Write;
    let python = std::env::var("IH_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/parse_metrics.py");
    let installed = std::process::Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        integrations_hub_testkit::skip_unless_ci(
            "metrics parser test",
            &format!("{python} with prometheus_client (IH_TEST_PYTHON)"),
            "pip install prometheus_client",
        );
        return None;
    }
    let mut child = std::process::Command::new(&python)
        .args([script, format])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the text");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the official {format} parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("parser JSON"))
}

/// The value of the sample `name{labels}` in parsed `families`.
fn sample(families: &Value, family: &str, name: &str, labels: Value) -> Option<f64> {
    families[family]["samples"]
        .as_array()?
        .iter()
        .find(|s| s[0] == name && s[1] == labels)
        .and_then(|s| s[2].as_f64())
}

async fn metrics_parse_with_the_official_parser_in_both_formats(backend: Backend) {
    let Some(hub) = TestHub::start(backend).await else {
        return;
    };
    publish(&hub, "a").await;
    let scrape = |accept: &'static str| {
        let request = hub.get("/metrics").header("accept", accept);
        async move {
            let response = request.send().await.expect("metrics");
            assert_eq!(response.status(), 200);
            let kind = response.headers()["content-type"]
                .to_str()
                .expect("type")
                .to_owned();
            (kind, response.text().await.expect("text"))
        }
    };
    // What Prometheus sends: OpenMetrics first, the classic format as a fallback.
    let (kind, openmetrics) = scrape(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    )
    .await;
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let (kind, classic) = scrape("text/plain;version=0.0.4").await;
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let Some(om) = official_parse("openmetrics", &openmetrics) else {
        return;
    };
    let text = official_parse("prometheus", &classic).expect("the parser is there");

    // Known series exist at 0 before anything happened to them, in both formats.
    for families in [&om, &text] {
        let dead = json!({"kind": "webhook", "outcome": "dead"});
        assert_eq!(
            sample(families, "ih_deliveries", "ih_deliveries_total", dead),
            Some(0.0)
        );
        let slack = json!({"connector": "slack", "outcome": "unavailable"});
        assert_eq!(
            sample(
                families,
                "ih_connector_invocations",
                "ih_connector_invocations_total",
                slack
            ),
            Some(0.0),
            "the built-in Slack connector's series"
        );
        let published = json!({"event_type": "a"});
        assert_eq!(
            sample(
                families,
                "ih_events_published",
                "ih_events_published_total",
                published
            ),
            Some(1.0)
        );
        for process in [
            "process_cpu_seconds",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(families.get(process).is_some(), "{process} missing");
        }
    }
    assert_eq!(om["ih_deliveries"]["type"], "counter");
    assert_eq!(text["ih_deliveries"]["type"], "counter");
    // An info metric in OpenMetrics, a gauge of its `_info` series in the classic format.
    let version = json!({"version": env!("CARGO_PKG_VERSION")});
    assert_eq!(om["ih_build"]["type"], "info");
    assert_eq!(
        sample(&om, "ih_build", "ih_build_info", version.clone()),
        Some(1.0)
    );
    assert_eq!(text["ih_build_info"]["type"], "gauge");
    assert_eq!(
        sample(&text, "ih_build_info", "ih_build_info", version),
        Some(1.0)
    );
}

async fn logs_carry_numbers_keep_probes_quiet_and_tell_transitions_once(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let refused = HubProcess::try_start(&db, &[("IH_LOG_LEVEL", "verbose")])
        .await
        .expect_err("a level that names no level refuses to start");
    assert!(refused.contains("IH_LOG_LEVEL"), "{refused}");

    let failing = Receiver::start(Reply::Status(500)).await;
    let gone = Receiver::start(Reply::Status(410)).await;
    let mut vars = FAST.to_vec();
    vars.extend([("IH_DELIVERY_MAX_ATTEMPTS", "1"), ("IH_LOG_LEVEL", "info")]);
    let hub = HubProcess::start(&db, &vars).await;
    let failing_sub = hub.subscribe(&failing.url("/down"), json!(["down"])).await;
    hub.subscribe(&gone.url("/gone"), json!(["gone"])).await;
    for probe in ["/health", "/livez", "/readyz", "/metrics"] {
        hub.get(probe).send().await.expect("probe");
    }
    // Ten failures in a row open the circuit; a 410 disables its subscription.
    for i in 0..10 {
        let id = hub.publish_id("down", json!({"i": i})).await;
        hub.wait_status(&id, "dead").await;
    }
    let id = hub.publish_id("gone", json!({})).await;
    hub.wait_status(&id, "dead").await;
    let path = format!(
        "/api/v1/subscriptions/{}",
        failing_sub["id"].as_str().expect("id")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let lines: Vec<Value> = hub
            .log()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let told = |message: &str| lines.iter().filter(|l| l["message"] == message).count();
        if told("subscription disabled") > 0
            && told(
                "circuit opened: the endpoint failed repeatedly, its deliveries wait for a probe",
            ) > 0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "transitions not logged: {lines:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    hub.get_json(&path, 200).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let lines: Vec<Value> = hub
        .log()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(lines.len() >= 10, "the log was read: {lines:#?}");
    let once = |message: &str| {
        let found: Vec<&Value> = lines.iter().filter(|l| l["message"] == message).collect();
        assert_eq!(found.len(), 1, "{message}: {found:#?}");
        assert_eq!(found[0]["level"], "WARN", "{message}");
        found[0].clone()
    };
    let opened =
        once("circuit opened: the endpoint failed repeatedly, its deliveries wait for a probe");
    assert_eq!(opened["subscription_id"], failing_sub["id"]);
    once("subscription disabled");

    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "finished processing request")
        .collect();
    assert!(!finished.is_empty(), "requests are logged: {lines:#?}");
    for line in &finished {
        assert!(line["latency_ms"].is_f64(), "a number: {line}");
        let path = line["span"]["path"].as_str().unwrap_or_default();
        assert!(
            !["/health", "/livez", "/readyz", "/metrics"].contains(&path),
            "probes stay at debug: {line}"
        );
    }
    assert!(
        !lines.iter().any(|l| l["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("cranelift"))),
        "no compiler noise"
    );
}

/// A second hub on the same SQLite file is refused with a sentence, and the first goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hub_on_the_same_sqlite_file_is_refused() {
    let db = TestDb::create(Backend::Sqlite)
        .await
        .expect("SQLite is always there");
    let first = HubProcess::start(&db, &[]).await;
    let refused = HubProcess::try_start(&db, &[])
        .await
        .expect_err("the file is taken");
    assert!(
        refused.contains("another integrations-hub is using this file"),
        "{refused}"
    );
    assert!(refused.contains("hub.db"), "the file is named: {refused}");
    first.get_json("/api/v1/subscriptions", 200).await;
    drop(first);
    // Once the first is gone, the file is free again.
    HubProcess::start(&db, &[]).await;
}

/// PostgreSQL that cannot be used says where and why, once: the host, port and database, and
/// the server's or the network's own words.
async fn database_errors_name_the_database_and_the_cause_once(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    if backend == Backend::Sqlite {
        return;
    }
    let url = url::Url::parse(&db.url).expect("url");
    let host = url.host_str().expect("host").to_owned();
    let port = url.port().unwrap_or(5432);
    let mut missing = url.clone();
    missing.set_path("no_such_database_here");
    let mut wrong_port = url.clone();
    wrong_port.set_port(Some(1)).expect("port");
    for (url, cause, place) in [
        (
            missing.to_string(),
            "does not exist",
            format!("\"no_such_database_here\" at {host}:{port}"),
        ),
        (wrong_port.to_string(), "refused", format!("at {host}:1")),
    ] {
        let refused = HubProcess::try_start(&db, &[("IH_DATABASE_URL", &url)])
            .await
            .expect_err("cannot start");
        let line: Value = refused
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "integrations-hub failed")
            .unwrap_or_else(|| panic!("no failure line in {refused}"));
        let line = line["error"].as_str().expect("error").to_owned();
        assert!(line.contains(&place), "{line}");
        assert!(line.to_lowercase().contains(cause), "{line}");
        assert_eq!(line.matches(cause).count(), 1, "said once: {line}");
        assert!(!line.contains("pool timed out"), "{line}");
    }
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the hub's spans reach an OTLP/HTTP collector (here a
/// local receiver) in the publisher's trace, and the webhook names the attempt span as parent.
async fn traces_go_to_an_otlp_collector_when_the_standard_variables_ask(backend: Backend) {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let collector = Receiver::start(Reply::Status(200)).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let mut vars = FAST.to_vec();
    vars.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.base.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    let hub = HubProcess::start(&db, &vars).await;
    hub.subscribe(&receiver.url("/traced"), json!(["*"])).await;
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    hub.expect(
        hub.post("/api/v1/events")
            .header("traceparent", &traceparent)
            .json(&json!({"event_type": "a", "payload": {}})),
        202,
    )
    .await;
    let got = receiver
        .wait_for("/traced", 1, std::time::Duration::from_secs(20))
        .await;
    let sent = got[0].header("traceparent").to_owned();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[1], TRACE_ID, "{sent}");
    let parent = hex::decode(parts[2]).expect("hex parent id");
    let trace_id = hex::decode(TRACE_ID).expect("hex");

    // The exported spans (OTLP protobuf): the trace id, the spans' names, and the attempt's span
    // id that the webhook named as its parent.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let bodies: Vec<Vec<u8>> = collector
            .requests_to("/v1/traces")
            .into_iter()
            .map(|r| r.body.to_vec())
            .collect();
        let all: Vec<u8> = bodies.concat();
        let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
        if has(&trace_id) && has(b"publish") && has(b"attempt") && has(&parent) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spans not exported: {} requests to the collector",
            bodies.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
