//! Delivery: getting stored events to their destinations, safely and at least once.
//!
//! - [`worker`]: the engine (claim, attempt, record; graceful drain);
//! - [`retry`]: the retry policy — what an attempt's answer leads to (delivered, retry at a
//!   time, dead) — with backoff, jitter and `Retry-After`;
//! - [`send`]: one attempt's request (a signed webhook, or a connector call), also used by the
//!   API's test send;
//! - [`signing`]: the seed and Standard Webhooks signatures;
//! - [`maintenance`]: outbox gauges and retention pruning.
//!
//! Outbound HTTP goes through [`crate::egress`]. The circuit breaker's state lives with the
//! subscription in the store (so every instance sees it); its policy is
//! [`crate::model::circuit`].

pub mod maintenance;
pub mod retry;
pub mod send;
pub mod signing;
pub mod worker;

pub use send::Sender;
pub use worker::Engine;

/// This instance's id as a lease owner and in `connector_presence`: the host name and a UUIDv7,
/// unique per process start.
pub(crate) fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hub".to_owned());
    format!("{host}:{}", uuid::Uuid::now_v7())
}
