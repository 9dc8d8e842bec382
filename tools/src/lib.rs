//! The hub's measuring and fault-injecting tools, against real hub processes:
//! - [`bench`]: the load benchmark (`bench-load`), whose figures the README reports;
//! - [`chaos`]: the fault runs (`chaos`) behind `RELIABILITY.md`.
//!
//! The suite runs bounded versions of both (`tests/suite/bench_smoke.rs`, `chaos.rs`), so
//! neither can rot.

pub mod bench;
pub mod chaos;
pub mod queries;
