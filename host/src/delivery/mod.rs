//! Delivery: getting events to their destinations safely.
//!
//! So far this holds the SSRF guard's address policy ([`ssrf`]), which the API already applies
//! to subscription URLs that name an address literally; the engine that claims and runs
//! deliveries builds on it.

pub mod ssrf;
