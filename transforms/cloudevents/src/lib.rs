//! Example transform: wraps every event in a CloudEvents 1.0 JSON envelope (structured content
//! mode, `application/cloudevents+json`), for receivers that speak CloudEvents.
//!
//! Settings: `source` (optional, default `/integrations-hub`) is the envelope's `source`.
//! The reshaping is a plain function ([`envelope`]) with native unit tests.

wit_bindgen::generate!({ world: "transform", path: "../../wit/transform" });

use integrations_hub::transform::types::Output;

/// The media type of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
const DEFAULT_SOURCE: &str = "/integrations-hub";

struct CloudEvents;

impl Guest for CloudEvents {
    fn manifest() -> Manifest {
        Manifest {
            name: "cloudevents".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "The event in a CloudEvents 1.0 JSON envelope".into(),
        }
    }

    fn transform(event: Event, context: Context) -> Result<Transformed, String> {
        let source = (context.settings.iter())
            .find(|s| s.key == "source")
            .map_or(DEFAULT_SOURCE, |s| s.value.as_str());
        let body = envelope(&event, source)?;
        Ok(Transformed::Deliver(Output {
            body,
            content_type: Some(CONTENT_TYPE.into()),
            headers: Vec::new(),
        }))
    }
}

/// The CloudEvents 1.0 structured-mode JSON of `event`; the payload is its `data`.
pub fn envelope(event: &Event, source: &str) -> Result<Vec<u8>, String> {
    let data: serde_json::Value = serde_json::from_slice(&event.payload)
        .map_err(|e| format!("the payload is not JSON: {e}"))?;
    let envelope = serde_json::json!({
        "specversion": "1.0",
        "id": event.id,
        "source": source,
        "type": event.event_type,
        "time": event.created_at,
        "datacontenttype": "application/json",
        "data": data,
    });
    serde_json::to_vec(&envelope).map_err(|e| e.to_string())
}

export!(CloudEvents);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_carries_the_required_attributes_and_the_data() {
        let event = Event {
            id: "0190f0a0-0000-7000-8000-000000000001".into(),
            event_type: "order.paid".into(),
            created_at: "2026-12-02T10:00:00Z".into(),
            payload: br#"{"total":12}"#.to_vec(),
        };
        let body = envelope(&event, "/shop").expect("test value");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("test value");
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], event.id);
        assert_eq!(json["source"], "/shop");
        assert_eq!(json["type"], "order.paid");
        assert_eq!(json["time"], "2026-12-02T10:00:00Z");
        assert_eq!(json["data"]["total"], 12);
    }
}
