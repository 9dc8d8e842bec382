//! SSRF guard: which addresses a webhook (or a connector's HTTP call) may never reach.
//!
//! The policy is a pure function of the address so it can be applied twice: to a literal IP in a
//! subscription URL when it is created (a clear 422 up front), and to every resolved address at
//! every attempt (DNS can change between the two). Each refusal says exactly which rule matched,
//! because "blocked" alone sends an operator hunting.
//!
//! Three tiers: cloud metadata and link-local addresses are refused whatever the settings (no
//! webhook has a reason to reach them, and they hand out credentials); private and special
//! ranges are refused unless `IH_ALLOWED_DESTINATION_CIDRS` names the network or
//! `IH_ALLOW_PRIVATE_DESTINATIONS` opens them all; everything else is public.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

/// Why an address may not be reached; `always` when no setting opens it (metadata, link-local).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: String,
    pub always: bool,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// What may be reached: the fixed rules plus the operator's exceptions.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow_private: bool,
    allowed: Arc<[IpNet]>,
}

impl Policy {
    /// `allow_private` opens every private and special range (development, tests); `allowed`
    /// opens chosen networks. Neither opens metadata or link-local addresses.
    pub fn new(allow_private: bool, allowed: &[IpNet]) -> Self {
        Self {
            allow_private,
            allowed: allowed.into(),
        }
    }

    /// The policy of `IH_ALLOW_PRIVATE_DESTINATIONS` and `IH_ALLOWED_DESTINATION_CIDRS`.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self::new(
            config.allow_private_destinations,
            &config.allowed_destination_cidrs,
        )
    }

    /// Why `ip` may not be reached, or `None` when it may.
    pub fn refusal(&self, ip: IpAddr) -> Option<Refused> {
        if let Some(reason) = always_refused(canonical(ip)) {
            return Some(Refused {
                reason: format!("{ip} is {reason}, which is never allowed"),
                always: true,
            });
        }
        // (Checked before the reason is written: every attempt asks.)
        let open = |net: &IpNet| net.contains(&ip) || net.contains(&canonical(ip));
        if self.allow_private || self.allowed.iter().any(open) {
            return None;
        }
        Some(Refused {
            reason: refusal_reason(ip)?,
            always: false,
        })
    }

    /// As [`Policy::refusal`] for a URL's host, judged without DNS: IP literals, and names that
    /// always mean this machine (`localhost`, `*.localhost`).
    pub fn host_refusal(&self, host: &url::Host<&str>) -> Option<Refused> {
        match host {
            url::Host::Ipv4(ip) => self.refusal(IpAddr::V4(*ip)),
            url::Host::Ipv6(ip) => self.refusal(IpAddr::V6(*ip)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let loopback = name == "localhost" || name.ends_with(".localhost");
                let allowed = self.allow_private
                    || self
                        .allowed
                        .iter()
                        .any(|net| net.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
                (loopback && !allowed).then(|| Refused {
                    reason: format!("{name} always resolves to this machine (loopback)"),
                    always: false,
                })
            }
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries, so one rule covers both.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Addresses no setting opens: instance metadata services and link-local ranges.
fn always_refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4 == Ipv4Addr::new(169, 254, 169, 254) || v4 == Ipv4Addr::new(100, 100, 100, 200) {
                Some("a cloud metadata service")
            } else if (a, b) == (169, 254) {
                Some("a link-local address (169.254.0.0/16)")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if s == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] {
                Some("a cloud metadata service (fd00:ec2::254)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address (fe80::/10)")
            } else {
                // NAT64 and 6to4 forms of a metadata or link-local IPv4 address.
                let embedded = match s {
                    [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some((hi, lo)),
                    [0x2002, hi, lo, ..] => Some((hi, lo)),
                    _ => None,
                };
                embedded.and_then(|(hi, lo)| {
                    let v4 = Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
                    always_refused(IpAddr::V4(v4))
                })
            }
        }
    }
}

/// Why an address is not public unicast, or `None` when it is.
fn refusal_reason(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4).map(|r| format!("{v4} is {r}")),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => {
            "the cloud metadata service (169.254.169.254)"
        }
        (0, _, _) => "an unspecified/\"this network\" address (0.0.0.0/8)",
        (127, _, _) => "a loopback address (127.0.0.0/8)",
        (10, _, _) => "a private address (RFC 1918, 10.0.0.0/8)",
        (172, 16..=31, _) => "a private address (RFC 1918, 172.16.0.0/12)",
        (192, 168, _) => "a private address (RFC 1918, 192.168.0.0/16)",
        (169, 254, _) => "a link-local address (169.254.0.0/16)",
        (100, 64..=127, _) => "a carrier-grade NAT address (RFC 6598, 100.64.0.0/10)",
        (192, 0, 0) => "an IETF protocol assignment address (192.0.0.0/24)",
        (192, 0, 2) => "a documentation address (192.0.2.0/24)",
        (198, 51, 100) => "a documentation address (198.51.100.0/24)",
        (203, 0, 113) => "a documentation address (203.0.113.0/24)",
        (198, 18..=19, _) => "a benchmarking address (198.18.0.0/15)",
        (224..=239, _, _) => "a multicast address (224.0.0.0/4)",
        _ if ip.is_broadcast() => "the broadcast address",
        (240..=255, _, _) => "a reserved address (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<String> {
    let segments = ip.segments();
    // Addresses that carry an IPv4 address are judged by that address.
    let embedded_v4 =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4).map(|r| format!("{ip} is an IPv4-mapped form of {v4}, which is {r}"));
    }
    let reason = match segments {
        [0, 0, 0, 0, 0, 0, 0, 0] => "the unspecified address (::)",
        [0, 0, 0, 0, 0, 0, 0, 1] => "the loopback address (::1)",
        [0, 0, 0, 0, 0, 0, hi, lo] => {
            let v4 = embedded_v4(hi, lo);
            return Some(format!(
                "{ip} is an IPv4-compatible form of {v4}, which is not allowed"
            ));
        }
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            let v4 = embedded_v4(hi, lo);
            return v4_reason(v4).map(|r| format!("{ip} is a NAT64 form of {v4}, which is {r}"));
        }
        // Local-use NAT64 (RFC 8215): translators inside the network, to anything.
        [0x64, 0xff9b, 1, ..] => "a local-use NAT64 address (64:ff9b:1::/48)",
        // Teredo tunnels to an (obfuscated) IPv4 server and client of their own choosing.
        [0x2001, 0, ..] => "a Teredo tunnel address (2001::/32)",
        [0x2002, hi, lo, ..] => {
            let v4 = embedded_v4(hi, lo);
            return v4_reason(v4).map(|r| format!("{ip} is a 6to4 form of {v4}, which is {r}"));
        }
        [s, ..] if s & 0xfe00 == 0xfc00 => "a unique local address (fc00::/7)",
        [s, ..] if s & 0xffc0 == 0xfe80 => "a link-local address (fe80::/10)",
        [s, ..] if s & 0xffc0 == 0xfec0 => "a site-local address (fec0::/10)",
        [s, ..] if s & 0xff00 == 0xff00 => "a multicast address (ff00::/8)",
        [0x2001, 0xdb8, ..] => "a documentation address (2001:db8::/32)",
        [s, ..] if s & 0xfff0 == 0x3ff0 => "a documentation address (3fff::/20)",
        [0x2001, 2, 0, ..] => "a benchmarking address (2001:2::/48)",
        [0x100, 0, 0, 0, ..] => "a discard-only address (100::/64)",
        _ => return None,
    };
    Some(format!("{ip} is {reason}"))
}

/// Why a URL host may not be used, judged without DNS: IP literals by [`refusal_reason`], and
/// names that always mean this machine (`localhost`, `*.localhost`).
pub fn host_refusal(host: &url::Host<&str>) -> Option<String> {
    match host {
        url::Host::Ipv4(ip) => refusal_reason(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => refusal_reason(IpAddr::V6(*ip)),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            (name == "localhost" || name.ends_with(".localhost"))
                .then(|| format!("{name} always resolves to this machine (loopback)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> Option<String> {
        refusal_reason(s.parse().expect("test address parses"))
    }

    #[test]
    fn private_and_special_addresses_are_refused_with_the_rule_named() {
        let table = [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "RFC 1918"),
            ("172.16.0.1", "RFC 1918"),
            ("172.31.255.255", "RFC 1918"),
            ("192.168.1.1", "RFC 1918"),
            ("169.254.169.254", "metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1"),
            ("::ffff:169.254.169.254", "metadata"),
            ("64:ff9b::10.0.0.1", "NAT64"),
            ("2002:c0a8:0101::1", "6to4 form of 192.168.1.1"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("64:ff9b:1::a00:1", "local-use NAT64"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            // Documentation, benchmarking and discard ranges, alike on both families.
            ("192.0.2.10", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.200", "documentation"),
            ("2001:db8::1", "documentation"),
            ("3fff:1::1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("2001:2::1", "benchmarking"),
            ("100::1", "discard"),
        ];
        for (ip, rule) in table {
            let reason = refused(ip).unwrap_or_else(|| panic!("{ip} must be refused"));
            assert!(
                reason.contains(rule),
                "{ip}: {reason:?} should mention {rule:?}"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2002:0808:0808::1",
        ] {
            assert_eq!(refused(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn hosts_in_urls_are_judged_after_normalisation() {
        // The WHATWG URL parser turns decimal, octal and hex IPv4 forms into the dotted address.
        for url in [
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://[::ffff:7f00:1]/",
            "http://LOCALHOST./x",
            "http://api.localhost/",
        ] {
            let parsed = url::Url::parse(url).expect("url parses");
            let host = parsed.host().expect("has host");
            assert!(
                Policy::default().host_refusal(&host).is_some(),
                "{url} must be refused"
            );
        }
        let public = url::Url::parse("https://example.com/hook").expect("url parses");
        assert_eq!(
            Policy::default().host_refusal(&public.host().expect("host")),
            None
        );
    }

    fn judged(policy: &Policy, ip: &str) -> Option<Refused> {
        policy.refusal(ip.parse().expect("test address parses"))
    }

    #[test]
    fn chosen_networks_open_and_nothing_opens_metadata_or_link_local() {
        let cidrs: Vec<IpNet> = ["10.20.0.0/16", "fd00:1::/32", "169.254.0.0/16"]
            .iter()
            .map(|c| c.parse().expect("cidr"))
            .collect();
        let chosen = Policy::new(false, &cidrs);
        for open in ["10.20.1.2", "::ffff:10.20.1.2", "fd00:1::5"] {
            assert_eq!(
                judged(&chosen, open),
                None,
                "{open} is in an allowed network"
            );
        }
        for closed in ["10.21.0.1", "192.168.1.1", "127.0.0.1", "fd00:2::1"] {
            let refused = judged(&chosen, closed).unwrap_or_else(|| panic!("{closed}"));
            assert!(!refused.always, "{closed}: {refused}");
        }
        let everything = Policy::new(true, &cidrs);
        assert_eq!(judged(&everything, "127.0.0.1"), None);
        assert_eq!(judged(&everything, "192.0.2.1"), None);
        for never in [
            "169.254.169.254",
            "169.254.1.1",
            "100.100.100.200",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
        ] {
            for policy in [&chosen, &everything, &Policy::default()] {
                let refused = judged(policy, never).unwrap_or_else(|| panic!("{never}"));
                assert!(refused.always, "{never}: {refused}");
            }
        }
        let loopback = Policy::new(false, &["127.0.0.0/8".parse().expect("cidr")]);
        let host = url::Host::Domain("localhost");
        assert_eq!(loopback.host_refusal(&host), None);
        assert!(Policy::default().host_refusal(&host).is_some());
    }
}
