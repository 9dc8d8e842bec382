//! Field validation for request bodies, collecting every problem at once so a client fixes its
//! request in one round trip (422 with `errors: [{field, message}]`).

use std::collections::BTreeMap;

use axum::http::{HeaderName, HeaderValue};
use chrono::{DateTime, Utc};

use crate::egress::Policy;
use crate::error::{ApiError, FieldError};
use crate::model::filter::Filter;
use crate::model::names::{EVENT_TYPE_RULE, is_event_type, is_set_by_hub};
use crate::model::rate::{self, RateLimit};
use crate::model::{DeliveryStatus, TransformRef, TypeMatch};

pub const MAX_URL_LEN: usize = 2048;
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
pub const MAX_EVENTS: usize = 100;
pub const MAX_DESCRIPTION_LEN: usize = 1024;
pub const MAX_HEADERS: usize = 20;
pub const MAX_HEADER_VALUE_LEN: usize = 1024;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Collects field errors; `finish` turns them into a 422.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.0))
        }
    }
}

impl Errors {
    /// As [`Errors::finish`], for a query string: a 400.
    pub fn finish_query(self) -> Result<(), ApiError> {
        match self.finish() {
            Err(ApiError::Unprocessable { detail, errors }) => {
                Err(ApiError::BadRequest { detail, errors })
            }
            other => other,
        }
    }
}

/// An event type filter: a type (`order.created`) or a prefix (`order.` or `order.*`).
pub fn type_match(errors: &mut Errors, field: &str, value: Option<&str>) -> Option<TypeMatch> {
    let wanted = TypeMatch::parse(value?);
    let (TypeMatch::Exact(name) | TypeMatch::Prefix(name)) = &wanted;
    if !is_event_type(name) {
        errors.add(
            field,
            format!("{value:?}: a type or a prefix (`order.`, `order.*`) that {EVENT_TYPE_RULE}"),
        );
    }
    Some(wanted)
}

/// `since` must come before `until` when both are given.
pub fn period(errors: &mut Errors, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) {
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        errors.add("until", "must be later than since");
    }
}

pub fn connector_name(errors: &mut Errors, field: &str, value: Option<&str>) {
    if let Some(name) = value
        && !crate::connectors::manifest::is_name(name)
    {
        errors.add(field, "is not a connector name");
    }
}

/// A comma-separated list of delivery states (`dead,pending`).
pub fn statuses(errors: &mut Errors, field: &str, value: Option<&str>) -> Vec<DeliveryStatus> {
    let Some(list) = value else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for name in list.split(',').map(str::trim) {
        match DeliveryStatus::parse(name) {
            Some(status) if !found.contains(&status) => found.push(status),
            Some(_) => {}
            None => {
                let known = DeliveryStatus::ALL.map(DeliveryStatus::as_str).join(", ");
                errors.add(field, format!("{name:?} is not a delivery state ({known})"));
            }
        }
    }
    found
}

pub fn event_type(errors: &mut Errors, field: &str, value: &str) {
    if !is_event_type(value) {
        errors.add(field, format!("{value:?} {EVENT_TYPE_RULE}"));
    }
}

/// A webhook URL: absolute http(s), with a host, and not a literal private address unless
/// private destinations are allowed. Names are resolved (and checked again) at every attempt.
pub fn url(errors: &mut Errors, field: &str, value: &str, policy: &Policy) {
    if value.len() > MAX_URL_LEN {
        return errors.add(field, format!("must be at most {MAX_URL_LEN} characters"));
    }
    if value.chars().any(char::is_control) {
        return errors.add(field, "must not contain control characters");
    }
    let parsed = match url::Url::parse(value) {
        Ok(u) => u,
        Err(e) => return errors.add(field, format!("is not an absolute URL: {e}")),
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return errors.add(
            field,
            format!(
                "scheme {:?} is not supported: use https (or http)",
                parsed.scheme()
            ),
        );
    }
    let Some(host) = parsed.host() else {
        return errors.add(field, "has no host");
    };
    // Credentials in a URL end up wherever URLs are shown or logged; headers are for secrets.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return errors.add(
            field,
            "must not carry credentials (user:password@): send them in a custom header such as \
             Authorization",
        );
    }
    match policy.host_refusal(&host) {
        Some(refused) if refused.always => errors.add(field, format!("refused: {refused}")),
        Some(refused) => errors.add(
            field,
            format!(
                "refused: {refused}; list its network in IH_ALLOWED_DESTINATION_CIDRS to deliver there"
            ),
        ),
        None => {}
    }
}

pub fn secret(errors: &mut Errors, field: &str, value: &str) {
    if value.chars().any(char::is_control) {
        return errors.add(field, "must not contain control characters");
    }
    let len = value.chars().count();
    if !SECRET_LEN.contains(&len) {
        errors.add(
            field,
            format!(
                "must be {} to {} characters, got {len}",
                SECRET_LEN.start(),
                SECRET_LEN.end()
            ),
        );
    }
}

/// Event types of a subscription, or `["*"]`. Duplicates are dropped, order kept.
pub fn events(errors: &mut Errors, field: &str, value: &[String]) -> Vec<String> {
    if value.is_empty() || value.len() > MAX_EVENTS {
        errors.add(
            field,
            format!("must list 1 to {MAX_EVENTS} event types, or \"*\" for all"),
        );
    }
    if value.len() > 1 && value.iter().any(|e| e == "*") {
        errors.add(
            field,
            "\"*\" (every event type) stands alone: list names, or [\"*\"]",
        );
    }
    let mut out: Vec<String> = Vec::with_capacity(value.len());
    for (i, name) in value.iter().enumerate() {
        if name != "*" {
            event_type(errors, &format!("{field}[{i}]"), name);
        }
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

pub fn description(errors: &mut Errors, field: &str, value: Option<&str>) {
    if value.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN) {
        errors.add(
            field,
            format!("must be at most {MAX_DESCRIPTION_LEN} characters"),
        );
    }
    text(errors, field, value);
}

/// Free text: line breaks and tabs are fine, other control characters (NUL above all, which
/// PostgreSQL cannot store) are refused.
pub fn text(errors: &mut Errors, field: &str, value: Option<&str>) {
    if value.is_some_and(|d| {
        d.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    }) {
        errors.add(
            field,
            "must not contain control characters other than line breaks and tabs",
        );
    }
}

/// Custom headers sent with every delivery: valid HTTP names and values, none of the hub's own.
/// Names are stored lower-case, as HTTP/2 sends them.
/// Most characters of an ordering key.
pub const MAX_ORDERING_KEY_LEN: usize = 256;

/// An event's ordering key: 1 to 256 characters, none of them control characters.
pub fn ordering_key(errors: &mut Errors, field: &str, key: &str) {
    if key.is_empty() || key.chars().count() > MAX_ORDERING_KEY_LEN {
        errors.add(
            field,
            format!("must be 1 to {MAX_ORDERING_KEY_LEN} characters"),
        );
    } else if key.chars().any(char::is_control) {
        errors.add(field, "may not contain control characters");
    }
}

/// A rate limit: 1 to 10,000 deliveries per second, a burst of 0 to 10,000.
pub fn rate_limit(
    errors: &mut Errors,
    field: &str,
    per_second: u64,
    burst: u64,
) -> Option<RateLimit> {
    let mut ok = true;
    if !(1..=u64::from(rate::MAX_PER_SECOND)).contains(&per_second) {
        errors.add(
            format!("{field}.per_second"),
            format!("must be 1 to {}", rate::MAX_PER_SECOND),
        );
        ok = false;
    }
    if burst > u64::from(rate::MAX_BURST) {
        errors.add(
            format!("{field}.burst"),
            format!("must be 0 to {}", rate::MAX_BURST),
        );
        ok = false;
    }
    ok.then_some(RateLimit {
        per_second: per_second as u32,
        burst: burst as u32,
    })
}

/// A subscription's transform: a component name and at most
/// [`TransformRef::MAX_SETTINGS`] settings with lower-case keys.
pub fn transform(
    errors: &mut Errors,
    field: &str,
    name: &str,
    settings: &BTreeMap<String, String>,
) -> Option<TransformRef> {
    let mut ok = true;
    let mut refuse = |field: String, message: String| {
        errors.add(field, message);
        ok = false;
    };
    if !crate::connectors::manifest::is_name(name) {
        refuse(
            format!("{field}.name"),
            "is not a transform name: lower-case letters, digits, `-` and `_`, starting with a letter"
                .into(),
        );
    }
    if settings.len() > TransformRef::MAX_SETTINGS {
        refuse(
            format!("{field}.settings"),
            format!("may hold at most {} settings", TransformRef::MAX_SETTINGS),
        );
    }
    for (key, value) in settings {
        if !crate::connectors::manifest::is_key(key) {
            refuse(
                format!("{field}.settings.{key}"),
                "is not a setting name: lower-case letters, digits and `_`, starting with a letter"
                    .into(),
            );
        } else if value.len() > TransformRef::MAX_VALUE {
            refuse(
                format!("{field}.settings.{key}"),
                format!("is longer than {} bytes", TransformRef::MAX_VALUE),
            );
        }
    }
    ok.then(|| TransformRef {
        name: name.to_owned(),
        settings: settings.clone(),
    })
}

/// A payload filter (`model/filter.rs`); its problem is reported at `field.<where in it>`.
pub fn filter(errors: &mut Errors, field: &str, value: &serde_json::Value) -> Option<Filter> {
    match Filter::parse(value) {
        Ok(filter) => Some(filter),
        Err(e) if e.path.is_empty() => {
            errors.add(field, e.message);
            None
        }
        Err(e) => {
            errors.add(format!("{field}.{}", e.path), e.message);
            None
        }
    }
}

pub fn headers(
    errors: &mut Errors,
    field: &str,
    value: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    if value.len() > MAX_HEADERS {
        errors.add(field, format!("at most {MAX_HEADERS} headers"));
    }
    let mut out = BTreeMap::new();
    for (name, val) in value {
        let at = format!("{field}.{name}");
        let lower = name.to_ascii_lowercase();
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.add(&at, "is not a valid HTTP header name");
        } else if is_set_by_hub(&lower) {
            errors.add(&at, "is set by the hub and cannot be overridden");
        }
        if val.len() > MAX_HEADER_VALUE_LEN {
            errors.add(
                &at,
                format!("value must be at most {MAX_HEADER_VALUE_LEN} bytes"),
            );
        } else if HeaderValue::from_str(val).is_err() {
            errors.add(
                &at,
                "value contains characters not allowed in an HTTP header",
            );
        }
        out.insert(lower, val.clone());
    }
    out
}

/// An `Idempotency-Key` header: 1-255 visible ASCII characters.
pub fn idempotency_key(value: &axum::http::HeaderValue) -> Result<String, ApiError> {
    let key = value.to_str().ok().map(str::trim).filter(|k| {
        !k.is_empty()
            && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
            && k.bytes().all(|b| b.is_ascii_graphic())
    });
    key.map(str::to_owned).ok_or_else(|| {
        ApiError::bad_request(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters (a UUID is a good choice)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_for_scheme_host_and_private_literals() {
        let check = |u: &str, allow: bool| {
            let mut e = Errors::default();
            url(&mut e, "url", u, &Policy::new(allow, &[]));
            e.0
        };
        assert!(check("https://example.com/hook", false).is_empty());
        assert!(check("http://10.0.0.5/hook", true).is_empty());
        let refused = check("http://10.0.0.5/hook", false);
        assert!(refused[0].message.contains("RFC 1918"), "{refused:?}");
        assert!(!check("ftp://example.com", false).is_empty());
        assert!(!check("/relative", false).is_empty());
        assert!(!check("http://[::1]:8080/", false).is_empty());
        assert!(
            refused[0].message.contains("IH_ALLOWED_DESTINATION_CIDRS"),
            "{refused:?}"
        );
        let metadata = check("http://169.254.169.254/latest", true);
        assert!(
            metadata[0].message.contains("never allowed"),
            "{metadata:?}"
        );
        assert!(
            !metadata[0].message.contains("IH_"),
            "no setting opens it: {metadata:?}"
        );
    }

    #[test]
    fn reserved_and_invalid_headers_are_refused() {
        let mut e = Errors::default();
        let input: BTreeMap<String, String> = [
            ("X-Team".to_string(), "billing".to_string()),
            ("Content-Type".to_string(), "text/plain".to_string()),
            ("X-Webhook-Signature".to_string(), "forged".to_string()),
            ("bad name".to_string(), "x".to_string()),
            ("X-Ok".to_string(), "line\nbreak".to_string()),
        ]
        .into_iter()
        .collect();
        let out = headers(&mut e, "headers", &input);
        let fields: Vec<_> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "headers.Content-Type",
                "headers.X-Ok",
                "headers.X-Webhook-Signature",
                "headers.bad name"
            ]
        );
        assert_eq!(out.get("x-team").map(String::as_str), Some("billing"));
    }
}
