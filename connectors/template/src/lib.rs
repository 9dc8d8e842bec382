//! A connector made with `integrations-hub connector new`: it forwards every event it receives as
//! a JSON POST to the configured `webhook_url`. Change [`ConnectorTemplate::handle`] to speak
//! your service's API; keep its decisions in plain functions and test them with the mock host
//! (`cargo test`).
//!
//! Build: `cargo build --release --target wasm32-wasip2`, then copy
//! `target/wasm32-wasip2/release/connector_template.wasm` into the hub's `IH_CONNECTORS_DIR`
//! (to a temporary name, then rename it into place). Try it first with
//! `integrations-hub connector test <file>.wasm --event event.json --config webhook_url=…`.

use integrations_hub_connector::{
    ConfigKey, Connector, Context, Event, Host, Level, Manifest, Outcome, Request, SettingsError,
    export_connector,
};

pub struct ConnectorTemplate;

impl Connector for ConnectorTemplate {
    fn manifest() -> Manifest {
        Manifest::new(
            "connector-template",
            env!("CARGO_PKG_VERSION"),
            "Forwards events to a webhook URL",
        )
        // The default instance (configured by IH_CONNECTOR_TEMPLATE_*) receives these; instances
        // created through the API receive what their subscriptions name.
        .events(["*"])
        // Hosts `send` may reach. The operator can replace the list with
        // IH_CONNECTOR_TEMPLATE_ALLOWED_HOSTS (e.g. `127.0.0.1:9999` for a local fake).
        .allowed_hosts(["hooks.example.com"])
        .config(ConfigKey::required("webhook_url").describe("Where events are POSTed"))
        .config(
            ConfigKey::optional("token")
                .secret()
                .describe("Sent as `Authorization: Bearer <token>` when set"),
        )
    }

    fn validate(host: &dyn Host) -> Result<(), SettingsError> {
        let url = host.config("webhook_url").unwrap_or_default();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(SettingsError::key(
                "webhook_url",
                "must be an http(s) URL, e.g. https://hooks.example.com/in",
            ));
        }
        Ok(())
    }

    fn handle(host: &dyn Host, event: &Event, context: &Context) -> Outcome {
        let Some(url) = host.config("webhook_url") else {
            return Outcome::permanent("webhook_url is not set");
        };
        let Ok(payload) = event.json() else {
            return Outcome::permanent("the payload is not JSON");
        };
        let body = serde_json::json!({
            "id": event.id,
            "type": event.event_type,
            "created_at": event.created_at,
            "data": payload,
        });
        let mut request = Request::post(url, body.to_string())
            // The event id is stable across retries: the receiver can drop duplicates by it.
            .header("idempotency-key", event.id.clone());
        if let Some(token) = host.config("token") {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        // The usual reading of an answer (2xx ok; 408, 429, 5xx retried after Retry-After; other
        // statuses permanent); read the body too when your service explains its errors there.
        let outcome = match host.send(&request) {
            Ok(response) => response.outcome(),
            Err(e) => e.into(),
        };
        let attempt = context.attempt.to_string();
        host.log(
            Level::Debug,
            "forwarded",
            &[("event_id", &event.id), ("attempt", &attempt)],
        );
        outcome
    }
}

export_connector!(ConnectorTemplate);

#[cfg(test)]
mod tests {
    use super::*;
    use integrations_hub_connector::Response;
    use integrations_hub_connector::mock::MockHost;
    use std::time::Duration;

    const URL: &str = "https://hooks.example.com/in";

    fn event() -> Event {
        Event::new("order.paid", r#"{"order":42}"#)
    }

    #[test]
    fn posts_the_event_and_reports_the_status() {
        let host = MockHost::new()
            .with_config("webhook_url", URL)
            .with_config("token", "s3cret")
            .answer("POST", URL, Response::new(202));
        let outcome = ConnectorTemplate::handle(&host, &event(), &Context::first());
        assert_eq!(outcome, Outcome::ok().status(202));
        let sent = &host.requests()[0];
        let body: serde_json::Value = serde_json::from_slice(&sent.body).expect("json");
        assert_eq!(body["type"], "order.paid");
        assert_eq!(body["data"]["order"], 42);
        assert!(
            sent.headers
                .contains(&("authorization".into(), "Bearer s3cret".into()))
        );
    }

    #[test]
    fn rate_limits_are_retried_after_what_the_receiver_asks() {
        let host = MockHost::new().with_config("webhook_url", URL).answer(
            "POST",
            URL,
            Response::new(429).header("retry-after", "7"),
        );
        let outcome = ConnectorTemplate::handle(&host, &event(), &Context::first());
        assert_eq!(
            outcome,
            Outcome::retry("HTTP 429")
                .status(429)
                .after(Duration::from_secs(7))
        );
    }

    #[test]
    fn client_errors_are_permanent_and_bad_settings_refused() {
        let host =
            MockHost::new()
                .with_config("webhook_url", URL)
                .answer("POST", URL, Response::new(404));
        let outcome = ConnectorTemplate::handle(&host, &event(), &Context::first());
        assert_eq!(outcome, Outcome::permanent("HTTP 404"));
        let host = MockHost::new().with_config("webhook_url", "hooks.example.com");
        let refused = ConnectorTemplate::validate(&host).expect_err("not a URL");
        assert_eq!(refused.key.as_deref(), Some("webhook_url"));
    }
}
