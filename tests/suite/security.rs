//! Secrets stay secret: the API keys, the Slack bot token, subscription secrets (new and
//! rotated, and their `whsec_` form) and the database password never appear in any response or
//! in any log line, whatever the request — valid, invalid, unauthorised, or failing downstream.
//!
//! The hub runs as its own process at `debug` level, so every line it logs is searched, not
//! only what reaches the API.

use std::time::{Duration, Instant};

use base64::Engine;
use integrations_hub::Config;
use integrations_hub::config::EncryptionKey;
use integrations_hub::store::{self, key_id};
use integrations_hub_testkit::fixtures::{SECRET, fast};
use integrations_hub_testkit::receiver::{
    Receiver, Reply, verify_seed_signature, verify_standard_signature,
};
use integrations_hub_testkit::{Backend, HubProcess, TestDb, TestHub, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    secrets_never_appear_in_responses_or_logs,
    secrets_are_sealed_at_rest_and_keys_rotate,
    a_webhook_without_a_secret_gets_a_generated_one,
    api_keys_are_scoped_and_metrics_can_require_a_key,
);

const API_KEY: &str = "ih-api-key-7f3a9c2e-never-shown";
const OTHER_KEY: &str = "ih-api-key-second-4d1b-never-shown";
const SLACK_TOKEN: &str = "xoxb-slack-token-5b1d-never-shown";
const ROTATED: &str = "rotated-secret-1c9a7-never-shown";
const DB_PASSWORD: &str = "db-password-42aa-never-shown";
/// `IH_ENCRYPTION_KEY` (32 bytes, base64).
const ENCRYPTION_KEY: &str = "ZW5jcnlwdGlvbi1rZXktbmV2ZXItc2hvd24tMzJieXQ=";

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
            ("IH_ENCRYPTION_KEY", ENCRYPTION_KEY),
            // A singular that is nobody's variable: warned about by name, never by value.
            ("IH_API_KEY", API_KEY),
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
    // A generated secret is in its create response, once, and nowhere else.
    let generated = seen
        .call(
            client
                .post(url("/api/v1/subscriptions"))
                .header("authorization", &auth)
                .json(&json!({"url": endpoint.url("/generated"), "events": ["never.published"]})),
            201,
        )
        .await;
    let generated = generated["secret"]
        .as_str()
        .expect("a generated secret")
        .to_owned();
    let generated_response = seen.0.pop().expect("the create response");
    assert!(generated_response.contains(&generated));
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
        ("the encryption key", ENCRYPTION_KEY.to_owned()),
        ("a generated secret", generated.clone()),
    ];
    assert!(
        log.iter().any(|l| l.contains("dead-letters")) && log.iter().any(|l| l.contains("DEBUG")),
        "the whole run was logged at debug level ({} lines kept)",
        log.len()
    );
    assert!(seen.0.len() > 20, "responses were collected");
    assert!(
        log.iter()
            .any(|l| l.contains("IH_API_KEY is read by neither")
                && l.contains("did you mean IH_API_KEYS?")),
        "IH_API_KEY is warned about"
    );
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

const WAIT: Duration = Duration::from_secs(20);

/// Publishes one event and checks the delivery `receiver` got for it is signed with `secret`
/// in both headers (the seed header with `seed`, the previous secret during a rotation).
async fn delivered_signed_with(
    hub: &TestHub,
    receiver: &Receiver,
    path: &str,
    (secret, seed): (&str, &str),
) {
    let before = receiver.requests_to(path).len();
    hub.publish_id("sealed.check", json!({"n": before})).await;
    let got = receiver.wait_for(path, before + 1, WAIT).await;
    let last = got.last().expect("a delivery");
    assert!(verify_seed_signature(seed, last), "seed signature");
    assert!(
        verify_standard_signature(secret, last),
        "Standard Webhooks signature"
    );
}

/// Opening the database as the hub would, with `keys`: the error, if it refuses.
async fn open_with(db: &TestDb, keys: &str) -> Result<(), String> {
    let config = Config::from_vars([
        ("IH_DATABASE_URL", db.url.as_str()),
        ("IH_ENCRYPTION_KEY", keys),
    ])
    .expect("valid configuration");
    store::connect(&config)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

async fn secrets_are_sealed_at_rest_and_keys_rotate(backend: Backend) {
    let (k1, k2) = (
        "a2V5LW9uZS1rZXktb25lLWtleS1vbmUta2V5LW9uZSE=",
        "a2V5LXR3by1rZXktdHdvLWtleS10d28ta2V5LXR3byE=",
    );
    let id_of = |b64: &str| {
        use base64::Engine;
        let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64")
            .try_into()
            .expect("32 bytes");
        key_id(&EncryptionKey::new(bytes))
    };
    let receiver = Receiver::start(Reply::Status(200)).await;
    let Some(db) = TestDb::create(backend).await else {
        return;
    };

    // A hub without a key (loopback, development) stores the secret as given.
    let hub = TestHub::start_on(db, &fast(&[])).await;
    let sub = hub.subscribe(&receiver.url("/sealed"), json!(["*"])).await;
    let (_, db) = hub.stop().await;
    assert_eq!(
        db.stored_secrets().await,
        vec![(String::new(), SECRET.to_owned())]
    );

    // With a key, the existing row is sealed at start-up, and new secrets are sealed as written.
    let hub = TestHub::start_on(db, &fast(&[("IH_ENCRYPTION_KEY", k1)])).await;
    delivered_signed_with(&hub, &receiver, "/sealed", (SECRET, SECRET)).await;
    let rotated = "rotated-after-sealing-0123456789";
    let path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    hub.patch_json(&path, &json!({"secret": rotated}), 200)
        .await;
    delivered_signed_with(&hub, &receiver, "/sealed", (rotated, SECRET)).await;
    let (_, db) = hub.stop().await;
    let stored = db.stored_secrets().await;
    assert_eq!(
        stored.len(),
        2,
        "the rotated-out secret is kept for its grace period"
    );
    for (key, text) in &stored {
        assert_eq!(key, &id_of(k1));
        assert!(!text.contains(SECRET) && !text.contains(rotated), "{text}");
    }

    // Rotation of the key: the new key first, the old one after it; every row moves over.
    let both = format!("{k2},{k1}");
    let hub = TestHub::start_on(db, &fast(&[("IH_ENCRYPTION_KEY", &both)])).await;
    delivered_signed_with(&hub, &receiver, "/sealed", (rotated, SECRET)).await;
    let (_, db) = hub.stop().await;
    let stored = db.stored_secrets().await;
    assert!(
        stored.iter().all(|(key, _)| key == &id_of(k2)),
        "{stored:?}"
    );

    // Without the key that sealed them, the hub refuses to start and names the key it needs.
    for keys in [k1, ""] {
        let refused = open_with(&db, keys)
            .await
            .expect_err("the sealing key is missing");
        assert!(refused.contains(&id_of(k2)), "{refused}");
        assert!(
            !refused.contains(k2) && !refused.contains(rotated),
            "{refused}"
        );
    }
    assert_eq!(
        db.stored_secrets().await,
        stored,
        "a refused start changes nothing"
    );
    open_with(&db, k2)
        .await
        .expect("the new key alone opens everything");
}

async fn a_webhook_without_a_secret_gets_a_generated_one(backend: Backend) {
    let receiver = Receiver::start(Reply::Status(200)).await;
    let Some(hub) = TestHub::start_with(backend, &fast(&[])).await else {
        return;
    };
    let created = hub
        .post_json(
            "/api/v1/subscriptions",
            &json!({"url": receiver.url("/gen"), "events": ["*"]}),
            201,
        )
        .await;
    let secret = created["secret"]
        .as_str()
        .expect("the generated secret, once")
        .to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() >= 32,
        "{secret}"
    );
    let path = format!(
        "/api/v1/subscriptions/{}",
        created["id"].as_str().expect("id")
    );
    let read = hub.get_json(&path, 200).await;
    assert!(read.get("secret").is_none(), "returned once only: {read}");
    // Receivers use it as given: the seed's HMAC over the whole string, and any Standard
    // Webhooks library with the `whsec_` secret itself.
    delivered_signed_with(&hub, &receiver, "/gen", (&secret, &secret)).await;

    let another = hub
        .post_json(
            "/api/v1/subscriptions",
            &json!({"url": receiver.url("/gen2"), "events": ["*"]}),
            201,
        )
        .await;
    assert_ne!(another["secret"], created["secret"]);
    let given = hub
        .post_json(
            "/api/v1/subscriptions",
            &json!({"url": receiver.url("/given"), "secret": SECRET, "events": ["*"]}),
            201,
        )
        .await;
    assert!(
        given.get("secret").is_none(),
        "a given secret is not echoed: {given}"
    );
}

async fn api_keys_are_scoped_and_metrics_can_require_a_key(backend: Backend) {
    let (admin, reader, publisher, metrics) = (
        "admin-key-0123456789abcdef",
        "read-key-0123456789abcdef",
        "publish-key-0123456789abcdef",
        "metrics-key-0123456789abcdef",
    );
    let keys = format!("{admin},read:{reader},publish:{publisher}");
    let Some(hub) = TestHub::start_with(
        backend,
        &[("IH_API_KEYS", &keys), ("IH_METRICS_KEY", metrics)],
    )
    .await
    else {
        return;
    };
    let with = |request: reqwest::RequestBuilder, key: &str| request.bearer_auth(key);
    let sub = json!({"url": "https://example.com/hook", "secret": SECRET, "events": ["*"]});
    let event = json!({"event_type": "a", "payload": {}});
    let batch = json!({"events": [event]});

    // What each key may do, as `GET /api/v1/key` tells the console.
    for (key, scope) in [(admin, "admin"), (reader, "read"), (publisher, "publish")] {
        let told = hub.expect(with(hub.get("/api/v1/key"), key), 200).await;
        assert_eq!(told, json!({"scope": scope, "authentication": true}));
    }
    hub.expect(hub.get("/api/v1/key"), 401).await;

    // Publish: events only.
    hub.expect(
        with(hub.post("/api/v1/events"), publisher).json(&event),
        202,
    )
    .await;
    hub.expect(
        with(hub.post("/api/v1/events/batch"), publisher).json(&batch),
        202,
    )
    .await;
    for forbidden in [
        with(hub.get("/api/v1/events"), publisher),
        with(hub.get("/api/v1/subscriptions"), publisher),
        with(hub.post("/api/v1/subscriptions"), publisher).json(&sub),
    ] {
        let problem = hub.expect(forbidden, 403).await;
        assert_eq!(
            problem["type"],
            "https://integrations-hub.dev/problems/forbidden"
        );
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains("only publish"),
            "{problem}"
        );
    }

    // Read: every GET, no change.
    hub.expect(with(hub.get("/api/v1/events"), reader), 200)
        .await;
    hub.expect(with(hub.get("/api/v1/subscriptions"), reader), 200)
        .await;
    hub.expect(with(hub.get("/api/v1/admin/dead-letters"), reader), 200)
        .await;
    for forbidden in [
        with(hub.post("/api/v1/events"), reader).json(&event),
        with(hub.post("/api/v1/subscriptions"), reader).json(&sub),
        with(hub.post("/api/v1/admin/dead-letters/replay"), reader).json(&json!({})),
    ] {
        let problem = hub.expect(forbidden, 403).await;
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains("only read"),
            "{problem}"
        );
    }

    // Admin: everything.
    let created = hub
        .expect(
            with(hub.post("/api/v1/subscriptions"), admin).json(&sub),
            201,
        )
        .await;
    let path = format!(
        "/api/v1/subscriptions/{}",
        created["id"].as_str().expect("id")
    );
    hub.expect(with(hub.delete(&path), reader), 403).await;
    hub.expect(with(hub.delete(&path), admin), 204).await;

    // /metrics wants its own key once IH_METRICS_KEY is set (and an API key is not it).
    hub.expect(hub.get("/metrics"), 401).await;
    hub.expect(with(hub.get("/metrics"), admin), 401).await;
    let response = with(hub.get("/metrics"), metrics)
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), 200);
    // Probes stay open.
    for probe in ["/livez", "/readyz", "/health"] {
        assert_eq!(
            hub.get(probe).send().await.expect("probe").status(),
            200,
            "{probe}"
        );
    }
}
