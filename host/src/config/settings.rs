//! Every `IH_*` variable of the hub, declared once: name, default, how it is parsed and what it
//! means. Parsing ([`Vars`]), the warning for unknown variables under the hub's own prefixes, and
//! the README's configuration table (checked by a test below) all derive from [`ALL`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::ConfigError;

/// The prefix of every variable the hub reads.
pub const PREFIX: &str = "IH_";

/// How a variable's value is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Free text, checked by [`super::Config::from_vars`].
    Text,
    /// A whole number within the bounds.
    Integer { min: u64, max: u64 },
    /// A number of seconds within the bounds.
    Seconds { min: f64, max: f64 },
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Boolean,
    /// A family of variables named per connector (documented, read by the connector registry).
    PerConnector,
}

/// One variable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    /// The name without [`PREFIX`].
    pub name: &'static str,
    /// The value when unset or empty, as an operator would write it; "" for none.
    pub default: &'static str,
    pub kind: Kind,
    /// What it means (the README's table shows this text).
    pub help: &'static str,
}

macro_rules! settings {
    ($($(#[$doc:meta])* $id:ident = $name:literal, $default:literal, $kind:expr, $help:literal;)*) => {
        $($(#[$doc])* pub const $id: Setting = Setting {
            name: $name,
            default: $default,
            kind: $kind,
            help: $help,
        };)*
        /// Every variable, in the README's order.
        pub const ALL: &[Setting] = &[$($id),*];
    };
}

settings! {
    DATABASE_URL = "DATABASE_URL", "sqlite://data/integrations-hub.db", Kind::Text,
        "SQLite file (file and folder created), or `postgres://user:pw@host/db`";
    DATABASE_MAX_CONNECTIONS = "DATABASE_MAX_CONNECTIONS", "16", Kind::Integer { min: 1, max: 1000 },
        "PostgreSQL connections per instance (a third of them, at most 6, serve the delivery engine; a quarter, at most 4, the publishes)";
    BIND = "BIND", "127.0.0.1:8000", Kind::Text, "listen address, `host:port` (`localhost:8000` is `127.0.0.1:8000`)";
    API_KEYS = "API_KEYS", "", Kind::Text,
        "comma-separated bearer tokens (16+ characters each), each `admin` unless prefixed `publish:` (events only) or `read:` (reading only). Empty with a non-loopback `IH_BIND` refuses to start";
    METRICS_KEY = "METRICS_KEY", "", Kind::Text,
        "bearer token `/metrics` then requires (16+ characters); empty: `/metrics` is open";
    ENCRYPTION_KEY = "ENCRYPTION_KEY", "", Kind::Text,
        "keys sealing subscription secrets at rest (AES-256-GCM): 32 bytes each as base64 or hex (`openssl rand -base64 32`), comma-separated; the first seals, all open (rotation). Empty with a non-loopback `IH_BIND` refuses to start";
    ENCRYPTION_KEY_FILE = "ENCRYPTION_KEY_FILE", "", Kind::Text,
        "a file holding the value of `IH_ENCRYPTION_KEY` instead (a Docker or Kubernetes secret)";
    DELIVERY_POLL_INTERVAL = "DELIVERY_POLL_INTERVAL_SECONDS", "2.0", Kind::Seconds { min: 0.01, max: 3600.0 },
        "fallback poll of the delivery engine";
    DELIVERY_MAX_ATTEMPTS = "DELIVERY_MAX_ATTEMPTS", "5", Kind::Integer { min: 1, max: 100 },
        "attempts before a delivery is dead-lettered (1–100)";
    DELIVERY_BACKOFF_BASE = "DELIVERY_BACKOFF_BASE_SECONDS", "2.0", Kind::Seconds { min: 0.0, max: 86400.0 },
        "wait after failed attempt n = base × 2^(n−1), ±20 % jitter";
    DELIVERY_BACKOFF_MAX = "DELIVERY_BACKOFF_MAX_SECONDS", "3600", Kind::Seconds { min: 0.0, max: 604800.0 },
        "cap of that wait";
    DELIVERY_TIMEOUT = "DELIVERY_TIMEOUT_SECONDS", "10.0", Kind::Seconds { min: 0.05, max: 300.0 },
        "HTTP timeout of one webhook attempt";
    DELIVERY_CONCURRENCY = "DELIVERY_CONCURRENCY", "64", Kind::Integer { min: 1, max: 10_000 },
        "attempts in flight per instance";
    ALLOW_PRIVATE_DESTINATIONS = "ALLOW_PRIVATE_DESTINATIONS", "false", Kind::Boolean,
        "allow every loopback, private and special-purpose target (development, tests); cloud metadata and link-local addresses stay refused";
    ALLOWED_DESTINATION_CIDRS = "ALLOWED_DESTINATION_CIDRS", "", Kind::Text,
        "comma-separated networks webhooks and connectors may reach although private, e.g. `10.20.0.0/16,fd00:1::/32` (never metadata or link-local)";
    CONNECTORS_DIR = "CONNECTORS_DIR", "data/connectors", Kind::Text,
        "where connector `.wasm` files are loaded from";
    CONNECTOR_TIMEOUT = "CONNECTOR_TIMEOUT_SECONDS", "10.0", Kind::Seconds { min: 0.01, max: 300.0 },
        "wall-clock budget of one connector invocation";
    CONNECTOR_MEMORY_MB = "CONNECTOR_MEMORY_MB", "64", Kind::Integer { min: 1, max: 4096 },
        "memory cap of one connector instance";
    COMPONENTS_TRUSTED_KEYS = "COMPONENTS_TRUSTED_KEYS", "", Kind::Text,
        "ed25519 public keys (base64, comma-separated; `integrations-hub connector keygen` prints one): when set, only connector files signed by one of them load (`integrations-hub connector sign`)";
    CONNECTOR_SETTING = "<CONNECTOR>_<KEY>", "", Kind::PerConnector,
        "connector settings, e.g. `IH_SLACK_BOT_TOKEN`, `IH_SLACK_DEFAULT_CHANNEL` (`#integrations`), `IH_SLACK_API_BASE_URL` (`https://slack.com/api`)";
    CONNECTOR_ALLOWED_HOSTS = "<CONNECTOR>_ALLOWED_HOSTS", "the manifest's", Kind::PerConnector,
        "operator grant for the connector's HTTP calls (comma-separated `host` or `host:port`); replaces the manifest's hosts";
    MAX_PAYLOAD_BYTES = "MAX_PAYLOAD_BYTES", "262144", Kind::Integer { min: 1024, max: 64 << 20 },
        "larger request bodies (and event payloads) get 413";
    MAX_BATCH_BYTES = "MAX_BATCH_BYTES", "8388608", Kind::Integer { min: 1024, max: 256 << 20 },
        "body cap of `POST /api/v1/events/batch`";
    RETENTION_DAYS = "RETENTION_DAYS", "30", Kind::Integer { min: 1, max: 3650 },
        "age after which finished events, attempts and dead letters are pruned";
    LOG_LEVEL = "LOG_LEVEL", "info", Kind::Text,
        "`trace`…`error` (any case), or a tracing filter such as `info,integrations_hub=debug` (every part names a level); sqlx and the wasm compiler stay at warn unless named";
    LOG_FORMAT = "LOG_FORMAT", "json", Kind::Text, "`json` (one object per line) or `pretty`";
}

/// Prefixes that belong to the hub (derived from [`ALL`]): an unknown variable under one of them
/// is almost certainly a typo, so it earns a warning instead of becoming a connector setting.
pub fn is_own_prefix(name: &str) -> bool {
    ALL.iter()
        .filter(|s| s.kind != Kind::PerConnector)
        .filter_map(|s| s.name.split_once('_').map(|(head, _)| head))
        // A connector may be called `api` or `allow`: those stay its settings.
        .filter(|head| *head != "ALLOW" && *head != "API")
        .any(|head| {
            name.strip_prefix(head)
                .is_some_and(|rest| rest.starts_with('_'))
        })
}

/// The warning for a variable (without prefix) that neither the hub nor any connector reads,
/// naming it and the hub's own variable it most likely meant (`API_KEY` → `IH_API_KEYS`).
pub fn unread_warning(name: &str) -> String {
    let near = ALL
        .iter()
        .filter(|s| s.kind != Kind::PerConnector)
        .find(|s| s.name.starts_with(name) || name.starts_with(s.name));
    match near {
        Some(s) => format!(
            "{PREFIX}{name} is read by neither the hub nor a loaded connector and was ignored; did you mean {}?",
            s.variable()
        ),
        None => format!(
            "{PREFIX}{name} is read by neither the hub nor a loaded connector and was ignored (a typo, or a connector that is not loaded?)"
        ),
    }
}

/// Whether `name` (without prefix) is one of the hub's own variables.
pub fn is_known(name: &str) -> bool {
    ALL.iter()
        .any(|s| s.kind != Kind::PerConnector && s.name == name)
}

impl Setting {
    /// The full variable name, `IH_…`.
    pub fn variable(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }

    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: self.variable(),
            message: message.into(),
        }
    }
}

impl Setting {
    /// The README's row for this variable.
    pub fn markdown_row(&self) -> String {
        let default = match (self.default, self.kind) {
            ("", Kind::PerConnector) => "—".to_owned(),
            ("", _) => "empty".to_owned(),
            (d, Kind::PerConnector) => d.to_owned(),
            (d, _) => format!("`{d}`"),
        };
        format!("| `{}` | {default} | {} |", self.variable(), self.help)
    }
}

/// The `IH_*` environment, without the prefix.
#[derive(Debug)]
pub struct Vars(pub BTreeMap<String, String>);

impl Vars {
    /// The value of `setting`, or `None` when it is unset or blank.
    pub fn raw(&self, setting: &Setting) -> Option<&str> {
        self.0
            .get(setting.name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn text(&self, setting: &Setting) -> String {
        self.raw(setting).unwrap_or(setting.default).to_owned()
    }

    pub fn seconds(&self, setting: &Setting) -> Result<Duration, ConfigError> {
        let Kind::Seconds { min, max } = setting.kind else {
            return Err(setting.error("is not a number of seconds (a bug in its declaration)"));
        };
        let default: f64 = setting.default.parse().unwrap_or(0.0);
        let value = match self.raw(setting) {
            None => default,
            Some(raw) => raw.parse::<f64>().map_err(|_| {
                setting.error(format!(
                    "expected a number of seconds such as {default}, got {raw:?}"
                ))
            })?,
        };
        if !value.is_finite() || value < min || value > max {
            return Err(setting.error(format!(
                "must be between {min} and {max} seconds, got {value}"
            )));
        }
        Ok(Duration::from_secs_f64(value))
    }

    pub fn integer<T>(&self, setting: &Setting) -> Result<T, ConfigError>
    where
        T: TryFrom<u64> + fmt::Display,
    {
        let Kind::Integer { min, max } = setting.kind else {
            return Err(setting.error("is not a whole number (a bug in its declaration)"));
        };
        let value = match self.raw(setting) {
            None => setting.default.parse::<u64>().unwrap_or(min),
            Some(raw) => raw.parse::<u64>().map_err(|_| {
                setting.error(format!(
                    "expected a whole number such as {}, got {raw:?}",
                    setting.default
                ))
            })?,
        };
        if value < min || value > max {
            return Err(setting.error(format!("must be between {min} and {max}, got {value}")));
        }
        T::try_from(value).map_err(|_| setting.error(format!("{value} is too large")))
    }

    pub fn boolean(&self, setting: &Setting) -> Result<bool, ConfigError> {
        let value = self.raw(setting).unwrap_or(setting.default);
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            other => Err(setting.error(format!("expected true or false, got {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's configuration table is exactly the declared settings, in order: a variable
    /// added here and not there (or the reverse, or a changed default) fails this test.
    #[test]
    fn the_readme_table_lists_exactly_the_declared_settings() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md beside the workspace");
        let table: Vec<&str> = readme
            .lines()
            .skip_while(|l| !l.starts_with("| Variable | Default | Meaning |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        let declared: Vec<String> = ALL.iter().map(Setting::markdown_row).collect();
        assert_eq!(
            table, declared,
            "README.md's configuration table differs from config/settings.rs"
        );
    }

    #[test]
    fn every_default_parses_with_its_own_parser() {
        let vars = Vars(BTreeMap::new());
        for setting in ALL {
            match setting.kind {
                Kind::Seconds { .. } => drop(vars.seconds(setting).expect(setting.name)),
                Kind::Integer { .. } => drop(vars.integer::<u64>(setting).expect(setting.name)),
                Kind::Boolean => drop(vars.boolean(setting).expect(setting.name)),
                Kind::Text | Kind::PerConnector => {}
            }
        }
    }

    #[test]
    fn unread_variables_are_named_with_the_setting_they_resemble() {
        let w = unread_warning("API_KEY");
        assert!(
            w.starts_with("IH_API_KEY ") && w.ends_with("did you mean IH_API_KEYS?"),
            "{w}"
        );
        let w = unread_warning("SLAK_BOT_TOKEN");
        assert!(
            w.contains("IH_SLAK_BOT_TOKEN") && !w.contains("did you mean"),
            "{w}"
        );
    }

    #[test]
    fn own_prefixes_come_from_the_declarations() {
        for typo in [
            "DELIVERY_MAX_ATTEMPT",
            "DATABASE_MAX_CONNECTION",
            "CONNECTOR_MEMORY",
            "MAX_PAYLOAD",
            "LOG_LEVELS",
            "RETENTION_DAY",
        ] {
            assert!(is_own_prefix(typo), "{typo}");
            assert!(!is_known(typo), "{typo}");
        }
        for connector in ["SLACK_BOT_TOKEN", "DISCORD_WEBHOOK_URL", "API_KEY"] {
            assert!(!is_own_prefix(connector), "{connector}");
        }
        assert!(is_known("DELIVERY_MAX_ATTEMPTS"));
    }
}
