//! Secrets stay secret: the API keys, the Slack bot token, subscription secrets (new and
//! rotated, and their `whsec_` form) and the database password never appear in any response or
//! in any log line, whatever the request — valid, invalid, unauthorised, or failing downstream.
//!
//! The hub runs as its own process at `debug` level, so every line it logs is searched, not
//! only what reaches the API.

use std::time::{Duration, Instant};

use base64::Engine;
use integrations_hub_testkit::fixtures::SECRET;
use integrations_hub_testkit::receiver::{Receiver, Reply};
use integrations_hub_testkit::{Backend, HubProcess, TestDb, backend_tests};
use serde_json::{Value, json};

backend_tests!(secrets_never_appear_in_responses_or_logs);

const API_KEY: &str = "ih-api-key-7f3a9c2e-never-shown";
const OTHER_KEY: &str = "ih-api-key-second-4d1b-never-shown";
const SLACK_TOKEN: &str = "xoxb-slack-token-5b1d-never-shown";
const ROTATED: &str = "rotated-secret-1c9a7-never-shown";
const DB_PASSWORD: &str = "db-password-42aa-never-shown";

/// Every response the test got: status line, headers and body, as text.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    /// Sends `request`, asserts it is answered `expect`, keeps the whole response; returns the
    /// JSON body (`Null` when it is not JSON).
    async fn call(&mut self, request: reqwest::RequestBuilder, expect: u16) -> Value {
        let response = request.send().await.expect("the hub answers");
        let status = response.status().as_u16();
        let mut text = format!("{status}\n");
        for (name, value) in response.headers() {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let body = response.text().await.expect("body");
        text.push_str(&body);
        self.0.push(text);
        assert_eq!(status, expect, "{body}");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }
}

async fn secrets_never_appear_in_responses_or_logs(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    // Postgres runs with trust authentication here, so a password in the URL is accepted and
    // only the hub's own handling of it is under test.
    let database_url = match backend {
        Backend::Postgres => db.url.replacen(
            "postgres://postgres@",
            &format!("postgres://postgres:{DB_PASSWORD}@"),
            1,
        ),
        Backend::Sqlite => db.url.clone(),
    };
    let fake_slack = Receiver::start(Reply::Json(200, json!({"ok": true, "ts": "1.2"}))).await;
    // The endpoint fails, and echoes what it got back in its body (kept with the attempt).
    let endpoint = Receiver::start(Reply::Status(500)).await;
    let slack_base = fake_slack.url("/api");
    let slack_host = fake_slack.base.trim_start_matches("http://").to_owned();
    let keys = format!("{OTHER_KEY},{API_KEY}");
    let hub = HubProcess::start(
        &db,
        &[
            ("IH_DATABASE_URL", &database_url),
            // Debug everywhere but the wasm compiler (tens of thousands of lines per module).
            (
                "IH_LOG_LEVEL",
                "debug,cranelift_codegen=warn,wasmtime_internal_cranelift=warn,cranelift_frontend=warn",
            ),
            ("IH_API_KEYS", &keys),
            ("IH_SLACK_BOT_TOKEN", SLACK_TOKEN),
            ("IH_SLACK_API_BASE_URL", &slack_base),
            ("IH_SLACK_ALLOWED_HOSTS", &slack_host),
            ("IH_ALLOW_PRIVATE_DESTINATIONS", "true"),
            ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
            ("IH_DELIVERY_BACKOFF_BASE_SECONDS", "0.05"),
            ("IH_DELIVERY_MAX_ATTEMPTS", "2"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let base = hub.base.clone();
    let url = |path: &str| format!("{base}{path}");
    let auth = format!("Bearer {API_KEY}");
    let mut seen = Seen::default();

    // Without a key, with a wrong one, with one a character short of the real one.
    for presented in [None, Some("Bearer nope"), Some(&auth[..auth.len() - 1])] {
        let mut request = client.get(url("/api/v1/subscriptions"));
        if let Some(p) = presented {
            request = request.header("authorization", p);
        }
        seen.call(request, 401).await;
    }
    for path in ["/health", "/metrics", "/openapi.json", "/docs/"] {
        seen.call(client.get(url(path)), 200).await;
    }

    // Subscriptions: created, read, listed, rotated; invalid secrets are refused without being
    // echoed.
    let sub = seen
        .call(
            client
                .post(url("/api/v1/subscriptions"))
                .header("authorization", &auth)
                .json(&json!({"url": endpoint.url("/hook"), "secret": SECRET, "events": ["*"]})),
            201,
        )
        .await;
    let sub_id = sub["id"].as_str().expect("id").to_owned();
    let short = &SECRET[..8];
    seen.call(
        client
            .post(url("/api/v1/subscriptions"))
            .header("authorization", &auth)
            .json(&json!({"url": endpoint.url("/x"), "secret": short, "events": ["*"]})),
        422,
    )
    .await;
    seen.call(
        client
            .post(url("/api/v1/subscriptions"))
            .header("authorization", &auth)
            .json(&json!({"url": "ftp://nowhere", "secret": SECRET, "events": [], "bogus": 1})),
        422,
    )
    .await;
    seen.call(
        client
            .patch(url(&format!("/api/v1/subscriptions/{sub_id}")))
            .header("authorization", &auth)
            .json(&json!({"secret": ROTATED})),
        200,
    )
    .await;
    seen.call(
        client
            .patch(url(&format!("/api/v1/subscriptions/{sub_id}")))
            .header("authorization", &auth)
            .json(&json!({"secret": 12})),
        422,
    )
    .await;
    seen.call(
        client
            .get(url(&format!("/api/v1/subscriptions/{sub_id}")))
            .header("authorization", &auth),
        200,
    )
    .await;
    seen.call(
        client
            .get(url("/api/v1/subscriptions"))
            .header("authorization", &auth),
        200,
    )
    .await;

    // Events to the failing endpoint and to Slack; their attempts, dead letters, replay.
    let mut event_ids = Vec::new();
    for event_type in ["order.created", "request_submitted"] {
        let event = seen
            .call(
                client
                    .post(url("/api/v1/events"))
                    .header("authorization", &auth)
                    .json(&json!({"event_type": event_type, "payload": {
                        "title": "t", "requester": "r@example.com", "description": "d"}})),
                202,
            )
            .await;
        event_ids.push(event["id"].as_str().expect("id").to_owned());
    }
    fake_slack
        .wait_for("/api/chat.postMessage", 1, Duration::from_secs(20))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dead = seen
            .call(
                client
                    .get(url("/api/v1/admin/dead-letters"))
                    .header("authorization", &auth),
                200,
            )
            .await;
        if dead["data"].as_array().is_some_and(|d| !d.is_empty()) {
            let dead_id = dead["data"][0]["id"].as_str().expect("id").to_owned();
            seen.call(
                client
                    .post(url(&format!("/api/v1/admin/dead-letters/{dead_id}/replay")))
                    .header("authorization", &auth),
                202,
            )
            .await;
            break;
        }
        assert!(Instant::now() < deadline, "the failing delivery never died");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &event_ids {
        seen.call(
            client
                .get(url(&format!("/api/v1/events/{id}")))
                .header("authorization", &auth),
            200,
        )
        .await;
        seen.call(
            client
                .get(url(&format!("/api/v1/admin/events/{id}/attempts")))
                .header("authorization", &auth),
            200,
        )
        .await;
    }
    seen.call(
        client
            .get(url("/api/v1/connectors"))
            .header("authorization", &auth),
        200,
    )
    .await;
    seen.call(client.get(url("/metrics")), 200).await;
    // Past a tick of every background task (the notices publish every second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = hub.log();
    drop(hub);
    let reconnects = log
        .iter()
        .filter(|l| l.contains("released inside a transaction"));
    assert_eq!(
        reconnects.count(),
        0,
        "a healthy run never hands the writer back mid-transaction"
    );

    let b64 = base64::engine::general_purpose::STANDARD;
    let forbidden = [
        ("an API key", API_KEY.to_owned()),
        ("the second API key", OTHER_KEY.to_owned()),
        ("the Slack token", SLACK_TOKEN.to_owned()),
        ("a subscription secret", SECRET.to_owned()),
        ("a rotated subscription secret", ROTATED.to_owned()),
        ("a secret's whsec_ form", b64.encode(SECRET)),
        ("a rotated secret's whsec_ form", b64.encode(ROTATED)),
        ("the database password", DB_PASSWORD.to_owned()),
    ];
    assert!(
        log.iter().any(|l| l.contains("dead-letters")) && log.iter().any(|l| l.contains("DEBUG")),
        "the whole run was logged at debug level ({} lines kept)",
        log.len()
    );
    assert!(seen.0.len() > 20, "responses were collected");
    for (what, secret) in &forbidden {
        for response in &seen.0 {
            assert!(
                !response.contains(secret.as_str()),
                "{what} appeared in a response:\n{response}"
            );
        }
        for line in &log {
            assert!(
                !line.contains(secret.as_str()),
                "{what} appeared in the log:\n{line}"
            );
        }
    }
    // The Slack token did reach Slack (so the test did use it), and nothing else.
    let posted = fake_slack.requests_to("/api/chat.postMessage");
    assert_eq!(
        posted[0].header("authorization"),
        format!("Bearer {SLACK_TOKEN}")
    );
}
