//! The hub's own events (`hub.*`): what it has to say about its deliveries, circuits,
//! subscriptions and connectors, published into its outbox like any event, so a subscription or
//! a connector (Slack) can take them.
//!
//! A notice is written in the transaction of what it reports (`hub_notices`; a circuit closing
//! by a trigger, `hub_notice_circuit_closed`, as every path that closes one is covered), and the upkeep of
//! every instance publishes what is written, once, in the transaction that removes it
//! (`Store::publish_notices`). An attempt of a `hub.*` event is quiet: its failures (dead,
//! circuit opened, 410) produce no notices, so a failing receiver of notices never feeds itself.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::NewEvent;

/// Where the hub's own event types start.
pub const HUB_PREFIX: &str = "hub.";

/// Whether `event_type` is one of the hub's own.
pub fn is_hub_event(event_type: &str) -> bool {
    event_type.starts_with(HUB_PREFIX)
}

/// A delivery was dead-lettered: its budget spent, a `410`, or a connector's permanent failure.
pub const DELIVERY_DEAD: &str = "hub.delivery.dead";
/// A subscription's circuit opened after consecutive failures: its deliveries wait.
pub const CIRCUIT_OPENED: &str = "hub.circuit.opened";
/// A subscription's circuit closed again (a probe, or a late attempt, succeeded).
pub const CIRCUIT_CLOSED: &str = "hub.circuit.closed";
/// A subscription was disabled: its endpoint answered `410 Gone`, or an operator disabled it.
pub const SUBSCRIPTION_DISABLED: &str = "hub.subscription.disabled";
/// A connector file failed to load (on the instance that says so).
pub const CONNECTOR_FAILED: &str = "hub.connector.failed";

/// Most notices one publish round takes.
pub const NOTICE_BATCH: u32 = 200;

/// A notice as written, with what its event tells (read when it is published).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub id: Uuid,
    /// Its event type (one of the constants above).
    pub kind: String,
    pub subscription_id: Option<Uuid>,
    /// The subscription's URL (empty for a connector instance).
    pub url: Option<String>,
    pub delivery_id: Option<Uuid>,
    /// The dead delivery's event.
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub attempts: Option<u32>,
    pub connector: Option<String>,
    /// The error, the problem, the end of the cool-off or the reason, by kind.
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Notice {
    /// Logs the transition it reports, once (it is published once): circuits opening and
    /// subscriptions disabled at warn, circuits closing at info. Dead deliveries are logged by
    /// the engine when they die, connector failures by the registry when they load.
    pub fn log(&self) {
        let (subscription, url, detail) = (
            self.subscription_id.map(|id| id.to_string()),
            self.url.as_deref().filter(|u| !u.is_empty()),
            self.detail.as_deref(),
        );
        match self.kind.as_str() {
            CIRCUIT_OPENED => tracing::warn!(
                subscription_id = subscription,
                url,
                open_until = detail,
                "circuit opened: the endpoint failed repeatedly, its deliveries wait for a probe"
            ),
            CIRCUIT_CLOSED => {
                tracing::info!(subscription_id = subscription, url, "circuit closed")
            }
            SUBSCRIPTION_DISABLED => tracing::warn!(
                subscription_id = subscription,
                url,
                reason = detail,
                "subscription disabled"
            ),
            _ => {}
        }
    }

    /// The event it publishes (documented in the README, "The hub's own events").
    pub fn event(&self) -> NewEvent {
        let mut payload = json!({ "at": self.created_at });
        let mut put = |key: &str, value: Value| {
            if let Value::Object(map) = &mut payload {
                map.insert(key.to_owned(), value);
            }
        };
        match self.kind.as_str() {
            DELIVERY_DEAD => {
                put("delivery_id", json!(self.delivery_id));
                put("event_id", json!(self.event_id));
                put("event_type", json!(self.event_type));
                put("subscription_id", json!(self.subscription_id));
                put("url", json!(self.url.as_deref().filter(|u| !u.is_empty())));
                put("connector", json!(self.connector));
                put("attempts", json!(self.attempts));
                put("last_error", json!(self.detail));
            }
            CIRCUIT_OPENED | CIRCUIT_CLOSED => {
                put("subscription_id", json!(self.subscription_id));
                put("url", json!(self.url.as_deref().filter(|u| !u.is_empty())));
                if self.kind == CIRCUIT_OPENED {
                    put("open_until", json!(self.detail));
                }
            }
            SUBSCRIPTION_DISABLED => {
                put("subscription_id", json!(self.subscription_id));
                put("url", json!(self.url.as_deref().filter(|u| !u.is_empty())));
                put("reason", json!(self.detail));
            }
            _ => {
                put("connector", json!(self.connector));
                put("problem", json!(self.detail));
            }
        }
        NewEvent {
            id: Uuid::now_v7(),
            event_type: self.kind.clone(),
            payload: payload.to_string(),
            created_at: self.created_at,
            ordering_key: None,
            traceparent: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(kind: &str) -> Notice {
        Notice {
            id: Uuid::now_v7(),
            kind: kind.to_owned(),
            subscription_id: Some(Uuid::nil()),
            url: Some("https://example.com/hook".into()),
            delivery_id: Some(Uuid::nil()),
            event_id: Some(Uuid::nil()),
            event_type: Some("order.paid".into()),
            attempts: Some(5),
            connector: None,
            detail: Some("HTTP 500".into()),
            created_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn each_kind_says_what_it_documents() {
        let dead: Value =
            serde_json::from_str(&notice(DELIVERY_DEAD).event().payload).unwrap_or_default();
        assert_eq!(dead["event_type"], "order.paid");
        assert_eq!(dead["attempts"], 5);
        assert_eq!(dead["last_error"], "HTTP 500");
        assert_eq!(dead["url"], "https://example.com/hook");
        assert_eq!(dead["at"], "1970-01-01T00:00:00Z");
        let opened = notice(CIRCUIT_OPENED).event();
        assert_eq!(opened.event_type, "hub.circuit.opened");
        assert!(is_hub_event(&opened.event_type));
        let opened: Value = serde_json::from_str(&opened.payload).unwrap_or_default();
        assert_eq!(opened["open_until"], "HTTP 500");
        assert!(opened.get("attempts").is_none());
    }
}
