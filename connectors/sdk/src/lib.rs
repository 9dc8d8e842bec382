//! Write an Integrations Hub connector as a plain Rust type.
//!
//! Implement [`Connector`] and export it with [`export_connector!`]; the WIT contract
//! (`wit/connector.wit`, `integrations-hub:connector@0.2.0`) stays inside this crate. Everything
//! a connector does outside itself goes through the [`Host`] it is handed: in the hub that is
//! the sandbox's imports, in native unit tests a [`mock::MockHost`] with scripted answers.
//!
//! ```
//! use integrations_hub_connector::*;
//!
//! struct Hello;
//!
//! impl Connector for Hello {
//!     fn manifest() -> Manifest {
//!         Manifest::new("hello", "0.1.0", "Says hello")
//!             .events(["greeting.sent"])
//!             .allowed_hosts(["api.example.com"])
//!             .config(ConfigKey::required("token").secret())
//!     }
//!
//!     fn handle(host: &dyn Host, event: &Event, _context: &Context) -> Outcome {
//!         let token = host.config("token").unwrap_or_default();
//!         let request = Request::post("https://api.example.com/hello", event.payload.clone())
//!             .header("authorization", format!("Bearer {token}"));
//!         match host.send(&request) {
//!             Ok(r) if r.is_success() => Outcome::ok().status(r.status),
//!             Ok(r) => Outcome::retry(format!("HTTP {}", r.status)).status(r.status),
//!             Err(e) => e.into(),
//!         }
//!     }
//! }
//!
//! // In the crate's lib.rs: export_connector!(Hello);
//! # let host = mock::MockHost::new().with_config("token", "t")
//! #     .answer("POST", "https://api.example.com/", Response::new(200));
//! # let outcome = Hello::handle(&host, &Event::new("greeting.sent", "{}"), &Context::first());
//! # assert_eq!(outcome, Outcome::ok().status(200));
//! ```

pub mod format;
pub mod mock;

use std::time::Duration;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "connector",
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "integrations_hub_connector::bindings",
    });
}

/// One event, as published to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event's id (a UUIDv7), stable across retries: an idempotency key for the API called.
    pub id: String,
    pub event_type: String,
    /// When the hub accepted it (RFC 3339).
    pub created_at: String,
    /// The payload's JSON text, exactly as published.
    pub payload: String,
}

impl Event {
    /// An event for tests (id and time made up).
    pub fn new(event_type: &str, payload: &str) -> Self {
        Self {
            id: "01900000-0000-7000-8000-000000000000".into(),
            event_type: event_type.into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            payload: payload.into(),
        }
    }

    /// The payload parsed.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

/// Which attempt of which delivery a call is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Attempts the hub makes at most before dead-lettering.
    pub max_attempts: u32,
    /// Milliseconds left of this call's budget when it started.
    pub remaining_ms: u64,
    pub delivery_id: String,
    /// `None` for the default instance (configured from `IH_<NAME>_<KEY>`).
    pub instance_id: Option<String>,
    pub subscription_id: Option<String>,
}

impl Context {
    /// A first attempt of 5 with 10 s left, for tests.
    pub fn first() -> Self {
        Self {
            attempt: 1,
            max_attempts: 5,
            remaining_ms: 10_000,
            delivery_id: "01900000-0000-7000-8000-000000000001".into(),
            instance_id: None,
            subscription_id: None,
        }
    }

    /// Whether this is the delivery's last attempt.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// A configuration key the connector reads with [`Host::config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKey {
    pub name: String,
    pub required: bool,
    pub secret: bool,
    pub description: String,
}

impl ConfigKey {
    pub fn required(name: &str) -> Self {
        Self {
            name: name.into(),
            required: true,
            secret: false,
            description: String::new(),
        }
    }

    pub fn optional(name: &str) -> Self {
        Self {
            required: false,
            ..Self::required(name)
        }
    }

    /// Never logged or shown by the hub's API.
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    pub fn describe(mut self, description: &str) -> Self {
        self.description = description.into();
        self
    }
}

/// What a connector is and what it needs (see `wit/connector.wit` for every rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    /// Event types the default instance receives (exact names, or `*`).
    pub events: Vec<String>,
    /// `host`, `*.example.com` (https on 443) or `host:port`.
    pub allowed_hosts: Vec<String>,
    pub config: Vec<ConfigKey>,
}

impl Manifest {
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            events: Vec::new(),
            allowed_hosts: Vec::new(),
            config: Vec::new(),
        }
    }

    pub fn events<S: Into<String>>(mut self, events: impl IntoIterator<Item = S>) -> Self {
        self.events.extend(events.into_iter().map(Into::into));
        self
    }

    pub fn allowed_hosts<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> Self {
        self.allowed_hosts.extend(hosts.into_iter().map(Into::into));
        self
    }

    pub fn config(mut self, key: ConfigKey) -> Self {
        self.config.push(key);
        self
    }
}

/// What came of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered; what the upstream answered is recorded on the attempt.
    Ok {
        upstream_status: Option<u16>,
        external_id: Option<String>,
    },
    /// Nothing to do for this event: the delivery ends, recorded as skipped.
    Skipped(String),
    /// Try again later (after at least `after_ms` when given).
    Retry {
        reason: String,
        after_ms: Option<u64>,
        upstream_status: Option<u16>,
    },
    /// Retrying cannot help: dead-lettered at once.
    Permanent(String),
}

impl Outcome {
    pub fn ok() -> Self {
        Self::Ok {
            upstream_status: None,
            external_id: None,
        }
    }

    pub fn skipped(reason: impl Into<String>) -> Self {
        Self::Skipped(reason.into())
    }

    pub fn retry(reason: impl Into<String>) -> Self {
        Self::Retry {
            reason: reason.into(),
            after_ms: None,
            upstream_status: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent(reason.into())
    }

    /// The upstream's HTTP status (`ok` and `retry`).
    pub fn status(mut self, status: u16) -> Self {
        if let Self::Ok {
            upstream_status, ..
        }
        | Self::Retry {
            upstream_status, ..
        } = &mut self
        {
            *upstream_status = Some(status);
        }
        self
    }

    /// The upstream's id for what was created (`ok`).
    pub fn external_id(mut self, id: impl Into<String>) -> Self {
        if let Self::Ok { external_id, .. } = &mut self {
            *external_id = Some(id.into());
        }
        self
    }

    /// The earliest time to retry (`retry`).
    pub fn after(mut self, delay: Duration) -> Self {
        if let Self::Retry { after_ms, .. } = &mut self {
            *after_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        }
        self
    }
}

/// Settings refused by [`Connector::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// The key at fault, or `None` for the settings as a whole.
    pub key: Option<String>,
    pub message: String,
}

impl SettingsError {
    pub fn key(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
            message: message.into(),
        }
    }
}

/// An HTTP request through the hub (the only way out of the sandbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A POST with a JSON body.
    pub fn post(url: impl Into<String>, json: impl Into<String>) -> Self {
        Self::new("POST", url)
            .header("content-type", "application/json")
            .body(json.into().into_bytes())
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }
}

/// An HTTP response. Redirects are returned as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header named `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Retry-After` in seconds, as a delay.
    pub fn retry_after(&self) -> Option<Duration> {
        let seconds = self
            .header_value("retry-after")?
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(Duration::from_secs(seconds))
    }

    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The usual reading of an HTTP answer: 2xx delivered; 408, 429 and 5xx retried (after
    /// `Retry-After`, at most an hour, when given); any other status permanent. The status is
    /// reported as the upstream's.
    pub fn outcome(&self) -> Outcome {
        match self.status {
            200..=299 => Outcome::ok().status(self.status),
            408 | 429 | 500..=599 => {
                let retry = Outcome::retry(format!("HTTP {}", self.status)).status(self.status);
                match self.retry_after() {
                    Some(delay) => retry.after(delay.min(Duration::from_secs(3600))),
                    None => retry,
                }
            }
            status => Outcome::permanent(format!("HTTP {status}")),
        }
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Refused by the hub (host not granted, SSRF guard).
    Denied(String),
    /// No answer within the call's remaining time.
    Timeout,
    /// DNS, TCP or TLS failure.
    Connection(String),
    /// Malformed request, or a response over 1 MiB.
    Invalid(String),
}

/// The usual reading of a failed request: a denial or a bad request cannot be fixed by retrying;
/// a timeout or a connection failure can.
impl From<HttpError> for Outcome {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Denied(why) => {
                Outcome::permanent(format!("request denied by the hub: {why}"))
            }
            HttpError::Invalid(why) => Outcome::permanent(format!("invalid request: {why}")),
            HttpError::Timeout => Outcome::retry("the upstream did not answer in time"),
            HttpError::Connection(why) => {
                Outcome::retry(format!("cannot reach the upstream: {why}"))
            }
        }
    }
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// What a connector may do outside itself.
pub trait Host {
    /// A declared configuration key's value for this instance.
    fn config(&self, key: &str) -> Option<String>;
    /// Sends a request to a granted host.
    fn send(&self, request: &Request) -> Result<Response, HttpError>;
    /// Writes a log line with key-value fields (keys: `a-z0-9_`). Never log secrets.
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]);
    /// The instance's cached value of `key`.
    fn kv_get(&self, key: &str) -> Option<Vec<u8>>;
    /// Caches `value` under `key` for this instance, optionally for `ttl` only.
    fn kv_set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), String>;
    fn kv_delete(&self, key: &str);
}

/// A connector.
pub trait Connector {
    /// Describes the connector; called once when the file is loaded.
    fn manifest() -> Manifest;

    /// Checks an instance's settings (read with `host.config`) when an operator creates or
    /// changes one; an error is shown as the API's 422. No HTTP here.
    fn validate(host: &dyn Host) -> Result<(), SettingsError> {
        let _ = host;
        Ok(())
    }

    /// Handles one attempt of a delivery.
    fn handle(host: &dyn Host, event: &Event, context: &Context) -> Outcome;
}

/// Exports `$connector` (a type implementing [`Connector`]) as the component's connector world.
#[macro_export]
macro_rules! export_connector {
    ($connector:ty) => {
        #[doc(hidden)]
        pub struct __IntegrationsHubGuest;

        impl $crate::bindings::Guest for __IntegrationsHubGuest {
            fn manifest() -> $crate::bindings::Manifest {
                $crate::guest::manifest(<$connector as $crate::Connector>::manifest())
            }

            fn validate() -> ::core::result::Result<(), $crate::bindings::SettingsError> {
                $crate::guest::validate(<$connector as $crate::Connector>::validate(
                    &$crate::guest::WasmHost,
                ))
            }

            fn handle(
                event: $crate::bindings::Event,
                context: $crate::bindings::Context,
            ) -> $crate::bindings::Outcome {
                let (event, context) = $crate::guest::inputs(event, context);
                $crate::guest::outcome(<$connector as $crate::Connector>::handle(
                    &$crate::guest::WasmHost,
                    &event,
                    &context,
                ))
            }
        }

        $crate::bindings::export!(__IntegrationsHubGuest with_types_in $crate::bindings);
    };
}

/// The glue between the WIT bindings and [`Connector`]; used by [`export_connector!`].
#[doc(hidden)]
pub mod guest {
    use super::bindings::integrations_hub::connector::{config, http, kv, log, types};
    use super::*;

    /// The hub's imports as a [`Host`].
    pub struct WasmHost;

    impl Host for WasmHost {
        fn config(&self, key: &str) -> Option<String> {
            config::get(key)
        }

        fn send(&self, request: &Request) -> Result<Response, HttpError> {
            let request = http::Request {
                method: request.method.clone(),
                url: request.url.clone(),
                headers: (request.headers.iter())
                    .map(|(name, value)| http::Header {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                body: request.body.clone(),
            };
            match http::send(&request) {
                Ok(r) => Ok(Response {
                    status: r.status,
                    headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                    body: r.body,
                }),
                Err(http::HttpError::Denied(why)) => Err(HttpError::Denied(why)),
                Err(http::HttpError::Timeout) => Err(HttpError::Timeout),
                Err(http::HttpError::Connection(why)) => Err(HttpError::Connection(why)),
                Err(http::HttpError::Invalid(why)) => Err(HttpError::Invalid(why)),
            }
        }

        fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
            let level = match level {
                Level::Debug => log::Level::Debug,
                Level::Info => log::Level::Info,
                Level::Warn => log::Level::Warn,
                Level::Error => log::Level::Error,
            };
            let fields: Vec<log::Field> = (fields.iter())
                .map(|(key, value)| log::Field {
                    key: (*key).into(),
                    value: (*value).into(),
                })
                .collect();
            log::log(level, message, &fields);
        }

        fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
            kv::get(key)
        }

        fn kv_set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), String> {
            let ttl_ms = ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
            kv::set(key, value, ttl_ms).map_err(|kv::KvError::TooLarge(why)| why)
        }

        fn kv_delete(&self, key: &str) {
            kv::delete(key)
        }
    }

    pub fn manifest(m: Manifest) -> types::Manifest {
        types::Manifest {
            name: m.name,
            version: m.version,
            description: m.description,
            events: m.events,
            allowed_hosts: m.allowed_hosts,
            config: (m.config.into_iter())
                .map(|k| types::ConfigKey {
                    name: k.name,
                    required: k.required,
                    secret: k.secret,
                    description: k.description,
                })
                .collect(),
        }
    }

    pub fn validate(result: Result<(), SettingsError>) -> Result<(), types::SettingsError> {
        result.map_err(|e| types::SettingsError {
            key: e.key,
            message: e.message,
        })
    }

    pub fn inputs(event: types::Event, context: types::Context) -> (Event, Context) {
        (
            Event {
                id: event.id,
                event_type: event.event_type,
                created_at: event.created_at,
                payload: event.payload,
            },
            Context {
                attempt: context.attempt,
                max_attempts: context.max_attempts,
                remaining_ms: context.remaining_ms,
                delivery_id: context.delivery_id,
                instance_id: context.instance_id,
                subscription_id: context.subscription_id,
            },
        )
    }

    pub fn outcome(outcome: Outcome) -> types::Outcome {
        match outcome {
            Outcome::Ok {
                upstream_status,
                external_id,
            } => types::Outcome::Ok(types::Delivered {
                upstream_status,
                external_id,
            }),
            Outcome::Skipped(reason) => types::Outcome::Skipped(reason),
            Outcome::Retry {
                reason,
                after_ms,
                upstream_status,
            } => types::Outcome::Retry(types::RetryAfter {
                reason,
                after_ms,
                upstream_status,
            }),
            Outcome::Permanent(reason) => types::Outcome::Permanent(reason),
        }
    }
}
