//! Delivery: getting stored events to their destinations, safely and at least once.
//!
//! - [`worker`]: the engine (claim, attempt, record, retry, dead-letter; graceful drain);
//! - [`signing`]: the seed and Standard Webhooks signatures;
//! - [`retry`]: backoff with jitter and `Retry-After`;
//! - [`client`]: the shared HTTP client with the SSRF guard in its resolver;
//! - [`ssrf`]: the address policy, also applied by the API to literal IPs in URLs;
//! - [`maintenance`]: outbox gauges and retention pruning.
//!
//! The circuit breaker's state lives with the subscription in the store (so every instance
//! sees it); its policy is [`crate::store::circuit`].

pub mod client;
pub mod maintenance;
pub mod retry;
pub mod signing;
pub mod ssrf;
pub mod worker;

pub use worker::Engine;
