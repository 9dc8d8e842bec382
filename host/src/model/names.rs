//! Name rules shared by every layer: the API validates what clients send with them, connector
//! manifests are checked with them, and the store relies on them.

/// Longest event type name.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// Event types are `^[a-z0-9][a-z0-9_.-]{0,127}$`, checked without a regex engine on the
/// publish path.
pub fn is_event_type(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_EVENT_TYPE_LEN
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// What [`is_event_type`] requires, for error messages.
pub const EVENT_TYPE_RULE: &str =
    "must be 1-128 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit";

/// Request headers the hub sets on a webhook itself (or that only the HTTP layer may set): a
/// subscription's custom headers and a transform's headers may not name them.
const HUB_HEADERS: [&str; 15] = [
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "user-agent",
    "traceparent",
    "tracestate",
    "proxy-authorization",
    "proxy-connection",
];
const HUB_HEADER_PREFIXES: [&str; 3] = ["x-webhook-", "webhook-", "proxy-"];

/// Whether `name` (any case) is a header of [`HUB_HEADERS`] or under one of its prefixes.
pub fn is_set_by_hub(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    HUB_HEADERS.contains(&lower.as_str())
        || HUB_HEADER_PREFIXES.iter().any(|p| lower.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hubs_own_headers_are_recognised_in_any_case() {
        for own in [
            "Content-Type",
            "webhook-signature",
            "X-Webhook-Event",
            "traceparent",
            "Proxy-Foo",
        ] {
            assert!(is_set_by_hub(own), "{own}");
        }
        for free in ["x-tenant", "authorization", "x-webhooks", "webhookid"] {
            assert!(!is_set_by_hub(free), "{free}");
        }
    }

    #[test]
    fn event_type_rule_matches_its_pattern() {
        for ok in [
            "a",
            "request_submitted",
            "0",
            "order.created-v2",
            &"a".repeat(128),
        ] {
            assert!(is_event_type(ok), "{ok}");
        }
        for bad in [
            "",
            "_x",
            ".x",
            "Request",
            "a b",
            "a/b",
            "é",
            &"a".repeat(129),
            "*",
        ] {
            assert!(!is_event_type(bad), "{bad}");
        }
    }
}
