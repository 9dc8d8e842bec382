//! Connectors: WebAssembly components, loaded from `IH_CONNECTORS_DIR` at run time, that receive
//! events through the same outbox as webhooks. This is the only module that imports
//! wasmtime; the rest of the hub sees [`Connectors`] and plain data.
//!
//! - [`registry`]: which connectors exist (files in the directory, plus the built-in Slack
//!   connector), their status, the directory watcher, routing and invocation;
//! - [`runtime`]: the engine, the sandbox (deadline, memory cap, empty WASI) and the calls;
//! - [`outcome`]: what a call takes ([`EventData`], [`CallContext`]) and came to
//!   ([`CallOutcome`]), typed from the WIT result;
//! - `recorder`: what `connector test` scripts and records of a call;
//! - [`imports`]: `http.send`, `config.get`, `log` and `kv` as the guest sees them (WIT 0.2,
//!   and 0.1 through the same code);
//! - [`kv`]: the per-instance cache behind the `kv` import;
//! - [`view`]: what the API shows of a connector;
//! - [`grant`]: the capability grant `http.send` is checked against;
//! - [`manifest`]: validation of what a connector declares about itself;
//! - [`signature`]: ed25519 signatures inside components, and the trust policy;
//! - [`transform`]: transform components (`wit/transform/transform.wit`): the call and its
//!   checked output;
//! - [`trial`]: one component run alone in the sandbox, for `integrations-hub connector test`.

use std::collections::BTreeMap;

use crate::config::Secret;

pub mod grant;
mod imports;
mod kv;
pub mod manifest;
pub mod outcome;
mod recorder;
pub mod registry;
pub mod runtime;
pub mod signature;
pub mod transform;
pub mod trial;
pub mod view;

pub use outcome::{CallContext, CallOutcome, EventData, FailureKind};
pub use registry::{ComponentKind, ConnectorStatus, ConnectorView, Connectors};
pub use runtime::SettingsRefused;
pub use transform::{Reuse, TransformError, TransformInput, Transformed, TransformedBody};

/// Where this build left the workspace's connectors as components (`slack_connector.wasm`,
/// `example_connector.wasm`, `connector_template.wasm`, and the tests' `fixture_connector.wasm`);
/// empty when `build.rs` could not build them.
pub const BUILT_WASM_DIR: &str = env!("IH_BUILT_WASM_DIR");

/// What every call of one loaded connector shares: its name, grant and configuration.
#[derive(Debug)]
pub struct Shared {
    pub name: String,
    /// `None` while the manifest is read: no HTTP before the grant is known.
    pub grant: Option<grant::Grant>,
    /// Declared keys that are set, by key (`bot_token`), read from `IH_<NAME>_<KEY>`.
    pub settings: BTreeMap<String, Secret>,
}

/// The `IH_` variable (without prefix) that holds `key` for connector `name`:
/// `("slack", "bot_token")` → `SLACK_BOT_TOKEN`.
pub fn setting_variable(name: &str, key: &str) -> String {
    format!("{name}_{key}")
        .to_ascii_uppercase()
        .replace('-', "_")
}
