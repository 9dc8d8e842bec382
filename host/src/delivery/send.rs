//! Sending one attempt: a signed webhook through the guarded client, or a call to a connector.
//! The engine sends every delivery through a [`Sender`]; the API's test send uses the same one,
//! so a test goes out exactly as a delivery would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::retry::{self, Answer};
use super::signing;
use crate::config::DeliveryConfig;
use crate::connectors::{
    CallContext, CallOutcome, Connectors, EventData, Reuse, TransformInput, Transformed,
};
use crate::egress::{self, Policy};
use crate::model::trace::TraceParent;
use crate::model::{
    ClaimedDelivery, ConnectorReport, InstanceTarget, ReportKind, Target, TransformRef,
};

/// Response bytes kept with an attempt.
pub const MAX_RESPONSE_BODY: usize = 4096;

/// What one attempt produced: the destination's answer, for the retry policy, and what is kept
/// in the attempt record.
#[derive(Debug)]
pub struct Outcome {
    pub answer: Answer,
    /// The HTTP status, when the destination answered one.
    pub status: Option<u16>,
    /// The start of the response body.
    pub body: Option<String>,
    pub error: Option<String>,
    /// What a connector reported (connectors), or a transform's drop.
    pub report: Option<ConnectorReport>,
    /// The SHA-256 (hex) of the body a transform made, when one was sent.
    pub body_sha256: Option<String>,
}

impl Outcome {
    fn answered(answer: Answer, error: Option<String>) -> Self {
        Self {
            answer,
            status: None,
            body: None,
            error,
            report: None,
            body_sha256: None,
        }
    }

    /// What a connector answered, as the retry policy and the attempt record take it.
    fn reported(outcome: CallOutcome) -> Self {
        let report = |kind, external_id, retry_after_ms| {
            Some(ConnectorReport {
                kind,
                external_id,
                retry_after_ms,
            })
        };
        match outcome {
            CallOutcome::Delivered {
                upstream_status,
                external_id,
            } => Self {
                status: upstream_status,
                report: report(ReportKind::Ok, external_id, None),
                ..Self::answered(Answer::Delivered, None)
            },
            // Nothing to deliver: the delivery ends, the reason is what the connector answered.
            CallOutcome::Skipped(reason) => Self {
                body: Some(reason),
                report: report(ReportKind::Skipped, None, None),
                ..Self::answered(Answer::Delivered, None)
            },
            CallOutcome::Retry {
                reason,
                after,
                upstream_status,
            } => Self {
                status: upstream_status,
                report: report(
                    ReportKind::Retry,
                    None,
                    after.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
                ),
                ..Self::answered(
                    Answer::Failed { retry_after: after },
                    Some(format!("retry: {reason}")),
                )
            },
            CallOutcome::Permanent(reason) => Self {
                report: report(ReportKind::Permanent, None, None),
                ..Self::answered(Answer::Permanent, Some(format!("permanent: {reason}")))
            },
            CallOutcome::Failed(_, why) => Self::failed(why),
        }
    }

    fn failed(error: impl Into<String>) -> Self {
        Self::answered(Answer::Failed { retry_after: None }, Some(error.into()))
    }
}

/// The trace of `delivery`'s event, if its publish carried one.
fn trace_of(delivery: &ClaimedDelivery) -> Option<TraceParent> {
    delivery.traceparent.as_deref().and_then(TraceParent::parse)
}

/// `traceparent` for one webhook attempt: the attempt's span when traces are exported, else the
/// event's trace with a parent id of this call's own.
fn trace_header(delivery: &ClaimedDelivery) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    let trace = trace_of(delivery).map(|event| event.for_call());
    if let Some(value) = trace.and_then(|t| HeaderValue::from_str(&t.to_string()).ok()) {
        headers.insert("traceparent", value);
    }
    headers
}

/// Sends attempts: the one HTTP client and the connectors, with the webhook timeout.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    connectors: Arc<Connectors>,
    timeout: Duration,
    max_attempts: u32,
    policy: Policy,
}

impl Sender {
    /// `client` is the shared, SSRF-guarded client of [`egress::build`]; `config` gives the
    /// webhook timeout and the attempt budget connectors are told of.
    pub fn new(
        client: reqwest::Client,
        connectors: Arc<Connectors>,
        config: &DeliveryConfig,
        policy: Policy,
    ) -> Self {
        Self {
            client,
            connectors,
            timeout: config.timeout,
            max_attempts: config.max_attempts,
            policy,
        }
    }

    /// Sends `delivery` to its target, whatever runs here (the engine checks that first).
    pub async fn send(&self, delivery: &ClaimedDelivery) -> Outcome {
        match &delivery.target {
            Target::Webhook {
                url,
                headers,
                secrets,
                transform,
                subscription_id,
            } => {
                let body = match transform {
                    None => Body::plain(delivery),
                    Some(transform) => {
                        match self
                            .transformed(delivery, *subscription_id, url, transform)
                            .await
                        {
                            Ok(body) => body,
                            Err(outcome) => return outcome,
                        }
                    }
                };
                self.webhook(delivery, url, headers, secrets, body).await
            }
            Target::Connector { name, instance } => {
                self.connector(delivery, name, instance.as_ref()).await
            }
        }
    }

    /// Hands the event to a connector (its default instance, or `instance`).
    pub async fn connector(
        &self,
        delivery: &ClaimedDelivery,
        name: &str,
        instance: Option<&InstanceTarget>,
    ) -> Outcome {
        let event = event_data(delivery);
        let context = CallContext {
            attempt: delivery.attempts.saturating_add(1),
            max_attempts: self.max_attempts,
            delivery_id: delivery.id,
            instance_id: instance.map(|i| i.id),
            subscription_id: instance.map(|i| i.subscription_id),
            traceparent: trace_of(delivery),
        };
        let span =
            tracing::info_span!("connector", connector = %name, instance = ?instance.map(|i| i.id));
        let settings = instance.map(|i| &i.settings.0);
        let call = self.connectors.invoke(name, event, settings, &context);
        Outcome::reported(call.instrument(span).await)
    }

    /// The body `transform` makes of `delivery`, or the attempt's outcome when there is nothing
    /// to send (dropped, or the transform failed).
    async fn transformed(
        &self,
        delivery: &ClaimedDelivery,
        subscription_id: uuid::Uuid,
        url: &str,
        transform: &TransformRef,
    ) -> Result<Body, Outcome> {
        let input = TransformInput {
            event: event_data(delivery),
            subscription_id,
            url: url.to_owned(),
            settings: transform.settings.clone(),
        };
        let span = tracing::info_span!("transform", transform = %transform.name);
        let call = (self.connectors).transform(&transform.name, input, Reuse::Warm);
        match call.instrument(span).await {
            Ok(Transformed::Deliver(made)) => Ok(Body {
                digest: Some(hex::encode(Sha256::digest(&made.body))),
                bytes: made.body,
                content_type: made.content_type,
                headers: made.headers,
            }),
            Ok(Transformed::Keep) => Ok(Body::plain(delivery)),
            Ok(Transformed::Drop(reason)) => Err(Outcome {
                body: Some(reason),
                report: Some(ConnectorReport {
                    kind: ReportKind::Skipped,
                    external_id: None,
                    retry_after_ms: None,
                }),
                ..Outcome::answered(Answer::Delivered, None)
            }),
            Err(e) => Err(Outcome::failed(e.to_string())),
        }
    }

    /// Posts the signed webhook to `url`.
    pub async fn webhook(
        &self,
        delivery: &ClaimedDelivery,
        url: &str,
        headers: &BTreeMap<String, String>,
        secrets: &[String],
        body: Body,
    ) -> Outcome {
        if let Err(refused) = egress::check_url(url, &self.policy) {
            return Outcome::failed(refused.to_string());
        }
        let Some(seed_secret) = signing::seed_secret(secrets) else {
            return Outcome::failed("the subscription has no valid signing secret");
        };
        let Body {
            bytes: body,
            content_type,
            headers: made,
            digest,
        } = body;
        let timestamp = Utc::now().timestamp();
        let event_id = delivery.event_id.to_string();
        let mut request = self.client.post(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        // A transform's headers come after the subscription's (and win over them); the hub's own
        // come last, and `connectors/transform.rs` refuses those names anyway.
        for (name, value) in made {
            request = request.header(name, value);
        }
        let content_type =
            content_type.unwrap_or_else(|| HeaderValue::from_static("application/json"));
        let request = request
            .header(CONTENT_TYPE, content_type)
            .header(
                "x-webhook-signature",
                signing::seed_signature(seed_secret, timestamp, &body),
            )
            .header("x-webhook-timestamp", timestamp)
            .headers(trace_header(delivery))
            .header("x-webhook-event", &delivery.event_type)
            .header("x-webhook-event-id", &event_id)
            .header("webhook-id", &event_id)
            .header("webhook-timestamp", timestamp)
            .header(
                "webhook-signature",
                signing::standard_signature(secrets, &event_id, timestamp, &body),
            )
            .body(body);

        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Outcome::failed(format!(
                    "timed out after {:.1}s (IH_DELIVERY_TIMEOUT_SECONDS)",
                    self.timeout.as_secs_f64()
                ));
            }
            Err(e) => return Outcome::failed(egress::describe(&e)),
        };
        let status = response.status();
        let retry_after = if status.as_u16() == 429 || status.as_u16() == 503 {
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, Utc::now()))
        } else {
            None
        };
        let mut kept = Vec::new();
        let mut body_error = None;
        while kept.len() < MAX_RESPONSE_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => kept
                    .extend_from_slice(&chunk[..chunk.len().min(MAX_RESPONSE_BODY - kept.len())]),
                Ok(None) => break,
                Err(e) => {
                    body_error = Some(if e.is_timeout() {
                        "timed out reading the response body".to_owned()
                    } else {
                        egress::describe(&e)
                    });
                    break;
                }
            }
        }
        let body = (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned());
        // A 2xx whose body broke off (connection dropped, body too slow) is not an answer the
        // endpoint finished giving: it fails, and at-least-once delivery tries again.
        let success = status.is_success() && body_error.is_none();
        let error = if success {
            None
        } else if status.is_redirection() {
            Some(format!(
                "HTTP {} (redirects are not followed)",
                status.as_u16()
            ))
        } else if status.is_success() {
            body_error
                .map(|e| format!("HTTP {}, then the response broke off: {e}", status.as_u16()))
        } else {
            Some(body_error.unwrap_or_else(|| format!("HTTP {}", status.as_u16())))
        };
        let answer = if success {
            Answer::Delivered
        } else if status.as_u16() == 410 {
            Answer::Gone
        } else {
            Answer::Failed { retry_after }
        };
        Outcome {
            answer,
            status: Some(status.as_u16()),
            body,
            error,
            report: None,
            body_sha256: digest,
        }
    }
}

/// What a webhook attempt sends: the hub's envelope, or what a transform made of it.
#[derive(Debug)]
pub struct Body {
    bytes: Vec<u8>,
    /// `None`: `application/json`.
    content_type: Option<HeaderValue>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The SHA-256 (hex) of a transformed body, for the attempt record.
    digest: Option<String>,
}

impl Body {
    /// The envelope `{"id", "event_type", "created_at", "payload"}` (`signing::webhook_body`).
    pub fn plain(delivery: &ClaimedDelivery) -> Self {
        Self {
            bytes: signing::webhook_body(delivery).into_bytes(),
            content_type: None,
            headers: Vec::new(),
            digest: None,
        }
    }
}

/// The event of `delivery` as connectors and transforms take it.
fn event_data(delivery: &ClaimedDelivery) -> EventData {
    EventData::new(
        delivery.event_id,
        delivery.event_type.clone(),
        delivery.event_created_at,
        delivery.payload.clone(),
    )
}
