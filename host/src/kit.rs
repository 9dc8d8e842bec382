//! The connector author kit: `integrations-hub connector new` writes a standalone crate from
//! the template (`connectors/template`, with the SDK `connectors/sdk` and the contract
//! `wit/connector.wit` copied in, all embedded in this binary), and `connector test` runs a
//! component once in the hub's sandbox ([`crate::connectors::trial`]) and says what it did;
//! `connector keygen|sign|verify` handle signatures ([`crate::connectors::signature`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::settings;
use crate::connectors::manifest::is_name;
use crate::connectors::signature;
use crate::connectors::trial::{self, Fixture, Trial, TrialOptions};
use crate::connectors::{CallOutcome, EventData};

/// The files `connector new` writes: path in the new crate, and text (before naming).
const FILES: [(&str, &str); 8] = [
    (
        "Cargo.toml",
        include_str!("../../connectors/template/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../connectors/template/src/lib.rs"),
    ),
    (
        "sdk/Cargo.toml",
        include_str!("../../connectors/sdk/Cargo.toml"),
    ),
    (
        "sdk/src/lib.rs",
        include_str!("../../connectors/sdk/src/lib.rs"),
    ),
    (
        "sdk/src/format.rs",
        include_str!("../../connectors/sdk/src/format.rs"),
    ),
    (
        "sdk/src/mock.rs",
        include_str!("../../connectors/sdk/src/mock.rs"),
    ),
    (
        "sdk/wit/connector.wit",
        include_str!("../../wit/connector.wit"),
    ),
    ("event.json", EXAMPLE_EVENT),
];

const EXAMPLE_EVENT: &str = r#"{
  "event_type": "order.paid",
  "payload": {"order_id": "ord_1042", "total": 129.5, "currency": "EUR"}
}
"#;

/// What makes the new crate standalone and its component small.
const CARGO_TAIL: &str = r#"
# Not part of any enclosing workspace.
[workspace]

# Small components load faster: optimise for size, strip symbols.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#;

/// `my-thing` → `MyThing`.
fn camel(name: &str) -> String {
    name.split(['-', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |c| {
                c.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The template's text for connector `name`.
fn named(text: &str, name: &str) -> String {
    let snake = name.replace('-', "_");
    text.replace("ConnectorTemplate", &camel(name))
        .replace(
            "IH_CONNECTOR_TEMPLATE_",
            &format!("IH_{}_", snake.to_ascii_uppercase()),
        )
        .replace("connector_template", &snake)
        .replace("connector-template", name)
        .replace("path = \"../sdk\"", "path = \"sdk\"")
}

fn readme(name: &str) -> String {
    let snake = name.replace('-', "_");
    let upper = snake.to_ascii_uppercase();
    format!(
        "# {name}\n\n\
         An Integrations Hub connector, made with `integrations-hub connector new`. It forwards\n\
         each event as a JSON POST to `webhook_url`; change `src/lib.rs` to speak your service's API.\n\n\
         ```bash\n\
         cargo test                                             # native unit tests (mock host)\n\
         rustup target add wasm32-wasip2                        # once\n\
         cargo build --release --target wasm32-wasip2           # → target/wasm32-wasip2/release/{snake}.wasm\n\
         integrations-hub connector test target/wasm32-wasip2/release/{snake}.wasm \\\n\
         \x20   --event event.json --config webhook_url=https://hooks.example.com/in \\\n\
         \x20   --http fixtures.json                               # scripted answers, no network\n\
         ```\n\n\
         `fixtures.json` lists answers by URL prefix:\n\
         `[{{\"method\": \"POST\", \"url\": \"https://hooks.example.com/\", \"status\": 204}}]`.\n\n\
         Deploy: copy the file to a temporary name inside the hub's `IH_CONNECTORS_DIR` and rename\n\
         it into place (the hub must never see half a file), readable by the hub's user:\n\n\
         ```bash\n\
         install -m 0644 target/wasm32-wasip2/release/{snake}.wasm $IH_CONNECTORS_DIR/.{name}.wasm.tmp\n\
         mv $IH_CONNECTORS_DIR/.{name}.wasm.tmp $IH_CONNECTORS_DIR/{name}.wasm\n\
         ```\n\n\
         Configure the default instance with `IH_{upper}_WEBHOOK_URL` (and\n\
         `IH_{upper}_ALLOWED_HOSTS` for another host than the manifest's), or create instances\n\
         through the API: `POST /api/v1/connectors/{name}/instances`.\n\n\
         `sdk/` is the connector SDK (`integrations-hub-connector`) and `sdk/wit/` the contract\n\
         (`integrations-hub:connector@0.2.0`), copied from the hub that made this crate.\n"
    )
}

/// Writes a new connector crate `name` into `dir` (which must not exist); answers the files
/// written.
pub fn new_connector(name: &str, dir: &Path) -> Result<Vec<PathBuf>, String> {
    if !is_name(name) {
        return Err(format!(
            "{name:?} is not a connector name: lower-case letters, digits, `-` and `_`, starting \
             with a letter, at most 63 characters"
        ));
    }
    if dir.exists() {
        return Err(format!(
            "{} already exists: choose another name or --dir",
            dir.display()
        ));
    }
    let mut written = Vec::new();
    let mut files: Vec<(&str, String)> = FILES
        .iter()
        .map(|(path, text)| (*path, named(text, name)))
        .collect();
    files[0].1.push_str(CARGO_TAIL);
    files.push(("README.md", readme(name)));
    files.push((".gitignore", "/target\n".into()));
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The event file of `connector test`: the publish API's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFile {
    event_type: String,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
}

/// `connector test`'s arguments (the CLI's, by clap).
#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    /// The component (.wasm)
    pub file: PathBuf,
    /// The event, as the publish API takes it: {"event_type": …, "payload": {…}}
    #[arg(long)]
    pub event: PathBuf,
    /// A setting, as an instance's (repeatable)
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Scripted HTTP answers (JSON list of {method, url, status, headers, body}, matched by URL
    /// prefix); without it, requests go to the granted hosts for real
    #[arg(long, value_name = "FIXTURES.json")]
    pub http: Option<PathBuf>,
    /// Replaces the manifest's allowed hosts (as IH_<NAME>_ALLOWED_HOSTS)
    #[arg(long, value_name = "HOSTS")]
    pub allow: Option<String>,
    /// Lets real requests reach private addresses (as IH_ALLOW_PRIVATE_DESTINATIONS)
    #[arg(long)]
    pub allow_private: bool,
    /// The attempt number the connector is told
    #[arg(long, default_value_t = 1)]
    pub attempt: u32,
    /// The attempt budget the connector is told
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// The call's time budget (as IH_CONNECTOR_TIMEOUT_SECONDS)
    #[arg(long, default_value = settings::CONNECTOR_TIMEOUT.default)]
    pub timeout_seconds: f64,
    /// The memory limit (as IH_CONNECTOR_MEMORY_MB)
    #[arg(long, default_value = settings::CONNECTOR_MEMORY_MB.default)]
    pub memory_mb: u64,
    /// The outcome that passes: ok, skipped, retry, permanent or any
    #[arg(long, default_value = "ok")]
    pub expect: String,
    /// Print the report as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// Runs `connector test`: answers the report to print and whether it passed. `Err` for a file,
/// event, setting or fixture that cannot be used, or a component that does not load.
pub async fn test_connector(args: &TestArgs) -> Result<(String, bool), String> {
    const OUTCOMES: [&str; 5] = ["ok", "skipped", "retry", "permanent", "any"];
    if !OUTCOMES.contains(&args.expect.as_str()) {
        return Err(format!("--expect must be one of {OUTCOMES:?}"));
    }
    // The bounds of the hub's own settings.
    if let settings::Kind::Seconds { min, max } = settings::CONNECTOR_TIMEOUT.kind
        && !(min..=max).contains(&args.timeout_seconds)
    {
        return Err(format!("--timeout-seconds must be {min} to {max}"));
    }
    if let settings::Kind::Integer { min, max } = settings::CONNECTOR_MEMORY_MB.kind
        && !(min..=max).contains(&args.memory_mb)
    {
        return Err(format!("--memory-mb must be {min} to {max}"));
    }
    let bytes =
        std::fs::read(&args.file).map_err(|e| format!("reading {}: {e}", args.file.display()))?;
    let event = read_event(&args.event)?;
    let mut settings = BTreeMap::new();
    for pair in &args.config {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("--config {pair:?}: write KEY=VALUE"));
        };
        settings.insert(key.to_owned(), value.to_owned());
    }
    let fixtures = match &args.http {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let fixtures: Vec<Fixture> = serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{}: {e} (expected a list of {{\"method\", \"url\", \"status\", \"headers\", \"body\"}})",
                    path.display()
                )
            })?;
            Some(fixtures)
        }
    };
    let options = TrialOptions {
        settings,
        fixtures,
        allowed_hosts: args.allow.clone(),
        timeout: Duration::from_secs_f64(args.timeout_seconds),
        memory_mb: args.memory_mb,
        policy: crate::egress::Policy::new(args.allow_private, &[]),
        attempt: args.attempt.max(1),
        max_attempts: args.max_attempts.max(1),
    };
    let trial = trial::run(bytes, event, options)
        .await
        .map_err(|why| format!("{} does not load: {why}", args.file.display()))?;
    let passed = trial.problems.is_empty()
        && trial.validated.as_ref().is_some_and(Result::is_ok)
        && (args.expect == "any" || trial.outcome.label() == args.expect);
    let report = if args.json {
        json_report(&trial, passed)
    } else {
        text_report(&trial, &args.expect, passed)
    };
    Ok((report, passed))
}

fn read_event(path: &Path) -> Result<EventData, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let file: EventFile = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: {e} (expected {{\"event_type\": \"order.paid\", \"payload\": {{…}}}})",
            path.display()
        )
    })?;
    if !crate::model::names::is_event_type(&file.event_type) {
        return Err(format!(
            "{}: event_type {:?} {}",
            path.display(),
            file.event_type,
            crate::model::names::EVENT_TYPE_RULE
        ));
    }
    let payload = file.payload.unwrap_or_else(|| serde_json::json!({}));
    if !payload.is_object() {
        return Err(format!("{}: payload must be a JSON object", path.display()));
    }
    Ok(EventData {
        id: file.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        event_type: file.event_type,
        created_at: file.created_at.unwrap_or_else(|| {
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        }),
        payload: payload.to_string(),
    })
}

fn outcome_text(outcome: &CallOutcome) -> String {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    match outcome {
        CallOutcome::Delivered {
            upstream_status,
            external_id,
        } => format!(
            "ok (upstream status {}, external id {})",
            or_dash(upstream_status.map(|s| s.to_string())),
            or_dash(external_id.clone())
        ),
        CallOutcome::Skipped(reason) => format!("skipped: {reason}"),
        CallOutcome::Retry {
            reason,
            after,
            upstream_status,
        } => format!(
            "retry: {reason} (after {}, upstream status {})",
            or_dash(after.map(|a| format!("{} ms", a.as_millis()))),
            or_dash(upstream_status.map(|s| s.to_string()))
        ),
        CallOutcome::Permanent(reason) => format!("permanent: {reason}"),
        CallOutcome::Failed(_, why) => {
            format!("{} (the sandbox stopped it): {why}", outcome.label())
        }
    }
}

fn text_report(trial: &Trial, expect: &str, passed: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "connector  {} {} (contract {}); may reach: {}",
        trial.name,
        trial.version,
        trial.contract,
        if trial.allowed_hosts.is_empty() {
            "nothing".to_owned()
        } else {
            trial.allowed_hosts.join(", ")
        }
    );
    for problem in &trial.problems {
        let _ = writeln!(out, "setting    {problem}");
    }
    match &trial.validated {
        Some(Ok(())) => {
            let _ = writeln!(out, "settings   accepted by its validate");
        }
        Some(Err(why)) => {
            let _ = writeln!(out, "settings   refused by its validate: {why}");
        }
        None => {}
    }
    for r in &trial.requests {
        let _ = writeln!(out, "request    {} {} → {}", r.method, r.url, r.answer);
        for (name, value) in &r.headers {
            let shown = if name.eq_ignore_ascii_case("authorization") {
                "[hidden]"
            } else {
                value
            };
            let _ = writeln!(out, "             {name}: {shown}");
        }
        if !r.body.is_empty() {
            let _ = writeln!(out, "             {}", r.body);
        }
    }
    for l in &trial.logs {
        let fields: Vec<String> = (l.fields.iter())
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        let _ = writeln!(
            out,
            "log        {:<5} {} {}",
            l.level,
            l.message,
            fields.join(" ")
        );
    }
    let _ = writeln!(out, "outcome    {}", outcome_text(&trial.outcome));
    let _ = writeln!(
        out,
        "duration   {:.1} ms",
        trial.duration.as_secs_f64() * 1e3
    );
    let _ = write!(
        out,
        "result     {} (expected {expect})",
        if passed { "PASS" } else { "FAIL" }
    );
    out
}

fn json_report(trial: &Trial, passed: bool) -> String {
    let outcome = match &trial.outcome {
        CallOutcome::Delivered {
            upstream_status,
            external_id,
        } => {
            serde_json::json!({"kind": "ok", "upstream_status": upstream_status, "external_id": external_id})
        }
        CallOutcome::Skipped(reason) => serde_json::json!({"kind": "skipped", "reason": reason}),
        CallOutcome::Retry {
            reason,
            after,
            upstream_status,
        } => serde_json::json!({
            "kind": "retry", "reason": reason,
            "after_ms": after.map(|a| a.as_millis() as u64), "upstream_status": upstream_status,
        }),
        CallOutcome::Permanent(reason) => {
            serde_json::json!({"kind": "permanent", "reason": reason})
        }
        CallOutcome::Failed(_, why) => {
            serde_json::json!({"kind": trial.outcome.label(), "reason": why})
        }
    };
    serde_json::json!({
        "connector": trial.name,
        "version": trial.version,
        "contract": trial.contract,
        "allowed_hosts": trial.allowed_hosts,
        "setting_problems": trial.problems,
        "validate": trial.validated.as_ref().map(|v| match v {
            Ok(()) => serde_json::json!({"ok": true}),
            Err(why) => serde_json::json!({"ok": false, "error": why}),
        }),
        "requests": trial.requests,
        "logs": trial.logs,
        "outcome": outcome,
        "duration_ms": trial.duration.as_secs_f64() * 1e3,
        "passed": passed,
    })
    .to_string()
}

/// `connector keygen`: writes a new ed25519 private key (PKCS#8 PEM, readable by its owner
/// only) to `out`, which must not exist, and returns the public key to trust.
pub fn keygen(out: &Path) -> Result<String, String> {
    let (pem, public) = signature::generate_key()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(out)
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    std::io::Write::write_all(&mut file, pem.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(public.to_string())
}

/// `connector sign`: signs `file` with the private key in `key`, writing `out` (default: the
/// file itself, replaced whole through a temporary file so a watching hub never reads half of
/// it). Returns the signer's key id.
pub fn sign(file: &Path, key: &Path, out: Option<&Path>) -> Result<String, String> {
    let text = std::fs::read_to_string(key)
        .map_err(|e| format!("cannot read the key {}: {e}", key.display()))?;
    let pair = signature::read_private_key(&text).map_err(|e| format!("{}: {e}", key.display()))?;
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let signed = signature::sign(&bytes, &pair).map_err(|e| format!("{}: {e}", file.display()))?;
    let out = out.unwrap_or(file);
    let temporary = out.with_extension("wasm.signing");
    std::fs::write(&temporary, signed)
        .and_then(|()| std::fs::rename(&temporary, out))
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(signature::public_key(&pair).id())
}

/// `connector verify`: who signed `file`, as one line; `Err` when it is unsigned or its
/// signature does not verify.
pub fn verify(file: &Path) -> Result<String, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    match signature::inspect(&bytes) {
        signature::Signed::By(key) => Ok(format!(
            "{}: signed by key {} (public key {key})",
            file.display(),
            key.id()
        )),
        signature::Signed::Unsigned => Err(format!("{}: not signed", file.display())),
        signature::Signed::Invalid(why) => Err(format!("{}: {why}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_named_after_the_connector() {
        let lib = named(FILES[1].1, "order-alerts");
        assert!(lib.contains("pub struct OrderAlerts;"));
        assert!(lib.contains("Manifest::new(\n            \"order-alerts\","));
        assert!(lib.contains("IH_ORDER_ALERTS_ALLOWED_HOSTS"));
        assert!(!lib.contains("emplate"), "no trace of the template's name");
        let cargo = named(FILES[0].1, "order-alerts");
        assert!(cargo.contains("name = \"order-alerts\""));
        assert!(cargo.contains("path = \"sdk\""));
    }

    /// Every source file of the SDK and the template is written by `connector new`.
    #[test]
    fn every_sdk_and_template_file_is_embedded() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (dir, prefix) in [
            ("connectors/sdk/src", "sdk/src"),
            ("connectors/template/src", "src"),
        ] {
            let entries = std::fs::read_dir(workspace.join(dir)).expect("source folder");
            for entry in entries {
                let name = entry.expect("entry").file_name();
                let path = format!("{prefix}/{}", name.to_string_lossy());
                assert!(
                    FILES.iter().any(|(p, _)| *p == path),
                    "{path} is not in kit.rs's FILES"
                );
            }
        }
    }

    #[test]
    fn new_refuses_bad_names_and_existing_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(new_connector("Bad Name", &dir.path().join("x")).is_err());
        let taken = new_connector("fine", dir.path()).expect_err("exists");
        assert!(taken.contains("already exists"), "{taken}");
        let made = new_connector("fine", &dir.path().join("fine")).expect("written");
        assert!(made.iter().any(|p| p.ends_with("sdk/wit/connector.wit")));
    }
}
