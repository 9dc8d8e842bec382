//! `/api/v1/subscriptions`: webhook endpoints, the events they take, their secrets.
//!
//! The secret is write-only: it is accepted on create and on PATCH (which rotates it, the old one
//! staying valid for 24 h) and never returned, except once when the hub generated it.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{ApiQuery, Id, noun};
use super::schema::{Circuit, mirror, non_empty, opt};
use super::validate::{self, Errors};
use super::{ApiJson, AppState, Page, PageQuery};
use crate::delivery::retry::Answer;
use crate::delivery::signing;
use crate::error::{ApiError, ApiResult};
use crate::model::{
    self, Circuit as ModelCircuit, ClaimedDelivery, DeliveryLine, DeliveryStatus, InstanceTarget,
    NewSubscription, Subscription, SubscriptionPatch, Target, TransformRef, filter::Filter,
    rate::RateLimit,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_subscription, list_subscriptions))
        .routes(routes!(
            get_subscription,
            patch_subscription,
            delete_subscription
        ))
        .routes(routes!(list_deliveries))
        .routes(routes!(send_test))
}

mirror! {
    /// The connector instance a subscription delivers to.
    pub struct SubscriptionInstance from model::InstanceRef {
        id: Uuid,
        /// The connector, e.g. `slack`.
        connector: String,
        name: String,
    }
}

mirror! {
    /// A subscription as returned by the API.
    pub struct SubscriptionOut from Subscription {
        id: Uuid,
        /// The webhook URL; `null` when the destination is a connector instance.
        url: Option<String> => non_empty,
        /// The connector instance events go to, instead of a URL.
        instance: Option<SubscriptionInstance> => opt,
        /// Event types delivered to this endpoint; `["*"]` means all.
        events: Vec<String>,
        enabled: bool,
        description: Option<String>,
        /// Extra headers sent with every delivery.
        headers: BTreeMap<String, String>,
        /// Which events of its types it takes; `null`: all of them.
        #[schema(value_type = Option<Object>)]
        filter: Option<Value> => filter_document,
        /// Held: deliveries are created and kept, not attempted, until resumed.
        paused: bool,
        /// Events sharing an `ordering_key` are delivered one at a time, in publish order.
        ordered: bool,
        /// At most this many deliveries a second, plus a burst; `null`: as fast as it takes them.
        rate_limit: Option<RateLimitOut> => opt,
        /// The transform each delivery's body goes through; `null`: the payload as published.
        transform: Option<TransformOut> => opt,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        circuit: Circuit,
    }
}

mirror! {
    /// A subscription's rate limit: in any one second, at most `per_second + burst` deliveries
    /// go out, whatever the number of instances.
    pub struct RateLimitOut from RateLimit {
        per_second: u32,
        burst: u32,
    }
}

mirror! {
    /// A subscription's transform: the component (`GET /api/v1/transforms`) and its settings.
    pub struct TransformOut from TransformRef {
        /// The transform's name, e.g. `cloudevents`.
        name: String,
        /// Settings the transform reads.
        settings: BTreeMap<String, String>,
    }
}

/// The transform a webhook subscription's deliveries go through.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformIn {
    /// A transform's name (`GET /api/v1/transforms`); deliveries wait while it is not loaded.
    #[schema(example = "cloudevents")]
    pub name: String,
    /// Settings the transform reads (at most 32; keys in lower case).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// A rate limit to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitIn {
    /// Deliveries per second, 1 to 10,000.
    #[schema(example = 50, minimum = 1, maximum = 10000)]
    pub per_second: u64,
    /// Extra deliveries allowed at once after a quiet spell, 0 to 10,000 (default 0).
    #[serde(default)]
    #[schema(example = 10, maximum = 10000)]
    pub burst: u64,
}

/// For `mirror!`: a filter as the document it was given.
fn filter_document(filter: Option<Filter>) -> Option<Value> {
    filter.map(|f| f.source().clone())
}

const TRANSFORM: &str = "transform";
const TRANSFORM_IS_FOR_WEBHOOKS: &str =
    "reshapes webhook bodies: a connector instance takes the event as published";

/// A page of subscriptions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub data: Vec<SubscriptionOut>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn default_true() -> bool {
    true
}

/// The connector instance a subscription delivers to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceChoice {
    /// The connector, e.g. `slack`.
    pub name: String,
    /// One of its instances (`POST /api/v1/connectors/{name}/instances`).
    pub instance: String,
}

/// A new subscription: to a webhook URL (with its signing secret), or to a connector instance.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// Absolute http(s) URL that receives the webhooks (no `user:password@`). Required unless
    /// `connector` is given.
    #[schema(
        example = "https://example.com/webhooks",
        pattern = "^https?://[^/@]+(/.*)?$",
        max_length = 2048
    )]
    pub url: Option<String>,
    /// Signing secret, 16 to 256 characters. Without one, a webhook subscription gets a
    /// generated `whsec_…` secret, returned once in the response. Never returned otherwise.
    #[schema(
        example = "whsec-my-very-secret-key",
        min_length = 16,
        max_length = 256
    )]
    pub secret: Option<String>,
    /// A connector instance to deliver to instead of a URL.
    pub connector: Option<InstanceChoice>,
    /// 1 to 100 event types, or `["*"]` for all.
    #[schema(example = json!(["request_submitted", "request_approved"]), min_items = 1, max_items = 100)]
    pub events: Vec<String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Which events of its types to take, by their payload (and type): e.g.
    /// `{"payload.total": {"$gte": 100}, "payload.currency": {"$in": ["EUR", "USD"]}}`. Without
    /// it, every event of its types.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Created paused: deliveries are created and held until it is resumed.
    #[serde(default)]
    pub paused: bool,
    /// Deliver events sharing an `ordering_key` one at a time, in publish order (default false).
    #[serde(default)]
    pub ordered: bool,
    /// At most `per_second` deliveries a second, plus `burst`, across all instances.
    #[serde(default)]
    pub rate_limit: Option<RateLimitIn>,
    /// Reshape every delivery's body with this transform (webhooks only); signatures cover the
    /// body as transformed.
    #[serde(default)]
    pub transform: Option<TransformIn>,
}

/// Distinguishes "absent" (`None`) from "null" (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A partial update: only the fields present change. A new `secret` rotates.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchSubscription {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub secret: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub events: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<bool>)]
    pub enabled: Option<Option<bool>>,
    /// `null` clears the description.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub headers: Option<Option<BTreeMap<String, String>>>,
    /// A new payload filter; `null` removes it (every event of its types again).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Option<Value>>,
    /// `true` holds new and waiting deliveries (none attempted, none lost); `false` resumes
    /// and delivers what was held. Unlike `enabled: false`, nothing published meanwhile is lost.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<bool>)]
    pub paused: Option<Option<bool>>,
    /// Keep publish order per `ordering_key` from now on (or stop).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<bool>)]
    pub ordered: Option<Option<bool>>,
    /// A new rate limit; `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RateLimitIn>)]
    pub rate_limit: Option<Option<RateLimitIn>>,
    /// A new transform; `null` removes it (the payload as published again).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<TransformIn>)]
    pub transform: Option<Option<TransformIn>>,
}

/// Create a subscription.
#[utoipa::path(post, path = "/api/v1/subscriptions", tag = "subscriptions", request_body = CreateSubscription,
    responses((status = 201, description = "Created", body = CreatedSubscription), (status = 400, description = "Malformed JSON"), (status = 401, description = "Missing or wrong API key"), (status = 422, description = "Invalid fields")))]
async fn create_subscription(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateSubscription>,
) -> ApiResult<(StatusCode, Json<CreatedSubscription>)> {
    let mut errors = Errors::default();
    let mut instance = None;
    match (&body.url, &body.secret, &body.connector) {
        (Some(url), secret, None) => {
            validate::url(&mut errors, "url", url, &state.policy);
            if let Some(secret) = secret {
                validate::secret(&mut errors, "secret", secret);
            }
        }
        (None, None, Some(choice)) => {
            if !body.headers.is_empty() {
                errors.add(
                    "headers",
                    "are for webhook URLs: a connector sends no headers",
                );
            }
            let found = state
                .store
                .connector_instance(&choice.name, &choice.instance)
                .await?;
            match found {
                Some(found) => instance = Some(found.reference()),
                None => errors.add(
                    "connector.instance",
                    format!("{} has no instance {:?}", choice.name, choice.instance),
                ),
            }
        }
        (None, Some(_), Some(_)) => errors.add(
            "secret",
            "is for webhook URLs: deliveries to a connector are not signed",
        ),
        (Some(_), _, Some(_)) => errors.add("connector", "give either url or connector, not both"),
        (None, _, None) => errors.add(
            "url",
            "is required (or connector, for a connector instance)",
        ),
    }
    let events = validate::events(&mut errors, "events", &body.events);
    validate::description(&mut errors, "description", body.description.as_deref());
    let headers = validate::headers(&mut errors, "headers", &body.headers);
    let filter = (body.filter.as_ref()).and_then(|f| validate::filter(&mut errors, "filter", f));
    let rate_limit = (body.rate_limit.as_ref())
        .and_then(|r| validate::rate_limit(&mut errors, "rate_limit", r.per_second, r.burst));
    let transform = (body.transform.as_ref())
        .and_then(|t| validate::transform(&mut errors, "transform", &t.name, &t.settings));
    if transform.is_some() && body.connector.is_some() {
        errors.add(TRANSFORM, TRANSFORM_IS_FOR_WEBHOOKS);
    }
    errors.finish()?;

    let generated = (body.secret.is_none() && body.url.is_some()).then(signing::generate_secret);
    let now = model::now();
    let subscription = Subscription {
        id: Uuid::now_v7(),
        url: body.url.unwrap_or_default(),
        instance,
        events,
        enabled: body.enabled,
        description: body.description,
        headers,
        filter,
        paused: body.paused,
        ordered: body.ordered,
        rate_limit,
        transform,
        created_at: now,
        updated_at: now,
        circuit: ModelCircuit::CLOSED,
    };
    let new = NewSubscription {
        subscription,
        secret: body.secret.or_else(|| generated.clone()),
    };
    let created = state.store.create_subscription(new).await?;
    let instance = created.instance.as_ref().map(|i| i.id);
    tracing::info!(subscription_id = %created.id, url = %created.url, instance = ?instance, secret_generated = generated.is_some(), "subscription created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedSubscription {
            subscription: created.into(),
            secret: generated,
        }),
    ))
}

/// A subscription just created: with its secret when the hub generated it (the only time a
/// secret is ever returned).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedSubscription {
    #[serde(flatten)]
    pub subscription: SubscriptionOut,
    /// The generated signing secret (`whsec_…`): store it now, it is not shown again. Absent
    /// when the request gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: Option<String>,
}

/// List subscriptions, oldest first.
#[utoipa::path(get, path = "/api/v1/subscriptions", tag = "subscriptions", params(PageQuery),
    responses((status = 200, description = "A page of subscriptions", body = SubscriptionList)))]
async fn list_subscriptions(
    State(state): State<AppState>,
    page: Page,
) -> ApiResult<Json<SubscriptionList>> {
    let subs = state.store.list_subscriptions(page.request()).await?;
    let (data, next_cursor) = page.answer(subs, |s| s.id);
    Ok(Json(SubscriptionList { data, next_cursor }))
}

/// Get one subscription.
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 200, description = "The subscription", body = SubscriptionOut), (status = 404, description = "No such subscription")))]
async fn get_subscription(
    State(state): State<AppState>,
    id: Id<noun::Subscription>,
) -> ApiResult<Json<SubscriptionOut>> {
    let sub = state.store.get_subscription(*id).await?;
    let sub = sub.ok_or_else(|| id.missing())?;
    Ok(Json(sub.into()))
}

/// Update a subscription partially; a new `secret` rotates (the old one stays valid for 24 h).
#[utoipa::path(patch, path = "/api/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = Uuid, Path, description = "Subscription id")), request_body = PatchSubscription,
    responses((status = 200, description = "The updated subscription", body = SubscriptionOut), (status = 404, description = "No such subscription"), (status = 422, description = "Invalid fields")))]
async fn patch_subscription(
    State(state): State<AppState>,
    id: Id<noun::Subscription>,
    ApiJson(body): ApiJson<PatchSubscription>,
) -> ApiResult<Json<SubscriptionOut>> {
    let mut errors = Errors::default();
    let mut patch = SubscriptionPatch::default();
    let mut not_null = |field: &str, present: bool| {
        if present {
            errors.add(field, "may not be null");
        }
    };
    not_null("url", matches!(body.url, Some(None)));
    not_null("secret", matches!(body.secret, Some(None)));
    not_null("events", matches!(body.events, Some(None)));
    not_null("enabled", matches!(body.enabled, Some(None)));
    not_null("headers", matches!(body.headers, Some(None)));
    not_null("paused", matches!(body.paused, Some(None)));
    not_null("ordered", matches!(body.ordered, Some(None)));
    if let Some(Some(url)) = body.url {
        validate::url(&mut errors, "url", &url, &state.policy);
        patch.url = Some(url);
    }
    if let Some(Some(secret)) = body.secret {
        validate::secret(&mut errors, "secret", &secret);
        patch.secret = Some(secret);
    }
    if let Some(Some(events)) = body.events {
        patch.events = Some(validate::events(&mut errors, "events", &events));
    }
    patch.enabled = body.enabled.flatten();
    if let Some(description) = body.description {
        validate::description(&mut errors, "description", description.as_deref());
        patch.description = Some(description);
    }
    if let Some(Some(headers)) = body.headers {
        patch.headers = Some(validate::headers(&mut errors, "headers", &headers));
    }
    if let Some(filter) = body.filter {
        patch.filter = Some(filter.and_then(|f| validate::filter(&mut errors, "filter", &f)));
    }
    patch.paused = body.paused.flatten();
    patch.ordered = body.ordered.flatten();
    if let Some(limit) = body.rate_limit {
        patch.rate_limit =
            Some(limit.and_then(|r| {
                validate::rate_limit(&mut errors, "rate_limit", r.per_second, r.burst)
            }));
    }
    if let Some(transform) = body.transform {
        patch.transform = Some(
            transform
                .and_then(|t| validate::transform(&mut errors, TRANSFORM, &t.name, &t.settings)),
        );
    }
    let sets_transform = matches!(patch.transform, Some(Some(_)));
    if patch.url.is_some() || patch.secret.is_some() || patch.headers.is_some() || sets_transform {
        let current = state.store.get_subscription(*id).await?;
        if current.ok_or_else(|| id.missing())?.instance.is_some() {
            let webhook_only = [
                ("url", patch.url.is_some()),
                ("secret", patch.secret.is_some()),
                ("headers", patch.headers.is_some()),
                (TRANSFORM, sets_transform),
            ];
            for (field, _) in webhook_only.into_iter().filter(|(_, given)| *given) {
                errors.add(field, "this subscription delivers to a connector instance");
            }
        }
    }
    errors.finish()?;

    let rotated = patch.secret.is_some();
    let paused = patch.paused;
    let updated = state
        .store
        .update_subscription(*id, patch, model::now())
        .await?
        .ok_or_else(|| id.missing())?;
    tracing::info!(subscription_id = %id, secret_rotated = rotated, paused = ?paused, "subscription updated");
    Ok(Json(updated.into()))
}

/// Delete a subscription; its pending deliveries are cancelled.
#[utoipa::path(delete, path = "/api/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such subscription")))]
async fn delete_subscription(
    State(state): State<AppState>,
    id: Id<noun::Subscription>,
) -> ApiResult<StatusCode> {
    let cancelled = state.store.delete_subscription(*id, model::now()).await?;
    let cancelled = cancelled.ok_or_else(|| id.missing())?;
    tracing::info!(subscription_id = %id, cancelled_deliveries = cancelled, "subscription deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Filter of `GET /api/v1/subscriptions/{id}/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only deliveries in these states, comma-separated (`dead,pending`).
    pub status: Option<String>,
}

mirror! {
    /// One delivery of a subscription.
    pub struct DeliveryLineOut from DeliveryLine {
        id: Uuid,
        event_id: Uuid,
        event_type: String,
        status: DeliveryStatus,
        /// Attempts spent from the current budget.
        attempts: u32,
        /// When the next attempt is due (pending deliveries only).
        next_attempt_at: Option<DateTime<Utc>>,
        last_error: Option<String>,
        /// The HTTP status of the latest attempt, when it got an answer.
        last_response_status: Option<u16>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    }
}

/// A page of a subscription's deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryLineList {
    pub data: Vec<DeliveryLineOut>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A subscription's deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}/deliveries", tag = "subscriptions", params(("id" = Uuid, Path, description = "Subscription id"), DeliveryQuery, PageQuery),
    responses((status = 200, description = "A page of deliveries", body = DeliveryLineList), (status = 400, description = "A bad status, limit or cursor"), (status = 404, description = "No such subscription")))]
async fn list_deliveries(
    State(state): State<AppState>,
    id: Id<noun::Subscription>,
    page: Page,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<DeliveryLineList>> {
    let mut errors = Errors::default();
    let statuses = validate::statuses(&mut errors, "status", query.status.as_deref());
    errors.finish_query()?;
    state
        .store
        .get_subscription(*id)
        .await?
        .ok_or_else(|| id.missing())?;
    let deliveries = state
        .store
        .subscription_deliveries(*id, &statuses, page.request())
        .await?;
    let (data, next_cursor) = page.answer(deliveries, |d| d.id);
    Ok(Json(DeliveryLineList { data, next_cursor }))
}

/// The event type of test sends.
pub const TEST_EVENT_TYPE: &str = "hub.test";

/// What a test send came to.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestSent {
    /// Whether the destination took the test event (a 2xx, or the connector's `ok`).
    pub succeeded: bool,
    /// The endpoint's HTTP status, when it answered.
    pub response_status: Option<u16>,
    /// The first 4 KiB of the response body.
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// The test event's id (`webhook-id`); test events are not stored.
    pub event_id: Uuid,
    /// `hub.test`.
    pub event_type: String,
}

/// Send a signed `hub.test` event to the subscription now, as a delivery would go (same
/// signatures, headers, timeout and SSRF guard; to its connector instance if it has one), and
/// answer with what came of it. Nothing is stored or retried; a disabled subscription or an
/// open circuit does not stop a test.
#[utoipa::path(post, path = "/api/v1/subscriptions/{id}/test", tag = "subscriptions", params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 200, description = "Sent; `succeeded` says whether it was taken", body = TestSent), (status = 404, description = "No such subscription")))]
async fn send_test(
    State(state): State<AppState>,
    id: Id<noun::Subscription>,
) -> ApiResult<Json<TestSent>> {
    let sub = state.store.get_subscription(*id).await?;
    let sub = sub.ok_or_else(|| id.missing())?;
    let now = model::now();
    let target = match &sub.instance {
        None => Target::Webhook {
            subscription_id: sub.id,
            url: sub.url.clone(),
            headers: sub.headers.clone(),
            secrets: state.store.subscription_secrets(sub.id, now).await?,
            transform: sub.transform.clone(),
        },
        Some(instance) => {
            let found = state
                .store
                .connector_instance(&instance.connector, &instance.name)
                .await?
                .ok_or_else(|| ApiError::internal("a subscription's instance is gone"))?;
            Target::Connector {
                name: found.connector,
                instance: Some(InstanceTarget {
                    subscription_id: sub.id,
                    id: found.id,
                    settings: found.settings,
                }),
            }
        }
    };
    let payload = serde_json::json!({
        "message": "A test event from Integrations Hub",
        "subscription_id": sub.id,
    });
    let delivery = ClaimedDelivery {
        id: Uuid::now_v7(),
        event_id: Uuid::now_v7(),
        event_type: TEST_EVENT_TYPE.to_owned(),
        event_created_at: now,
        payload: payload.to_string(),
        attempts: 0,
        target,
        traceparent: None,
    };
    let clock = std::time::Instant::now();
    let outcome = state.sender.send(&delivery).await;
    let duration_ms = clock.elapsed().as_millis() as u64;
    let succeeded = outcome.answer == Answer::Delivered;
    tracing::info!(subscription_id = %sub.id, succeeded, status = outcome.status, "test event sent");
    Ok(Json(TestSent {
        succeeded,
        response_status: outcome.status,
        response_body: outcome.body,
        error: outcome.error,
        duration_ms,
        event_id: delivery.event_id,
        event_type: delivery.event_type,
    }))
}
