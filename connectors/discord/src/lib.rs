//! Discord: posts each event to a channel through an incoming webhook, as an embed (title,
//! description, up to 10 fields from the payload), and reports the message id Discord returns
//! (`?wait=true`) as the attempt's external id.
//!
//! Settings: `webhook_url` (required, secret: the URL is the credential), `username` (optional,
//! overrides the webhook's name). Discord's answers: 2xx delivered; 429 retried after its
//! `Retry-After`; 5xx retried; other 4xx (a deleted webhook, a rejected message) permanent.
//! Mentions are disabled (`allowed_mentions`), so an event's text cannot ping a channel.

use integrations_hub_connector::format::{description, facts, title, truncate};
use integrations_hub_connector::{
    ConfigKey, Connector, Context, Event, Host, Manifest, Outcome, Request, SettingsError,
    export_connector,
};
use serde_json::{Value, json};

/// Discord's limits for an embed.
const TITLE_MAX: usize = 256;
const DESCRIPTION_MAX: usize = 4096;
const FIELDS_MAX: usize = 10;
const FIELD_NAME_MAX: usize = 256;
const FIELD_VALUE_MAX: usize = 1024;

pub struct Discord;

impl Connector for Discord {
    fn manifest() -> Manifest {
        Manifest::new(
            "discord",
            env!("CARGO_PKG_VERSION"),
            "Posts events to a Discord channel (incoming webhook, embeds)",
        )
        .events(["*"])
        .allowed_hosts(["discord.com", "discordapp.com"])
        .config(
            ConfigKey::required("webhook_url")
                .secret()
                .describe("The channel's webhook URL (https://discord.com/api/webhooks/…)"),
        )
        .config(ConfigKey::optional("username").describe("Shown as the author of the messages"))
    }

    fn validate(host: &dyn Host) -> Result<(), SettingsError> {
        let url = host.config("webhook_url").unwrap_or_default();
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || !url.contains("/api/webhooks/")
        {
            return Err(SettingsError::key(
                "webhook_url",
                "a Discord webhook URL looks like https://discord.com/api/webhooks/<id>/<token>",
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
        let body = message(event, &payload, host.config("username").as_deref());
        let separator = if url.contains('?') { '&' } else { '?' };
        let request = Request::post(format!("{url}{separator}wait=true"), body.to_string());
        match host.send(&request) {
            Ok(response) => match response.outcome() {
                // With wait=true Discord answers the message it created.
                Outcome::Ok {
                    upstream_status, ..
                } => Outcome::Ok {
                    upstream_status,
                    external_id: response
                        .json()
                        .ok()
                        .and_then(|m| m["id"].as_str().map(str::to_owned)),
                },
                other => other,
            },
            Err(e) => e.into(),
        }
    }
}

/// The webhook body for `event`.
pub fn message(event: &Event, payload: &Value, username: Option<&str>) -> Value {
    let fields: Vec<Value> = facts(payload, FIELDS_MAX)
        .into_iter()
        .map(|(name, value)| {
            json!({
                "name": truncate(&name, FIELD_NAME_MAX),
                "value": truncate(&value, FIELD_VALUE_MAX),
                "inline": true,
            })
        })
        .collect();
    let mut embed = json!({
        "title": truncate(&title(event, payload), TITLE_MAX),
        "fields": fields,
        "timestamp": event.created_at,
        "footer": {"text": truncate(&event.event_type, 2048)},
    });
    if let Some(text) = description(payload) {
        embed["description"] = json!(truncate(&text, DESCRIPTION_MAX));
    }
    let mut body = json!({"embeds": [embed], "allowed_mentions": {"parse": []}});
    if let Some(name) = username {
        body["username"] = json!(truncate(name, 80));
    }
    body
}

export_connector!(Discord);

#[cfg(test)]
mod tests {
    use super::*;
    use integrations_hub_connector::Response;
    use integrations_hub_connector::mock::MockHost;

    const HOOK: &str = "https://discord.com/api/webhooks/1/abc";

    fn event() -> Event {
        Event::new(
            "order.paid",
            r#"{"title": "Order 1042 paid", "description": "129.50 EUR", "customer": "ada"}"#,
        )
    }

    #[test]
    fn posts_an_embed_and_reports_the_message_id() {
        let host = MockHost::new().with_config("webhook_url", HOOK).answer(
            "POST",
            HOOK,
            Response::new(200).body(r#"{"id": "1234567890", "channel_id": "1"}"#),
        );
        let outcome = Discord::handle(&host, &event(), &Context::first());
        assert_eq!(outcome, Outcome::ok().status(200).external_id("1234567890"));
        let sent = &host.requests()[0];
        assert_eq!(sent.url, format!("{HOOK}?wait=true"));
        let body: Value = serde_json::from_slice(&sent.body).expect("json");
        assert_eq!(body["embeds"][0]["title"], "Order 1042 paid");
        assert_eq!(body["embeds"][0]["description"], "129.50 EUR");
        assert_eq!(body["embeds"][0]["fields"][0]["name"], "customer");
        assert_eq!(body["allowed_mentions"]["parse"], json!([]));
    }

    #[test]
    fn rate_limits_retry_and_a_deleted_webhook_is_permanent() {
        let host = MockHost::new()
            .with_config("webhook_url", HOOK)
            .answer("POST", HOOK, Response::new(429).header("retry-after", "2"))
            .answer("POST", HOOK, Response::new(404));
        let limited = Discord::handle(&host, &event(), &Context::first());
        assert!(
            matches!(
                limited,
                Outcome::Retry {
                    after_ms: Some(2000),
                    upstream_status: Some(429),
                    ..
                }
            ),
            "{limited:?}"
        );
        let gone = Discord::handle(&host, &event(), &Context::first());
        assert_eq!(gone, Outcome::permanent("HTTP 404"));
    }

    #[test]
    fn long_texts_are_cut_to_discords_limits_and_bad_urls_refused() {
        let long = "x".repeat(5000);
        let event = Event::new(
            "t",
            &json!({"title": long, "description": long}).to_string(),
        );
        let body = message(&event, &event.json().expect("json"), None);
        assert_eq!(
            body["embeds"][0]["title"]
                .as_str()
                .map(|t| t.chars().count()),
            Some(TITLE_MAX)
        );
        assert_eq!(
            body["embeds"][0]["description"]
                .as_str()
                .map(|t| t.chars().count()),
            Some(DESCRIPTION_MAX)
        );
        let host = MockHost::new().with_config("webhook_url", "https://example.com/x");
        assert!(Discord::validate(&host).is_err());
    }
}
