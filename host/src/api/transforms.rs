//! `/api/v1/transforms`: the transforms this hub has loaded (components of
//! `wit/transform/transform.wit` in `IH_CONNECTORS_DIR`), and a dry run of one on an event,
//! which delivers and stores nothing.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::events::{PublishEvent, new_event};
use super::validate::{self, Errors};
use super::{ApiJson, AppState};
use crate::connectors::{
    ConnectorView, EventData, Reuse, TransformError, TransformInput, Transformed,
};
use crate::error::{ApiError, ApiResult};
use crate::model;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_transforms))
        .routes(routes!(test_transform))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransformList {
    pub data: Vec<ConnectorView>,
}

/// Lists every transform: active, or failed (with why; the last good version of a file keeps
/// serving and says why the new one was not loaded).
#[utoipa::path(get, path = "/api/v1/transforms", tag = "transforms",
    responses((status = 200, description = "The transforms, by name", body = TransformList)))]
async fn list_transforms(State(state): State<AppState>) -> Json<TransformList> {
    Json(TransformList {
        data: state.connectors.transforms(),
    })
}

/// A dry run: the event, and whose context to run it in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformTest {
    /// The event, as `POST /api/v1/events` takes it.
    pub event: PublishEvent,
    /// Run with this subscription's URL and transform settings.
    #[serde(default)]
    pub subscription_id: Option<Uuid>,
    /// Settings to run with (replacing the subscription's, if one is named).
    #[serde(default)]
    pub settings: Option<BTreeMap<String, String>>,
}

/// What the transform made of the event.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransformTested {
    /// `deliver`, `keep` (the hub's own body would be sent), `drop` (nothing would be sent) or
    /// `failed` (the attempt would fail and be retried).
    #[schema(example = "deliver")]
    pub outcome: String,
    /// The body to send, when it is UTF-8 text.
    pub body: Option<String>,
    /// The body to send, base64, when it is not UTF-8 text.
    pub body_base64: Option<String>,
    /// SHA-256 (hex) of the body, as the attempt record would keep it.
    pub body_sha256: Option<String>,
    /// The body's media type (`application/json` unless the transform set one).
    pub content_type: Option<String>,
    /// The headers it adds.
    pub headers: BTreeMap<String, String>,
    /// Why it dropped the event, or how it failed.
    pub reason: Option<String>,
    pub duration_ms: u64,
}

/// Run a transform on an event, as a delivery would, without sending or storing anything.
#[utoipa::path(post, path = "/api/v1/transforms/{name}/test", tag = "transforms", params(("name" = String, Path, description = "Transform name")), request_body = TransformTest,
    responses((status = 200, description = "What the transform made of it (`outcome` says whether it failed)", body = TransformTested), (status = 404, description = "No such transform loaded, or no such subscription"), (status = 422, description = "Invalid event or settings")))]
async fn test_transform(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<TransformTest>,
) -> ApiResult<Json<TransformTested>> {
    if let Err(why) = state.connectors.transform_available(&name) {
        return Err(ApiError::NotFound(why));
    }
    let mut errors = Errors::default();
    let now = model::now();
    let event = new_event(
        &mut errors,
        "event.",
        body.event,
        state.config.max_payload_bytes,
        now,
    );
    if let Some(settings) = &body.settings {
        validate::transform(&mut errors, "transform", &name, settings);
    }
    errors.finish()?;
    let (subscription_id, url, mut settings) = match body.subscription_id {
        Some(id) => {
            let sub = (state.store.get_subscription(id).await?)
                .ok_or_else(|| ApiError::NotFound(format!("no subscription {id}")))?;
            let settings = sub.transform.map(|t| t.settings).unwrap_or_default();
            (sub.id, sub.url, settings)
        }
        None => (Uuid::nil(), String::new(), BTreeMap::new()),
    };
    if let Some(given) = body.settings {
        settings = given;
    }
    let input = TransformInput {
        event: EventData::new(event.id, event.event_type, event.created_at, event.payload),
        subscription_id,
        url,
        settings,
    };
    let clock = std::time::Instant::now();
    let result = (state.connectors)
        .transform(&name, input, Reuse::Fresh)
        .await;
    let duration_ms = clock.elapsed().as_millis() as u64;
    let mut answer = TransformTested {
        outcome: String::new(),
        body: None,
        body_base64: None,
        body_sha256: None,
        content_type: None,
        headers: BTreeMap::new(),
        reason: None,
        duration_ms,
    };
    match result {
        Ok(Transformed::Deliver(made)) => {
            answer.outcome = "deliver".into();
            answer.body_sha256 = Some(hex::encode(Sha256::digest(&made.body)));
            match String::from_utf8(made.body) {
                Ok(text) => answer.body = Some(text),
                Err(bytes) => {
                    let bytes = bytes.into_bytes();
                    answer.body_base64 =
                        Some(base64::engine::general_purpose::STANDARD.encode(bytes));
                }
            }
            answer.content_type = Some(
                (made.content_type.as_ref())
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_owned(),
            );
            answer.headers = (made.headers.iter())
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
        }
        Ok(Transformed::Keep) => answer.outcome = "keep".into(),
        Ok(Transformed::Drop(reason)) => {
            answer.outcome = "drop".into();
            answer.reason = Some(reason);
        }
        Err(TransformError::Unavailable(why)) => return Err(ApiError::NotFound(why)),
        Err(TransformError::Failed(_, why)) => {
            answer.outcome = "failed".into();
            answer.reason = Some(why);
        }
    }
    Ok(Json(answer))
}
