//! Configuration: one typed struct, read once from the `IH_*` environment and validated.
//!
//! Every variable is declared once in [`settings`] (name, default, parser, help). A bad value
//! stops start-up with a
//! [`ConfigError`] that names the variable, so an operator never has to guess which of twenty
//! settings is wrong. Secrets (API keys, the database password, connector settings) are wrapped in
//! [`Secret`] or redacted by hand so they never reach `Debug` output or logs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod read;
pub mod settings;

pub use settings::PREFIX;
use settings::Vars;

/// A string that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Call sites are easy to audit with a grep for `expose`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Publish events (`POST /api/v1/events`, `/events/batch`), nothing else.
    Publish,
    /// Read everything, change nothing.
    Read,
    /// Everything.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Publish, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// One key of `IH_API_KEYS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub scope: Scope,
    pub key: Secret,
}

/// One key of `IH_ENCRYPTION_KEY`: 32 bytes, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey([u8; 32]);

impl EncryptionKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes. Call sites are easy to audit with a grep for `expose`.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads one key written as base64 (standard or URL-safe, padded or not) or as 64 hex digits.
    fn parse(text: &str) -> Option<Self> {
        use base64::Engine;
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
        };
        decoded?.try_into().ok().map(Self)
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where events are stored.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }

    /// What it names, for errors: `PostgreSQL database "hub" at db:5432 (user hub)` or
    /// `SQLite database data/hub.db`, never the password.
    pub fn describe(&self) -> String {
        if !self.is_postgres() {
            let path = self
                .0
                .trim_start_matches("sqlite:")
                .trim_start_matches("//");
            return format!("SQLite database {path}");
        }
        match url::Url::parse(&self.0) {
            Ok(url) => {
                let host = url.host_str().unwrap_or("localhost");
                let port = url.port().unwrap_or(5432);
                let database = url.path().trim_start_matches('/');
                let database = if database.is_empty() {
                    url.username()
                } else {
                    database
                };
                format!(
                    "PostgreSQL database {database:?} at {host}:{port} (user {:?})",
                    url.username()
                )
            }
            Err(_) => self.redacted(),
        }
    }

    /// The URL with any password replaced, safe for logs.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut parsed) if parsed.password().is_some() => {
                // Cannot fail: the URL has a host (it has a password).
                let _ = parsed.set_password(Some("redacted"));
                parsed.to_string()
            }
            _ => self.0.clone(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Settings of the delivery engine.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    pub poll_interval: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
}

/// Settings of the connector runtime.
#[derive(Clone, Debug)]
pub struct ConnectorConfig {
    pub dir: PathBuf,
    pub timeout: Duration,
    pub memory_mb: u64,
    /// Every `IH_*` variable that is not one of the hub's own: connector settings such as
    /// `IH_SLACK_BOT_TOKEN`, keyed by the name without the prefix. Values may be secrets.
    pub settings: BTreeMap<String, Secret>,
    /// `IH_COMPONENTS_TRUSTED_KEYS`: when not empty, only files signed by one of these ed25519
    /// public keys load.
    pub trusted_keys: Vec<[u8; 32]>,
}

/// The whole configuration of one hub instance.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: DatabaseUrl,
    pub database_max_connections: u32,
    pub bind: SocketAddr,
    pub api_keys: Vec<ApiKey>,
    /// The token `/metrics` requires (`IH_METRICS_KEY`); `None`: open.
    pub metrics_key: Option<Secret>,
    /// Keys sealing subscription secrets at rest, the sealing one first; empty: stored plain
    /// (only allowed on a loopback bind).
    pub encryption_keys: Vec<EncryptionKey>,
    pub delivery: DeliveryConfig,
    pub allow_private_destinations: bool,
    /// Private networks opened one by one (`IH_ALLOWED_DESTINATION_CIDRS`).
    pub allowed_destination_cidrs: Vec<ipnet::IpNet>,
    pub connectors: ConnectorConfig,
    pub max_payload_bytes: usize,
    pub max_batch_bytes: usize,
    pub retention_days: u32,
    pub log_level: String,
    pub log_format: LogFormat,
    /// Problems that do not stop start-up (e.g. an unknown `IH_DELIVERY_*` variable, likely a
    /// typo); logged once logging is up.
    pub warnings: Vec<String>,
}

/// A configuration value that cannot be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: String,
    pub message: String,
}

fn err(setting: &settings::Setting, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: setting.variable(),
        message: message.into(),
    }
}

impl Config {
    /// Reads the process environment. Call once, at start-up.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Builds the configuration from `(name, value)` pairs; only names starting with `IH_` count.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = Vars(
            vars.into_iter()
                .filter_map(|(k, v)| {
                    let k: String = k.into();
                    k.strip_prefix(PREFIX).map(|s| (s.to_owned(), v.into()))
                })
                .collect(),
        );
        use settings as s;
        let mut warnings = Vec::new();

        let database_url = DatabaseUrl::new(vars.text(&s::DATABASE_URL));
        if !(database_url.is_postgres() || database_url.as_str().starts_with("sqlite:")) {
            return Err(err(
                &s::DATABASE_URL,
                format!(
                    "unsupported scheme in {:?}: use sqlite://path/to/file.db or postgres://user:password@host/db",
                    database_url.redacted()
                ),
            ));
        }
        if database_url.is_postgres() {
            url::Url::parse(database_url.as_str())
                .map_err(|e| err(&s::DATABASE_URL, format!("not a valid postgres URL: {e}")))?;
        }

        let bind_raw = vars.text(&s::BIND);
        let bind: SocketAddr = read::parse_bind(&bind_raw).ok_or_else(|| {
            err(
                &s::BIND,
                format!("expected an address with a port such as 127.0.0.1:8000 or 0.0.0.0:8000, got {bind_raw:?}"),
            )
        })?;
        let api_keys = read::api_keys(&vars, bind)?;
        let metrics_key = vars.raw(&s::METRICS_KEY).map(Secret::new);
        if let Some(key) = &metrics_key {
            read::check_token(&s::METRICS_KEY, key)?;
        }
        let encryption_keys = read::encryption_keys(&vars, bind)?;

        let backoff_max = vars.seconds(&s::DELIVERY_BACKOFF_MAX)?;
        let backoff_base = vars.seconds(&s::DELIVERY_BACKOFF_BASE)?;
        if backoff_base > backoff_max {
            return Err(err(
                &s::DELIVERY_BACKOFF_BASE,
                "may not exceed IH_DELIVERY_BACKOFF_MAX_SECONDS",
            ));
        }
        let delivery = DeliveryConfig {
            poll_interval: vars.seconds(&s::DELIVERY_POLL_INTERVAL)?,
            max_attempts: vars.integer(&s::DELIVERY_MAX_ATTEMPTS)?,
            backoff_base,
            backoff_max,
            timeout: vars.seconds(&s::DELIVERY_TIMEOUT)?,
            concurrency: vars.integer(&s::DELIVERY_CONCURRENCY)?,
        };

        let settings: BTreeMap<String, Secret> = vars
            .0
            .iter()
            .filter(|(k, _)| !settings::is_known(k))
            // An empty value counts as unset (compose files pass `${IH_SLACK_BOT_TOKEN:-}`), so a
            // connector missing it is `inactive` instead of calling out with an empty token.
            .filter(|(_, v)| !v.is_empty())
            .filter(|(k, _)| {
                if settings::is_own_prefix(k) {
                    warnings.push(format!(
                        "{PREFIX}{k} is not a setting of the hub and was ignored (a typo?)"
                    ));
                    false
                } else {
                    true
                }
            })
            .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
            .collect();
        let connectors = ConnectorConfig {
            dir: PathBuf::from(vars.text(&s::CONNECTORS_DIR)),
            timeout: vars.seconds(&s::CONNECTOR_TIMEOUT)?,
            memory_mb: vars.integer(&s::CONNECTOR_MEMORY_MB)?,
            settings,
            trusted_keys: read::trusted_keys(&vars)?,
        };

        let max_payload_bytes = vars.integer(&s::MAX_PAYLOAD_BYTES)?;
        let max_batch_bytes: usize = vars.integer(&s::MAX_BATCH_BYTES)?;
        if max_batch_bytes < max_payload_bytes {
            return Err(err(
                &s::MAX_BATCH_BYTES,
                "may not be smaller than IH_MAX_PAYLOAD_BYTES",
            ));
        }

        let log_level = vars.text(&s::LOG_LEVEL).to_ascii_lowercase();
        read::check_log_level(&log_level)?;
        let log_format = match vars.text(&s::LOG_FORMAT).to_ascii_lowercase().as_str() {
            "json" => LogFormat::Json,
            "pretty" | "text" => LogFormat::Pretty,
            other => {
                return Err(err(
                    &s::LOG_FORMAT,
                    format!("expected json or pretty, got {other:?}"),
                ));
            }
        };

        Ok(Config {
            database_url,
            database_max_connections: vars.integer(&s::DATABASE_MAX_CONNECTIONS)?,
            bind,
            api_keys,
            metrics_key,
            encryption_keys,
            delivery,
            allow_private_destinations: vars.boolean(&s::ALLOW_PRIVATE_DESTINATIONS)?,
            allowed_destination_cidrs: read::cidrs(&vars)?,
            connectors,
            max_payload_bytes,
            max_batch_bytes,
            retention_days: vars.integer(&s::RETENTION_DAYS)?,
            log_level,
            log_format,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = parse(&[]).expect("defaults are valid");
        assert_eq!(c.database_url.as_str(), "sqlite://data/integrations-hub.db");
        assert_eq!(c.bind, "127.0.0.1:8000".parse().expect("addr"));
        assert!(c.api_keys.is_empty());
        assert_eq!(c.delivery.poll_interval, Duration::from_secs(2));
        assert_eq!(c.delivery.max_attempts, 5);
        assert_eq!(c.delivery.backoff_base, Duration::from_secs(2));
        assert_eq!(c.delivery.backoff_max, Duration::from_secs(3600));
        assert_eq!(c.delivery.timeout, Duration::from_secs(10));
        assert_eq!(c.delivery.concurrency, 64);
        assert!(!c.allow_private_destinations);
        assert_eq!(c.connectors.timeout, Duration::from_secs(10));
        assert_eq!(c.connectors.memory_mb, 64);
        assert_eq!(c.max_payload_bytes, 262_144);
        assert_eq!(c.retention_days, 30);
        assert_eq!(c.log_level, "info");
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: &[(&str, &str)] = &[
            ("IH_DELIVERY_TIMEOUT_SECONDS", "-1"),
            ("IH_DELIVERY_TIMEOUT_SECONDS", "soon"),
            ("IH_DELIVERY_MAX_ATTEMPTS", "0"),
            ("IH_DELIVERY_CONCURRENCY", "1.5"),
            ("IH_DATABASE_URL", "mysql://localhost/x"),
            ("IH_BIND", "localhost"),
            ("IH_ALLOW_PRIVATE_DESTINATIONS", "maybe"),
            ("IH_ALLOWED_DESTINATION_CIDRS", "10.0.0.0/33"),
            ("IH_ALLOWED_DESTINATION_CIDRS", "intranet"),
            ("IH_LOG_FORMAT", "xml"),
            ("IH_LOG_LEVEL", "loud=="),
            ("IH_LOG_LEVEL", "verbose"),
            ("IH_LOG_LEVEL", "info,integrations_hub=chatty"),
            ("IH_MAX_PAYLOAD_BYTES", "12"),
            ("IH_RETENTION_DAYS", "NaN"),
            ("IH_CONNECTOR_MEMORY_MB", "0"),
            ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "inf"),
        ];
        for (var, value) in cases {
            let e = parse(&[(var, value)]).expect_err(&format!("{var}={value} must be refused"));
            assert_eq!(&e.variable, var, "{var}={value}: {e}");
            assert!(e.to_string().starts_with(var), "{e}");
        }
    }

    #[test]
    fn log_level_is_case_insensitive() {
        let c = parse(&[("IH_LOG_LEVEL", "INFO")]).expect("INFO is accepted");
        assert_eq!(c.log_level, "info");
    }

    #[test]
    fn public_bind_without_keys_is_refused() {
        let e = parse(&[("IH_BIND", "0.0.0.0:8000")]).expect_err("must refuse");
        assert_eq!(e.variable, "IH_API_KEYS");
        assert!(e.message.contains("0.0.0.0:8000"), "{e}");
        let ok = parse(&[
            ("IH_BIND", "0.0.0.0:8000"),
            ("IH_API_KEYS", "0123456789abcdef0123, fedcba9876543210fedc"),
            ("IH_ENCRYPTION_KEY", KEY),
        ])
        .expect("keys make a public bind acceptable");
        assert_eq!(ok.api_keys.len(), 2);
        let short = parse(&[("IH_API_KEYS", "short")]).expect_err("short keys refused");
        assert_eq!(short.variable, "IH_API_KEYS");
    }

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn allowed_networks_are_parsed() {
        let c = parse(&[(
            "IH_ALLOWED_DESTINATION_CIDRS",
            "10.20.1.0/16, fd00:1::/32,192.168.5.5",
        )])
        .expect("valid networks");
        let shown: Vec<String> = c
            .allowed_destination_cidrs
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(shown, ["10.20.0.0/16", "fd00:1::/32", "192.168.5.5/32"]);
    }

    #[test]
    fn localhost_binds_the_loopback() {
        let c = parse(&[("IH_BIND", "localhost:9000")]).expect("localhost is accepted");
        assert_eq!(c.bind, "127.0.0.1:9000".parse().expect("addr"));
        let e = parse(&[("IH_BIND", "localhost:http")]).expect_err("a port is a number");
        assert_eq!(e.variable, "IH_BIND");
    }

    #[test]
    fn encryption_keys_are_read_and_required_beyond_loopback() {
        let hex = "30313233343536373839616263646566303132333435363738396162636465ff";
        let c = parse(&[("IH_ENCRYPTION_KEY", &format!("{KEY}, {hex}"))]).expect("two keys");
        assert_eq!(c.encryption_keys.len(), 2);
        assert_eq!(
            c.encryption_keys[0].expose(),
            b"0123456789abcdef0123456789abcdef"
        );
        assert_eq!(c.encryption_keys[1].expose()[31], 0xff);
        assert!(!format!("{c:?}").contains(KEY));

        for bad in ["short", "MDEyMzQ1Njc4OWFiY2RlZg==", "not base64 at all!"] {
            let e = parse(&[("IH_ENCRYPTION_KEY", bad)]).expect_err(bad);
            assert_eq!(e.variable, "IH_ENCRYPTION_KEY", "{e}");
            assert!(!e.message.contains(bad), "the value is not echoed: {e}");
        }

        let public = [
            ("IH_BIND", "0.0.0.0:8000"),
            ("IH_API_KEYS", "0123456789abcdef0123"),
        ];
        let e = parse(&public).expect_err("a public bind needs a key");
        assert_eq!(e.variable, "IH_ENCRYPTION_KEY");

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("key");
        std::fs::write(&file, format!("{KEY}\n")).expect("write");
        let path = file.to_str().expect("utf-8 path");
        let c = parse(&[public[0], public[1], ("IH_ENCRYPTION_KEY_FILE", path)])
            .expect("a key file is as good");
        assert_eq!(c.encryption_keys.len(), 1);
        let both = parse(&[("IH_ENCRYPTION_KEY", KEY), ("IH_ENCRYPTION_KEY_FILE", path)]);
        assert_eq!(
            both.expect_err("not both").variable,
            "IH_ENCRYPTION_KEY_FILE"
        );
        let missing = parse(&[("IH_ENCRYPTION_KEY_FILE", "/nonexistent/key")]);
        assert_eq!(
            missing.expect_err("unreadable").variable,
            "IH_ENCRYPTION_KEY_FILE"
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c = parse(&[
            ("IH_API_KEYS", "super-secret-api-key-123"),
            (
                "IH_DATABASE_URL",
                "postgres://hub:hunter2hunter2@db:5432/hub",
            ),
            ("IH_SLACK_BOT_TOKEN", "xoxb-very-secret-token"),
        ])
        .expect("valid");
        let debug = format!("{c:?}");
        for secret in [
            "super-secret-api-key-123",
            "hunter2hunter2",
            "xoxb-very-secret-token",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked into {debug}");
        }
        assert!(
            debug.contains("SLACK_BOT_TOKEN"),
            "the setting's name stays visible"
        );
        assert_eq!(
            c.connectors
                .settings
                .get("SLACK_BOT_TOKEN")
                .map(Secret::expose),
            Some("xoxb-very-secret-token")
        );
    }

    #[test]
    fn empty_connector_settings_count_as_unset() {
        let c = Config::from_vars([
            ("IH_SLACK_BOT_TOKEN".to_owned(), String::new()),
            ("IH_SLACK_DEFAULT_CHANNEL".to_owned(), "#x".to_owned()),
        ])
        .expect("valid");
        assert!(!c.connectors.settings.contains_key("SLACK_BOT_TOKEN"));
        assert!(c.connectors.settings.contains_key("SLACK_DEFAULT_CHANNEL"));
    }

    #[test]
    fn typos_of_own_variables_warn_and_are_not_connector_settings() {
        let c = parse(&[("IH_DELIVERY_MAX_ATTEMPT", "3")]).expect("valid");
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("IH_DELIVERY_MAX_ATTEMPT"));
        assert!(!c.connectors.settings.contains_key("DELIVERY_MAX_ATTEMPT"));
    }
}
