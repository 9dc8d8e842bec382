//! The host side of the connector world: `http.send`, `config.get`, `log` and `kv`, each limited
//! to what the connector was granted; 0.1 components' imports are served by the same code.
//!
//! Invariants:
//! - `http.send` reaches only hosts in the grant, goes through the SSRF guard (the same resolver
//!   check as webhooks, unless `IH_ALLOW_PRIVATE_DESTINATIONS`), never follows redirects, reads
//!   at most [`MAX_RESPONSE_BODY`] and never waits past the call's deadline;
//! - every refusal is counted in `ih_connector_http_denied_total{connector}`;
//! - `config.get` answers only keys the manifest declares; values are never logged;
//! - a call writes at most [`MAX_LOG_LINES`] log lines of at most [`MAX_LOG_LINE`] bytes and
//!   [`MAX_LOG_FIELDS`] fields, each tagged with the connector, instance and delivery;
//! - `kv` reaches only the calling instance's values, and only during a delivery.

use std::time::Instant;

use reqwest::header::{HeaderName, HeaderValue};

use super::manifest::is_key;
use super::outcome::bounded;
use super::recorder::{Fixture, SeenLog, SeenRequest};
use super::runtime::HostState;
use super::runtime::bindings::integrations_hub::connector::{config, http, kv, log, types};
use super::runtime::bindings_v1::integrations_hub::connector as v1;
use crate::egress::{self, Refusal};

/// Response bytes a connector may receive.
pub const MAX_RESPONSE_BODY: usize = 1 << 20;
/// Request bytes a connector may send.
pub const MAX_REQUEST_BODY: usize = 1 << 20;
/// Headers in one request.
pub const MAX_REQUEST_HEADERS: usize = 64;
/// Log lines per call; the rest are dropped (with one note saying so).
pub const MAX_LOG_LINES: u32 = 100;
/// Bytes per log line.
pub const MAX_LOG_LINE: usize = 4096;
/// Fields per log line; the rest are dropped.
pub const MAX_LOG_FIELDS: usize = 16;
/// Bytes of a log field's value.
pub const MAX_LOG_FIELD: usize = 512;
impl types::Host for HostState {}

impl http::Host for HostState {
    async fn send(
        &mut self,
        req: http::Request,
    ) -> wasmtime::Result<Result<http::Response, http::HttpError>> {
        Ok(self.send_checked(req).await)
    }
}

impl HostState {
    fn denied(&self, reason: String) -> http::HttpError {
        self.metrics.connector_http_denied(&self.shared.name);
        tracing::warn!(connector = %self.shared.name, reason = %reason, "connector HTTP request denied");
        http::HttpError::Denied(reason)
    }

    async fn send_checked(
        &mut self,
        req: http::Request,
    ) -> Result<http::Response, http::HttpError> {
        let result = self.send_within_grant(&req).await;
        if let Some(recorder) = &self.recorder {
            recorder.request(seen(&req, &result));
        }
        result
    }

    async fn send_within_grant(
        &mut self,
        req: &http::Request,
    ) -> Result<http::Response, http::HttpError> {
        let invalid = |why: String| http::HttpError::Invalid(why);
        let url = url::Url::parse(&req.url)
            .map_err(|e| invalid(format!("bad URL {:?}: {e}", req.url)))?;
        let Some(grant) = self.shared.grant.as_ref() else {
            return Err(self.denied("http is not available while the manifest is read".into()));
        };
        if let Err(denial) = grant.check(&url) {
            return Err(self.denied(denial.0));
        }
        let scripted = (self.recorder.as_ref()).and_then(|r| r.answer(&req.method, url.as_str()));
        match scripted {
            Some(scripted) => scripted_answer(scripted, req),
            None => self.send_granted(url, req).await,
        }
    }

    /// Sends a request whose host is granted, through the SSRF guard.
    async fn send_granted(
        &mut self,
        url: url::Url,
        req: &http::Request,
    ) -> Result<http::Response, http::HttpError> {
        let invalid = |why: String| http::HttpError::Invalid(why);
        if let Err(refused) = egress::check_url(url.as_str(), &self.policy) {
            return Err(self.denied(refused.to_string()));
        }
        let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| invalid(format!("bad method {:?}", req.method)))?;
        if req.headers.len() > MAX_REQUEST_HEADERS {
            return Err(invalid(format!("more than {MAX_REQUEST_HEADERS} headers")));
        }
        if req.body.len() > MAX_REQUEST_BODY {
            return Err(invalid(format!(
                "request body over {MAX_REQUEST_BODY} bytes"
            )));
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(http::HttpError::Timeout);
        }
        let mut request = self.client.request(method, url).timeout(remaining);
        // The event's trace goes on, unless the connector sets its own: from the connector
        // call's span when traces are exported, else with a parent id of this request's own.
        let own_trace = req
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("traceparent"));
        let trace = self.traceparent.map(|event| event.for_call());
        if let (Some(trace), false) = (trace, own_trace) {
            request = request.header("traceparent", trace.to_string());
        }
        for h in &req.headers {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| invalid(format!("bad header name {:?}", h.name)))?;
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| invalid(format!("bad value for header {:?}", h.name)))?;
            request = request.header(name, value);
        }
        let mut response = match request.body(req.body.clone()).send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return Err(http::HttpError::Timeout),
            Err(e) => {
                let why = egress::describe(&e);
                if Refusal::find_in(&e).is_some() {
                    return Err(self.denied(why));
                }
                return Err(http::HttpError::Connection(why));
            }
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| http::Header {
                name: name.as_str().to_owned(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            })
            .collect();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BODY as u64)
        {
            return Err(invalid(format!(
                "the response body is larger than the hub's {MAX_RESPONSE_BODY}-byte cap"
            )));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BODY {
                        return Err(invalid(format!(
                            "the response body is larger than the hub's {MAX_RESPONSE_BODY}-byte cap"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(http::HttpError::Timeout),
                Err(e) => return Err(http::HttpError::Connection(egress::describe(&e))),
            }
        }
        Ok(http::Response {
            status,
            headers,
            body,
        })
    }
}

impl config::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .shared
            .settings
            .get(&key)
            .map(|value| value.expose().to_owned()))
    }
}

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<log::Field>,
    ) -> wasmtime::Result<()> {
        self.write_log(level, message, fields);
        Ok(())
    }
}

/// What a trial's script answers (`super::trial`): the fixture, or a connection error naming
/// the request nothing was scripted for.
fn scripted_answer(
    scripted: Option<Fixture>,
    req: &http::Request,
) -> Result<http::Response, http::HttpError> {
    let Some(fixture) = scripted else {
        return Err(http::HttpError::Connection(format!(
            "no scripted answer for {} {} (add one to the --http file)",
            req.method, req.url
        )));
    };
    Ok(http::Response {
        status: fixture.status,
        headers: (fixture.headers.iter())
            .map(|(name, value)| http::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        body: fixture.body_bytes(),
    })
}

/// A request as a trial reports it.
fn seen(req: &http::Request, result: &Result<http::Response, http::HttpError>) -> SeenRequest {
    SeenRequest {
        method: req.method.clone(),
        url: req.url.clone(),
        headers: (req.headers.iter())
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        body: bounded(String::from_utf8_lossy(&req.body).into_owned(), 4096),
        answer: match result {
            Ok(r) => format!("HTTP {}", r.status),
            Err(e) => format!("{e:?}"),
        },
    }
}

impl HostState {
    fn write_log(&mut self, level: log::Level, message: String, fields: Vec<log::Field>) {
        self.log_lines = self.log_lines.saturating_add(1);
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(connector = %self.shared.name, "connector log limit reached; further lines of this call are dropped");
            }
            return;
        }
        let message = bounded(message, MAX_LOG_LINE);
        let fields: Vec<(String, String)> = (fields.into_iter())
            .filter(|f| is_key(&f.key))
            .take(MAX_LOG_FIELDS)
            .map(|f| (f.key, bounded(f.value, MAX_LOG_FIELD)))
            .collect();
        if let Some(recorder) = &self.recorder {
            recorder.log(SeenLog {
                level: match level {
                    log::Level::Debug => "debug",
                    log::Level::Info => "info",
                    log::Level::Warn => "warn",
                    log::Level::Error => "error",
                }
                .to_owned(),
                message: message.clone(),
                fields: fields.clone(),
            });
        }
        // tracing's field names are static: the guest's fields travel as one logfmt value.
        let fields = (fields.iter())
            .map(|(key, value)| format!("{key}={value:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        let connector = self.shared.name.as_str();
        let (instance, delivery) = (self.instance, self.delivery);
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(connector, ?instance, ?delivery, fields, "{message}")
            };
        }
        match level {
            log::Level::Debug => line!(debug),
            log::Level::Info => line!(info),
            log::Level::Warn => line!(warn),
            log::Level::Error => line!(error),
        }
    }
}

impl HostState {
    /// Whose values this call reaches: its connector's, for its instance (`None`: the default).
    fn kv_scope(&self) -> crate::connectors::kv::Scope {
        (self.shared.name.clone(), self.instance)
    }
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self
            .kv
            .as_ref()
            .and_then(|kv| kv.get(&self.kv_scope(), &key)))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        let Some(kv) = self.kv.as_ref() else {
            return Ok(Err(kv::KvError::TooLarge(
                "kv is available only while handling a delivery".into(),
            )));
        };
        let ttl = ttl_ms.map(std::time::Duration::from_millis);
        Ok(kv
            .set(&self.kv_scope(), key, value, ttl)
            .map_err(|e| kv::KvError::TooLarge(e.0)))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        if let Some(kv) = self.kv.as_ref() {
            kv.delete(&self.kv_scope(), &key);
        }
        Ok(())
    }
}

// 0.1.0 components: the same imports, converted.

impl v1::types::Host for HostState {}

impl v1::http::Host for HostState {
    async fn send(
        &mut self,
        req: v1::http::Request,
    ) -> wasmtime::Result<Result<v1::http::Response, v1::http::HttpError>> {
        let req = http::Request {
            method: req.method,
            url: req.url,
            headers: (req.headers.into_iter())
                .map(|h| http::Header {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            body: req.body,
        };
        Ok(match self.send_checked(req).await {
            Ok(r) => Ok(v1::http::Response {
                status: r.status,
                headers: (r.headers.into_iter())
                    .map(|h| v1::http::Header {
                        name: h.name,
                        value: h.value,
                    })
                    .collect(),
                body: r.body,
            }),
            Err(http::HttpError::Denied(why)) => Err(v1::http::HttpError::Denied(why)),
            Err(http::HttpError::Timeout) => Err(v1::http::HttpError::Timeout),
            Err(http::HttpError::Connection(why)) => Err(v1::http::HttpError::Connection(why)),
            Err(http::HttpError::Invalid(why)) => Err(v1::http::HttpError::Invalid(why)),
        })
    }
}

impl v1::config::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        config::Host::get(self, key).await
    }
}

impl v1::log::Host for HostState {
    async fn log(&mut self, level: v1::log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            v1::log::Level::Debug => log::Level::Debug,
            v1::log::Level::Info => log::Level::Info,
            v1::log::Level::Warn => log::Level::Warn,
            v1::log::Level::Error => log::Level::Error,
        };
        self.write_log(level, message, Vec::new());
        Ok(())
    }
}
