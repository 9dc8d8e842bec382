//! PagerDuty Events API v2: an event triggers an incident, or resolves (or acknowledges) the one
//! with the same dedup key, so a pair of events like `check.failed` / `check.recovered` opens and
//! closes one incident.
//!
//! Which action: the payload's `event_action` (`trigger`, `acknowledge`, `resolve`), else
//! `resolve` for event types ending in `.resolved` or `.recovered`, else `trigger`. The dedup key:
//! the payload's `dedup_key`, else the event's id (a trigger then opens one incident per event);
//! a resolve or acknowledge without `dedup_key` is permanent (it would match nothing).
//! The summary is the payload's `summary`/`title`/…, else the event type; `severity` (`critical`,
//! `error`, `warning`, `info`) from the payload, else the setting; the whole payload goes in
//! `custom_details`. PagerDuty's dedup key is reported as the attempt's external id.
//!
//! Settings: `routing_key` (required, secret: the integration key of a service), `source`
//! (default `integrations-hub`), `severity` (default `error`), `api_url` (default
//! `https://events.pagerduty.com`, e.g. the EU endpoint). Answers: 202 delivered; 429 and 5xx
//! retried; 400 (an invalid event) permanent.

use integrations_hub_connector::format::{title, truncate};
use integrations_hub_connector::{
    ConfigKey, Connector, Context, Event, Host, Manifest, Outcome, Request, SettingsError,
    export_connector,
};
use serde_json::{Value, json};

pub const DEFAULT_API_URL: &str = "https://events.pagerduty.com";
const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];
const ACTIONS: [&str; 3] = ["trigger", "acknowledge", "resolve"];
/// PagerDuty's limits: summary 1024 characters, dedup key 255.
const SUMMARY_MAX: usize = 1024;
const DEDUP_KEY_MAX: usize = 255;

pub struct PagerDuty;

impl Connector for PagerDuty {
    fn manifest() -> Manifest {
        Manifest::new(
            "pagerduty",
            env!("CARGO_PKG_VERSION"),
            "Triggers and resolves PagerDuty incidents (Events API v2, dedup keys)",
        )
        .events(["*"])
        .allowed_hosts(["events.pagerduty.com", "events.eu.pagerduty.com"])
        .config(
            ConfigKey::required("routing_key")
                .secret()
                .describe("The integration key of a PagerDuty service (Events API v2)"),
        )
        .config(
            ConfigKey::optional("source")
                .describe("The affected system (default integrations-hub)"),
        )
        .config(
            ConfigKey::optional("severity").describe("critical, error (default), warning or info"),
        )
        .config(ConfigKey::optional("api_url").describe("Default https://events.pagerduty.com"))
    }

    fn validate(host: &dyn Host) -> Result<(), SettingsError> {
        let key = host.config("routing_key").unwrap_or_default();
        if key.len() != 32 || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(SettingsError::key(
                "routing_key",
                "an Events API v2 integration key has 32 letters and digits",
            ));
        }
        if let Some(severity) = host.config("severity")
            && !SEVERITIES.contains(&severity.as_str())
        {
            return Err(SettingsError::key(
                "severity",
                format!("one of {SEVERITIES:?}"),
            ));
        }
        Ok(())
    }

    fn handle(host: &dyn Host, event: &Event, _context: &Context) -> Outcome {
        let Some(routing_key) = host.config("routing_key") else {
            return Outcome::permanent("routing_key is not set");
        };
        let Ok(payload) = event.json() else {
            return Outcome::permanent("the payload is not JSON");
        };
        let settings = Settings {
            source: host
                .config("source")
                .unwrap_or_else(|| "integrations-hub".into()),
            severity: host.config("severity").unwrap_or_else(|| "error".into()),
        };
        let body = match enqueue_body(event, &payload, &routing_key, &settings) {
            Ok(body) => body,
            Err(why) => return Outcome::permanent(why),
        };
        let base = host
            .config("api_url")
            .unwrap_or_else(|| DEFAULT_API_URL.into());
        let request = Request::post(
            format!("{}/v2/enqueue", base.trim_end_matches('/')),
            body.to_string(),
        );
        match host.send(&request) {
            Ok(response) => match response.outcome() {
                Outcome::Ok {
                    upstream_status, ..
                } => Outcome::Ok {
                    upstream_status,
                    external_id: response
                        .json()
                        .ok()
                        .and_then(|r| r["dedup_key"].as_str().map(str::to_owned)),
                },
                Outcome::Permanent(why) => {
                    // PagerDuty explains a 400 in its body's `errors`.
                    let errors = response.json().ok().map(|r| r["errors"].to_string());
                    Outcome::permanent(match errors {
                        Some(errors) if errors != "null" => format!("{why}: {errors}"),
                        _ => why,
                    })
                }
                other => other,
            },
            Err(e) => e.into(),
        }
    }
}

/// Defaults from the instance's settings.
pub struct Settings {
    pub source: String,
    pub severity: String,
}

/// The Events API v2 body for `event`, or why it cannot be sent.
pub fn enqueue_body(
    event: &Event,
    payload: &Value,
    routing_key: &str,
    settings: &Settings,
) -> Result<Value, String> {
    let action = match payload["event_action"].as_str() {
        Some(action) if ACTIONS.contains(&action) => action,
        Some(other) => return Err(format!("event_action {other:?} is not one of {ACTIONS:?}")),
        None if event.event_type.ends_with(".resolved")
            || event.event_type.ends_with(".recovered") =>
        {
            "resolve"
        }
        None => "trigger",
    };
    let dedup_key = match payload["dedup_key"].as_str() {
        Some(key) => truncate(key, DEDUP_KEY_MAX),
        None if action == "trigger" => event.id.clone(),
        None => {
            return Err(format!(
                "a {action} needs the payload's dedup_key (the trigger's)"
            ));
        }
    };
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key,
    });
    if action == "trigger" {
        let severity = match payload["severity"].as_str() {
            Some(s) if SEVERITIES.contains(&s) => s.to_owned(),
            _ => settings.severity.clone(),
        };
        body["payload"] = json!({
            "summary": truncate(&title(event, payload), SUMMARY_MAX),
            "source": payload["source"].as_str().unwrap_or(&settings.source),
            "severity": severity,
            "timestamp": event.created_at,
            "class": event.event_type,
            "custom_details": payload,
        });
    }
    Ok(body)
}

export_connector!(PagerDuty);

#[cfg(test)]
mod tests {
    use super::*;
    use integrations_hub_connector::Response;
    use integrations_hub_connector::mock::MockHost;

    const KEY: &str = "R0123456789abcdefghijklmnopqrstu";
    const ENQUEUE: &str = "https://events.pagerduty.com/v2/enqueue";

    fn settings() -> Settings {
        Settings {
            source: "hub".into(),
            severity: "error".into(),
        }
    }

    #[test]
    fn a_failure_triggers_and_a_recovery_resolves_by_dedup_key() {
        let failed = Event::new(
            "check.failed",
            r#"{"summary": "API down", "dedup_key": "api-health", "severity": "critical"}"#,
        );
        let body =
            enqueue_body(&failed, &failed.json().expect("json"), KEY, &settings()).expect("body");
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["dedup_key"], "api-health");
        assert_eq!(body["payload"]["summary"], "API down");
        assert_eq!(body["payload"]["severity"], "critical");
        assert_eq!(body["payload"]["custom_details"]["dedup_key"], "api-health");

        let recovered = Event::new("check.recovered", r#"{"dedup_key": "api-health"}"#);
        let body = enqueue_body(
            &recovered,
            &recovered.json().expect("json"),
            KEY,
            &settings(),
        )
        .expect("body");
        assert_eq!(
            body,
            json!({"routing_key": KEY, "event_action": "resolve", "dedup_key": "api-health"})
        );

        let nameless = Event::new("check.recovered", "{}");
        assert!(enqueue_body(&nameless, &json!({}), KEY, &settings()).is_err());
    }

    #[test]
    fn sends_to_the_events_api_and_reports_the_dedup_key() {
        let host = MockHost::new().with_config("routing_key", KEY).answer(
            "POST",
            ENQUEUE,
            Response::new(202)
                .body(r#"{"status":"success","message":"Event processed","dedup_key":"k1"}"#),
        );
        let event = Event::new("check.failed", r#"{"dedup_key": "k1"}"#);
        assert_eq!(
            PagerDuty::handle(&host, &event, &Context::first()),
            Outcome::ok().status(202).external_id("k1")
        );
        let bad = MockHost::new().with_config("routing_key", KEY).answer(
            "POST",
            ENQUEUE,
            Response::new(400)
                .body(r#"{"status":"invalid event","errors":["'payload.summary' is missing"]}"#),
        );
        let refused = PagerDuty::handle(&bad, &event, &Context::first());
        assert!(
            matches!(&refused, Outcome::Permanent(why) if why.contains("summary")),
            "{refused:?}"
        );
        assert!(PagerDuty::validate(&MockHost::new().with_config("routing_key", "short")).is_err());
        assert!(PagerDuty::validate(&MockHost::new().with_config("routing_key", KEY)).is_ok());
    }
}
