//! Builds the workspace's connectors as wasm32-wasip2 components, and leaves the Slack one in
//! `OUT_DIR/slack.wasm`, so the hub carries it built in: `cargo run` has Slack available with
//! nothing else to install. The example connector, the test fixture and the template of
//! `integrations-hub connector new` are built in the same cargo run (they share its dependencies); the tests find them through `IH_BUILT_WASM_DIR`.
//!
//! The nested cargo uses its own target directory (`target/connectors-wasm`), so it never waits
//! on the outer build's lock and keeps its own incremental cache. When it cannot run (no
//! wasm32-wasip2 target, or a packaged crate without the connector's sources) the hub is built
//! without the built-in connector and says so at start-up; under `CI=true` that is an error.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env("OUT_DIR")).join("slack.wasm");
    let workspace = manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let slack = workspace.join("connectors/slack");
    for watched in [
        "connectors",
        "tests/fixtures/connector",
        "tests/fixtures/transform",
        "transforms",
        "wit",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=IH_SKIP_BUILTIN_CONNECTORS");
    // Under CI=true a failed connector build is an error instead of a warning.
    println!("cargo:rerun-if-env-changed=CI");

    let built = if std::env::var_os("IH_SKIP_BUILTIN_CONNECTORS").is_some() {
        Err("IH_SKIP_BUILTIN_CONNECTORS is set".to_owned())
    } else if !slack.join("Cargo.toml").exists() {
        Err(format!("{} is missing", slack.display()))
    } else {
        build_connectors(&workspace)
    };
    match built {
        Ok(dir) => {
            let wasm = dir.join("slack_connector.wasm");
            std::fs::copy(&wasm, &out)
                .unwrap_or_else(|e| panic!("copying {}: {e}", wasm.display()));
            println!("cargo:rustc-env=IH_BUILT_WASM_DIR={}", dir.display());
        }
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("building the built-in Slack connector failed: {why}");
            }
            println!("cargo:warning=the hub is built without its built-in Slack connector: {why}");
            std::fs::write(&out, b"").unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
            println!("cargo:rustc-env=IH_BUILT_WASM_DIR=");
        }
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}

/// The connectors built here (cargo packages), all into one target directory.
const PACKAGES: [&str; 11] = [
    "slack-connector",
    "example-connector",
    "fixture-connector",
    "connector-template",
    "discord-connector",
    "teams-connector",
    "pagerduty-connector",
    "slack-text-transform",
    "cloudevents-transform",
    "require-field-transform",
    "fixture-transform",
];

fn build_connectors(workspace: &Path) -> Result<PathBuf, String> {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("connectors-wasm");
    ensure_wasm_target(workspace);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(PACKAGES.iter().flat_map(|p| ["-p", p]))
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings are for the host, not for this wasm build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_TARGET_")
            || key.starts_with("CARGO_ENCODED_")
            || matches!(
                &*key,
                "RUSTFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER" | "CARGO_TARGET_DIR"
            )
        {
            command.env_remove(&*key);
        }
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "`cargo build --release --target wasm32-wasip2` of the connectors failed \
             (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
            tail.join("\n")
        ));
    }
    Ok(target_dir.join("wasm32-wasip2/release"))
}

/// rustup installs the toolchain `rust-toolchain.toml` names when it is missing, but not the
/// targets listed there when the toolchain is already present (a machine with rustc 1.95 and
/// no wasm target). Adding it here keeps `cargo run` the only command a fresh clone needs.
fn ensure_wasm_target(workspace: &Path) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(sysroot) = sysroot else { return };
    if sysroot.join("lib/rustlib/wasm32-wasip2").is_dir() {
        return;
    }
    let mut rustup = Command::new("rustup");
    rustup
        .current_dir(workspace)
        .args(["target", "add", "wasm32-wasip2"]);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    // On failure the connector build below fails and says what to do.
    if rustup.output().is_ok_and(|o| o.status.success()) {
        println!(
            "cargo:warning=installed the wasm32-wasip2 target (rustup target add) to build the connectors"
        );
    }
}
