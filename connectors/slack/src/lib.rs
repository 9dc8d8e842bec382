//! The Slack connector: posts `request_submitted` events to a Slack channel with
//! `chat.postMessage`, as a Block Kit message showing title, requester and description.
//!
//! Configuration (read by the hub from `IH_SLACK_<KEY>`):
//! - `bot_token` (required, secret): a bot token with the `chat:write` scope;
//! - `default_channel` (default `#integrations`): used unless the payload has `slack_channel`;
//! - `api_base_url` (default `https://slack.com/api`): point it at a fake Slack in tests, and
//!   grant that host with `IH_SLACK_ALLOWED_HOSTS`.
//!
//! Failures follow Slack's semantics: HTTP 429 is retried after `Retry-After`; 5xx and the
//! transient `ok:false` errors are retried; any other `ok:false` error (`invalid_auth`,
//! `channel_not_found`, `not_in_channel`, …) is permanent, with Slack's error code as reason.
//! A posted message is reported with Slack's status and the message's `ts` as its external id.
//!
//! The logic lives in [`message`] as plain functions, unit-tested natively; this file is the
//! thin glue to the WIT world.

pub mod message;

wit_bindgen::generate!({ world: "connector", path: "../../wit" });

use integrations_hub::connector::http::{self, Header, HttpError, Request};
use integrations_hub::connector::types::{ConfigKey, Delivered, RetryAfter};
use integrations_hub::connector::{config, log};

use message::Verdict;

pub const DEFAULT_CHANNEL: &str = "#integrations";
pub const DEFAULT_API_BASE_URL: &str = "https://slack.com/api";

struct Slack;

impl Guest for Slack {
    fn manifest() -> Manifest {
        Manifest {
            name: "slack".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Posts request_submitted events to a Slack channel (chat.postMessage, Block Kit)"
                    .into(),
            events: vec!["request_submitted".into()],
            allowed_hosts: vec!["slack.com".into()],
            config: vec![
                ConfigKey {
                    name: "bot_token".into(),
                    required: true,
                    secret: true,
                    description: "Slack bot token (xoxb-…) with the chat:write scope".into(),
                },
                ConfigKey {
                    name: "default_channel".into(),
                    required: false,
                    secret: false,
                    description: format!(
                        "Channel used when the payload has no slack_channel (default {DEFAULT_CHANNEL})"
                    ),
                },
                ConfigKey {
                    name: "api_base_url".into(),
                    required: false,
                    secret: false,
                    description: format!("Slack Web API base URL (default {DEFAULT_API_BASE_URL})"),
                },
            ],
        }
    }

    fn validate() -> Result<(), SettingsError> {
        let refuse = |key: &str, message: String| SettingsError {
            key: Some(key.into()),
            message,
        };
        let token = config::get("bot_token").unwrap_or_default();
        if !token.starts_with("xox") {
            return Err(refuse(
                "bot_token",
                "a Slack token starts with xoxb- (a bot token) or xoxp-".into(),
            ));
        }
        if let Some(channel) = config::get("default_channel")
            && (channel.is_empty() || channel.contains(char::is_whitespace))
        {
            return Err(refuse(
                "default_channel",
                format!("{channel:?} is not a channel name (#name) or id (C0123…)"),
            ));
        }
        if let Some(base) = config::get("api_base_url")
            && !(base.starts_with("https://") || base.starts_with("http://"))
        {
            return Err(refuse(
                "api_base_url",
                "must be an http(s) URL such as https://slack.com/api".into(),
            ));
        }
        Ok(())
    }

    fn handle(event: Event, _context: Context) -> Outcome {
        match post(&event) {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }
}

/// Posts the message; `Err` is an outcome decided before Slack answered.
fn post(event: &Event) -> Result<Outcome, Outcome> {
    {
        let token = config::get("bot_token")
            .ok_or_else(|| Outcome::Permanent("bot_token is not configured".into()))?;
        let channel = config::get("default_channel").unwrap_or_else(|| DEFAULT_CHANNEL.into());
        let base = config::get("api_base_url").unwrap_or_else(|| DEFAULT_API_BASE_URL.into());
        let body = message::build(
            &event.id,
            &event.event_type,
            &event.created_at,
            &event.payload,
            &channel,
        )
        .map_err(Outcome::Permanent)?;
        let request = Request {
            method: "POST".into(),
            url: format!("{}/chat.postMessage", base.trim_end_matches('/')),
            headers: vec![
                Header {
                    name: "content-type".into(),
                    value: "application/json; charset=utf-8".into(),
                },
                Header {
                    name: "authorization".into(),
                    value: format!("Bearer {token}"),
                },
            ],
            body: body.into_bytes(),
        };
        let response = http::send(&request).map_err(|e| match e {
            HttpError::Denied(why) => {
                Outcome::Permanent(format!("request denied by the hub: {why}"))
            }
            HttpError::Invalid(why) => Outcome::Permanent(format!("invalid request: {why}")),
            HttpError::Timeout => retry("Slack did not answer in time", None, None),
            HttpError::Connection(why) => retry(&format!("cannot reach Slack: {why}"), None, None),
        })?;
        let retry_after = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
            .map(|h| h.value.as_str());
        let status = Some(response.status);
        Ok(
            match message::classify(response.status, retry_after, &response.body) {
                Verdict::Delivered { ts } => {
                    log::log(
                        log::Level::Debug,
                        "posted to Slack",
                        &[log::Field {
                            key: "event_id".into(),
                            value: event.id.clone(),
                        }],
                    );
                    Outcome::Ok(Delivered {
                        upstream_status: status,
                        external_id: ts,
                    })
                }
                Verdict::Retry { reason, after_ms } => retry(&reason, after_ms, status),
                Verdict::Permanent(reason) => Outcome::Permanent(reason),
            },
        )
    }
}

fn retry(reason: &str, after_ms: Option<u64>, upstream_status: Option<u16>) -> Outcome {
    Outcome::Retry(RetryAfter {
        reason: reason.into(),
        after_ms,
        upstream_status,
    })
}

export!(Slack);
