//! Transforms: components of the `integrations-hub:transform` world
//! (`wit/transform/transform.wit`) that reshape a webhook subscription's deliveries. They load
//! from the connectors directory through the same registry (hot reload, signatures, the last
//! good version serving) and run in the same sandbox as connectors, importing nothing.
//!
//! Invariants:
//! - what a transform returns is checked here before anything is sent: the body at most
//!   [`MAX_BODY`], at most [`MAX_HEADERS`] headers, none of them one the hub sets itself
//!   (`model::names::is_set_by_hub`, the rule a subscription's headers follow), a valid media
//!   type;
//! - a transform that is not loaded is [`TransformError::Unavailable`] (the delivery waits), one
//!   that ran and failed is [`TransformError::Failed`] (the attempt fails): nothing is ever sent
//!   untransformed.

use std::collections::BTreeMap;

use reqwest::header::{HeaderName, HeaderValue};

use super::outcome::{EventData, FailureKind, MAX_REASON, bounded};
use super::runtime::{HostState, Runtime, TICK};
use crate::model::names::is_set_by_hub;

use super::runtime::bindings_transform::{TransformPre, integrations_hub::transform::types};

/// The largest body a transform may return.
pub const MAX_BODY: usize = 1 << 20;
/// Headers a transform may add.
pub const MAX_HEADERS: usize = 16;
const MAX_HEADER_VALUE: usize = 4096;

/// What one transform call is given.
#[derive(Debug, Clone)]
pub struct TransformInput {
    pub event: EventData,
    pub subscription_id: uuid::Uuid,
    pub url: String,
    pub settings: BTreeMap<String, String>,
}

/// What a transform made of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformed {
    Deliver(TransformedBody),
    /// Send the hub's own body, unchanged.
    Keep,
    /// Nothing to send: the delivery ends as skipped, with this reason.
    Drop(String),
}

/// The request a transform asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformedBody {
    pub body: Vec<u8>,
    /// `None`: `application/json`.
    pub content_type: Option<HeaderValue>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Why a transform gave nothing to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransformError {
    /// Not loaded in this hub (absent, failed to load, or not a transform): the delivery is
    /// held until it is.
    Unavailable(String),
    /// It ran and failed (its error, a trap, a limit, an output the hub refuses): the attempt
    /// fails with this reason.
    Failed(FailureKind, String),
}

impl std::fmt::Display for TransformError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(why) | Self::Failed(_, why) => f.write_str(why),
        }
    }
}

impl Runtime {
    /// Calls `transform` in a fresh instance.
    pub(super) async fn call_transform(
        &self,
        pre: &TransformPre<HostState>,
        shared: std::sync::Arc<super::Shared>,
        input: TransformInput,
    ) -> Result<Transformed, TransformError> {
        let name = shared.name.clone();
        let mut store = self.store(shared, None);
        let deadline = store.data().deadline;
        let event = types::Event {
            id: input.event.id,
            event_type: input.event.event_type,
            created_at: input.event.created_at,
            payload: input.event.payload.into_bytes(),
        };
        let context = types::Context {
            subscription_id: input.subscription_id.to_string(),
            url: input.url,
            settings: (input.settings.into_iter())
                .map(|(key, value)| types::Setting { key, value })
                .collect(),
        };
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_transform(&mut store, &event, &context).await
        };
        let failed =
            |kind, why: String| TransformError::Failed(kind, format!("transform {name:?} {why}"));
        match tokio::time::timeout_at((deadline + TICK * 10).into(), call).await {
            Ok(Ok(Ok(types::Transformed::Deliver(output)))) => checked(output)
                .map(Transformed::Deliver)
                .map_err(|why| failed(FailureKind::Trap, why)),
            Ok(Ok(Ok(types::Transformed::Keep))) => Ok(Transformed::Keep),
            Ok(Ok(Ok(types::Transformed::Drop(reason)))) => {
                Ok(Transformed::Drop(bounded(reason, MAX_REASON)))
            }
            Ok(Ok(Err(error))) => Err(failed(
                FailureKind::Trap,
                format!("refused the event: {}", bounded(error, MAX_REASON)),
            )),
            Ok(Err(e)) => {
                let (kind, why) = self.describe_failure(store.data(), &e);
                Err(failed(kind, why))
            }
            Err(_) => Err(failed(FailureKind::Timeout, self.timed_out())),
        }
    }
}

/// The output as the hub will send it, or why it is refused.
fn checked(output: types::Output) -> Result<TransformedBody, String> {
    if output.body.len() > MAX_BODY {
        return Err(format!(
            "returned a body of {} bytes; the limit is {MAX_BODY}",
            output.body.len()
        ));
    }
    if output.headers.len() > MAX_HEADERS {
        return Err(format!(
            "returned {} headers; the limit is {MAX_HEADERS}",
            output.headers.len()
        ));
    }
    let content_type = match output.content_type {
        Some(text) => Some(
            is_media_type(&text)
                .then(|| HeaderValue::from_str(&text).ok())
                .flatten()
                .ok_or_else(|| format!("returned the content type {text:?}, not a media type"))?,
        ),
        None => None,
    };
    let mut headers = Vec::with_capacity(output.headers.len());
    for header in output.headers {
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
            format!(
                "returned the header name {:?}, not a valid one",
                header.name
            )
        })?;
        if is_set_by_hub(name.as_str()) {
            return Err(format!(
                "set the header {name}, which the hub sets itself (or only HTTP may)"
            ));
        }
        if header.value.len() > MAX_HEADER_VALUE {
            return Err(format!(
                "returned a {name} header of {} bytes; the limit is {MAX_HEADER_VALUE}",
                header.value.len()
            ));
        }
        let value = HeaderValue::from_str(&header.value)
            .map_err(|_| format!("returned a {name} header value that is not valid in HTTP"))?;
        headers.push((name, value));
    }
    Ok(TransformedBody {
        body: output.body,
        content_type,
        headers,
    })
}

/// `type/subtype`, optionally followed by `;` parameters (RFC 9110's media-type).
fn is_media_type(text: &str) -> bool {
    let essence = text.split(';').next().unwrap_or_default();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    essence
        .split_once('/')
        .is_some_and(|(kind, sub)| token(kind) && token(sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(headers: &[(&str, &str)]) -> types::Output {
        types::Output {
            body: b"{}".to_vec(),
            content_type: Some("application/cloudevents+json; charset=utf-8".into()),
            headers: (headers.iter())
                .map(|(n, v)| types::Header {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn outputs_are_checked_before_anything_is_sent() {
        let ok = checked(output(&[("x-tenant", "acme")])).expect("test value");
        assert_eq!(ok.headers[0].0.as_str(), "x-tenant");
        assert!(ok.content_type.is_some());
        for forged in [
            "webhook-signature",
            "X-Webhook-Signature",
            "Content-Length",
            "host",
        ] {
            let refused = checked(output(&[(forged, "x")])).expect_err("refused");
            assert!(refused.contains("sets itself"), "{forged}: {refused}");
        }
        assert!(checked(output(&[("bad name", "x")])).is_err());
        assert!(checked(output(&[("x-a", "line\nbreak")])).is_err());
        let many: Vec<(String, String)> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-{i}"), "v".into()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert!(
            checked(output(&many))
                .expect_err("refused")
                .contains("limit")
        );
        let mut big = output(&[]);
        big.body = vec![b' '; MAX_BODY + 1];
        assert!(checked(big).expect_err("refused").contains("limit"));
        let mut typed = output(&[]);
        typed.content_type = Some("not a type".into());
        assert!(checked(typed).is_err());
    }
}
