//! The one outbound HTTP client (webhooks and connectors' calls): keep-alive, timeouts, no
//! redirects, no proxy, and the SSRF guard in its DNS resolver.
//!
//! Checking the address in the resolver is what makes the guard sound: reqwest connects to
//! exactly the addresses the resolver returns, so the address that was checked is the one
//! connected to (no time-of-check/time-of-use gap through a second DNS lookup). URLs with a
//! literal IP skip DNS, so [`check_url`] judges those before the request is made.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::policy::Policy;

/// A destination the SSRF guard refused, with the rule that matched. It travels as the error
/// of the resolver, so it is found by type in a failed request's cause chain ([`Refusal::find_in`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("blocked by the SSRF guard: {0}")]
pub struct Refusal(pub String);

impl Refusal {
    /// The refusal that caused `error`, if the guard is why it failed.
    pub fn find_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(refusal) = e.downcast_ref::<Refusal>() {
                return Some(refusal);
            }
            next = e.source();
        }
        None
    }
}

/// Why [`check_url`] refused a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("invalid URL: {0}")]
    Invalid(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Resolves names and drops every address the SSRF policy refuses.
#[derive(Debug, Clone)]
struct GuardedResolver(Policy);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = Vec::new();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.refusal(addr.ip()) {
                    Some(refused_here) => {
                        refused.push(refused_here.reason);
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let why = if refused.is_empty() {
                    "no addresses".to_owned()
                } else {
                    refused.join("; ")
                };
                return Err(Box::new(Refusal(format!("{host} resolves to {why}"))) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Builds the shared client, its resolver applying `policy`.
pub fn build(
    timeout: Duration,
    policy: &Policy,
    user_agent: &str,
) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .user_agent(user_agent)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        // HTTP(S)_PROXY from the environment would hand the name to a proxy that resolves it
        // itself, past the guard below: deliveries connect directly, always.
        .no_proxy();
    builder
        .dns_resolver(Arc::new(GuardedResolver(policy.clone())))
        .build()
}

/// Refuses a URL whose host is a literal address (or `localhost`) the policy forbids.
pub fn check_url(url: &str, policy: &Policy) -> Result<(), UrlProblem> {
    let parsed = url::Url::parse(url).map_err(|e| UrlProblem::Invalid(e.to_string()))?;
    let host = parsed
        .host()
        .ok_or_else(|| UrlProblem::Invalid("URL has no host".into()))?;
    match policy.host_refusal(&host) {
        Some(refused) => Err(Refusal(refused.reason).into()),
        None => Ok(()),
    }
}

/// The full cause chain of an error, for attempt records ("error sending request: … : blocked …").
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling of a forbidden address a URL can carry is refused before any connection:
    /// the URL parser normalises decimal, octal, hexadecimal and shortened IPv4 forms, and the
    /// rules see the address they mean.
    #[test]
    fn every_spelling_of_a_private_address_is_refused() {
        let refused = [
            ("http://127.0.0.1/hook", "loopback"),
            ("http://2130706433/hook", "127.0.0.1"),
            ("http://0177.0.0.1/hook", "127.0.0.1"),
            ("http://0x7f.0.0.1/hook", "127.0.0.1"),
            ("http://0x7f000001/hook", "127.0.0.1"),
            ("http://127.1/hook", "127.0.0.1"),
            ("http://017700000001/hook", "127.0.0.1"),
            ("http://167772161/hook", "10.0.0.1"),
            ("http://0xa9fea9fe/latest/meta-data", "metadata"),
            ("http://[::1]:8080/hook", "loopback"),
            ("http://[::ffff:127.0.0.1]/hook", "IPv4-mapped"),
            ("http://[::ffff:7f00:1]/hook", "IPv4-mapped"),
            ("http://[::ffff:a9fe:a9fe]/", "metadata"),
            ("http://[fd12:3456::1]/hook", "unique local"),
            ("http://[fe80::1]/hook", "link-local"),
            ("http://localhost/hook", "loopback"),
            ("http://LOCALHOST./hook", "loopback"),
            ("http://api.localhost/hook", "loopback"),
            ("https://0.0.0.0/", "unspecified"),
        ];
        for (url, rule) in refused {
            let error = match check_url(url, &Policy::default()) {
                Err(UrlProblem::Refused(refusal)) => refusal.to_string(),
                other => panic!("{url}: {other:?}"),
            };
            assert!(
                error.contains(rule),
                "{url}: {error:?} should name {rule:?}"
            );
        }
    }

    /// A name that resolves to a refused address fails inside the client's resolver, and the
    /// refusal is found by type in the request's error.
    #[tokio::test]
    async fn the_resolver_refuses_and_the_refusal_is_typed() {
        let client = build(Duration::from_secs(5), &Policy::default(), "test").expect("client");
        let error = client
            .get("http://localhost:9/hook")
            .send()
            .await
            .expect_err("localhost resolves to loopback");
        let refusal = Refusal::find_in(&error).expect("the refusal is in the cause chain");
        assert!(refusal.0.contains("loopback"), "{refusal}");
        assert!(describe(&error).contains("blocked by the SSRF guard"));
    }

    #[test]
    fn public_addresses_and_names_pass_and_the_switch_allows_private_ones() {
        for url in [
            "https://example.com/hook",
            "http://93.184.215.14/hook",
            "http://[2606:4700::6810:85e5]/hook",
            "https://hooks.localhost.example.com/",
        ] {
            assert_eq!(check_url(url, &Policy::default()), Ok(()), "{url}");
        }
        let open = Policy::new(true, &[]);
        assert_eq!(check_url("http://127.0.0.1:9/", &open), Ok(()));
        assert!(check_url("not a url", &Policy::default()).is_err());
    }

    /// The metadata service is refused by the resolver even with private destinations allowed
    /// (a name pointing at it is how SSRF usually reaches it).
    #[tokio::test]
    async fn metadata_stays_refused_when_private_destinations_are_allowed() {
        let open = Policy::new(true, &["169.254.0.0/16".parse().expect("cidr")]);
        let problem = check_url("http://169.254.169.254/latest/meta-data/", &open);
        assert!(
            matches!(&problem, Err(UrlProblem::Refused(r)) if r.0.contains("metadata")),
            "{problem:?}"
        );
        let client = build(Duration::from_secs(5), &open, "test").expect("client");
        let error = client
            .get("http://localhost:9/hook")
            .send()
            .await
            .expect_err("nothing listens on port 9");
        assert!(
            Refusal::find_in(&error).is_none(),
            "loopback is open with private destinations allowed: {error}"
        );
    }
}
