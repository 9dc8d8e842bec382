//! `/api/v1/connectors`: the connectors this hub has loaded, with their status, grant and
//! provenance, and the connectors bound to event types that no file loads here (`missing`),
//! with their waiting deliveries. Connectors are deployed by copying files into
//! `IH_CONNECTORS_DIR`; a binding is removed with `DELETE` once its file is gone for good.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::connectors::{ConnectorStatus, ConnectorView};
use crate::error::{ApiError, ApiResult};
use crate::model;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connectors))
        .routes(routes!(unbind_connector))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorList {
    pub data: Vec<ConnectorView>,
}

/// Lists every connector: active, inactive (required config missing), failed (with why), and
/// missing (bound, with deliveries waiting, but not loaded here).
#[utoipa::path(get, path = "/api/v1/connectors", tag = "connectors",
    responses((status = 200, description = "The connectors, by name", body = ConnectorList)))]
async fn list_connectors(State(state): State<AppState>) -> ApiResult<Json<ConnectorList>> {
    let mut data = state.connectors.list();
    for binding in state.store.connector_bindings().await? {
        let loaded = data
            .iter_mut()
            .find(|v| v.name == binding.name && v.status != ConnectorStatus::Failed);
        match loaded {
            Some(view) => {
                view.pending = binding.pending;
                view.bound_since = Some(binding.created_at);
            }
            None => data.push(ConnectorView::missing(&binding)),
        }
    }
    data.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(ConnectorList { data }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Unbound {
    /// Its pending deliveries, now `cancelled`.
    pub cancelled: u64,
}

/// Unbind a connector whose file is gone for good: its event types stop getting deliveries
/// for it, and those waiting are cancelled.
#[utoipa::path(delete, path = "/api/v1/connectors/{name}", tag = "connectors", params(("name" = String, Path, description = "Connector name")),
    responses((status = 200, description = "Unbound", body = Unbound), (status = 404, description = "No such binding"), (status = 409, description = "The connector is loaded here: remove its file first")))]
async fn unbind_connector(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Unbound>)> {
    if state.connectors.is_running(&name) {
        return Err(ApiError::Conflict(format!(
            "connector {name:?} is loaded here; remove its file first (it would be bound again)"
        )));
    }
    match state.store.unbind_connector(&name, model::now()).await? {
        Some(cancelled) => {
            tracing::info!(connector = %name, cancelled, "connector unbound");
            Ok((StatusCode::OK, Json(Unbound { cancelled })))
        }
        None => Err(ApiError::NotFound(format!(
            "no connector bound as {name:?}"
        ))),
    }
}
