//! Statistics of a destination over a window (`1h`, `24h`, `7d`): its attempts and success
//! rate, latency percentiles, its latest success and failure, and its backlog now — for a
//! subscription (`/api/v1/subscriptions/{id}/stats`, with its circuit) and for a connector
//! (`/api/v1/connectors/{name}/stats`: its default instance and all its instances).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{ApiQuery, Id, noun};
use super::schema::{Circuit, mirror};
use crate::connectors::manifest::is_name;
use crate::error::{ApiError, ApiResult};
use crate::model::{self, DestinationStats, Percentiles, StatsOf};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(hub_stats))
        .routes(routes!(subscription_stats))
        .routes(routes!(connector_stats))
}

/// How far back the figures go.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub enum Window {
    #[serde(rename = "1h")]
    Hour,
    #[default]
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
}

impl Window {
    fn length(self) -> TimeDelta {
        match self {
            Window::Hour => TimeDelta::hours(1),
            Window::Day => TimeDelta::hours(24),
            Window::Week => TimeDelta::days(7),
        }
    }
}

/// The window of a statistics request.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// `1h`, `24h` (the default) or `7d`.
    #[param(value_type = Option<String>)]
    pub window: Option<Window>,
}

mirror! {
    /// Attempt durations in milliseconds (nearest rank), from the latest attempts of the
    /// window (at most 2,000: `model::MAX_LATENCY_SAMPLE`).
    pub struct Latency from Percentiles {
        p50: u64,
        p95: u64,
        p99: u64,
        sampled: u64,
    }
}

/// The latest failed attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastFailure {
    pub at: DateTime<Utc>,
    pub error: Option<String>,
}

/// Unfinished deliveries now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Backlog {
    /// Pending or in flight.
    pub pending: u64,
    /// Age of the oldest of them; `null` without any.
    pub oldest_pending_age_seconds: Option<f64>,
}

/// A destination's statistics.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub window: Window,
    /// Start of the window.
    pub since: DateTime<Utc>,
    /// Attempts in the window.
    pub attempts: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// `succeeded / attempts`; `null` without attempts.
    pub success_rate: Option<f64>,
    /// `null` without attempts.
    pub latency_ms: Option<Latency>,
    /// The latest successful attempt, whenever it was.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The latest failed attempt, whenever it was.
    pub last_failure: Option<LastFailure>,
    pub backlog: Backlog,
    /// A subscription's circuit breaker (absent for a connector).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit: Option<Circuit>,
    /// The hub's figures only: deliveries dead-lettered in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<u64>,
    /// The hub's figures only: subscriptions whose circuit is not closed now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_circuits: Option<u64>,
}

fn shown(window: Window, since: DateTime<Utc>, now: DateTime<Utc>, s: DestinationStats) -> Stats {
    let failed = s.attempts.saturating_sub(s.succeeded);
    Stats {
        window,
        since,
        attempts: s.attempts,
        succeeded: s.succeeded,
        failed,
        success_rate: (s.attempts > 0).then(|| s.succeeded as f64 / s.attempts as f64),
        latency_ms: Percentiles::of(s.durations_ms).map(Latency::from),
        last_success_at: s.last_success_at,
        last_failure: s.last_failure.map(|(at, error)| LastFailure { at, error }),
        backlog: Backlog {
            pending: s.pending,
            oldest_pending_age_seconds: s
                .oldest_pending_created_at
                .map(|t| ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0)),
        },
        circuit: None,
        dead_letters: None,
        open_circuits: None,
    }
}

async fn stats_of(state: &AppState, of: StatsOf<'_>, window: Window) -> ApiResult<Stats> {
    let now = model::now();
    let since = now - window.length();
    let figures = state.store.destination_stats(of, since).await?;
    Ok(shown(window, since, now, figures))
}

/// The whole hub's statistics: every destination's attempts, the backlog, dead letters in the
/// window and open circuits now.
#[utoipa::path(get, path = "/api/v1/stats", tag = "operations", params(StatsQuery),
    responses((status = 200, description = "The hub's figures", body = Stats), (status = 400, description = "A bad window")))]
async fn hub_stats(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Stats>> {
    let window = query.window.unwrap_or_default();
    let mut stats = stats_of(&state, StatsOf::Hub, window).await?;
    stats.dead_letters = Some(state.store.count_dead_letters(stats.since).await?);
    stats.open_circuits = Some(state.store.open_circuits().await?);
    Ok(Json(stats))
}

/// A subscription's delivery statistics.
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}/stats", tag = "subscriptions", params(("id" = Uuid, Path, description = "Subscription id"), StatsQuery),
    responses((status = 200, description = "Its figures", body = Stats), (status = 400, description = "A bad window"), (status = 404, description = "No such subscription")))]
async fn subscription_stats(
    State(state): State<AppState>,
    id: Id<noun::Subscription>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Stats>> {
    let sub = state.store.get_subscription(*id).await?;
    let sub = sub.ok_or_else(|| id.missing())?;
    let window = query.window.unwrap_or_default();
    let mut stats = stats_of(&state, StatsOf::Subscription(sub.id), window).await?;
    stats.circuit = Some(sub.circuit.into());
    Ok(Json(stats))
}

/// A connector's delivery statistics: its default instance and all its instances.
#[utoipa::path(get, path = "/api/v1/connectors/{name}/stats", tag = "connectors", params(("name" = String, Path, description = "Connector name"), StatsQuery),
    responses((status = 200, description = "Its figures", body = Stats), (status = 400, description = "A bad window"), (status = 404, description = "No such connector here, bound or with instances")))]
async fn connector_stats(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Stats>> {
    let known = is_name(&name)
        && (state.connectors.list().iter().any(|c| c.name == name)
            || state
                .store
                .connector_bindings()
                .await?
                .iter()
                .any(|b| b.name == name)
            || !state.store.connector_instances(&name).await?.is_empty());
    if !known {
        return Err(ApiError::NotFound(format!(
            "no connector {name:?} is loaded here, bound or configured"
        )));
    }
    let window = query.window.unwrap_or_default();
    Ok(Json(
        stats_of(&state, StatsOf::Connector(&name), window).await?,
    ))
}
