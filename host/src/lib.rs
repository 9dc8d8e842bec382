//! Integrations Hub: stores your product's events durably and delivers them, signed, to
//! webhook subscribers and to sandboxed WebAssembly connectors.
//!
//! Code map (see `ARCHITECTURE.md` for the invariants):
//! - [`config`]: the `IH_*` environment, parsed and validated once.
//! - [`api`]: the HTTP surface; one module per resource.
//! - [`store`]: the storage trait and its SQLite and PostgreSQL backends; all SQL lives there.
//! - [`delivery`]: the engine that gets events out: webhooks, retries, dead letters, guards.
//! - [`connectors`]: the WebAssembly connector platform (the only module importing wasmtime).
//! - [`metrics`], [`telemetry`]: Prometheus registry and logging.
//! - [`server`]: [`run`], the entry point shared by the binary and the tests.

pub mod api;
pub mod config;
pub mod connectors;
pub mod delivery;
pub mod error;
pub mod metrics;
pub mod server;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use server::{run, shutdown_signal};
