//! The host side of the connector world: `http.send`, `config.get` and `log`, each limited to
//! what the connector was granted.
//!
//! Invariants:
//! - `http.send` reaches only hosts in the grant, goes through the SSRF guard (the same resolver
//!   check as webhooks, unless `IH_ALLOW_PRIVATE_DESTINATIONS`), never follows redirects, reads
//!   at most [`MAX_RESPONSE_BODY`] and never waits past the call's deadline;
//! - every refusal is counted in `ih_connector_http_denied_total{connector}`;
//! - `config.get` answers only keys the manifest declares; values are never logged;
//! - a call writes at most [`MAX_LOG_LINES`] log lines of at most [`MAX_LOG_LINE`] bytes.

use std::time::Instant;

use reqwest::header::{HeaderName, HeaderValue};

use super::outcome::bounded;
use super::runtime::HostState;
use super::runtime::bindings::integrations_hub::connector::{config, http, log, types};
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
        let invalid = |why: String| http::HttpError::Invalid(why);
        let url = url::Url::parse(&req.url)
            .map_err(|e| invalid(format!("bad URL {:?}: {e}", req.url)))?;
        let Some(grant) = self.shared.grant.as_ref() else {
            return Err(self.denied("http is not available while the manifest is read".into()));
        };
        if let Err(denial) = grant.check(&url) {
            return Err(self.denied(denial.0));
        }
        if let Err(refused) = egress::check_url(url.as_str(), self.allow_private) {
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
        for h in &req.headers {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| invalid(format!("bad header name {:?}", h.name)))?;
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| invalid(format!("bad value for header {:?}", h.name)))?;
            request = request.header(name, value);
        }
        let mut response = match request.body(req.body).send().await {
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
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.log_lines = self.log_lines.saturating_add(1);
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(connector = %self.shared.name, "connector log limit reached; further lines of this call are dropped");
            }
            return Ok(());
        }
        let message = bounded(message, MAX_LOG_LINE);
        let connector = self.shared.name.as_str();
        match level {
            log::Level::Debug => tracing::debug!(connector, "{message}"),
            log::Level::Info => tracing::info!(connector, "{message}"),
            log::Level::Warn => tracing::warn!(connector, "{message}"),
            log::Level::Error => tracing::error!(connector, "{message}"),
        }
        Ok(())
    }
}
