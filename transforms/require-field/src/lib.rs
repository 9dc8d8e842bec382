//! Example transform: delivers an event only when its payload passes a rule, and drops it
//! (recorded as skipped, with the reason) otherwise. What goes out is the hub's own body.
//!
//! Settings: `pointer` (required) is a JSON Pointer into the payload, such as `/status`; with
//! `equals`, the value there must equal that JSON value (`"paid"`, `true`, `3`); without it,
//! the value must be present and not null.
//! The rule is a plain function ([`verdict`]) with native unit tests.

wit_bindgen::generate!({ world: "transform", path: "../../wit/transform" });

use integrations_hub::transform::types::Setting;

struct RequireField;

impl Guest for RequireField {
    fn manifest() -> Manifest {
        Manifest {
            name: "require-field".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Drops events whose payload lacks a field, or a value".into(),
        }
    }

    fn transform(event: Event, context: Context) -> Result<Transformed, String> {
        let get = |key: &str| -> Option<&str> {
            (context.settings.iter().find(|s: &&Setting| s.key == key)).map(|s| s.value.as_str())
        };
        let pointer = get("pointer").ok_or("the `pointer` setting is required")?;
        match verdict(&event.payload, pointer, get("equals"))? {
            None => Ok(Transformed::Keep),
            Some(reason) => Ok(Transformed::Drop(reason)),
        }
    }
}

/// `None` when the payload passes; otherwise why it is dropped. `Err`: the rule itself is bad.
pub fn verdict(
    payload: &[u8],
    pointer: &str,
    equals: Option<&str>,
) -> Result<Option<String>, String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!(
            "`pointer` {pointer:?} is not a JSON Pointer (it starts with /)"
        ));
    }
    let payload: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let found = payload.pointer(pointer).filter(|v| !v.is_null());
    let Some(expected) = equals else {
        return Ok(found
            .is_none()
            .then(|| format!("the payload has no {pointer}")));
    };
    let expected: serde_json::Value = serde_json::from_str(expected).map_err(|_| {
        format!("`equals` {expected:?} is not a JSON value (quote strings: \"paid\")")
    })?;
    Ok(match found {
        Some(value) if *value == expected => None,
        Some(value) => Some(format!(
            "the payload's {pointer} is {value}, not {expected}"
        )),
        None => Some(format!("the payload has no {pointer}")),
    })
}

export!(RequireField);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_payloads_go_and_others_are_dropped_with_the_reason() {
        let paid = br#"{"status":"paid","n":3}"#;
        assert_eq!(verdict(paid, "/status", None), Ok(None));
        assert_eq!(verdict(paid, "/status", Some("\"paid\"")), Ok(None));
        assert_eq!(verdict(paid, "/n", Some("3")), Ok(None));
        assert_eq!(
            verdict(paid, "/status", Some("\"draft\"")),
            Ok(Some(
                "the payload's /status is \"paid\", not \"draft\"".into()
            ))
        );
        assert_eq!(
            verdict(br#"{"status":null}"#, "/status", None),
            Ok(Some("the payload has no /status".into()))
        );
    }

    #[test]
    fn bad_rules_are_errors() {
        assert!(verdict(b"{}", "status", None).is_err());
        assert!(verdict(b"{}", "/status", Some("paid")).is_err());
        assert!(verdict(b"nope", "/status", None).is_err());
    }
}
