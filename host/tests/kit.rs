//! The connector author kit as an author runs it: `connector new` writes a crate that builds to
//! a component, and `connector test` runs components in the sandbox with scripted HTTP answers
//! (the template, the 0.1 example, a hostile fixture), with exit codes a CI can use.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integrations_hub::connectors::BUILT_WASM_DIR;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_integrations-hub");

fn hub(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run the hub binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A component this build made (`build.rs`).
fn built(stem: &str) -> PathBuf {
    assert!(!BUILT_WASM_DIR.is_empty(), "the connectors were not built");
    Path::new(BUILT_WASM_DIR).join(format!("{stem}.wasm"))
}

fn write_json(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).expect("write");
    path.display().to_string()
}

#[test]
fn connector_test_runs_the_template_against_scripted_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let event = write_json(
        dir.path(),
        "event.json",
        &json!({"event_type": "order.paid", "payload": {"order": 42}}),
    );
    let ok = write_json(
        dir.path(),
        "ok.json",
        &json!([{"method": "POST", "url": "https://hooks.example.com/", "status": 204}]),
    );
    let file = built("connector_template");
    let file = file.to_str().expect("path");
    let run = |fixtures: &str, extra: &[&str]| {
        let mut args = vec![
            "connector",
            "test",
            file,
            "--event",
            &event,
            "--config",
            "webhook_url=https://hooks.example.com/in",
            "--config",
            "token=s3cret",
            "--http",
            fixtures,
        ];
        args.extend_from_slice(extra);
        hub(&args)
    };

    let out = run(&ok, &[]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    for line in [
        "connector  connector-template 0.1.0 (contract 0.2.0); may reach: hooks.example.com",
        "settings   accepted by its validate",
        "request    POST https://hooks.example.com/in → HTTP 204",
        "authorization: [hidden]",
        "\"order\":42",
        "log        debug forwarded event_id=",
        "outcome    ok (upstream status 204, external id —)",
        "result     PASS (expected ok)",
    ] {
        assert!(report.contains(line), "{line:?} missing from:\n{report}");
    }
    assert!(
        !report.contains("s3cret"),
        "a token is never printed:\n{report}"
    );

    // A 429 with Retry-After: `retry` after 7 s — a failure unless it is what is expected.
    let limited = write_json(
        dir.path(),
        "limited.json",
        &json!([{"url": "https://hooks.example.com/", "status": 429, "headers": {"retry-after": "7"}}]),
    );
    let out = run(&limited, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let out = run(&limited, &["--expect", "retry", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(
        report["outcome"],
        json!({"kind": "retry", "reason": "HTTP 429", "after_ms": 7000, "upstream_status": 429})
    );
    assert_eq!(report["requests"][0]["answer"], "HTTP 429");
    assert_eq!(report["passed"], true);

    // Nothing scripted for the URL: a connection error, retried; no request leaves the process.
    let elsewhere = write_json(dir.path(), "none.json", &json!([]));
    let out = run(&elsewhere, &["--expect", "retry"]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("no scripted answer for POST"), "{report}");

    // Settings the connector refuses, and a required one missing.
    let out = hub(&[
        "connector",
        "test",
        file,
        "--event",
        &event,
        "--config",
        "webhook_url=nope",
        "--http",
        &ok,
    ]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("settings   refused by its validate: webhook_url: must be an http(s) URL"),
        "{report}"
    );
    let out = hub(&["connector", "test", file, "--event", &event, "--http", &ok]);
    assert!(
        text(&out.stdout).contains("setting    webhook_url: required"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn connector_test_runs_0_1_components_and_reports_the_sandbox_stopping_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ping = write_json(
        dir.path(),
        "ping.json",
        &json!({"event_type": "example.ping", "payload": {}}),
    );
    let fixtures = write_json(
        dir.path(),
        "fixtures.json",
        &json!([{"method": "POST", "url": "https://example.com/", "status": 200}]),
    );
    let example = built("example_connector");
    let out = hub(&[
        "connector",
        "test",
        example.to_str().expect("path"),
        "--event",
        &ping,
        "--config",
        "target_url=https://example.com/in",
        "--http",
        &fixtures,
    ]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    assert!(report.contains("(contract 0.1.0)"), "{report}");
    assert!(
        report.contains("request    POST https://example.com/in → HTTP 200"),
        "{report}"
    );

    // The fixture's infinite loop: stopped at the budget, reported as a timeout.
    let looping = write_json(
        dir.path(),
        "loop.json",
        &json!({"event_type": "fixture.loop"}),
    );
    let fixture = built("fixture_connector");
    let out = hub(&[
        "connector",
        "test",
        fixture.to_str().expect("path"),
        "--event",
        &looping,
        "--timeout-seconds",
        "0.3",
        "--http",
        &fixtures,
    ]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("timeout (the sandbox stopped it): timed out after 0.3s"),
        "{report}"
    );

    // Unusable input is a usage error (2), with a sentence.
    let out = hub(&["connector", "test", "/nonexistent.wasm", "--event", &ping]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("reading /nonexistent.wasm"),
        "{}",
        text(&out.stderr)
    );
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").expect("write");
    let out = hub(&[
        "connector",
        "test",
        garbage.to_str().expect("path"),
        "--event",
        &ping,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a WebAssembly file"),
        "{}",
        text(&out.stderr)
    );
}

/// `connector new`, then the plain wasm32-wasip2 build an author runs, then `connector test` on
/// what it built: the path the README promises, end to end.
#[test]
fn connector_new_writes_a_crate_that_builds_into_a_working_component() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crate_dir = dir.path().join("order-alerts");
    let out = hub(&[
        "connector",
        "new",
        "order-alerts",
        "--dir",
        crate_dir.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("wrote"), "{}", text(&out.stdout));
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "sdk/src/lib.rs",
        "sdk/src/mock.rs",
        "sdk/wit/connector.wit",
        "README.md",
        "event.json",
    ] {
        assert!(crate_dir.join(file).is_file(), "{file} written");
    }
    let again = hub(&[
        "connector",
        "new",
        "order-alerts",
        "--dir",
        crate_dir.to_str().expect("path"),
    ]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing directory is never overwritten"
    );

    // Build it as an author would, sharing this build's wasm dependencies to stay quick.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("connectors-wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .current_dir(&crate_dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--offline",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo build");
    assert!(built.status.success(), "{}", text(&built.stderr));
    let wasm = target.join("wasm32-wasip2/release/order_alerts.wasm");

    let event = crate_dir.join("event.json");
    let fixtures = write_json(
        dir.path(),
        "fixtures.json",
        &json!([{"method": "POST", "url": "https://hooks.example.com/", "status": 200}]),
    );
    let out = hub(&[
        "connector",
        "test",
        wasm.to_str().expect("path"),
        "--event",
        event.to_str().expect("path"),
        "--config",
        "webhook_url=https://hooks.example.com/orders",
        "--http",
        &fixtures,
    ]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    assert!(
        report.contains("connector  order-alerts 0.1.0 (contract 0.2.0)"),
        "{report}"
    );
    assert!(
        report.contains("\"order_id\":\"ord_1042\""),
        "the example event was sent: {report}"
    );
}
