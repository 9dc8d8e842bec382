//! The wasm sandbox: one wasmtime [`Engine`] for the hub, a pre-instantiated component per
//! connector, and a fresh [`Store`] per call with a memory limit and a wall-clock deadline
//! (transforms may reuse one between a subscription's calls: see `transform.rs`).
//!
//! Invariants:
//! - a guest runs only inside [`Runtime::call_manifest`] / [`Runtime::call_handle`], and each of
//!   those ends by the deadline: an epoch ticker (every [`TICK`]) makes running wasm check the
//!   clock and yield to tokio, so a guest that loops neither outlives its budget nor holds a
//!   runtime thread for longer than a tick;
//! - every guest memory is capped by [`Limits`] at `IH_CONNECTOR_MEMORY_MB`;
//! - the guest gets WASI with nothing in it (no preopened directories, no environment, no
//!   network, no subprocesses: the p2 world has none); its only way out is [`super::imports`];
//! - errors are turned into plain sentences here: no wasmtime type leaves this module's parent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config as WasmConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::Shared;
use super::kv::Kv;
use super::outcome::{
    CallContext, CallOutcome, EventData, FailureKind, MAX_EXTERNAL_ID, MAX_REASON, bounded,
};
use super::recorder::Recorder;
use crate::egress::Policy;
use crate::metrics::Metrics;
use crate::model::trace::TraceParent;

/// Generated from `wit/connector.wit` (0.2.0): host traits for the imports, typed calls for the
/// exports.
pub(super) mod bindings {
    wasmtime::component::bindgen!({
        world: "connector",
        path: "../wit",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// Generated from `wit/v0.1/connector.wit`: components built against 0.1.0 load unchanged; their
/// imports are served by the 0.2 ones (`super::imports`).
pub(super) mod bindings_v1 {
    wasmtime::component::bindgen!({
        world: "connector",
        path: "../wit/v0.1",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// Generated from `wit/transform/transform.wit` (0.1.0): typed calls for a transform's exports
/// (`super::transform`).
pub(super) mod bindings_transform {
    wasmtime::component::bindgen!({
        world: "transform",
        path: "../wit/transform",
        exports: { default: async },
    });
}

use bindings::integrations_hub::connector::types;
use bindings_v1::integrations_hub::connector::types as types_v1;

/// How often running wasm checks its deadline and yields.
pub const TICK: Duration = Duration::from_millis(10);
/// Guest stderr kept per call (a panic message lands there), of which the tail is reported.
const STDERR_CAPACITY: usize = 64 * 1024;
const STDERR_REPORTED: usize = 600;
/// Table elements one guest may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Calls beyond the delivery concurrency that may hold an instance at once (loading manifests).
const SPARE_INSTANCES: u32 = 8;
/// Transform instances kept warm between calls (`WarmInstances` in `transform.rs`, at most this
/// many); they hold pool slots while idle, so the pool is sized for them too.
pub(super) const WARM_INSTANCES: u32 = 16;

/// A compiled connector, ready to be instantiated for each call, by the contract version it was
/// built against.
#[derive(Clone)]
pub(super) enum Prepared {
    V2(bindings::ConnectorPre<HostState>),
    V1(bindings_v1::ConnectorPre<HostState>),
    /// A transform (`super::transform`), not a connector.
    Transform(bindings_transform::TransformPre<HostState>),
}

impl Prepared {
    /// The contract version, as the API shows it.
    pub(super) fn contract(&self) -> &'static str {
        match self {
            Self::V2(_) => "0.2.0",
            Self::V1(_) => "0.1.0",
            Self::Transform(_) => "transform 0.1.0",
        }
    }

    pub(super) fn is_transform(&self) -> bool {
        matches!(self, Self::Transform(_))
    }
}

/// The manifest as the guest declared it (not validated yet).
pub(super) type GuestManifest = types::Manifest;

impl From<types_v1::Manifest> for types::Manifest {
    fn from(m: types_v1::Manifest) -> Self {
        Self {
            name: m.name,
            version: m.version,
            description: m.description,
            events: m.events,
            allowed_hosts: m.allowed_hosts,
            config: (m.config.into_iter())
                .map(|k| types::ConfigKey {
                    name: k.name,
                    required: k.required,
                    secret: k.secret,
                    description: k.description,
                })
                .collect(),
        }
    }
}

/// Settings a connector's `validate` refused: the key at fault (if one) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsRefused {
    pub key: Option<String>,
    pub message: String,
}

/// The engine and linker shared by every connector.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    pub(super) client: reqwest::Client,
    pub(super) policy: Policy,
    pub(super) metrics: Arc<Metrics>,
    kv: Arc<Kv>,
    /// Set for `connector test` (`super::trial`): scripted HTTP, recorded requests and logs.
    pub(super) recorder: Option<Arc<Recorder>>,
    timeout: Duration,
    memory_limit: usize,
    pooled: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("timeout", &self.timeout)
            .field("memory_limit", &self.memory_limit)
            .field("pooled", &self.pooled)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine (pooling allocator sized for `concurrency` calls at once, falling back
    /// to on-demand allocation where the pool cannot be reserved) and starts its epoch ticker.
    pub fn new(
        timeout: Duration,
        memory_mb: u64,
        concurrency: usize,
        client: reqwest::Client,
        policy: Policy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let memory_limit = usize::try_from(memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let slots = u32::try_from(concurrency)
            .unwrap_or(u32::MAX)
            .saturating_add(SPARE_INSTANCES)
            .saturating_add(WARM_INSTANCES);
        let pooled = build_engine(memory_limit, Some(slots));
        let (engine, pooled) = match pooled {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; instantiating on demand");
                (build_engine(memory_limit, None)?, false)
            }
        };
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| format!("linking WASI: {e}"))?;
        bindings::Connector::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| format!("linking the connector imports: {e}"))?;
        bindings_v1::Connector::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| format!("linking the connector 0.1 imports: {e}"))?;
        start_ticker(&engine);
        Ok(Self {
            engine,
            linker,
            client,
            policy,
            metrics,
            kv: Arc::default(),
            recorder: None,
            timeout,
            memory_limit,
            pooled,
        })
    }

    /// The wall-clock budget of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Compiles a component (on a blocking thread: this is CPU work) and links it.
    pub(super) async fn prepare(&self, bytes: Vec<u8>) -> Result<Prepared, String> {
        not_a_component(&bytes).map_or(Ok(()), Err)?;
        let engine = self.engine.clone();
        let component =
            tokio::task::spawn_blocking(move || Component::from_binary(&engine, &bytes))
                .await
                .map_err(|e| format!("compiling was interrupted: {e}"))?
                .map_err(|e| format!("the component could not be compiled: {}", root_cause(&e)))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("the component needs imports the hub does not provide: {e}"))?;
        let v2 = match bindings::ConnectorPre::new(pre.clone()) {
            Ok(pre) => return Ok(Prepared::V2(pre)),
            Err(v2) => v2,
        };
        if let Ok(v1) = bindings_v1::ConnectorPre::new(pre.clone()) {
            return Ok(Prepared::V1(v1));
        }
        bindings_transform::TransformPre::new(pre)
            .map(Prepared::Transform)
            .map_err(|_| {
                format!(
                    "the component exports neither the integrations-hub:connector world \
                     (0.2.0: {v2}; nor 0.1.0) nor the integrations-hub:transform world"
                )
            })
    }

    /// Calls `manifest` in a fresh instance.
    pub(super) async fn call_manifest(
        &self,
        pre: &Prepared,
        shared: Arc<Shared>,
    ) -> Result<GuestManifest, String> {
        let mut store = self.store(shared, None);
        let deadline = store.data().deadline;
        let call = async {
            match pre {
                Prepared::V2(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instance.call_manifest(&mut store).await
                }
                Prepared::V1(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instance.call_manifest(&mut store).await.map(Into::into)
                }
                Prepared::Transform(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let m = instance.call_manifest(&mut store).await?;
                    // A transform has no events, hosts or keys.
                    Ok(types::Manifest {
                        name: m.name,
                        version: m.version,
                        description: m.description,
                        events: Vec::new(),
                        allowed_hosts: Vec::new(),
                        config: Vec::new(),
                    })
                }
            }
        };
        match tokio::time::timeout_at((deadline + TICK * 10).into(), call).await {
            Ok(Ok(manifest)) => Ok(manifest),
            Ok(Err(e)) => Err(self.describe_failure(store.data(), &e).1),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Calls `validate` in a fresh instance whose `config.get` answers `shared`'s settings
    /// (0.1 components have nothing to validate). `Err(Err(why))`: the call itself failed.
    pub(super) async fn call_validate(
        &self,
        pre: &Prepared,
        shared: Arc<Shared>,
    ) -> Result<Result<(), SettingsRefused>, String> {
        let Prepared::V2(pre) = pre else {
            return Ok(Ok(()));
        };
        let mut store = self.store(shared, None);
        let deadline = store.data().deadline;
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_validate(&mut store).await
        };
        match tokio::time::timeout_at((deadline + TICK * 10).into(), call).await {
            Ok(Ok(Ok(()))) => Ok(Ok(())),
            Ok(Ok(Err(e))) => Ok(Err(SettingsRefused {
                key: e.key.map(|k| bounded(k, 64)),
                message: bounded(e.message, MAX_REASON),
            })),
            Ok(Err(e)) => Err(self.describe_failure(store.data(), &e).1),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Calls `handle` in a fresh instance, for one attempt of a delivery.
    pub(super) async fn call_handle(
        &self,
        pre: &Prepared,
        shared: Arc<Shared>,
        event: EventData,
        context: &CallContext,
    ) -> CallOutcome {
        let mut store = self.store(shared, Some(context));
        let deadline = store.data().deadline;
        let call = async {
            match pre {
                Prepared::V2(pre) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let context = types::Context {
                        attempt: context.attempt,
                        max_attempts: context.max_attempts,
                        remaining_ms: u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
                        delivery_id: context.delivery_id.to_string(),
                        instance_id: context.instance_id.map(|id| id.to_string()),
                        subscription_id: context.subscription_id.map(|id| id.to_string()),
                    };
                    let event = types::Event {
                        id: event.id,
                        event_type: event.event_type,
                        created_at: event.created_at,
                        payload: event.payload,
                    };
                    let instance = pre.instantiate_async(&mut store).await?;
                    let outcome = instance.call_handle(&mut store, &event, &context).await?;
                    Ok(v2_outcome(outcome))
                }
                Prepared::V1(pre) => {
                    let event = types_v1::Event {
                        id: event.id,
                        event_type: event.event_type,
                        created_at: event.created_at,
                        payload: event.payload,
                    };
                    let instance = pre.instantiate_async(&mut store).await?;
                    let result = instance.call_handle(&mut store, &event).await?;
                    Ok(v1_outcome(result))
                }
                Prepared::Transform(_) => Ok(CallOutcome::Failed(
                    FailureKind::Unavailable,
                    "this component is a transform, not a connector".to_owned(),
                )),
            }
        };
        // The epoch callback stops running wasm at the deadline; this outer timer also covers a
        // call parked in a host import (whose own timeouts end within the budget anyway).
        match tokio::time::timeout_at((deadline + TICK * 10).into(), call).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                let (kind, why) = self.describe_failure(store.data(), &e);
                CallOutcome::Failed(kind, why)
            }
            Err(_) => CallOutcome::Failed(FailureKind::Timeout, self.timed_out()),
        }
    }

    /// A store for one call; `context` is `None` outside a delivery (manifest, validation),
    /// which leaves the kv store closed.
    pub(super) fn store(
        &self,
        shared: Arc<Shared>,
        context: Option<&CallContext>,
    ) -> Store<HostState> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // Nothing is granted: no directories, environment, arguments or network. Clocks and
        // randomness stay, since std needs them.
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limits: Limits {
                max_memory: self.memory_limit,
                exceeded: false,
            },
            stderr,
            deadline: Instant::now() + self.timeout,
            timed_out: false,
            log_lines: 0,
            kv: context.map(|_| self.kv.clone()),
            delivery: context.map(|c| c.delivery_id),
            recorder: self.recorder.clone(),
            instance: context.and_then(|c| c.instance_id),
            traceparent: context.and_then(|c| c.traceparent),
            shared,
            client: self.client.clone(),
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if Instant::now() >= state.deadline {
                state.timed_out = true;
                return Err(wasmtime::Error::msg("the connector ran out of time"));
            }
            // tokio's own yield: wasmtime's runtime-agnostic one wakes the task straight back
            // into the worker's LIFO slot, which starves everything else on that worker.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        store
    }

    /// Readies a store kept from an earlier call for the next one: a new budget, the limits'
    /// flags cleared. Only stores whose last call returned normally are kept.
    pub(super) fn rearm(&self, store: &mut Store<HostState>) {
        let state = store.data_mut();
        state.deadline = Instant::now() + self.timeout;
        state.timed_out = false;
        state.limits.exceeded = false;
        state.log_lines = 0;
        store.set_epoch_deadline(1);
    }

    pub(super) fn timed_out(&self) -> String {
        format!(
            "timed out after {:.1}s (IH_CONNECTOR_TIMEOUT_SECONDS)",
            self.timeout.as_secs_f64()
        )
    }

    /// One sentence for an attempt record: which limit stopped the guest, or how it trapped
    /// (with the tail of its stderr, where a Rust panic message lands).
    pub(super) fn describe_failure(
        &self,
        state: &HostState,
        error: &wasmtime::Error,
    ) -> (FailureKind, String) {
        if state.timed_out {
            return (FailureKind::Timeout, self.timed_out());
        }
        if state.limits.exceeded {
            return (
                FailureKind::Memory,
                format!(
                    "exceeded its memory limit of {} MiB (IH_CONNECTOR_MEMORY_MB)",
                    self.memory_limit >> 20
                ),
            );
        }
        let (kind, mut text) = match error.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => (FailureKind::Trap, format!("trapped: {trap}")),
            None => (
                FailureKind::Unavailable,
                format!("failed: {}", root_cause(error)),
            ),
        };
        let stderr = state.stderr.contents();
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr = stderr.trim();
        if !stderr.is_empty() {
            let start = stderr
                .char_indices()
                .rev()
                .nth(STDERR_REPORTED)
                .map_or(0, |(i, _)| i);
            text.push_str("; guest stderr: ");
            text.push_str(&stderr[start..].replace('\n', " "));
        }
        (kind, text)
    }
}

fn build_engine(memory_limit: usize, pool_slots: Option<u32>) -> Result<Engine, String> {
    let mut config = WasmConfig::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Reserve only what a memory may use (plus the default guard), so a pool of many instances
    // stays a modest amount of address space.
    let reservation = (memory_limit as u64).max(1 << 20).next_multiple_of(1 << 16);
    config.memory_reservation(reservation);
    if let Some(slots) = pool_slots {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(4))
            .total_stacks(slots)
            .max_memory_size(usize::try_from(reservation).unwrap_or(usize::MAX))
            .max_unused_warm_slots(slots.min(16));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config).map_err(|e| format!("creating the wasm engine: {e}"))
}

/// Advances the engine's epoch every [`TICK`] until the engine is dropped.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("ih-wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        });
    if let Err(e) = spawned {
        // Without a ticker the outer wall-clock timer still ends calls, only less promptly.
        tracing::error!(error = %e, "could not start the wasm epoch ticker");
    }
}

/// What is wrong with a file that is not a WebAssembly component, in words that say what to do.
fn not_a_component(bytes: &[u8]) -> Option<String> {
    const BUILD: &str = "build it with `cargo build --release --target wasm32-wasip2` \
         and copy the .wasm file from target/wasm32-wasip2/release";
    if bytes.is_empty() {
        Some(
            "the file is empty (copy a connector to a temporary name and rename it into place, \
             so the hub never reads it half-written)"
                .to_owned(),
        )
    } else if wasmparser::Parser::is_core_wasm(bytes) {
        Some(format!(
            "this is a core WebAssembly module, not a component: {BUILD} \
             (wasm32-unknown-unknown and wasm32-wasip1 make modules)"
        ))
    } else if !wasmparser::Parser::is_component(bytes) {
        Some(format!(
            "this is not a WebAssembly file (it does not start with the WebAssembly header): {BUILD}"
        ))
    } else {
        None
    }
}

fn root_cause(error: &wasmtime::Error) -> String {
    format!("{error:#}")
}

/// What a 0.2 `handle` answered. A guest's text may be megabytes: it is cut before it reaches
/// records and logs.
fn v2_outcome(outcome: types::Outcome) -> CallOutcome {
    match outcome {
        types::Outcome::Ok(d) => CallOutcome::Delivered {
            upstream_status: d.upstream_status,
            external_id: d.external_id.map(|id| bounded(id, MAX_EXTERNAL_ID)),
        },
        types::Outcome::Skipped(reason) => CallOutcome::Skipped(bounded(reason, MAX_REASON)),
        types::Outcome::Retry(r) => CallOutcome::Retry {
            reason: bounded(r.reason, MAX_REASON),
            after: r.after_ms.map(Duration::from_millis),
            upstream_status: r.upstream_status,
        },
        types::Outcome::Permanent(reason) => CallOutcome::Permanent(bounded(reason, MAX_REASON)),
    }
}

/// What a 0.1 `handle` answered.
fn v1_outcome(result: Result<(), types_v1::Failure>) -> CallOutcome {
    match result {
        Ok(()) => CallOutcome::Delivered {
            upstream_status: None,
            external_id: None,
        },
        Err(types_v1::Failure::Retry(r)) => CallOutcome::Retry {
            reason: bounded(r.reason, MAX_REASON),
            after: r.after_ms.map(Duration::from_millis),
            upstream_status: None,
        },
        Err(types_v1::Failure::Permanent(reason)) => {
            CallOutcome::Permanent(bounded(reason, MAX_REASON))
        }
    }
}

/// The memory cap of one store.
#[derive(Debug)]
pub(super) struct Limits {
    max_memory: usize,
    exceeded: bool,
}

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.exceeded = true;
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Everything one call's store holds: the (empty) WASI context, the limits, and what the host
/// imports need.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limits,
    stderr: MemoryOutputPipe,
    /// When this call's budget ends.
    pub(super) deadline: Instant,
    timed_out: bool,
    /// Log lines written in this call (capped).
    pub(super) log_lines: u32,
    /// Every instance's values, reachable during a delivery (the scope comes from `shared` and
    /// `instance`).
    pub(super) kv: Option<Arc<Kv>>,
    /// For log lines: the delivery and instance of this call.
    pub(super) delivery: Option<uuid::Uuid>,
    pub(super) instance: Option<uuid::Uuid>,
    /// The event's trace, carried on by the call's HTTP requests.
    pub(super) traceparent: Option<TraceParent>,
    /// `connector test` only.
    pub(super) recorder: Option<Arc<Recorder>>,
    pub(super) shared: Arc<Shared>,
    pub(super) client: reqwest::Client,
    pub(super) policy: Policy,
    pub(super) metrics: Arc<Metrics>,
}

impl HostState {
    /// Whether the guest wrote to stderr (whose buffer is per store, and full after enough).
    pub(super) fn wrote_stderr(&self) -> bool {
        !self.stderr.contents().is_empty()
    }
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("connector", &self.shared.name)
            .field("limits", &self.limits)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
