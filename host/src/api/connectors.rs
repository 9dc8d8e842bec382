//! `/api/v1/connectors`: the connectors this hub has loaded, with their status, grant and
//! provenance. Read-only: connectors are deployed by copying files into `IH_CONNECTORS_DIR`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::connectors::ConnectorView;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_connectors))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorList {
    pub data: Vec<ConnectorView>,
}

/// Lists every connector: active, inactive (required config missing) and failed (with why).
#[utoipa::path(get, path = "/api/v1/connectors", tag = "connectors",
    responses((status = 200, description = "The connectors, by name", body = ConnectorList)))]
async fn list_connectors(State(state): State<AppState>) -> Json<ConnectorList> {
    Json(ConnectorList {
        data: state.connectors.list(),
    })
}
