//! `/api/v1/events`: publishing events (single and batch) and reading one back with the status
//! of each of its deliveries.
//!
//! A `202` means the event and all its deliveries are committed (one transaction): from then on
//! the event is never lost. The payload is stored byte for byte as sent, so what is signed and
//! delivered is exactly what the client published.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tracing::Instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{ApiQuery, Id, noun};
use super::schema::{Destination, mirror};
use super::validate::{self, Errors};
use super::{ApiJson, AppState, Page, PageQuery};
use crate::error::{ApiError, ApiResult};
use crate::model::trace::{self, TraceParent};
use crate::model::{
    self, DeliveryCounts, DeliveryStatus, DeliverySummary, EventFilter, EventSummary,
    IdempotencyKey, NewEvent, PublishOutcome, PublishRequest, PublishedEvent,
};

/// Most events in one batch publish.
pub const MAX_BATCH: usize = 1000;
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish_event, list_events))
        .routes(routes!(publish_batch))
        .routes(routes!(get_event))
}

/// An event to publish.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    #[schema(
        example = "request_submitted",
        pattern = "^[a-z0-9][a-z0-9_.-]{0,127}$"
    )]
    pub event_type: String,
    /// Any JSON object; delivered exactly as sent.
    #[schema(value_type = Object, example = json!({"title": "Access to production DB", "requester": "alice@company.com"}))]
    pub payload: Box<RawValue>,
    /// Events sharing a key (an order id, a customer) reach a subscription marked `ordered` one
    /// at a time, in publish order. 1 to 256 printable characters.
    #[serde(default)]
    #[schema(example = "order-1042", max_length = 256)]
    pub ordering_key: Option<String>,
}

/// Up to 1000 events, stored in one transaction.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    #[schema(min_items = 1, max_items = 1000)]
    pub events: Vec<PublishEvent>,
}

mirror! {
    /// What a publish stored.
    pub struct PublishedOut from PublishedEvent {
        id: Uuid,
        event_type: String,
        created_at: DateTime<Utc>,
        /// Destinations matched: enabled subscriptions plus active connectors.
        deliveries: u32,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchOut {
    pub data: Vec<PublishedOut>,
}

mirror! {
    /// One delivery of an event.
    pub struct DeliveryOut from DeliverySummary {
        id: Uuid,
        destination: Destination,
        status: DeliveryStatus,
        /// Attempts spent from the current budget.
        attempts: u32,
        /// When the next attempt is due (pending deliveries only).
        next_attempt_at: Option<DateTime<Utc>>,
        last_error: Option<String>,
        updated_at: DateTime<Utc>,
    }
}

/// An event, its payload and its deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    pub id: Uuid,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    pub deliveries: Vec<DeliveryOut>,
}

/// Validates one event and turns it into what the store takes.
pub(super) fn new_event(
    errors: &mut Errors,
    at: &str,
    event: PublishEvent,
    max_payload: usize,
    now: DateTime<Utc>,
) -> NewEvent {
    validate::event_type(errors, &format!("{at}event_type"), &event.event_type);
    let payload = event.payload.get();
    if !payload.starts_with('{') {
        errors.add(format!("{at}payload"), "must be a JSON object");
    } else if payload.len() > max_payload {
        errors.add(
            format!("{at}payload"),
            format!(
                "is {} bytes, more than the limit of {max_payload} (IH_MAX_PAYLOAD_BYTES)",
                payload.len()
            ),
        );
    }
    if let Some(key) = &event.ordering_key {
        validate::ordering_key(errors, &format!("{at}ordering_key"), key);
    }
    NewEvent {
        id: Uuid::now_v7(),
        event_type: event.event_type,
        payload: String::from(Box::<str>::from(event.payload)),
        created_at: now,
        ordering_key: event.ordering_key,
        traceparent: None,
    }
}

/// The `Idempotency-Key` of a request with a fingerprint of what it asks for, so that reusing a
/// key for a different request is caught instead of silently answered with the first response.
fn idempotency(
    headers: &HeaderMap,
    route: &str,
    events: &[NewEvent],
) -> ApiResult<Option<IdempotencyKey>> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let key = validate::idempotency_key(value)?;
    let mut hash = Sha256::new();
    hash.update(route.as_bytes());
    for e in events {
        hash.update([0]);
        hash.update(e.event_type.as_bytes());
        hash.update([0]);
        hash.update(e.payload.as_bytes());
    }
    Ok(Some(IdempotencyKey {
        key,
        fingerprint: hex::encode(hash.finalize()),
    }))
}

/// Validates events (each one's fields named under its prefix, every problem collected) and
/// stores them as one publish; answers what was published and whether it was a replay.
async fn validate_and_store(
    state: &AppState,
    headers: &HeaderMap,
    route: &str,
    events: impl IntoIterator<Item = (String, PublishEvent)>,
) -> ApiResult<(Vec<PublishedEvent>, bool)> {
    let mut errors = Errors::default();
    let now = model::now();
    // The caller's trace, when it sent a valid one (a malformed one is ignored, as W3C asks).
    // With traces exported, the publish is a span of it, and what the event's calls carry on
    // is that span.
    let incoming = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let span = tracing::info_span!("publish", route);
    if let Some(parent) = &incoming {
        trace::adopt(&span, parent);
    }
    let traceparent = trace::of_span(&span).or(incoming).map(|t| t.to_string());
    let events: Vec<NewEvent> = events
        .into_iter()
        .map(|(prefix, e)| {
            let max_payload = state.config.max_payload_bytes;
            NewEvent {
                traceparent: traceparent.clone(),
                ..new_event(&mut errors, &prefix, e, max_payload, now)
            }
        })
        .collect();
    errors.finish()?;
    let idempotency = idempotency(headers, route, &events)?;
    let request = PublishRequest {
        events,
        idempotency,
    };
    match state.publisher.submit(request).instrument(span).await? {
        PublishOutcome::Created(published) => {
            // Deliveries the engine did not take as they were written wait to be claimed.
            if published.iter().any(|e| e.deliveries > e.started) {
                state.wake.notify_one();
                state.store.announce_work().await;
            }
            for e in &published {
                state.metrics.event_published(&e.event_type);
                tracing::info!(event_id = %e.id, event_type = %e.event_type, deliveries = e.deliveries, "event published");
            }
            Ok((published, false))
        }
        PublishOutcome::Replayed(published) => Ok((published, true)),
        PublishOutcome::KeyMismatch => Err(ApiError::Unprocessable {
            detail: "this Idempotency-Key was used for a different request in the last 24 hours"
                .into(),
            errors: vec![crate::error::FieldError::new(
                "Idempotency-Key",
                "already used for a different request; use a new key for a new request",
            )],
        }),
    }
}

fn accepted<T: Serialize>(body: T, replayed: bool) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Publish an event.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = PublishEvent, params(("Idempotency-Key" = Option<String>, Header, description = "Repeating a request with the same key within 24 h returns the first response and creates nothing")),
    responses((status = 202, description = "Stored; deliveries are queued", body = PublishedOut), (status = 400, description = "Malformed JSON or Idempotency-Key"), (status = 422, description = "Invalid fields, or a reused Idempotency-Key")))]
async fn publish_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PublishEvent>,
) -> ApiResult<Response> {
    let one = [(String::new(), body)];
    let (mut published, replayed) =
        validate_and_store(&state, &headers, "POST /api/v1/events", one).await?;
    let one = published
        .pop()
        .ok_or_else(|| ApiError::internal("publish returned no event"))?;
    Ok(accepted(PublishedOut::from(one), replayed))
}

/// Publish up to 1000 events in one transaction.
#[utoipa::path(post, path = "/api/v1/events/batch", tag = "events", request_body = PublishBatch, params(("Idempotency-Key" = Option<String>, Header, description = "As for a single publish")),
    responses((status = 202, description = "All stored, in request order", body = BatchOut), (status = 400, description = "Malformed JSON"), (status = 422, description = "Invalid fields; nothing was stored")))]
async fn publish_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PublishBatch, true>,
) -> ApiResult<Response> {
    if body.events.is_empty() || body.events.len() > MAX_BATCH {
        let mut errors = Errors::default();
        errors.add(
            "events",
            format!(
                "must hold 1 to {MAX_BATCH} events, got {}",
                body.events.len()
            ),
        );
        errors.finish()?;
    }
    let events = (body.events.into_iter().enumerate()).map(|(i, e)| (format!("events[{i}]."), e));
    let (published, replayed) =
        validate_and_store(&state, &headers, "POST /api/v1/events/batch", events).await?;
    Ok(accepted(
        BatchOut {
            data: published.into_iter().map(Into::into).collect(),
        },
        replayed,
    ))
}

/// Get an event with its payload and the status of each delivery.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events", params(("id" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "The event", body = EventOut), (status = 404, description = "No such event")))]
async fn get_event(
    State(state): State<AppState>,
    id: Id<noun::Event>,
) -> ApiResult<Json<EventOut>> {
    let event = state.store.get_event(*id).await?;
    let event = event.ok_or_else(|| id.missing())?;
    let payload = RawValue::from_string(event.payload).map_err(ApiError::internal)?;
    Ok(Json(EventOut {
        id: event.id,
        event_type: event.event_type,
        created_at: event.created_at,
        payload,
        deliveries: event.deliveries.into_iter().map(Into::into).collect(),
    }))
}

/// Filters of `GET /api/v1/events`; all given filters combine.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// A type (`order.created`) or a prefix (`order.` or `order.*`).
    pub event_type: Option<String>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// With a delivery to this subscription.
    pub subscription_id: Option<Uuid>,
    /// With a delivery to this connector (its default instance or one of its instances).
    pub connector: Option<String>,
    /// With a delivery in any of these states, comma-separated (`dead,pending`).
    pub delivery_status: Option<String>,
}

mirror! {
    /// How many of an event's deliveries are in each state.
    pub struct DeliveryCountsOut from DeliveryCounts {
        pending: u32,
        in_flight: u32,
        succeeded: u32,
        dead: u32,
        cancelled: u32,
    }
}

mirror! {
    /// An event in a list (its payload is in `GET /api/v1/events/{id}`).
    pub struct EventSummaryOut from EventSummary {
        id: Uuid,
        event_type: String,
        created_at: DateTime<Utc>,
        deliveries: DeliveryCountsOut,
    }
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub data: Vec<EventSummaryOut>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Search events, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventQuery, PageQuery),
    responses((status = 200, description = "A page of events", body = EventList), (status = 400, description = "A bad filter, limit or cursor")))]
async fn list_events(
    State(state): State<AppState>,
    page: Page,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> ApiResult<Json<EventList>> {
    let mut errors = Errors::default();
    let event_type = validate::type_match(&mut errors, "event_type", query.event_type.as_deref());
    validate::period(&mut errors, query.since, query.until);
    validate::connector_name(&mut errors, "connector", query.connector.as_deref());
    let delivery_status = validate::statuses(
        &mut errors,
        "delivery_status",
        query.delivery_status.as_deref(),
    );
    errors.finish_query()?;
    let filter = EventFilter {
        event_type,
        since: query.since,
        until: query.until,
        subscription_id: query.subscription_id,
        connector: query.connector,
        delivery_status,
    };
    let events = state.store.list_events(&filter, page.request()).await?;
    let (data, next_cursor) = page.answer(events, |e| e.id);
    Ok(Json(EventList { data, next_cursor }))
}
