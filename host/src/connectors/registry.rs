//! The registry: every `*.wasm` in `IH_CONNECTORS_DIR`, plus the built-in Slack connector,
//! loaded, validated and kept current while the hub runs.
//!
//! Invariants:
//! - readers (publish routing, deliveries, the API) see one immutable [`Snapshot`]; a rescan
//!   builds a new one and swaps it in, so a call in flight keeps the version it started with;
//! - a file is compiled again only when its bytes change (compared by SHA-256);
//! - a file that cannot load, or whose name another connector already has, is listed as
//!   `failed` with the reason and changes nothing else: the connector that had the name first
//!   keeps it, and the built-in Slack connector yields only to a file that names itself `slack`;
//! - a connector with a required key unset is `inactive`: listed, but routed nothing;
//! - changes in the directory take effect within [`watch::SETTLE`] plus one load (well under 2 s), via
//!   the notify watcher, with a slower poll as the fallback (`registry/watch.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::grant::Grant;
use super::manifest::{self, Manifest};
use super::outcome::{CallContext, CallOutcome, EventData, FailureKind};
use super::runtime::{Prepared, Runtime};
use super::signature::PublicKey;
use super::transform::{Reuse, TransformError, TransformInput, Transformed, WarmInstances};
pub use super::view::{ComponentKind, ConnectorStatus, ConnectorView};
use super::{Shared, setting_variable};
use crate::config::{ConnectorConfig, Secret};
use crate::egress::Policy;
use crate::metrics::Metrics;
use crate::model;

mod candidate;
mod instances;
mod watch;
use crate::store::Store;
use candidate::{Candidate, load};

/// Files considered in the directory (the rest are ignored, with a warning).
pub const MAX_FILES: usize = 256;
/// Largest `.wasm` file loaded.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// The Slack connector, compiled to a component by `build.rs` (empty if that build was skipped).
const BUILTIN_SLACK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/slack.wasm"));

/// A loaded connector that can be called.
struct Loaded {
    pre: Prepared,
    shared: Arc<Shared>,
    manifest: Manifest,
}

struct Entry {
    view: ConnectorView,
    /// Present for `active` and `inactive` connectors.
    loaded: Option<Arc<Loaded>>,
}

impl Entry {
    /// Whether this instance runs it as a connector: loaded, active, not a transform.
    fn runs(&self) -> bool {
        self.view.status == ConnectorStatus::Active
            && self.loaded.as_ref().is_some_and(|l| !l.pre.is_transform())
    }

    fn is_transform(&self) -> bool {
        self.view.kind == ComponentKind::Transform
    }
}

/// What the registry holds at one moment; replaced whole on every change.
#[derive(Default)]
struct Snapshot {
    /// By name; failed files that have no name of their own are keyed by source.
    entries: BTreeMap<String, Entry>,
}

/// A compiled component and its validated manifest (not yet bound to configuration).
pub(super) struct Compiled {
    pub(super) pre: Prepared,
    pub(super) manifest: Manifest,
}

/// The connector registry of one hub instance.
pub struct Connectors {
    runtime: Runtime,
    dir: PathBuf,
    /// Every connector setting from the environment (`SLACK_BOT_TOKEN` → value).
    settings: BTreeMap<String, Secret>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Files as last loaded, by path; also serialises rescans.
    files: tokio::sync::Mutex<HashMap<PathBuf, Candidate>>,
    builtins: Vec<Candidate>,
    seen: std::sync::atomic::AtomicU64,
    /// Where bindings are kept; `None` runs connectors without routing (benchmarks).
    store: Option<Arc<dyn Store>>,
    /// `IH_COMPONENTS_TRUSTED_KEYS`: when not empty, files must be signed by one of these.
    trusted: Vec<PublicKey>,
    /// Transform instances between deliveries.
    warm: WarmInstances,
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connectors")
            .field("dir", &self.dir)
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

impl Connectors {
    /// Builds the runtime, creates the directory if needed and loads what is there.
    pub async fn start(
        config: &ConnectorConfig,
        concurrency: usize,
        client: reqwest::Client,
        policy: Policy,
        metrics: Arc<Metrics>,
        store: Option<Arc<dyn Store>>,
    ) -> Result<Arc<Self>, String> {
        std::fs::create_dir_all(&config.dir).map_err(|e| {
            format!(
                "IH_CONNECTORS_DIR: cannot create {}: {e}",
                config.dir.display()
            )
        })?;
        let runtime = Runtime::new(
            config.timeout,
            config.memory_mb,
            concurrency,
            client,
            policy,
            metrics,
        )?;
        let mut builtins = Vec::new();
        if BUILTIN_SLACK.is_empty() {
            tracing::warn!(
                "this build has no built-in Slack connector (the wasm32-wasip2 target was missing when it was built)"
            );
        } else {
            let sha = hex::encode(Sha256::digest(BUILTIN_SLACK));
            builtins.push(
                load(
                    &runtime,
                    "builtin".into(),
                    BUILTIN_SLACK.to_vec(),
                    sha,
                    None,
                )
                .await,
            );
        }
        let connectors = Arc::new(Self {
            runtime,
            dir: config.dir.clone(),
            settings: config.settings.clone(),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            files: tokio::sync::Mutex::new(HashMap::new()),
            builtins,
            seen: std::sync::atomic::AtomicU64::new(0),
            store,
            trusted: config.trusted_keys.iter().copied().map(PublicKey).collect(),
            warm: WarmInstances::default(),
        });
        connectors.rescan().await;
        Ok(connectors)
    }

    /// The wall-clock budget of one connector call.
    pub fn timeout(&self) -> Duration {
        self.runtime.timeout()
    }

    /// Whether the `IH_*` variable `name` (without the prefix) is read by a connector known
    /// here: a loaded one's declared setting or grant, or anything under a failed one's name.
    pub fn reads_variable(&self, name: &str) -> bool {
        self.current().entries.values().any(|e| match &e.loaded {
            Some(l) => {
                let m = &l.manifest;
                let keys = m.config.iter().map(|k| k.name.as_str());
                keys.chain(["allowed_hosts"])
                    .any(|key| setting_variable(&m.name, key) == name)
            }
            None => name.starts_with(&setting_variable(&e.view.name, "")),
        })
    }

    /// Every connector, by name (files that failed to load included, whatever they are).
    pub fn list(&self) -> Vec<ConnectorView> {
        self.views(|e| !e.is_transform())
    }

    /// Every transform, by name.
    pub fn transforms(&self) -> Vec<ConnectorView> {
        self.views(Entry::is_transform)
    }

    fn views(&self, test: impl Fn(&Entry) -> bool) -> Vec<ConnectorView> {
        let snapshot = self.current();
        let passing = snapshot.entries.values().filter(|e| test(e));
        passing.map(|e| e.view.clone()).collect()
    }

    /// `Ok` when transform `name` is loaded here; otherwise why not.
    pub fn transform_available(&self, name: &str) -> Result<(), String> {
        self.loaded_transform(name).map(drop)
    }

    /// Transform `name` as loaded now, or why it is not.
    fn loaded_transform(&self, name: &str) -> Result<Arc<Loaded>, String> {
        let snapshot = self.current();
        match snapshot.entries.get(name) {
            Some(entry) if entry.is_transform() => entry.loaded.clone().ok_or_else(|| {
                format!(
                    "transform {name:?} is not loaded: {}",
                    entry.view.problem.as_deref().unwrap_or("unknown problem")
                )
            }),
            Some(entry) if entry.loaded.is_some() => {
                Err(format!("{name:?} is a connector, not a transform"))
            }
            Some(entry) => Err(format!(
                "transform {name:?} is not loaded: {}",
                entry.view.problem.as_deref().unwrap_or("unknown problem")
            )),
            None => Err(format!("transform {name:?} is not loaded in this hub")),
        }
    }

    /// Runs transform `name` on one delivery (or a dry run: [`Reuse::Fresh`]).
    pub async fn transform(
        &self,
        name: &str,
        input: TransformInput,
        reuse: Reuse,
    ) -> Result<Transformed, TransformError> {
        let started = Instant::now();
        let loaded = self
            .loaded_transform(name)
            .map_err(TransformError::Unavailable)?;
        let Prepared::Transform(pre) = &loaded.pre else {
            return Err(TransformError::Unavailable(format!(
                "{name:?} is not a transform"
            )));
        };
        let result = (self.runtime)
            .call_transform(pre, loaded.shared.clone(), input, reuse, &self.warm)
            .await;
        let label = match &result {
            Ok(Transformed::Deliver(_) | Transformed::Keep) => "ok",
            Ok(Transformed::Drop(_)) => "dropped",
            Err(TransformError::Unavailable(_)) => "unavailable",
            Err(TransformError::Failed(..)) => "failed",
        };
        self.runtime
            .metrics
            .transform_called(name, label, started.elapsed());
        result
    }

    /// Names of the connectors this instance can run now (active): the engine claims
    /// deliveries for these only; those of others wait.
    pub fn running(&self) -> Vec<String> {
        self.names(Entry::runs)
    }

    /// Whether connector `name` runs here now (see [`Connectors::running`]).
    pub fn is_running(&self, name: &str) -> bool {
        self.has(name, Entry::runs)
    }

    /// Names of the connectors whose entry passes `test`.
    fn names(&self, test: fn(&Entry) -> bool) -> Vec<String> {
        let snapshot = self.current();
        let passing = snapshot.entries.values().filter(|e| test(e));
        passing.map(|e| e.view.name.clone()).collect()
    }

    /// Whether connector `name` has an entry that passes `test`.
    fn has(&self, name: &str, test: fn(&Entry) -> bool) -> bool {
        self.current().entries.get(name).is_some_and(test)
    }

    /// Hands one event to connector `name` and reports what came of it: to its default
    /// instance (settings from the environment; it must be active), or, with `settings`, to an
    /// instance (its component loaded here, active or not).
    pub async fn invoke(
        &self,
        name: &str,
        event: EventData,
        settings: Option<&BTreeMap<String, String>>,
        context: &CallContext,
    ) -> CallOutcome {
        let started = Instant::now();
        let loaded = {
            let snapshot = self.current();
            match (snapshot.entries.get(name), settings) {
                (
                    Some(Entry {
                        loaded: Some(loaded),
                        ..
                    }),
                    Some(settings),
                ) => Ok((
                    loaded.clone(),
                    Self::instance_shared(
                        &loaded.shared.name,
                        loaded.shared.grant.clone(),
                        settings,
                    ),
                )),
                (
                    Some(Entry {
                        loaded: Some(loaded),
                        view,
                    }),
                    None,
                ) if view.status == ConnectorStatus::Active => {
                    Ok((loaded.clone(), loaded.shared.clone()))
                }
                (Some(Entry { view, .. }), _) => Err(format!(
                    "connector {name:?} is {}: {}",
                    match view.status {
                        ConnectorStatus::Inactive => "inactive",
                        _ => "failed",
                    },
                    view.problem.as_deref().unwrap_or("unknown problem")
                )),
                (None, _) => Err(format!("connector {name:?} is not loaded in this hub")),
            }
        };
        let outcome = match loaded {
            Ok((loaded, shared)) => {
                (self.runtime)
                    .call_handle(&loaded.pre, shared, event, context)
                    .await
            }
            Err(why) => CallOutcome::Failed(FailureKind::Unavailable, why),
        };
        self.runtime
            .metrics
            .connector_invoked(name, outcome.label(), started.elapsed());
        outcome
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the directory and swaps in a new snapshot when anything changed.
    pub async fn rescan(&self) {
        let mut files = self.files.lock().await;
        let paths = match list_wasm_files(&self.dir) {
            Ok(paths) => paths,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the connectors directory");
                return;
            }
        };
        let mut changed = files.len() != paths.len() || files.keys().any(|p| !paths.contains(p));
        let mut next: HashMap<PathBuf, Candidate> = HashMap::with_capacity(paths.len());
        for path in paths {
            let previous = files.get(&path);
            let mut candidate = self.load_file(&path, previous).await;
            if let (Err(problem), Some(good)) = (&candidate.result, previous)
                && good.result.is_ok()
            {
                // A bad file over a working connector: the last good version keeps serving.
                candidate = Candidate {
                    stamp: candidate.stamp,
                    rejected: Some(format!(
                        "the file now at {} was not loaded ({problem}); serving the previous version",
                        candidate.source
                    )),
                    ..good.clone()
                };
            }
            candidate.first_seen = match previous {
                Some(p) => p.first_seen,
                None => self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            };
            if previous.is_none_or(|p| {
                p.sha256 != candidate.sha256
                    || p.loaded_at != candidate.loaded_at
                    || p.rejected != candidate.rejected
            }) {
                changed = true;
            }
            next.insert(path, candidate);
        }
        *files = next;
        if changed || self.current().entries.is_empty() {
            let snapshot = self.assemble(&files);
            self.bind_active(&snapshot).await;
            let previous = self.current();
            let mut failed = Vec::new();
            for (key, entry) in &snapshot.entries {
                let v = &entry.view;
                let known = previous.entries.get(key).is_some_and(|old| {
                    old.view.sha256 == v.sha256
                        && old.view.status == v.status
                        && old.view.source == v.source
                });
                if known {
                    continue;
                }
                match v.status {
                    ConnectorStatus::Active => {
                        tracing::info!(connector = %v.name, version = v.version.as_deref(), source = %v.source, "connector active")
                    }
                    ConnectorStatus::Inactive => {
                        tracing::warn!(connector = %v.name, source = %v.source, problem = v.problem.as_deref(), "connector inactive")
                    }
                    ConnectorStatus::Failed | ConnectorStatus::Missing => {
                        tracing::warn!(connector = %v.name, source = %v.source, problem = v.problem.as_deref(), "connector failed to load");
                        if v.status == ConnectorStatus::Failed {
                            failed.push((v.name.clone(), v.problem.clone().unwrap_or_default()));
                        }
                    }
                }
            }
            for (key, old) in &previous.entries {
                if !snapshot.entries.contains_key(key) {
                    tracing::info!(connector = %old.view.name, source = %old.view.source, "connector removed");
                }
            }
            *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
            // Told as `hub.connector.failed` events (`model/notice.rs`).
            if let Some(store) = &self.store {
                for (name, problem) in failed {
                    if let Err(e) = store
                        .notify_connector_failed(&name, &problem, model::now())
                        .await
                    {
                        tracing::warn!(connector = %name, error = %e, "noting the connector's failure failed");
                    }
                }
            }
        }
        // Asserted again: a binding that failed (database unavailable) or was removed meanwhile.
        if !changed {
            self.bind_active(&self.current()).await;
        }
    }

    /// Binds every active connector to its event types (before its snapshot is served, so a
    /// connector listed as active is routed to). Asserted at every rescan: a binding removed
    /// meanwhile (an unbind while an instance still runs it) comes back; an unchanged one writes
    /// nothing.
    async fn bind_active(&self, snapshot: &Snapshot) {
        let Some(store) = &self.store else {
            return;
        };
        for entry in snapshot.entries.values().filter(|e| e.runs()) {
            let Some(loaded) = entry.loaded.as_ref() else {
                continue;
            };
            let (name, events) = (&loaded.manifest.name, &loaded.manifest.events);
            match store.bind_connector(name, events, model::now()).await {
                Ok(true) => {
                    tracing::info!(connector = %name, events = ?events, "connector bound to its event types")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(connector = %name, error = %e, "binding the connector failed; retried at the next rescan")
                }
            }
        }
    }

    /// Builds the snapshot from the loaded files and the built-ins: resolves name clashes
    /// (first loaded wins), applies configuration and grants.
    fn assemble(&self, files: &HashMap<PathBuf, Candidate>) -> Snapshot {
        let mut ordered: Vec<(&PathBuf, &Candidate)> = files.iter().collect();
        ordered.sort_by(|a, b| a.1.first_seen.cmp(&b.1.first_seen).then(a.0.cmp(b.0)));
        let mut snapshot = Snapshot::default();
        let mut failed = Vec::new();
        for (path, candidate) in ordered {
            match &candidate.result {
                Ok(prepared) => {
                    let name = &prepared.manifest.name;
                    if let Some(holder) = snapshot.entries.get(name) {
                        failed.push(failed_view(
                            candidate,
                            name.clone(),
                            format!(
                                "duplicate name: connector {name:?} is already loaded from {}",
                                holder.view.source
                            ),
                        ));
                    } else {
                        snapshot
                            .entries
                            .insert(name.clone(), self.bind(candidate, prepared));
                    }
                }
                Err(problem) => {
                    failed.push(failed_view(candidate, file_stem(path), problem.clone()))
                }
            }
        }
        for builtin in &self.builtins {
            match &builtin.result {
                Ok(prepared) if !snapshot.entries.contains_key(&prepared.manifest.name) => {
                    let entry = self.bind(builtin, prepared);
                    snapshot
                        .entries
                        .insert(prepared.manifest.name.clone(), entry);
                }
                Ok(_) => {}
                Err(problem) => failed.push(failed_view(builtin, "slack".into(), problem.clone())),
            }
        }
        for view in failed {
            // A failed file never displaces a loaded connector's entry.
            let key = if snapshot.entries.contains_key(&view.name) {
                format!("{}@{}", view.name, view.source)
            } else {
                view.name.clone()
            };
            snapshot.entries.insert(key, Entry { view, loaded: None });
        }
        snapshot
    }

    /// Applies the environment to a compiled connector: its settings, its grant, its status.
    fn bind(&self, candidate: &Candidate, prepared: &Arc<Compiled>) -> Entry {
        let m = &prepared.manifest;
        let mut settings = BTreeMap::new();
        let mut missing = Vec::new();
        for key in &m.config {
            let variable = setting_variable(&m.name, &key.name);
            match self.settings.get(&variable) {
                Some(value) => {
                    settings.insert(key.name.clone(), value.clone());
                }
                None if key.required => missing.push(format!("IH_{variable}")),
                None => {}
            }
        }
        let grant_variable = setting_variable(&m.name, "allowed_hosts");
        let grant = match self.settings.get(&grant_variable) {
            Some(list) => {
                Grant::parse_list(list.expose()).map_err(|e| format!("IH_{grant_variable}: {e}"))
            }
            None => Ok(m.grant.clone()),
        };
        let (status, problem, grant) = match grant {
            Err(problem) => (ConnectorStatus::Failed, Some(problem), Grant::default()),
            Ok(grant) if !missing.is_empty() => (
                ConnectorStatus::Inactive,
                Some(format!("missing required config: {}", missing.join(", "))),
                grant,
            ),
            Ok(grant) => (ConnectorStatus::Active, candidate.rejected.clone(), grant),
        };
        let view = ConnectorView {
            name: m.name.clone(),
            version: Some(m.version.clone()),
            description: Some(m.description.clone()),
            events: m.events.clone(),
            allowed_hosts: grant.hosts().to_vec(),
            status,
            problem,
            source: candidate.source.clone(),
            sha256: candidate.sha256.clone(),
            contract: Some(prepared.pre.contract().to_owned()),
            loaded_at: Some(candidate.loaded_at),
            pending: 0,
            bound_since: None,
            signed_by: candidate.signer.map(|k| k.id()),
            kind: ComponentKind::of(&prepared.pre),
        };
        let loaded = (status != ConnectorStatus::Failed).then(|| {
            if prepared.pre.is_transform() {
                self.runtime.metrics.transform_loaded(&m.name);
            } else {
                self.runtime.metrics.connector_loaded(&m.name);
            }
            Arc::new(Loaded {
                pre: prepared.pre.clone(),
                shared: Arc::new(Shared {
                    name: m.name.clone(),
                    grant: Some(grant),
                    settings,
                }),
                manifest: m.clone(),
            })
        });
        Entry { view, loaded }
    }
}

/// Compiles a component and reads and checks its manifest.
pub(super) async fn prepare(
    runtime: &Runtime,
    source: &str,
    bytes: Vec<u8>,
) -> Result<Compiled, String> {
    let pre = runtime.prepare(bytes).await?;
    let shared = Arc::new(Shared {
        name: source.to_owned(),
        grant: None,
        settings: BTreeMap::new(),
    });
    let raw = runtime
        .call_manifest(&pre, shared)
        .await
        .map_err(|e| format!("manifest() {e}"))?;
    if pre.is_transform() {
        let manifest = manifest::validate_transform(raw.name, raw.version, raw.description)?;
        return Ok(Compiled { pre, manifest });
    }
    let manifest = manifest::validate(
        raw.name,
        raw.version,
        raw.description,
        raw.events,
        raw.allowed_hosts,
        raw.config
            .into_iter()
            .map(|k| manifest::ConfigKey {
                name: k.name,
                required: k.required,
                secret: k.secret,
                description: k.description,
            })
            .collect(),
    )?;
    Ok(Compiled { pre, manifest })
}

fn failed_view(candidate: &Candidate, name: String, problem: String) -> ConnectorView {
    ConnectorView {
        name,
        version: None,
        description: None,
        events: Vec::new(),
        allowed_hosts: Vec::new(),
        status: ConnectorStatus::Failed,
        problem: Some(problem),
        source: candidate.source.clone(),
        sha256: candidate.sha256.clone(),
        contract: None,
        loaded_at: Some(candidate.loaded_at),
        pending: 0,
        bound_since: None,
        signed_by: candidate.signer.map(|k| k.id()),
        kind: match &candidate.result {
            Ok(compiled) => ComponentKind::of(&compiled.pre),
            Err(_) => ComponentKind::Connector,
        },
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The `*.wasm` files directly in `dir`, sorted, at most [`MAX_FILES`].
fn list_wasm_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    paths.sort();
    if paths.len() > MAX_FILES {
        tracing::warn!(
            found = paths.len(),
            "more than {MAX_FILES} connector files; the rest are ignored"
        );
        paths.truncate(MAX_FILES);
    }
    Ok(paths)
}
