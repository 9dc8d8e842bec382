//! Operations endpoints: `/health` for load balancers and orchestrators, `/metrics` for
//! Prometheus. Neither needs an API key, and neither reveals configuration.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// How long the database may take to answer a health probe.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(livez))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Health of this instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the database does not answer.
    pub status: &'static str,
    pub version: &'static str,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// Why the database check failed (without addresses or credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Liveness of this process.
#[derive(Debug, Serialize, ToSchema)]
pub struct Live {
    /// Always `ok`: the process answers.
    pub status: &'static str,
    pub version: &'static str,
}

/// Liveness: 200 while the process answers requests. It does not ask the database, so an
/// orchestrator never restarts a healthy process because the database is down (that is
/// `/readyz`).
#[utoipa::path(get, path = "/livez", tag = "operations", security(()),
    responses((status = 200, description = "Alive", body = Live)))]
async fn livez() -> Json<Live> {
    Json(Live {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Readiness: 200 when the database answers, 503 otherwise (take the instance out of the load
/// balancer, do not restart it).
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "Ready", body = Health), (status = 503, description = "The database is unreachable", body = Health)))]
async fn readyz(state: State<AppState>) -> (StatusCode, Json<Health>) {
    health(state).await
}

/// Readiness, as `/readyz` (kept for existing probes): 200 when the database answers, 503
/// otherwise.
#[utoipa::path(get, path = "/health", tag = "operations", security(()),
    responses((status = 200, description = "Healthy", body = Health), (status = 503, description = "The database is unreachable", body = Health)))]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let problem = match tokio::time::timeout(HEALTH_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: database error");
            Some("the database returned an error".to_owned())
        }
        Err(_) => {
            tracing::warn!("health check: database did not answer in time");
            Some(format!(
                "the database did not answer within {}s",
                HEALTH_TIMEOUT.as_secs()
            ))
        }
    };
    let status = if problem.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if problem.is_none() {
                "ok"
            } else {
                "unavailable"
            },
            version: env!("CARGO_PKG_VERSION"),
            database: state.store.backend().to_string(),
            problem,
        }),
    )
}

/// Prometheus metrics: OpenMetrics text when the scraper accepts it (Prometheus asks for it
/// first), Prometheus text 0.0.4 otherwise.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Metrics", content((String = "application/openmetrics-text"), (String = "text/plain"))), (status = 401, description = "IH_METRICS_KEY is set and the request does not carry it")))]
async fn metrics(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    if let Some(key) = &state.metrics_key
        && key
            .scope_of(super::auth::bearer(&req).unwrap_or_default())
            .is_none()
    {
        return crate::error::ApiError::Unauthorized.into_response();
    }
    let openmetrics = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = state.metrics.encode();
    if openmetrics {
        let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, kind)], text).into_response()
    } else {
        let kind = "text/plain; version=0.0.4; charset=utf-8";
        let text = crate::metrics::to_prometheus_text(&text);
        ([(header::CONTENT_TYPE, kind)], text).into_response()
    }
}
