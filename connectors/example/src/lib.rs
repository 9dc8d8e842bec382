//! The example connector: the template for writing your own (see `connectors/README.md`).
//!
//! It forwards every `example.ping` event as a JSON POST to one configured URL, and shows every
//! part of the contract in the smallest form:
//! - [`Guest::manifest`] names the connector, its events, the hosts it may call and its config;
//! - [`Guest::handle`] reads config with `config::get`, calls out with `http::send` (the only way
//!   out of the sandbox), logs with `log::log`, and answers `Ok`, `Failure::Retry` or
//!   `Failure::Permanent`;
//! - the decision logic is a plain function ([`verdict`]) with native unit tests.
//!
//! Configuration: `IH_EXAMPLE_TARGET_URL` (required). The manifest grants `example.com`; to
//! forward elsewhere, the operator sets `IH_EXAMPLE_ALLOWED_HOSTS`.

wit_bindgen::generate!({ world: "connector", path: "../../wit/v0.1" });

use integrations_hub::connector::http::{self, Header, Request};
use integrations_hub::connector::types::{ConfigKey, RetryAfter};
use integrations_hub::connector::{config, log};

struct Example;

impl Guest for Example {
    fn manifest() -> Manifest {
        Manifest {
            name: "example".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Forwards example.ping events to a configured URL".into(),
            events: vec!["example.ping".into()],
            allowed_hosts: vec!["example.com".into()],
            config: vec![ConfigKey {
                name: "target_url".into(),
                required: true,
                secret: false,
                description: "Where events are POSTed".into(),
            }],
        }
    }

    fn handle(event: Event) -> Result<(), Failure> {
        // Declared as required, so the hub only calls us when it is set; be defensive anyway.
        let url = config::get("target_url")
            .ok_or_else(|| Failure::Permanent("target_url is not set".into()))?;
        let body = format!(
            "{{\"id\":{},\"event_type\":{},\"payload\":{}}}",
            serde_json::Value::from(event.id.as_str()),
            serde_json::Value::from(event.event_type.as_str()),
            event.payload
        );
        let request = Request {
            method: "POST".into(),
            url,
            headers: vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            body: body.into_bytes(),
        };
        match http::send(&request) {
            Ok(response) => verdict(response.status).map(|()| {
                log::log(log::Level::Info, &format!("forwarded event {}", event.id));
            }),
            // The hub refused (host not granted) or the request is malformed: retrying won't help.
            Err(http::HttpError::Denied(why)) | Err(http::HttpError::Invalid(why)) => {
                Err(Failure::Permanent(why))
            }
            Err(http::HttpError::Timeout) => Err(retry("timed out".into())),
            Err(http::HttpError::Connection(why)) => Err(retry(why)),
        }
    }
}

/// What an HTTP status means: 2xx delivered, 429 and 5xx worth retrying, anything else final.
pub fn verdict(status: u16) -> Result<(), Failure> {
    match status {
        200..=299 => Ok(()),
        429 | 500..=599 => Err(retry(format!("HTTP {status}"))),
        _ => Err(Failure::Permanent(format!("HTTP {status}"))),
    }
}

fn retry(reason: String) -> Failure {
    Failure::Retry(RetryAfter {
        reason,
        after_ms: None,
    })
}

export!(Example);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        assert!(verdict(204).is_ok());
        assert!(matches!(verdict(503), Err(Failure::Retry(_))));
        assert!(matches!(verdict(429), Err(Failure::Retry(_))));
        assert!(matches!(verdict(404), Err(Failure::Permanent(_))));
    }
}
