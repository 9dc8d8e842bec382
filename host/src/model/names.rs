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

#[cfg(test)]
mod tests {
    use super::*;

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
