//! Turning an event into a message a person reads: a title, a description and a few facts
//! taken from the payload by the usual names, each cut to the destination's limits.

use serde_json::Value;

use super::Event;

/// Payload keys read as the title, in order of preference.
pub const TITLE_KEYS: [&str; 4] = ["title", "summary", "subject", "name"];
/// Payload keys read as the description, in order of preference.
pub const DESCRIPTION_KEYS: [&str; 4] = ["description", "message", "text", "body"];

/// `text` cut to at most `max` characters, ending with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn first_text(payload: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| match payload.get(*key)? {
        Value::String(text) if !text.trim().is_empty() => Some(text.clone()),
        _ => None,
    })
}

/// The payload's title (`title`, `summary`, `subject` or `name`), else the event type.
pub fn title(event: &Event, payload: &Value) -> String {
    first_text(payload, &TITLE_KEYS).unwrap_or_else(|| event.event_type.clone())
}

/// The payload's description (`description`, `message`, `text` or `body`).
pub fn description(payload: &Value) -> Option<String> {
    first_text(payload, &DESCRIPTION_KEYS)
}

/// Up to `max` of the payload's other top-level values that read as text (strings, numbers,
/// booleans), as `(key, value)`, by key (the same order whatever JSON map the build uses).
pub fn facts(payload: &Value, max: usize) -> Vec<(String, String)> {
    let Some(object) = payload.as_object() else {
        return Vec::new();
    };
    let used = |key: &str| TITLE_KEYS.contains(&key) || DESCRIPTION_KEYS.contains(&key);
    let mut entries: Vec<_> = object.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
        .into_iter()
        .filter(|(key, _)| !used(key))
        .filter_map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((key.clone(), text))
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn titles_descriptions_and_facts_come_from_the_usual_keys() {
        let event = Event::new("order.paid", "{}");
        let payload = json!({"summary": "Order paid", "message": "Thanks", "total": 12.5,
            "paid": true, "items": [1, 2], "customer": "ada"});
        assert_eq!(title(&event, &payload), "Order paid");
        assert_eq!(description(&payload).as_deref(), Some("Thanks"));
        assert_eq!(
            facts(&payload, 2),
            [
                ("customer".to_owned(), "ada".to_owned()),
                ("paid".to_owned(), "true".to_owned())
            ]
        );
        assert_eq!(title(&event, &json!({"title": " "})), "order.paid");
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("hi", 2), "hi");
    }
}
