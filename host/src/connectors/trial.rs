//! `integrations-hub connector test`: one component run in the hub's own sandbox, without a
//! database or a hub — the same engine, limits, grant and imports — with scripted HTTP answers
//! (or real calls to granted hosts), reporting what it did.
//!
//! Invariants: with a script, no request leaves the process (the grant is still checked, so a
//! denial shows as the hub would give it); every request and log line of the call is in the
//! report, within the sandbox's own bounds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

pub use super::recorder::{Fixture, SeenLog, SeenRequest};
use super::recorder::{MAX_FIXTURES, Recorder};
use super::registry;
use super::runtime::{Runtime, SettingsRefused};
use super::{CallContext, CallOutcome, EventData, Shared, grant::Grant};
use crate::egress::Policy;
use crate::metrics::Metrics;

/// How a trial runs.
#[derive(Debug, Clone)]
pub struct TrialOptions {
    /// Settings, as an instance's (`config.get` answers these).
    pub settings: BTreeMap<String, String>,
    /// `Some`: scripted answers; `None`: real calls to granted hosts.
    pub fixtures: Option<Vec<Fixture>>,
    /// Replaces the manifest's hosts (as `IH_<NAME>_ALLOWED_HOSTS` does).
    pub allowed_hosts: Option<String>,
    pub timeout: Duration,
    pub memory_mb: u64,
    /// Which addresses real calls may reach (as `IH_ALLOW_PRIVATE_DESTINATIONS`).
    pub policy: Policy,
    pub attempt: u32,
    pub max_attempts: u32,
}

/// What a trial found.
#[derive(Debug, Clone)]
pub struct Trial {
    pub name: String,
    pub version: String,
    pub contract: &'static str,
    pub allowed_hosts: Vec<String>,
    /// The connector's own check of the settings (`None`: there were missing or unknown keys,
    /// listed in `problems`, so it was not asked).
    pub validated: Option<Result<(), String>>,
    /// Settings that do not fit the manifest.
    pub problems: Vec<String>,
    pub outcome: CallOutcome,
    pub requests: Vec<SeenRequest>,
    pub logs: Vec<SeenLog>,
    pub duration: Duration,
}

/// Compiles `bytes`, reads its manifest, checks `options.settings` (by the manifest, then the
/// connector's `validate`), and calls `handle(event)` once. `Err` when the component cannot be
/// loaded (the sentence the hub would list it `failed` with).
pub async fn run(bytes: Vec<u8>, event: EventData, options: TrialOptions) -> Result<Trial, String> {
    let client = crate::egress::build(
        options.timeout,
        &options.policy,
        &format!(
            "integrations-hub/{} (connector test)",
            env!("CARGO_PKG_VERSION")
        ),
    )
    .map_err(|e| format!("building the HTTP client: {e}"))?;
    let mut runtime = Runtime::new(
        options.timeout,
        options.memory_mb,
        1,
        client,
        options.policy.clone(),
        Arc::new(Metrics::new()),
    )?;
    let recorder = Arc::new(Recorder {
        script: options
            .fixtures
            .clone()
            .map(|f| Mutex::new(f.into_iter().take(MAX_FIXTURES).collect())),
        ..Recorder::default()
    });
    runtime.recorder = Some(recorder.clone());
    let compiled = registry::prepare(&runtime, "the file", bytes).await?;
    let manifest = &compiled.manifest;
    let grant = match &options.allowed_hosts {
        Some(list) => Grant::parse_list(list).map_err(|e| format!("--allow: {e}"))?,
        None => manifest.grant.clone(),
    };

    let declared = |key: &str| manifest.config.iter().any(|k| k.name == key);
    let mut problems: Vec<String> = (options.settings.keys())
        .filter(|key| !declared(key))
        .map(|key| format!("{key}: not a setting of {} (it is ignored)", manifest.name))
        .collect();
    problems.extend(
        (manifest.config.iter())
            .filter(|k| k.required && !options.settings.contains_key(&k.name))
            .map(|k| format!("{}: required ({})", k.name, k.description)),
    );
    let shared = |grant: Option<Grant>| {
        Arc::new(Shared {
            name: manifest.name.clone(),
            grant,
            settings: (options.settings.iter())
                .filter(|(key, _)| declared(key))
                .map(|(k, v)| (k.clone(), crate::config::Secret::new(v.clone())))
                .collect(),
        })
    };
    let validated = if problems.is_empty() {
        Some(
            match runtime.call_validate(&compiled.pre, shared(None)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(SettingsRefused { key, message })) => Err(match key {
                    Some(key) => format!("{key}: {message}"),
                    None => message,
                }),
                Err(why) => Err(format!("validate {why}")),
            },
        )
    } else {
        None
    };

    let context = CallContext {
        attempt: options.attempt,
        max_attempts: options.max_attempts,
        delivery_id: Uuid::now_v7(),
        instance_id: None,
        subscription_id: None,
        traceparent: None,
    };
    let started = Instant::now();
    let outcome = runtime
        .call_handle(&compiled.pre, shared(Some(grant.clone())), event, &context)
        .await;
    let duration = started.elapsed();
    Ok(Trial {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        contract: compiled.pre.contract(),
        allowed_hosts: grant.hosts().to_vec(),
        validated,
        problems,
        outcome,
        requests: take(&recorder.requests),
        logs: take(&recorder.logs),
        duration,
    })
}

fn take<T>(list: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *list.lock().unwrap_or_else(|p| p.into_inner()))
}
