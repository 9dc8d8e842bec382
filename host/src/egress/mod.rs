//! Egress: every HTTP request the hub makes to the outside world (webhooks, connectors' calls,
//! the API's checks of URLs) goes through this module's client and SSRF policy.
//!
//! - [`policy`]: which addresses may be reached ([`Policy`]: fixed rules and the operator's
//!   exceptions), as a pure function of the address;
//! - [`client`]: the one HTTP client (no redirects, no proxy, timeouts), whose DNS resolver
//!   applies the policy, and [`check_url`] for literal addresses; a refusal is a [`Refusal`],
//!   recognised by type wherever it surfaces.

pub mod client;
pub mod policy;

pub use client::{Refusal, UrlProblem, build, check_url, describe};
pub use policy::Policy;
