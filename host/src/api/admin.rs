//! `/api/v1/admin`: what happened to an event (its attempts), the dead-letter list, and replay
//! (one dead letter, or in bulk for recovery after an outage).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{ApiQuery, Id, noun};
use super::schema::{self, Destination, mirror};
use super::validate::{self, Errors};
use super::{ApiJson, AppState, Page, PageQuery};
use crate::error::{ApiError, ApiResult};
use crate::model::{self, AttemptView, DeadLetter, DeadLetterFilter, ReplayOutcome};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_attempts))
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_one))
        .routes(routes!(replay_bulk))
}

mirror! {
    /// One attempt to deliver an event.
    pub struct AttemptOut from AttemptView {
        id: Uuid,
        event_id: Uuid,
        delivery_id: Uuid,
        destination: Destination,
        /// 1-based number within the delivery's attempt budget (a replay starts again at 1).
        attempt: u32,
        outcome: model::AttemptOutcome,
        response_status: Option<u16>,
        /// The first 4 KiB of the response body.
        response_body: Option<String>,
        /// Why it failed; for a connector, the reason it gave (after `retry:` or `permanent:`).
        error: Option<String>,
        duration_ms: u64,
        started_at: DateTime<Utc>,
        /// What the connector reported (connector attempts that got an answer; `null` for
        /// webhooks and for calls the sandbox stopped). The upstream status it reported is
        /// `response_status`; a skip's reason is `response_body`.
        report: Option<ConnectorReportOut> => schema::opt,
        /// The SHA-256 (hex) of the body the subscription's transform made and the receiver
        /// got; `null` when nothing was transformed.
        body_sha256: Option<String>,
    }
}

mirror! {
    /// What a connector reported of an attempt.
    pub struct ConnectorReportOut from model::ConnectorReport {
        kind: model::ReportKind,
        /// The upstream's id for what was created (`ok`).
        external_id: Option<String>,
        /// The delay the connector asked for (`retry`), in milliseconds.
        retry_after_ms: Option<u64>,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptList {
    pub data: Vec<AttemptOut>,
}

mirror! {
    /// A delivery that used up its attempts (or failed permanently).
    pub struct DeadLetterOut from DeadLetter {
        id: Uuid,
        event_id: Uuid,
        event_type: String,
        delivery_id: Uuid,
        destination: Destination,
        attempts: u32,
        last_error: Option<String>,
        created_at: DateTime<Utc>,
        replayed_at: Option<DateTime<Utc>>,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub data: Vec<DeadLetterOut>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayedOne {
    /// The delivery, queued again with a fresh attempt budget.
    pub delivery_id: Uuid,
}

/// Which dead letters to list or replay; all given filters combine. The same fields filter
/// `GET /api/v1/admin/dead-letters` (query) and bulk replay (body), so what a list shows is
/// what a replay by the same filter takes.
#[derive(Debug, Default, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BulkReplay {
    /// Dead-lettered at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before this time.
    pub until: Option<DateTime<Utc>>,
    pub subscription_id: Option<Uuid>,
    /// Deliveries to this connector (its default instance or one of its instances).
    pub connector: Option<String>,
    /// A type (`order.created`) or a prefix (`order.` or `order.*`).
    pub event_type: Option<String>,
}

impl BulkReplay {
    /// The filter, or each field's problem (added to `errors`).
    fn filter(self, errors: &mut Errors) -> DeadLetterFilter {
        validate::period(errors, self.since, self.until);
        validate::connector_name(errors, "connector", self.connector.as_deref());
        let event_type = validate::type_match(errors, "event_type", self.event_type.as_deref());
        DeadLetterFilter {
            since: self.since,
            until: self.until,
            subscription_id: self.subscription_id,
            connector: self.connector,
            event_type,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// How many dead letters were queued again (at most 10,000 per call).
    pub replayed: u64,
}

/// Attempts of an event, oldest first.
#[utoipa::path(get, path = "/api/v1/admin/events/{event_id}/attempts", tag = "admin", params(("event_id" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "The attempts", body = AttemptList), (status = 404, description = "No such event")))]
async fn list_attempts(
    State(state): State<AppState>,
    event_id: Id<noun::Event>,
) -> ApiResult<Json<AttemptList>> {
    let attempts = state.store.list_attempts(*event_id).await?;
    if attempts.is_empty() && state.store.get_event(*event_id).await?.is_none() {
        return Err(event_id.missing());
    }
    Ok(Json(AttemptList {
        data: attempts.into_iter().map(Into::into).collect(),
    }))
}

/// Dead letters, newest first, filtered by time, subscription, connector and event type.
#[utoipa::path(get, path = "/api/v1/admin/dead-letters", tag = "admin", params(BulkReplay, PageQuery),
    responses((status = 200, description = "A page of dead letters", body = DeadLetterList), (status = 400, description = "A bad filter, limit or cursor")))]
async fn list_dead_letters(
    State(state): State<AppState>,
    page: Page,
    ApiQuery(query): ApiQuery<BulkReplay>,
) -> ApiResult<Json<DeadLetterList>> {
    let mut errors = Errors::default();
    let filter = query.filter(&mut errors);
    errors.finish_query()?;
    let letters = state
        .store
        .list_dead_letters(&filter, page.request())
        .await?;
    let (data, next_cursor) = page.answer(letters, |d| d.id);
    Ok(Json(DeadLetterList { data, next_cursor }))
}

/// Queue a dead letter's delivery again with a fresh attempt budget.
#[utoipa::path(post, path = "/api/v1/admin/dead-letters/{id}/replay", tag = "admin", params(("id" = Uuid, Path, description = "Dead letter id")),
    responses((status = 202, description = "Queued again", body = ReplayedOne), (status = 404, description = "No such dead letter"), (status = 409, description = "Already replayed, or its subscription was deleted")))]
async fn replay_one(
    State(state): State<AppState>,
    id: Id<noun::DeadLetter>,
) -> ApiResult<(StatusCode, Json<ReplayedOne>)> {
    match state.store.replay_dead_letter(*id, model::now()).await? {
        ReplayOutcome::Replayed { delivery_id } => {
            wake(&state).await;
            tracing::info!(dead_letter_id = %id, delivery_id = %delivery_id, "dead letter replayed");
            Ok((StatusCode::ACCEPTED, Json(ReplayedOne { delivery_id })))
        }
        ReplayOutcome::NotFound => Err(id.missing()),
        ReplayOutcome::AlreadyReplayed => Err(ApiError::Conflict(format!(
            "dead letter {id} was already replayed; if it failed again it has a new dead letter"
        ))),
        ReplayOutcome::SubscriptionDeleted => Err(ApiError::Conflict(format!(
            "dead letter {id} belongs to a deleted subscription: there is nowhere to deliver it"
        ))),
    }
}

/// Replay every dead letter matching the filters (bulk recovery).
#[utoipa::path(post, path = "/api/v1/admin/dead-letters/replay", tag = "admin", request_body = BulkReplay,
    responses((status = 202, description = "Queued again", body = Replayed), (status = 422, description = "Invalid filters")))]
async fn replay_bulk(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<BulkReplay>,
) -> ApiResult<(StatusCode, Json<Replayed>)> {
    let mut errors = Errors::default();
    let filter = body.filter(&mut errors);
    errors.finish()?;
    let replayed = state
        .store
        .replay_dead_letters(filter, model::now())
        .await?;
    if replayed > 0 {
        wake(&state).await;
    }
    tracing::info!(replayed, "bulk replay");
    Ok((StatusCode::ACCEPTED, Json(Replayed { replayed })))
}

async fn wake(state: &AppState) {
    state.wake.notify_one();
    state.store.announce_work().await;
}
