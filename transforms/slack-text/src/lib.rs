//! Example transform: turns every event into a Slack-compatible `{"text": …}` body, so a
//! webhook subscription can post to a Slack (or Mattermost, or Rocket.Chat) incoming-webhook
//! URL directly, no connector needed.
//!
//! Settings: `title` (optional) replaces the event type in the message's first line.
//! The reshaping is a plain function ([`message`]) with native unit tests.

wit_bindgen::generate!({ world: "transform", path: "../../wit/transform" });

use integrations_hub::transform::types::{Output, Setting};

/// Longest payload excerpt in a message (Slack shows about 4,000 characters before folding).
const MAX_EXCERPT: usize = 2_500;

struct SlackText;

impl Guest for SlackText {
    fn manifest() -> Manifest {
        Manifest {
            name: "slack-text".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "The event as a Slack-compatible {\"text\": …} message".into(),
        }
    }

    fn transform(event: Event, context: Context) -> Result<Transformed, String> {
        let title = setting(&context.settings, "title");
        let body = message(&event.event_type, &event.id, &event.payload, title)?;
        Ok(Transformed::Deliver(Output {
            body,
            content_type: None,
            headers: Vec::new(),
        }))
    }
}

fn setting<'a>(settings: &'a [Setting], key: &str) -> Option<&'a str> {
    settings
        .iter()
        .find(|s| s.key == key)
        .map(|s| s.value.as_str())
}

/// `{"text": "*order.paid* (evt id)\n```{payload}```"}`, the payload pretty-printed and cut.
pub fn message(
    event_type: &str,
    id: &str,
    payload: &[u8],
    title: Option<&str>,
) -> Result<Vec<u8>, String> {
    let payload: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let mut excerpt = serde_json::to_string_pretty(&payload).map_err(|e| e.to_string())?;
    if excerpt.len() > MAX_EXCERPT {
        let mut end = MAX_EXCERPT;
        while !excerpt.is_char_boundary(end) {
            end -= 1;
        }
        excerpt.truncate(end);
        excerpt.push('…');
    }
    let text = format!("*{}* ({id})\n```{excerpt}```", title.unwrap_or(event_type));
    serde_json::to_vec(&serde_json::json!({ "text": text })).map_err(|e| e.to_string())
}

export!(SlackText);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_becomes_one_text_field() {
        let body = message("order.paid", "evt_1", br#"{"total":12}"#, None).expect("test value");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("test value");
        assert_eq!(json.as_object().expect("test value").len(), 1);
        assert_eq!(
            json["text"],
            "*order.paid* (evt_1)\n```{\n  \"total\": 12\n}```"
        );
        let titled = message("order.paid", "e", b"{}", Some("Paid")).expect("test value");
        assert!(
            String::from_utf8(titled)
                .expect("test value")
                .contains("*Paid*")
        );
    }

    #[test]
    fn long_payloads_are_cut_and_bad_ones_refused() {
        let long = format!(r#"{{"note":"{}"}}"#, "é".repeat(3000));
        let body = message("t", "e", long.as_bytes(), None).expect("test value");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("test value");
        assert!(json["text"].as_str().expect("test value").len() < MAX_EXCERPT + 100);
        assert!(message("t", "e", b"not json", None).is_err());
    }
}
