//! Building the `chat.postMessage` body and reading Slack's answer: pure functions, so they are
//! tested natively without a WebAssembly runtime.

use serde_json::{Map, Value, json};

/// Slack's limits (https://api.slack.com/reference/block-kit/blocks).
pub const HEADER_MAX: usize = 150;
pub const SECTION_TEXT_MAX: usize = 3000;
pub const FIELD_TEXT_MAX: usize = 2000;
/// Kept well under chat.postMessage's 40,000 so notifications stay readable.
pub const FALLBACK_TEXT_MAX: usize = 3000;

/// `ok:false` errors that Slack documents as transient.
pub const RETRYABLE_ERRORS: &[&str] = &[
    "ratelimited",
    "service_unavailable",
    "internal_error",
    "fatal_error",
    "request_timeout",
];

/// What Slack's answer means for the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Posted; `ts` is the message's id in its channel.
    Delivered {
        ts: Option<String>,
    },
    Retry {
        reason: String,
        after_ms: Option<u64>,
    },
    Permanent(String),
}

/// Cuts `text` to at most `max` characters, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Escapes the three characters Slack's mrkdwn treats as control characters.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn text_of(payload: &Map<String, Value>, key: &str) -> Option<String> {
    match payload.get(key)? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The `chat.postMessage` JSON body for an event. `Err` (permanent) when the payload is not a
/// JSON object, which no retry can fix.
pub fn build(
    id: &str,
    event_type: &str,
    created_at: &str,
    payload: &str,
    default_channel: &str,
) -> Result<String, String> {
    let parsed: Value =
        serde_json::from_str(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    let Value::Object(fields) = parsed else {
        return Err("payload is not a JSON object".into());
    };
    let channel = text_of(&fields, "slack_channel").unwrap_or_else(|| default_channel.to_owned());
    let title = text_of(&fields, "title").unwrap_or_else(|| event_type.replace('_', " "));
    let requester = text_of(&fields, "requester").unwrap_or_else(|| "unknown".into());
    let description = text_of(&fields, "description");

    let fallback = match &description {
        Some(d) => format!("{title} — requested by {requester}: {d}"),
        None => format!("{title} — requested by {requester}"),
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&title, HEADER_MAX), "emoji": true}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": truncate(&format!("*Requester*\n{}", escape(&requester)), FIELD_TEXT_MAX)},
            {"type": "mrkdwn", "text": truncate(&format!("*Event*\n`{}`", escape(event_type)), FIELD_TEXT_MAX)},
        ]}),
    ];
    if let Some(d) = &description {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&escape(d), SECTION_TEXT_MAX)}}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": truncate(&format!("Event `{}` · {}", escape(id), escape(created_at)), FIELD_TEXT_MAX)}
    ]}));
    let body = json!({
        "channel": channel,
        "text": truncate(&fallback, FALLBACK_TEXT_MAX),
        "blocks": blocks,
        "unfurl_links": false,
    });
    Ok(body.to_string())
}

/// Reads Slack's answer: HTTP status, `Retry-After`, and the `ok`/`error` of the JSON body.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8]) -> Verdict {
    if status == 429 {
        let after_ms = retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| s.saturating_mul(1000));
        return Verdict::Retry {
            reason: "rate limited by Slack (HTTP 429)".into(),
            after_ms,
        };
    }
    if status >= 500 {
        return Verdict::Retry {
            reason: format!("Slack answered HTTP {status}"),
            after_ms: None,
        };
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if !(200..300).contains(&status) {
        return Verdict::Permanent(match error {
            Some(code) => format!("Slack answered HTTP {status}: {code}"),
            None => format!("Slack answered HTTP {status}"),
        });
    }
    match parsed
        .as_ref()
        .and_then(|v| v.get("ok"))
        .and_then(Value::as_bool)
    {
        Some(true) => Verdict::Delivered {
            ts: (parsed.as_ref())
                .and_then(|v| v.get("ts"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        Some(false) => {
            let code = error.unwrap_or_else(|| "unknown_error".into());
            if RETRYABLE_ERRORS.contains(&code.as_str()) {
                Verdict::Retry {
                    reason: format!("Slack error: {code}"),
                    after_ms: None,
                }
            } else {
                Verdict::Permanent(format!("Slack error: {code}"))
            }
        }
        None => Verdict::Retry {
            reason: "Slack's answer was not the expected JSON".into(),
            after_ms: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &str) -> Value {
        let body = build(
            "01a2",
            "request_submitted",
            "2026-11-28T21:33:03Z",
            payload,
            "#integrations",
        )
        .expect("builds");
        serde_json::from_str(&body).expect("JSON")
    }

    #[test]
    fn blocks_show_title_requester_and_description() {
        let m = message(
            r#"{"title": "Access to production DB", "requester": "alice@company.com", "description": "Need <read> access & more"}"#,
        );
        assert_eq!(m["channel"], "#integrations");
        assert_eq!(m["blocks"][0]["type"], "header");
        assert_eq!(m["blocks"][0]["text"]["text"], "Access to production DB");
        assert_eq!(
            m["blocks"][1]["fields"][0]["text"],
            "*Requester*\nalice@company.com"
        );
        assert_eq!(
            m["blocks"][2]["text"]["text"],
            "Need &lt;read&gt; access &amp; more"
        );
        assert!(
            m["text"]
                .as_str()
                .expect("text")
                .contains("requested by alice@company.com")
        );
    }

    #[test]
    fn payload_channel_wins_and_missing_fields_have_defaults() {
        let m = message(r##"{"slack_channel": "#ops"}"##);
        assert_eq!(m["channel"], "#ops");
        assert_eq!(m["blocks"][0]["text"]["text"], "request submitted");
        assert_eq!(
            m["blocks"].as_array().map(Vec::len),
            Some(3),
            "no description block"
        );
    }

    #[test]
    fn texts_are_cut_to_slack_limits() {
        let long = "x".repeat(10_000);
        let m = message(&format!(
            r#"{{"title": "{long}", "description": "{long}", "requester": "{long}"}}"#
        ));
        assert_eq!(
            m["blocks"][0]["text"]["text"]
                .as_str()
                .map(|s| s.chars().count()),
            Some(HEADER_MAX)
        );
        assert_eq!(
            m["blocks"][2]["text"]["text"]
                .as_str()
                .map(|s| s.chars().count()),
            Some(SECTION_TEXT_MAX)
        );
        assert!(
            m["blocks"][1]["fields"][0]["text"]
                .as_str()
                .map(|s| s.chars().count())
                <= Some(FIELD_TEXT_MAX)
        );
        assert_eq!(
            m["text"].as_str().map(|s| s.chars().count()),
            Some(FALLBACK_TEXT_MAX)
        );
        assert!(m["text"].as_str().expect("text").ends_with('…'));
    }

    #[test]
    fn non_object_payloads_are_permanent_failures() {
        assert!(build("1", "t", "now", "[1]", "#c").is_err());
        assert!(build("1", "t", "now", "nope", "#c").is_err());
    }

    #[test]
    fn slack_answers_are_classified() {
        assert_eq!(
            classify(200, None, br#"{"ok": true, "ts": "1"}"#),
            Verdict::Delivered {
                ts: Some("1".into())
            }
        );
        assert_eq!(
            classify(200, None, br#"{"ok": true}"#),
            Verdict::Delivered { ts: None }
        );
        assert_eq!(
            classify(429, Some("30"), b""),
            Verdict::Retry {
                reason: "rate limited by Slack (HTTP 429)".into(),
                after_ms: Some(30_000)
            }
        );
        assert!(matches!(
            classify(503, None, b"down"),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            classify(200, None, br#"{"ok": false, "error": "ratelimited"}"#),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            classify(200, None, br#"{"ok": false, "error": "internal_error"}"#),
            Verdict::Retry { .. }
        ));
        assert_eq!(
            classify(200, None, br#"{"ok": false, "error": "channel_not_found"}"#),
            Verdict::Permanent("Slack error: channel_not_found".into())
        );
        assert_eq!(
            classify(200, None, br#"{"ok": false, "error": "invalid_auth"}"#),
            Verdict::Permanent("Slack error: invalid_auth".into())
        );
        assert_eq!(
            classify(404, None, b""),
            Verdict::Permanent("Slack answered HTTP 404".into())
        );
        assert!(matches!(
            classify(200, None, b"<html>"),
            Verdict::Retry { .. }
        ));
    }
}
