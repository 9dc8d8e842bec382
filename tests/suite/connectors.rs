//! Connectors end to end: real `.wasm` components loaded by a real hub, delivering through the
//! outbox to real local servers (a fake Slack API), on both backends. Includes the hostile
//! fixtures (infinite loop, memory bomb, forbidden host, private address, redirect, trap,
//! sandbox escapes through files, environment and sockets) and hot reload of the directory.

use std::time::{Duration, Instant};

use integrations_hub_testkit::receiver::{Receiver, Reply};
use integrations_hub_testkit::{Backend, TestHub, backend_tests, built_wasm, deploy, fixture_wasm};
use serde_json::{Value, json};

backend_tests!(
    slack_posts_block_kit_messages_to_a_fake_slack,
    slack_retries_after_a_429,
    slack_channel_not_found_is_dead_after_one_attempt_and_replays,
    slack_invalid_token_is_permanent,
    slack_without_a_token_is_inactive_and_routed_nothing,
    the_directory_is_watched_add_replace_remove_and_garbage,
    a_bad_file_over_a_working_connector_loses_no_event,
    slack_made_inactive_after_it_was_bound_keeps_its_events_waiting,
    hostile_connectors_are_contained,
    a_connector_cannot_reach_files_environment_or_sockets,
    a_looping_connector_cannot_take_every_slot,
    connector_http_follows_no_redirects_and_retries_when_asked,
    the_example_connector_dropped_into_a_running_hub_receives_events,
    a_trust_policy_loads_only_files_signed_by_a_trusted_key,
);

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "xoxb-test-token-0123456789";

async fn slack_hub(backend: Backend, fake: &Receiver, extra: &[(&str, &str)]) -> Option<TestHub> {
    let base = fake.url("/api");
    let host = fake.base.trim_start_matches("http://").to_owned();
    let mut vars: Vec<(&str, &str)> = vec![
        ("IH_ALLOW_PRIVATE_DESTINATIONS", "true"),
        ("IH_DELIVERY_BACKOFF_BASE_SECONDS", "0.05"),
        ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
        ("IH_SLACK_BOT_TOKEN", TOKEN),
        ("IH_SLACK_API_BASE_URL", &base),
        ("IH_SLACK_ALLOWED_HOSTS", &host),
    ];
    vars.extend_from_slice(extra);
    TestHub::start_with(backend, &vars).await
}

/// Publishes one event: its id and how many destinations got a delivery.
async fn publish(hub: &TestHub, event_type: &str, payload: Value) -> (String, u64) {
    let body = hub.publish(event_type, payload).await;
    (
        body["id"].as_str().expect("id").to_owned(),
        body["deliveries"].as_u64().expect("deliveries"),
    )
}

/// Two copies of the fixture, `fixture` (to misbehave) and `healthy` (to show others still
/// deliver), deployed and active.
async fn deploy_fixture_and_healthy(hub: &TestHub) {
    for name in ["fixture", "healthy"] {
        deploy(
            &hub.connectors_dir,
            &format!("{name}.wasm"),
            &fixture_wasm(name, "1.0.0"),
        );
    }
    wait_listing(hub, "both active", |l| {
        l.iter().filter(|c| c["status"] == "active").count() == 2
    })
    .await;
}

async fn connectors(hub: &TestHub) -> Vec<Value> {
    let body = hub.expect(hub.get("/api/v1/connectors"), 200).await;
    body["data"].as_array().expect("data").clone()
}

async fn connector(hub: &TestHub, name: &str) -> Option<Value> {
    connectors(hub)
        .await
        .into_iter()
        .find(|c| c["name"] == name)
}

/// Waits until the listing satisfies `ok` (the watcher acts within about 2 s).
async fn wait_listing(hub: &TestHub, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let list = connectors(hub).await;
        if ok(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until connector `name` is listed with a problem containing `problem` (a newer file was
/// refused) and checks that it is still active; returns its entry.
async fn wait_still_serving(hub: &TestHub, name: &str, problem: &str) -> Value {
    let list = wait_listing(hub, &format!("{name}: {problem}"), |l| {
        l.iter().any(|c| {
            c["name"] == name && c["problem"].as_str().is_some_and(|p| p.contains(problem))
        })
    })
    .await;
    let entry = list
        .into_iter()
        .find(|c| c["name"] == name)
        .expect("listed");
    assert_eq!(entry["status"], "active", "{entry}");
    entry
}

/// Waits until connector `name` is listed with `status`; returns the listing.
async fn wait_connector(hub: &TestHub, name: &str, status: &str) -> Vec<Value> {
    wait_listing(hub, &format!("{name} {status}"), |l| {
        l.iter().any(|c| c["name"] == name && c["status"] == status)
    })
    .await
}

fn request_submitted() -> Value {
    json!({
        "title": "Access to the billing dashboard",
        "requester": "ada@example.com",
        "description": "Needed for the quarterly review.",
    })
}

async fn slack_posts_block_kit_messages_to_a_fake_slack(backend: Backend) {
    let fake = Receiver::start(Reply::Json(200, json!({"ok": true, "ts": "1.2"}))).await;
    let Some(hub) = slack_hub(backend, &fake, &[]).await else {
        return;
    };
    let slack = connector(&hub, "slack").await.expect("slack is listed");
    assert_eq!(slack["status"], "active", "{slack}");
    assert_eq!(slack["source"], "builtin");
    assert_eq!(slack["events"], json!(["request_submitted"]));
    assert_eq!(
        slack["allowed_hosts"][0],
        fake.base.trim_start_matches("http://")
    );
    assert_eq!(slack["sha256"].as_str().expect("sha").len(), 64);

    let (id, deliveries) = publish(&hub, "request_submitted", request_submitted()).await;
    assert_eq!(deliveries, 1, "routed to the slack connector");
    let event = hub.wait_status(&id, "succeeded").await;
    assert_eq!(event["deliveries"][0]["destination"]["kind"], "connector");
    assert_eq!(event["deliveries"][0]["destination"]["connector"], "slack");
    // What Slack answered, as the connector reported it (WIT 0.2): its status and the message ts.
    assert_eq!(slack["contract"], "0.2.0");
    let tries = hub.attempts(&id).await;
    assert_eq!(tries[0]["response_status"], 200, "{}", tries[0]);
    assert_eq!(
        tries[0]["report"],
        json!({"kind": "ok", "external_id": "1.2", "retry_after_ms": null})
    );

    let posted = fake.wait_for("/api/chat.postMessage", 1, WAIT).await;
    let request = &posted[0];
    assert_eq!(request.header("authorization"), format!("Bearer {TOKEN}"));
    let body = request.json();
    assert_eq!(body["channel"], "#integrations");
    assert!(
        body["text"]
            .as_str()
            .expect("fallback text")
            .contains("Access to the billing dashboard")
    );
    let blocks = body["blocks"].to_string();
    for shown in [
        "Access to the billing dashboard",
        "ada@example.com",
        "quarterly review",
    ] {
        assert!(blocks.contains(shown), "{shown} missing from {blocks}");
    }
    // A payload's slack_channel wins over the default.
    let mut payload = request_submitted();
    payload["slack_channel"] = json!("#access-requests");
    let (id, _) = publish(&hub, "request_submitted", payload).await;
    hub.wait_status(&id, "succeeded").await;
    let posted = fake.wait_for("/api/chat.postMessage", 2, WAIT).await;
    assert_eq!(posted[1].json()["channel"], "#access-requests");

    // Events it does not take get no connector delivery.
    let (_, deliveries) = publish(&hub, "something_else", json!({})).await;
    assert_eq!(deliveries, 0);
    // The token is a secret: never in the API, never in metrics.
    let listing = hub.get_json("/api/v1/connectors", 200).await.to_string();
    assert!(!listing.contains(TOKEN));
    assert!(
        hub.metric("ih_connector_invocations_total{connector=\"slack\",outcome=\"ok\"}")
            .await
            >= 2.0
    );
    assert!(
        hub.metric("ih_deliveries_total{kind=\"connector\",outcome=\"succeeded\"}")
            .await
            >= 2.0
    );
}

async fn slack_retries_after_a_429(backend: Backend) {
    let fake = Receiver::start(Reply::Json(200, json!({"ok": true}))).await;
    fake.script([Reply::WithHeaders(429, vec![("retry-after", "1".into())])]);
    let Some(hub) = slack_hub(backend, &fake, &[]).await else {
        return;
    };
    let (id, _) = publish(&hub, "request_submitted", request_submitted()).await;
    hub.wait_status(&id, "succeeded").await;
    let tries = hub.attempts(&id).await;
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(tries[0]["outcome"], "failed");
    assert!(
        tries[0]["error"].as_str().expect("error").contains("retry"),
        "{}",
        tries[0]
    );
    assert_eq!(tries[1]["outcome"], "succeeded");
    let posted = fake.requests_to("/api/chat.postMessage");
    let gap = posted[1].at.duration_since(posted[0].at);
    assert!(
        gap >= Duration::from_millis(900),
        "Retry-After honoured: {gap:?}"
    );
}

async fn slack_channel_not_found_is_dead_after_one_attempt_and_replays(backend: Backend) {
    let fake = Receiver::start(Reply::Json(
        200,
        json!({"ok": false, "error": "channel_not_found"}),
    ))
    .await;
    let Some(hub) = slack_hub(backend, &fake, &[]).await else {
        return;
    };
    let (id, _) = publish(&hub, "request_submitted", request_submitted()).await;
    hub.wait_status(&id, "dead").await;
    let tries = hub.attempts(&id).await;
    assert_eq!(tries.len(), 1, "permanent: no retries: {tries:?}");
    assert!(
        tries[0]["error"]
            .as_str()
            .expect("error")
            .contains("channel_not_found")
    );
    assert_eq!(
        tries[0]["destination"],
        json!({"kind": "connector", "connector": "slack"})
    );

    let dead = hub.expect(hub.get("/api/v1/admin/dead-letters"), 200).await;
    let letter = dead["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|d| d["event_id"] == id.as_str())
        .expect("dead-lettered")
        .clone();
    assert!(
        letter["last_error"]
            .as_str()
            .expect("last_error")
            .contains("channel_not_found")
    );

    // Fixed on Slack's side (the bot was invited): replay delivers it.
    fake.set_default(Reply::Json(200, json!({"ok": true})));
    hub.expect(
        hub.post(&format!(
            "/api/v1/admin/dead-letters/{}/replay",
            letter["id"].as_str().expect("id")
        )),
        202,
    )
    .await;
    hub.wait_status(&id, "succeeded").await;
    assert_eq!(hub.attempts(&id).await.len(), 2);
}

async fn slack_invalid_token_is_permanent(backend: Backend) {
    let fake = Receiver::start(Reply::Json(
        200,
        json!({"ok": false, "error": "invalid_auth"}),
    ))
    .await;
    let Some(hub) = slack_hub(backend, &fake, &[]).await else {
        return;
    };
    let (id, _) = publish(&hub, "request_submitted", request_submitted()).await;
    hub.wait_status(&id, "dead").await;
    let tries = hub.attempts(&id).await;
    assert_eq!(tries.len(), 1);
    assert!(
        tries[0]["error"]
            .as_str()
            .expect("error")
            .contains("invalid_auth"),
        "{}",
        tries[0]
    );
    assert_eq!(
        hub.metric("ih_connector_invocations_total{connector=\"slack\",outcome=\"permanent\"}")
            .await,
        1.0
    );
}

async fn slack_without_a_token_is_inactive_and_routed_nothing(backend: Backend) {
    let Some(hub) = TestHub::start(backend).await else {
        return;
    };
    let slack = connector(&hub, "slack").await.expect("slack is listed");
    assert_eq!(slack["status"], "inactive", "{slack}");
    assert!(
        slack["problem"]
            .as_str()
            .expect("problem")
            .contains("IH_SLACK_BOT_TOKEN"),
        "{slack}"
    );
    assert_eq!(slack["allowed_hosts"], json!(["slack.com"]));
    let (_, deliveries) = publish(&hub, "request_submitted", request_submitted()).await;
    assert_eq!(deliveries, 0, "an inactive connector receives nothing");
}

async fn the_directory_is_watched_add_replace_remove_and_garbage(backend: Backend) {
    let Some(hub) = TestHub::start(backend).await else {
        return;
    };
    let dir = hub.connectors_dir.clone();
    assert!(connector(&hub, "fixture").await.is_none());

    // Add.
    deploy(&dir, "fixture.wasm", &fixture_wasm("fixture", "1.0.0"));
    let list = wait_connector(&hub, "fixture", "active").await;
    let v1 = list
        .iter()
        .find(|c| c["name"] == "fixture")
        .expect("fixture")
        .clone();
    assert_eq!(v1["version"], "1.0.0");
    assert!(
        v1["source"]
            .as_str()
            .expect("source")
            .ends_with("fixture.wasm")
    );
    let (id, deliveries) = publish(&hub, "fixture.ok", json!({})).await;
    assert_eq!(deliveries, 1);
    hub.wait_status(&id, "succeeded").await;

    // Replace with a new version.
    deploy(&dir, "fixture.wasm", &fixture_wasm("fixture", "2.0.0"));
    let list = wait_listing(&hub, "fixture 2.0.0", |l| {
        l.iter()
            .any(|c| c["name"] == "fixture" && c["version"] == "2.0.0")
    })
    .await;
    let v2 = list
        .iter()
        .find(|c| c["name"] == "fixture")
        .expect("fixture");
    assert_ne!(v2["sha256"], v1["sha256"]);
    assert_eq!(v2["status"], "active");

    // A garbage file and a duplicate name fail on their own and harm nothing.
    deploy(&dir, "junk.wasm", b"\0asm this is not a component");
    deploy(&dir, "copy.wasm", &fixture_wasm("fixture", "9.9.9"));
    // An empty core module: a build for the wrong target, told apart from garbage.
    deploy(&dir, "module.wasm", b"\0asm\x01\0\0\0");
    let list = wait_listing(&hub, "junk, module and copy failed", |l| {
        l.iter().filter(|c| c["status"] == "failed").count() == 3
    })
    .await;
    let module = list.iter().find(|c| c["name"] == "module");
    let problem = module.expect("module listed")["problem"].as_str();
    assert!(
        problem.is_some_and(|p| p.contains("core WebAssembly module, not a component")
            && p.contains("wasm32-wasip2")),
        "{problem:?}"
    );
    let junk = list
        .iter()
        .find(|c| c["name"] == "junk")
        .expect("junk listed");
    assert!(
        junk["problem"]
            .as_str()
            .expect("problem")
            .contains("not a WebAssembly file"),
        "{junk}"
    );
    let copy = list
        .iter()
        .find(|c| {
            c["source"]
                .as_str()
                .is_some_and(|s| s.ends_with("copy.wasm"))
        })
        .expect("copy listed");
    assert!(
        copy["problem"]
            .as_str()
            .expect("problem")
            .contains("duplicate name"),
        "{copy}"
    );
    let holder = list
        .iter()
        .find(|c| c["name"] == "fixture" && c["status"] == "active")
        .expect("the first fixture keeps its name");
    assert_eq!(holder["version"], "2.0.0");
    let (id, _) = publish(&hub, "fixture.ok", json!({})).await;
    hub.wait_status(&id, "succeeded").await;

    // Remove: the connector stays bound, and what is published meanwhile waits for it.
    std::fs::remove_file(dir.join("copy.wasm")).expect("remove copy");
    std::fs::remove_file(dir.join("fixture.wasm")).expect("remove fixture");
    wait_connector(&hub, "fixture", "missing").await;
    let (id, deliveries) = publish(&hub, "fixture.ok", json!({})).await;
    assert_eq!(deliveries, 1, "a removed connector's events wait for it");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(hub.event(&id).await["deliveries"][0]["status"], "pending");
    assert!(hub.attempts(&id).await.is_empty(), "nothing was attempted");
    let missing = connector(&hub, "fixture").await.expect("listed");
    assert_eq!(missing["pending"], 1, "{missing}");
    // Restored: what waited is delivered.
    deploy(&dir, "fixture.wasm", &fixture_wasm("fixture", "2.0.0"));
    hub.wait_status(&id, "succeeded").await;

    // Unbound for good once its file is gone: nothing more is routed to it.
    hub.delete_path("/api/v1/connectors/fixture", 409).await;
    std::fs::remove_file(dir.join("fixture.wasm")).expect("remove fixture");
    wait_connector(&hub, "fixture", "missing").await;
    let unbound = hub.delete_path("/api/v1/connectors/fixture", 200).await;
    assert_eq!(unbound["cancelled"], 0);
    hub.delete_path("/api/v1/connectors/fixture", 404).await;
    assert!(connector(&hub, "fixture").await.is_none());
    let (_, deliveries) = publish(&hub, "fixture.ok", json!({})).await;
    assert_eq!(deliveries, 0, "an unbound connector is routed nothing");
    assert!(connector(&hub, "junk").await.is_some());
    assert_eq!(
        connector(&hub, "slack").await.expect("slack")["status"],
        "inactive"
    );
}

async fn hostile_connectors_are_contained(backend: Backend) {
    let Some(hub) = TestHub::start_with(
        backend,
        &[
            ("IH_DELIVERY_MAX_ATTEMPTS", "1"),
            ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
            ("IH_CONNECTOR_TIMEOUT_SECONDS", "2"),
            ("IH_CONNECTOR_MEMORY_MB", "16"),
            // The guard is on: localhost is granted, but resolves to a loopback address.
            ("IH_FIXTURE_ALLOWED_HOSTS", "api.example.com,localhost:9"),
        ],
    )
    .await
    else {
        return;
    };
    deploy_fixture_and_healthy(&hub).await;

    // Two infinite loops at once (as many as this machine has cores), then everything else.
    let loops = [
        publish(&hub, "fixture.loop", json!({})).await.0,
        publish(&hub, "fixture.loop", json!({})).await.0,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    hub.get_json("/health", 200).await;
    let health_latency = asked.elapsed();
    assert!(
        health_latency < Duration::from_secs(1),
        "the hub answers while guests spin: {health_latency:?}"
    );
    let (healthy, _) = publish(&hub, "healthy.ok", json!({})).await;
    hub.wait_status(&healthy, "succeeded").await;

    let bomb = publish(&hub, "fixture.bomb", json!({})).await.0;
    let trap = publish(&hub, "fixture.trap", json!({})).await.0;
    let forbidden = publish(&hub, "fixture.forbidden", json!({})).await.0;
    let private = publish(&hub, "fixture.fetch", json!({"url": "http://localhost:9/"}))
        .await
        .0;

    let error_of = |id: String| {
        let hub = &hub;
        async move {
            hub.wait_status(&id, "dead").await;
            let tries = hub.attempts(&id).await;
            assert_eq!(tries.len(), 1);
            tries[0]["error"].as_str().expect("error").to_owned()
        }
    };
    for id in loops {
        let error = error_of(id).await;
        assert!(error.contains("timed out after 2.0s"), "{error}");
    }
    let error = error_of(bomb).await;
    assert!(
        error.contains("exceeded its memory limit of 16 MiB"),
        "{error}"
    );
    let error = error_of(trap).await;
    assert!(error.contains("trapped"), "{error}");
    assert!(
        error.contains("fixture asked to trap"),
        "the panic message is reported: {error}"
    );
    let error = error_of(forbidden).await;
    assert!(
        error.contains("Denied") && error.contains("forbidden.invalid"),
        "{error}"
    );
    let error = error_of(private).await;
    assert!(
        error.contains("Denied") && error.contains("SSRF"),
        "{error}"
    );
    assert_eq!(
        hub.metric("ih_connector_http_denied_total{connector=\"fixture\"}")
            .await,
        2.0
    );
    assert_eq!(
        hub.metric("ih_connector_invocations_total{connector=\"fixture\",outcome=\"timeout\"}")
            .await,
        2.0
    );

    // Afterwards: still healthy, still delivering, on both connectors.
    for name in ["healthy", "fixture"] {
        let (id, _) = publish(&hub, &format!("{name}.ok"), json!({})).await;
        hub.wait_status(&id, "succeeded").await;
    }
    hub.get_json("/health", 200).await;
}

async fn a_connector_cannot_reach_files_environment_or_sockets(backend: Backend) {
    // Something to reach: a TCP listener and a UDP socket on one local port, counting visitors.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    tcp.set_nonblocking(true).expect("non-blocking");
    let port = tcp.local_addr().expect("addr").port();
    let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).expect("bind udp on the same port");
    udp.set_nonblocking(true).expect("non-blocking");
    let Some(hub) = TestHub::start_with(
        backend,
        &[
            ("IH_DELIVERY_MAX_ATTEMPTS", "1"),
            ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
            // A secret in the hub's own environment, which the guest must not see.
            ("IH_FIXTURE_LABEL", "host-side-value"),
        ],
    )
    .await
    else {
        return;
    };
    deploy_fixture_and_healthy(&hub).await;
    let (id, _) = publish(&hub, "fixture.escape", json!({ "port": port })).await;
    hub.wait_status(&id, "dead").await;
    let tries = hub.attempts(&id).await;
    let report = tries[0]["error"].as_str().expect("error").to_owned();
    eprintln!("sandbox escape attempts ({backend:?}):\n{report}");
    assert!(
        !report.contains("ESCAPED"),
        "a way out of the sandbox worked:\n{report}"
    );
    for line in [
        "read /etc/passwd: refused",
        "list /: refused",
        "write /tmp/escaped: refused",
        "list .: refused",
        "environment: refused (empty)",
        "tcp connect: refused",
        "udp send: refused",
    ] {
        assert!(report.contains(line), "{line:?} missing from:\n{report}");
    }
    assert!(
        tcp.accept().is_err(),
        "no TCP connection reached the host's port"
    );
    assert!(
        udp.recv_from(&mut [0u8; 16]).is_err(),
        "no UDP datagram reached the host's port"
    );
    assert!(!std::path::Path::new("/tmp/escaped").exists());
}

async fn a_looping_connector_cannot_take_every_slot(backend: Backend) {
    let Some(hub) = TestHub::start_with(
        backend,
        &[
            ("IH_DELIVERY_CONCURRENCY", "8"),
            ("IH_DELIVERY_MAX_ATTEMPTS", "1"),
            ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
            ("IH_CONNECTOR_TIMEOUT_SECONDS", "3"),
        ],
    )
    .await
    else {
        return;
    };
    deploy_fixture_and_healthy(&hub).await;
    let mut loops = Vec::new();
    for _ in 0..12 {
        loops.push(publish(&hub, "fixture.loop", json!({})).await.0);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 8 slots: the looping connector holds at most 6 (three quarters); the healthy copy, new and
    // so not known to be fast yet, is tried at once within the further eighth. (With fewer than
    // 8 slots there is no such eighth, and a new destination waits for a looping one.)
    let (healthy, _) = publish(&hub, "healthy.ok", json!({})).await;
    hub.wait_status(&healthy, "succeeded").await;
    let mut running = 0;
    for id in &loops {
        let e = hub
            .expect(hub.get(&format!("/api/v1/events/{id}")), 200)
            .await;
        let status = &e["deliveries"][0]["status"];
        assert_ne!(status, "dead", "no loop had used up its budget yet: {e}");
        if status == "in_flight" {
            running += 1;
        }
    }
    assert!(running <= 6, "{running} loops ran at once on 8 slots");
}

async fn connector_http_follows_no_redirects_and_retries_when_asked(backend: Backend) {
    let target = Receiver::start(Reply::Status(200)).await;
    let redirector = Receiver::start(Reply::WithHeaders(
        302,
        vec![("location", target.url("/elsewhere"))],
    ))
    .await;
    let grant = format!(
        "{},{}",
        redirector.base.trim_start_matches("http://"),
        target.base.trim_start_matches("http://")
    );
    let Some(hub) = TestHub::start_with(
        backend,
        &[
            ("IH_ALLOW_PRIVATE_DESTINATIONS", "true"),
            ("IH_DELIVERY_BACKOFF_BASE_SECONDS", "0.05"),
            ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
            ("IH_DELIVERY_MAX_ATTEMPTS", "2"),
            ("IH_FIXTURE_ALLOWED_HOSTS", &grant),
        ],
    )
    .await
    else {
        return;
    };
    deploy(
        &hub.connectors_dir,
        "fixture.wasm",
        &fixture_wasm("fixture", "1.0.0"),
    );
    wait_connector(&hub, "fixture", "active").await;

    let (id, _) = publish(&hub, "fixture.fetch", json!({"url": redirector.url("/go")})).await;
    hub.wait_status(&id, "dead").await;
    let tries = hub.attempts(&id).await;
    assert!(
        tries[0]["error"]
            .as_str()
            .expect("error")
            .contains("HTTP 302"),
        "{}",
        tries[0]
    );
    assert_eq!(redirector.requests().len(), 1);
    assert!(
        target.requests().is_empty(),
        "the redirect was not followed"
    );

    // `retry` with after-ms: failed, then retried no sooner than asked, then dead (2 attempts).
    let (id, _) = publish(&hub, "fixture.retry", json!({"after_ms": 700})).await;
    hub.wait_status(&id, "dead").await;
    let tries = hub.attempts(&id).await;
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert!(
        tries[0]["error"]
            .as_str()
            .expect("error")
            .contains("asked to retry")
    );
    let started = |t: &Value| {
        chrono::DateTime::parse_from_rfc3339(t["started_at"].as_str().expect("started_at"))
            .expect("rfc3339")
    };
    let gap = started(&tries[1]) - started(&tries[0]);
    assert!(
        gap >= chrono::TimeDelta::milliseconds(650),
        "after-ms honoured: {gap}"
    );
}

/// The walk-through of `connectors/README.md`: build the example, copy it into the running hub's
/// directory, see it listed, and watch it forward events.
async fn the_example_connector_dropped_into_a_running_hub_receives_events(backend: Backend) {
    let target = Receiver::start(Reply::Status(204)).await;
    let url = target.url("/inbox");
    let grant = target.base.trim_start_matches("http://").to_owned();
    let Some(hub) = TestHub::start_with(
        backend,
        &[
            ("IH_ALLOW_PRIVATE_DESTINATIONS", "true"),
            ("IH_EXAMPLE_TARGET_URL", &url),
            ("IH_EXAMPLE_ALLOWED_HOSTS", &grant),
        ],
    )
    .await
    else {
        return;
    };
    std::fs::copy(
        std::path::Path::new(integrations_hub::connectors::BUILT_WASM_DIR)
            .join("example_connector.wasm"),
        hub.connectors_dir.join("example.wasm"),
    )
    .expect("copy the example into the directory");
    let list = wait_connector(&hub, "example", "active").await;
    let example = list
        .iter()
        .find(|c| c["name"] == "example")
        .expect("example");
    assert_eq!(example["events"], json!(["example.ping"]));
    assert_eq!(example["allowed_hosts"], json!([grant]));
    assert_eq!(example["sha256"].as_str().expect("sha").len(), 64);
    // The example is written against the first contract, which keeps loading unchanged.
    assert_eq!(example["contract"], "0.1.0", "{example}");
    assert!(!built_wasm("example_connector").is_empty());

    let (id, deliveries) = publish(&hub, "example.ping", json!({"hello": "world"})).await;
    assert_eq!(deliveries, 1);
    hub.wait_status(&id, "succeeded").await;
    let got = target.wait_for("/inbox", 1, WAIT).await;
    let body = got[0].json();
    assert_eq!(body["id"], id.as_str());
    let tries = hub.attempts(&id).await;
    assert_eq!(tries[0]["report"]["kind"], "ok", "{}", tries[0]);
    assert_eq!(body["event_type"], "example.ping");
    assert_eq!(body["payload"], json!({"hello": "world"}));
}

/// Garbage copied over a working connector: the last good version keeps serving (listed with
/// the new file's problem beside it), and events published meanwhile are delivered.
async fn a_bad_file_over_a_working_connector_loses_no_event(backend: Backend) {
    let Some(hub) = TestHub::start(backend).await else {
        return;
    };
    let dir = hub.connectors_dir.clone();
    deploy(&dir, "fixture.wasm", &fixture_wasm("fixture", "1.0.0"));
    wait_connector(&hub, "fixture", "active").await;
    let (before, _) = publish(&hub, "fixture.ok", json!({})).await;
    hub.wait_status(&before, "succeeded").await;

    deploy(&dir, "fixture.wasm", b"\0asm a broken build");
    let fixture = wait_still_serving(&hub, "fixture", "serving the previous version").await;
    assert_eq!(fixture["version"], "1.0.0");
    let (during, deliveries) = publish(&hub, "fixture.ok", json!({})).await;
    assert_eq!(deliveries, 1);
    hub.wait_status(&during, "succeeded").await;

    // The good file back: the problem goes.
    deploy(&dir, "fixture.wasm", &fixture_wasm("fixture", "1.0.0"));
    wait_listing(&hub, "no problem", |l| {
        l.iter()
            .any(|c| c["name"] == "fixture" && c["problem"].is_null())
    })
    .await;
    let (after, _) = publish(&hub, "fixture.ok", json!({})).await;
    hub.wait_status(&after, "succeeded").await;
}

/// Two instances on one PostgreSQL, one whose connectors directory lags (the connector is not
/// there yet): events published through either are delivered, by the instance that has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_the_connector_loses_no_event() {
    let Some(db) = integrations_hub_testkit::TestDb::create(Backend::Postgres).await else {
        return;
    };
    let vars = [("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2")];
    let shared = db.share();
    let has = TestHub::start_on(db, &vars).await;
    let lags = TestHub::start_on(shared, &vars).await;
    deploy(
        &has.connectors_dir,
        "fixture.wasm",
        &fixture_wasm("fixture", "1.0.0"),
    );
    wait_connector(&has, "fixture", "active").await;
    let lagging = connector(&lags, "fixture")
        .await
        .expect("listed where it lags");
    assert_eq!(lagging["status"], "missing", "{lagging}");
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (id, deliveries) = publish(&lags, "fixture.ok", json!({})).await;
        assert_eq!(
            deliveries, 1,
            "routed by the binding, not by what this instance loaded"
        );
        ids.push(id);
        ids.push(publish(&has, "fixture.ok", json!({})).await.0);
    }
    for id in &ids {
        has.wait_status(id, "succeeded").await;
    }
    // The lagging instance catches up and delivers too.
    deploy(
        &lags.connectors_dir,
        "fixture.wasm",
        &fixture_wasm("fixture", "1.0.0"),
    );
    wait_connector(&lags, "fixture", "active").await;
    let (id, _) = publish(&lags, "fixture.ok", json!({})).await;
    lags.wait_status(&id, "succeeded").await;
}

/// Slack bound (it was active), then restarted without its token: `inactive`, and what is
/// published meanwhile waits; with the token back, it is delivered.
async fn slack_made_inactive_after_it_was_bound_keeps_its_events_waiting(backend: Backend) {
    let fake = Receiver::start(Reply::Json(200, json!({"ok": true, "ts": "1.2"}))).await;
    let Some(hub) = slack_hub(backend, &fake, &[]).await else {
        return;
    };
    let (first, _) = publish(&hub, "request_submitted", request_submitted()).await;
    hub.wait_status(&first, "succeeded").await;
    let (stopped, db) = hub.stop().await;
    stopped.expect("clean stop");

    let without_token =
        TestHub::start_on(db, &[("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2")]).await;
    wait_connector(&without_token, "slack", "inactive").await;
    let (waiting, deliveries) =
        publish(&without_token, "request_submitted", request_submitted()).await;
    assert_eq!(deliveries, 1, "bound: routed although inactive");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let event = without_token.event(&waiting).await;
    assert_eq!(event["deliveries"][0]["status"], "pending", "{event}");
    assert!(without_token.attempts(&waiting).await.is_empty());
    let (stopped, db) = without_token.stop().await;
    stopped.expect("clean stop");

    let base = fake.url("/api");
    let host = fake.base.trim_start_matches("http://").to_owned();
    let vars = [
        ("IH_ALLOW_PRIVATE_DESTINATIONS", "true"),
        ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
        ("IH_SLACK_BOT_TOKEN", TOKEN),
        ("IH_SLACK_API_BASE_URL", base.as_str()),
        ("IH_SLACK_ALLOWED_HOSTS", host.as_str()),
    ];
    let with_token = TestHub::start_on(db, &vars).await;
    with_token.wait_status(&waiting, "succeeded").await;
    assert_eq!(
        fake.wait_for("/api/chat.postMessage", 2, WAIT).await.len(),
        2
    );
}

/// `IH_COMPONENTS_TRUSTED_KEYS`: a file signed by a listed key loads (and says who signed it); a
/// tampered one over it is refused while the signed version keeps serving; files signed by
/// another key, or not at all, are listed `failed` with the reason.
async fn a_trust_policy_loads_only_files_signed_by_a_trusted_key(backend: Backend) {
    use integrations_hub::connectors::signature;
    let trusted = signature::read_private_key(&signature::generate_key().expect("key").0)
        .expect("read the key");
    let stranger = signature::read_private_key(&signature::generate_key().expect("key").0)
        .expect("read the key");
    let public = signature::public_key(&trusted);
    let Some(hub) = TestHub::start_with(
        backend,
        &[("IH_COMPONENTS_TRUSTED_KEYS", &public.to_string())],
    )
    .await
    else {
        return;
    };
    let dir = hub.connectors_dir.clone();
    let signed = signature::sign(&fixture_wasm("fixture", "1.0.0"), &trusted).expect("sign");
    deploy(&dir, "fixture.wasm", &signed);
    let list = wait_connector(&hub, "fixture", "active").await;
    let fixture = list
        .iter()
        .find(|c| c["name"] == "fixture")
        .expect("listed");
    assert_eq!(fixture["signed_by"], public.id(), "{fixture}");
    let (before, _) = publish(&hub, "fixture.ok", json!({})).await;
    hub.wait_status(&before, "succeeded").await;

    // One byte changed after signing: refused, the signed version keeps serving.
    let mut tampered = signature::sign(&fixture_wasm("fixture", "1.0.1"), &trusted).expect("sign");
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x20;
    deploy(&dir, "fixture.wasm", &tampered);
    let fixture = wait_still_serving(&hub, "fixture", "signature does not verify").await;
    assert_eq!(fixture["version"], "1.0.0", "{fixture}");
    let (during, _) = publish(&hub, "fixture.ok", json!({})).await;
    hub.wait_status(&during, "succeeded").await;

    // Another key's signature, and none at all.
    let foreign = signature::sign(&fixture_wasm("foreign", "1.0.0"), &stranger).expect("sign");
    deploy(&dir, "foreign.wasm", &foreign);
    deploy(&dir, "plain.wasm", &fixture_wasm("plain", "1.0.0"));
    let stranger_id = signature::public_key(&stranger).id();
    let list = wait_listing(&hub, "foreign and plain refused", |l| {
        ["foreign", "plain"]
            .iter()
            .all(|n| l.iter().any(|c| c["name"] == *n && c["status"] == "failed"))
    })
    .await;
    let problem = |name: &str| {
        let c = list.iter().find(|c| c["name"] == name).expect("listed");
        c["problem"].as_str().unwrap_or_default().to_owned()
    };
    assert!(
        problem("foreign").contains(&format!("signed by key {stranger_id}")),
        "{}",
        problem("foreign")
    );
    assert!(
        problem("plain").contains("not signed"),
        "{}",
        problem("plain")
    );
}
