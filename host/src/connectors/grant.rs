//! The capability grant: which hosts a connector's `http.send` may reach.
//!
//! A grant is a list of entries, from the manifest's `allowed-hosts` or, when the operator sets
//! it, `IH_<NAME>_ALLOWED_HOSTS` (comma-separated; it replaces the manifest's list). An entry is
//! - `api.example.com`: that host, `https` on port 443 only;
//! - `*.example.com`: any subdomain of example.com (not example.com itself), `https` on 443;
//! - `hooks.example.com:8443`, `127.0.0.1:9000`, `[::1]:8080`: that host on that port, `http` or
//!   `https` (naming the port is how an operator allows plain http, e.g. a local fake).
//!
//! The grant is only the first gate: the resolved address must still pass the SSRF guard.

use std::fmt;

/// Longest accepted grant list (entries).
pub const MAX_ENTRIES: usize = 64;

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Lower-case host (IPv6 in brackets), without a leading `*.` for wildcards.
    host: String,
    wildcard: bool,
    /// `Some` when the entry names a port: then http and https are both allowed on it.
    port: Option<u16>,
}

/// The hosts one connector may call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    entries: Vec<Entry>,
    /// The entries as written, for the API and error messages.
    listed: Vec<String>,
}

impl Grant {
    /// Parses grant entries; the error names the offending entry.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        if items.len() > MAX_ENTRIES {
            return Err(format!(
                "at most {MAX_ENTRIES} allowed hosts, got {}",
                items.len()
            ));
        }
        let mut grant = Self::default();
        for item in items {
            let raw = item.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            grant.entries.push(parse_entry(raw)?);
            grant.listed.push(raw.to_owned());
        }
        Ok(grant)
    }

    /// Parses the operator's comma-separated `IH_<NAME>_ALLOWED_HOSTS`.
    pub fn parse_list(list: &str) -> Result<Self, String> {
        let items: Vec<&str> = list.split(',').collect();
        Self::parse(&items)
    }

    /// The entries as written.
    pub fn hosts(&self) -> &[String] {
        &self.listed
    }

    /// Whether `url` may be requested; the error says why not.
    pub fn check(&self, url: &url::Url) -> Result<(), Denial> {
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(Denial(format!(
                "scheme {scheme:?} is not allowed (http or https only)"
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| Denial("the URL has no host".into()))?
            .to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        let port = url.port_or_known_default().unwrap_or(0);
        let mut host_known = false;
        for entry in &self.entries {
            let host_matches = if entry.wildcard {
                host.len() > entry.host.len() + 1
                    && host.ends_with(entry.host.as_str())
                    && host.as_bytes()[host.len() - entry.host.len() - 1] == b'.'
            } else {
                host == entry.host
            };
            if !host_matches {
                continue;
            }
            host_known = true;
            match entry.port {
                Some(p) if p == port => return Ok(()),
                None if scheme == "https" && port == 443 => return Ok(()),
                _ => {}
            }
        }
        if host_known {
            Err(Denial(format!(
                "{scheme}://{host}:{port} is not granted: a host without a port in the grant \
                 allows https on 443 only (granted: {})",
                self.describe()
            )))
        } else {
            Err(Denial(format!(
                "host {host} is not in the connector's grant (granted: {})",
                self.describe()
            )))
        }
    }

    fn describe(&self) -> String {
        if self.listed.is_empty() {
            "none".into()
        } else {
            self.listed.join(", ")
        }
    }
}

/// Why a request was refused by the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial(pub String);

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_entry(raw: &str) -> Result<Entry, String> {
    let bad = |why: &str| format!("allowed host {raw:?} {why}");
    if raw.contains("://") || raw.contains('/') || raw.contains('@') {
        return Err(bad(
            "must be a host or host:port, without scheme, path or user",
        ));
    }
    let (wildcard, rest) = match raw.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if rest.contains('*') {
        return Err(bad("may use a wildcard only as a leading `*.`"));
    }
    // Let the URL parser normalise the host (case, IDNA, IPv6 brackets) and read the port.
    let parsed = url::Url::parse(&format!("https://{rest}/")).map_err(|e| bad(&e.to_string()))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("has no host"))?
        .trim_end_matches('.')
        .to_owned();
    // The parser drops an explicit default port (`:443`), so read whether one was written.
    let after_host = rest.rsplit_once(']').map_or(rest, |(_, tail)| tail);
    let port = if after_host.contains(':') {
        Some(
            parsed
                .port_or_known_default()
                .ok_or_else(|| bad("has a bad port"))?,
        )
    } else {
        None
    };
    if wildcard && host.split('.').count() < 2 {
        return Err(bad(
            "is too broad: a wildcard needs at least two labels after `*.`",
        ));
    }
    Ok(Entry {
        host,
        wildcard,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(items: &[&str]) -> Grant {
        Grant::parse(items).expect("valid grant")
    }

    fn check(g: &Grant, url: &str) -> Result<(), Denial> {
        g.check(&url::Url::parse(url).expect("url"))
    }

    /// Asserts that `entries` allow exactly the `allowed` URLs among `allowed` and `refused`.
    fn allows(entries: &[&str], allowed: &[&str], refused: &[&str]) {
        let g = grant(entries);
        for url in allowed {
            assert!(check(&g, url).is_ok(), "{entries:?} refuses {url}");
        }
        for url in refused {
            assert!(check(&g, url).is_err(), "{entries:?} allows {url}");
        }
    }

    #[test]
    fn plain_hosts_allow_https_on_443_only() {
        allows(
            &["slack.com"],
            &[
                "https://slack.com/api/chat.postMessage",
                "https://SLACK.com./api",
                "https://slack.com:443/api",
            ],
            // No implicit subdomains.
            &[
                "https://slack.com:8443/",
                "https://api.slack.com/",
                "ftp://slack.com/",
            ],
        );
        let g = grant(&["slack.com"]);
        let http = check(&g, "http://slack.com/api").expect_err("http refused");
        assert!(http.0.contains("https on 443 only"), "{http}");
        let other = check(&g, "https://evil.com/").expect_err("other host");
        let named = "host evil.com is not in the connector's grant";
        assert!(other.0.contains(named), "{other}");
    }

    #[test]
    fn a_port_allows_http_and_https_on_that_port() {
        allows(
            &["127.0.0.1:9000", "[::1]:8080", "hooks.example.com:443"],
            &[
                "http://127.0.0.1:9000/x",
                "https://127.0.0.1:9000/x",
                "http://[::1]:8080/",
                "https://hooks.example.com/",
            ],
            // http is port 80.
            &["http://127.0.0.1:9001/x", "http://hooks.example.com/"],
        );
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        allows(
            &["*.example.com"],
            &["https://api.example.com/", "https://a.b.example.com/"],
            &["https://example.com/", "https://badexample.com/"],
        );
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "*",
            "*.com",
            "https://x.com",
            "x.com/path",
            "a*.x.com",
            "x.com:99999",
        ] {
            let err = Grant::parse(&[bad]).expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
        assert_eq!(
            Grant::parse_list(" a.com , ,b.com:81")
                .expect("list")
                .hosts(),
            ["a.com", "b.com:81"]
        );
        assert!(
            check(&Grant::default(), "https://a.com/")
                .expect_err("empty")
                .0
                .contains("none")
        );
    }
}

/// Property tests: whatever URL a connector asks for and whatever the grant lists, a request is
/// allowed only to a host the grant names (or a subdomain of a `*.` entry).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// The grant's meaning, written independently of `check`: a name is read as a URL host is
    /// (so `0` is 0.0.0.0, as in a URL), a `*.` entry covers the subdomains of its domain.
    fn granted_by(entry: &str, host: &str) -> bool {
        let entry = entry.trim().to_ascii_lowercase();
        let name = entry.rsplit_once(':').map_or(entry.as_str(), |(h, _)| h);
        let as_host = |name: &str| {
            url::Url::parse(&format!("https://{name}/"))
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| name.to_owned())
        };
        match name.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{}", as_host(domain))),
            None => host == as_host(name),
        }
    }

    /// A grant, and a URL that is either random or aimed at (a subdomain of) one of its hosts,
    /// so that both outcomes are exercised.
    fn grant_and_url() -> impl Strategy<Value = (Vec<String>, String)> {
        proptest::collection::vec(
            "(\\*\\.)?[a-zA-Z0-9-]{1,8}(\\.[a-z]{1,4}){0,2}(:[0-9]{1,5})?",
            1..4,
        )
        .prop_flat_map(|entries| {
            let hosts: Vec<String> = entries
                .iter()
                .map(|e| {
                    let name = e.rsplit_once(':').map_or(e.as_str(), |(h, _)| h);
                    name.trim_start_matches("*.").to_owned()
                })
                .collect();
            let aimed = (
                prop::sample::select(hosts),
                "https?|ftp",
                "(sub\\.|evil)?",
                "(:443|:80|:[0-9]{1,5})?",
            )
                .prop_map(|(host, scheme, prefix, port)| format!("{scheme}://{prefix}{host}{port}/x"));
            let random = "(https?|ftp|file|javascript)://([a-zA-Z0-9-]{1,8}\\.){0,3}[a-z]{1,4}\\.?(:[0-9]{1,5})?(/[ -~]{0,16})?";
            (Just(entries), prop_oneof![aimed, random])
        })
    }

    proptest! {
        #[test]
        fn a_request_is_allowed_only_to_a_granted_host((entries, url) in grant_and_url()) {
            let Ok(grant) = Grant::parse(&entries) else { return Ok(()) };
            let Ok(url) = url::Url::parse(&url) else { return Ok(()) };
            if grant.check(&url).is_ok() {
                prop_assert!(matches!(url.scheme(), "http" | "https"));
                let host = url.host_str().expect("host").to_ascii_lowercase();
                let host = host.trim_end_matches('.');
                prop_assert!(
                    grant.hosts().iter().any(|e| granted_by(e, host)),
                    "{url} allowed by {:?}", grant.hosts()
                );
            }
        }

        #[test]
        fn parsing_any_grant_never_panics(entries in proptest::collection::vec(".{0,40}", 0..6)) {
            let _ = Grant::parse(&entries);
        }
    }
}
