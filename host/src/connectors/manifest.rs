//! Validation of a connector's manifest: what the hub accepts a connector to declare about
//! itself. A manifest that fails here makes its file `failed`, with the reason as `problem`.

use crate::model::names::is_event_type;

use super::grant::Grant;

/// Most event types one connector may subscribe to.
pub const MAX_EVENTS: usize = 100;
/// Most config keys one connector may declare.
pub const MAX_CONFIG_KEYS: usize = 64;
/// Longest name, version or key.
pub const MAX_NAME_LEN: usize = 63;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

/// One declared configuration key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKey {
    pub name: String,
    pub required: bool,
    pub secret: bool,
    pub description: String,
}

/// A manifest that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    /// Event types, or `*` for all.
    pub events: Vec<String>,
    pub grant: Grant,
    pub config: Vec<ConfigKey>,
}

impl Manifest {
    /// Whether events of `event_type` go to this connector.
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == event_type)
    }
}

/// A connector name: lower-case letters, digits, `_` and `-`, starting with a letter (it becomes
/// part of environment variable names).
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A configuration key (also the rule for a log field's key): a lower-case letter, then lower-case
/// letters, digits and `_`.
pub fn is_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && key.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checks a transform's manifest: its name, version and description (it has no events, hosts
/// or keys).
pub fn validate_transform(
    name: String,
    version: String,
    description: String,
) -> Result<Manifest, String> {
    check_identity(&name, &version, &description)?;
    Ok(Manifest {
        name,
        version,
        description,
        events: Vec::new(),
        grant: Grant::default(),
        config: Vec::new(),
    })
}

/// The name, version and description every component declares.
fn check_identity(name: &str, version: &str, description: &str) -> Result<(), String> {
    if !is_name(name) {
        return Err(format!(
            "manifest name {name:?} is invalid: use 1-{MAX_NAME_LEN} lower-case letters, digits, \
             `_` or `-`, starting with a letter"
        ));
    }
    if version.trim().is_empty() || version.len() > MAX_NAME_LEN {
        return Err(format!(
            "manifest version {version:?} must be 1-{MAX_NAME_LEN} characters"
        ));
    }
    if description.len() > MAX_DESCRIPTION_LEN {
        return Err(format!(
            "manifest description is longer than {MAX_DESCRIPTION_LEN} bytes"
        ));
    }
    Ok(())
}

/// Checks a manifest as the guest returned it; the error is one sentence naming the field.
pub fn validate(
    name: String,
    version: String,
    description: String,
    events: Vec<String>,
    allowed_hosts: Vec<String>,
    config: Vec<ConfigKey>,
) -> Result<Manifest, String> {
    check_identity(&name, &version, &description)?;
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(format!(
            "manifest events must list 1-{MAX_EVENTS} event types"
        ));
    }
    if let Some(bad) = events.iter().find(|e| *e != "*" && !is_event_type(e)) {
        return Err(format!("manifest event type {bad:?} is invalid"));
    }
    let grant = Grant::parse(&allowed_hosts).map_err(|e| format!("manifest {e}"))?;
    if config.len() > MAX_CONFIG_KEYS {
        return Err(format!(
            "manifest declares more than {MAX_CONFIG_KEYS} config keys"
        ));
    }
    for (i, key) in config.iter().enumerate() {
        if !is_key(&key.name) {
            return Err(format!(
                "manifest config key {:?} is invalid: use lower-case letters, digits and `_`",
                key.name
            ));
        }
        if key.name == "allowed_hosts" {
            return Err(
                "manifest config key \"allowed_hosts\" is reserved for the operator's grant".into(),
            );
        }
        if config[..i].iter().any(|k| k.name == key.name) {
            return Err(format!(
                "manifest config key {:?} is declared twice",
                key.name
            ));
        }
    }
    Ok(Manifest {
        name,
        version,
        description,
        events,
        grant,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ConfigKey {
        ConfigKey {
            name: name.into(),
            required: false,
            secret: false,
            description: String::new(),
        }
    }

    fn check(
        name: &str,
        events: &[&str],
        hosts: &[&str],
        keys: &[&str],
    ) -> Result<Manifest, String> {
        validate(
            name.into(),
            "1.0.0".into(),
            "d".into(),
            events.iter().map(|s| s.to_string()).collect(),
            hosts.iter().map(|s| s.to_string()).collect(),
            keys.iter().map(|k| key(k)).collect(),
        )
    }

    #[test]
    fn accepts_a_reasonable_manifest() {
        let m = check(
            "slack",
            &["request_submitted"],
            &["slack.com"],
            &["bot_token"],
        )
        .expect("ok");
        assert!(m.wants("request_submitted"));
        assert!(!m.wants("other"));
        assert!(
            check("all", &["*"], &[], &[])
                .expect("star")
                .wants("anything")
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let cases: &[(Result<Manifest, String>, &str)] = &[
            (check("Slack", &["a"], &[], &[]), "name \"Slack\""),
            (check("", &["a"], &[], &[]), "name \"\""),
            (check("s", &[], &[], &[]), "1-100 event types"),
            (check("s", &["Bad Type"], &[], &[]), "\"Bad Type\""),
            (check("s", &["a"], &["https://x.com"], &[]), "https://x.com"),
            (check("s", &["a"], &[], &["Token"]), "\"Token\""),
            (check("s", &["a"], &[], &["allowed_hosts"]), "reserved"),
            (check("s", &["a"], &[], &["k", "k"]), "twice"),
        ];
        for (result, expected) in cases {
            let err = result.clone().expect_err(expected);
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }
}

/// Property tests: whatever a guest returns as its manifest, validation never panics, and a
/// manifest it accepts keeps every documented rule.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn config_key() -> impl Strategy<Value = ConfigKey> {
        (
            "[a-z_]{0,6}|.{0,8}",
            any::<bool>(),
            any::<bool>(),
            ".{0,16}",
        )
            .prop_map(|(name, required, secret, description)| ConfigKey {
                name,
                required,
                secret,
                description,
            })
    }

    proptest! {
        #[test]
        fn an_accepted_manifest_keeps_the_rules(
            name in "[a-z][a-z0-9_-]{0,10}|.{0,12}",
            version in ".{0,12}",
            description in ".{0,32}",
            events in proptest::collection::vec("\\*|[a-z]{1,5}(\\.[a-z]{1,5}){0,2}|.{0,8}", 0..5),
            hosts in proptest::collection::vec("[a-z.]{1,12}|.{0,12}", 0..3),
            config in proptest::collection::vec(config_key(), 0..4),
        ) {
            let Ok(manifest) = validate(name, version, description, events, hosts, config) else {
                return Ok(());
            };
            prop_assert!(is_name(&manifest.name));
            prop_assert!(!manifest.version.trim().is_empty());
            prop_assert!(!manifest.events.is_empty() && manifest.events.len() <= MAX_EVENTS);
            for (i, key) in manifest.config.iter().enumerate() {
                prop_assert!(is_key(&key.name) && key.name != "allowed_hosts");
                prop_assert!(manifest.config[..i].iter().all(|k| k.name != key.name));
            }
        }
    }
}
