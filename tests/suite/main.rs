//! The hub's test suite, one binary (each test binary costs a link on two cores):
//!
//! - [`store_contract`]: every `Store` operation, identically on SQLite and PostgreSQL;
//! - [`store_handoff`]: new deliveries handed to the local engine, leased, as they are written;
//! - [`api`]: the HTTP API end to end (bad input, pagination, auth over every route, ops);
//! - [`delivery`]: the engine end to end into a real receiver (signatures, retries, dead
//!   letters, circuit breaker, crash recovery);
//! - [`connectors`]: real `.wasm` components in a real hub, hostile ones included;
//! - [`transforms`]: transform components reshaping webhooks, hostile ones included, and
//!   the dry run;
//! - [`catalog`]: the Discord, Teams and PagerDuty connectors against local fakes;
//! - [`connector_contract`]: the connector contract 0.2 (reports, context, kv, validation, logs);
//! - [`instances`]: connector instances (one component, many configured destinations);
//! - [`queries`], [`store_queries`]: the visibility API (events by filter, a subscription's
//!   deliveries, dead letters by filter);
//! - [`console`]: the console in headless Chromium, the flows an operator uses;
//! - [`controls`], [`store_controls`]: payload filters, pause;
//! - [`security`]: secrets never in responses or logs; sandbox escapes refused;
//! - [`resilience`], [`disk_faults`]: `kill -9`, instances sharing PostgreSQL, a full disk;
//! - [`bench_smoke`], [`chaos`]: bounded runs of the benchmark and the fault runs.
//!
//! Most tests are `async fn name(backend: Backend)`, run on both backends by `backend_tests!`.

mod api;
mod bench_smoke;
mod catalog;
mod chaos;
mod connector_contract;
mod connectors;
mod console;
mod controls;
mod delivery;
mod disk_faults;
mod instances;
mod queries;
mod resilience;
mod security;
mod store_contract;
mod store_controls;
mod store_handoff;
mod store_instances;
mod store_queries;
mod transforms;
