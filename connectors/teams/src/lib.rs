//! Microsoft Teams: posts each event to a channel as an Adaptive Card, through a Workflows
//! webhook ("Post to a channel when a webhook request is received", `*.logic.azure.com`) or a
//! legacy Office 365 connector webhook (`*.webhook.office.com`). Both take the same
//! `{"type": "message", "attachments": [card]}` body.
//!
//! Settings: `webhook_url` (required, secret: the URL is the credential). Answers: 2xx delivered
//! (Workflows answers 202); 429 retried after its `Retry-After`, 5xx retried; other 4xx
//! permanent. A legacy webhook answers 200 with an error text when it refuses a card: that is
//! permanent too.

use integrations_hub_connector::format::{description, facts, title, truncate};
use integrations_hub_connector::{
    ConfigKey, Connector, Context, Event, Host, Manifest, Outcome, Request, SettingsError,
    export_connector,
};
use serde_json::{Value, json};

/// Facts shown at most, and the longest text of one.
const FACTS_MAX: usize = 12;
const TEXT_MAX: usize = 2000;

pub struct Teams;

impl Connector for Teams {
    fn manifest() -> Manifest {
        Manifest::new(
            "teams",
            env!("CARGO_PKG_VERSION"),
            "Posts events to a Microsoft Teams channel (Workflows webhook, Adaptive Cards)",
        )
        .events(["*"])
        .allowed_hosts(["*.logic.azure.com", "*.webhook.office.com"])
        .config(
            ConfigKey::required("webhook_url")
                .secret()
                .describe("The channel's Workflows (or Office 365 connector) webhook URL"),
        )
    }

    fn validate(host: &dyn Host) -> Result<(), SettingsError> {
        let url = host.config("webhook_url").unwrap_or_default();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(SettingsError::key(
                "webhook_url",
                "must be the https URL Teams gave for the channel's webhook",
            ));
        }
        Ok(())
    }

    fn handle(host: &dyn Host, event: &Event, _context: &Context) -> Outcome {
        let Some(url) = host.config("webhook_url") else {
            return Outcome::permanent("webhook_url is not set");
        };
        let Ok(payload) = event.json() else {
            return Outcome::permanent("the payload is not JSON");
        };
        let request = Request::post(url, card_message(event, &payload).to_string());
        match host.send(&request) {
            Ok(response) => {
                // A legacy connector webhook refuses a card with HTTP 200 and a text other than "1".
                let text = String::from_utf8_lossy(&response.body);
                let refused =
                    response.status == 200 && !text.trim().is_empty() && text.trim() != "1";
                if refused && !text.trim_start().starts_with('{') {
                    return Outcome::permanent(format!(
                        "Teams refused the card: {}",
                        truncate(text.trim(), 200)
                    ));
                }
                response.outcome()
            }
            Err(e) => e.into(),
        }
    }
}

/// The webhook body: one Adaptive Card with the title, the description and the payload's facts.
pub fn card_message(event: &Event, payload: &Value) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock", "text": truncate(&title(event, payload), TEXT_MAX),
        "weight": "Bolder", "size": "Medium", "wrap": true,
    })];
    if let Some(text) = description(payload) {
        body.push(json!({"type": "TextBlock", "text": truncate(&text, TEXT_MAX), "wrap": true}));
    }
    let facts: Vec<Value> = facts(payload, FACTS_MAX)
        .into_iter()
        .map(|(name, value)| json!({"title": name, "value": truncate(&value, TEXT_MAX)}))
        .collect();
    if !facts.is_empty() {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    body.push(json!({
        "type": "TextBlock", "isSubtle": true, "size": "Small", "wrap": true,
        "text": format!("{} · {}", event.event_type, event.created_at),
    }));
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            },
        }],
    })
}

export_connector!(Teams);

#[cfg(test)]
mod tests {
    use super::*;
    use integrations_hub_connector::Response;
    use integrations_hub_connector::mock::MockHost;

    const HOOK: &str = "https://prod-01.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=x";

    fn event() -> Event {
        Event::new(
            "deploy.finished",
            r#"{"title": "Deploy 311 finished", "message": "All green", "env": "prod"}"#,
        )
    }

    #[test]
    fn posts_an_adaptive_card() {
        let host = MockHost::new().with_config("webhook_url", HOOK).answer(
            "POST",
            HOOK,
            Response::new(202),
        );
        assert_eq!(
            Teams::handle(&host, &event(), &Context::first()),
            Outcome::ok().status(202)
        );
        let body: Value = serde_json::from_slice(&host.requests()[0].body).expect("json");
        let card = &body["attachments"][0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["body"][0]["text"], "Deploy 311 finished");
        assert_eq!(card["body"][1]["text"], "All green");
        assert_eq!(
            card["body"][2]["facts"][0],
            json!({"title": "env", "value": "prod"})
        );
    }

    #[test]
    fn refusals_and_rate_limits_are_told_apart() {
        let host = MockHost::new()
            .with_config("webhook_url", HOOK)
            .answer(
                "POST",
                HOOK,
                Response::new(200).body("Summary or Text is required."),
            )
            .answer("POST", HOOK, Response::new(429).header("retry-after", "3"));
        let refused = Teams::handle(&host, &event(), &Context::first());
        assert!(
            matches!(&refused, Outcome::Permanent(why) if why.contains("Summary or Text")),
            "{refused:?}"
        );
        let limited = Teams::handle(&host, &event(), &Context::first());
        assert!(
            matches!(
                limited,
                Outcome::Retry {
                    after_ms: Some(3000),
                    ..
                }
            ),
            "{limited:?}"
        );
        let bad = MockHost::new().with_config("webhook_url", "teams");
        assert!(Teams::validate(&bad).is_err());
    }
}
