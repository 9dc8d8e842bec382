//! `/api/v1/connectors/{name}/instances`: configured instances of a connector — one component,
//! many destinations, each with settings of its own — created and changed without a restart.
//! A subscription delivers to one with `"connector": {"name": …, "instance": …}`.
//!
//! Settings are checked against the manifest of the connector loaded here (declared keys only,
//! required ones present). Secret values are never returned.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::validate::Errors;
use super::{ApiJson, AppState};
use crate::connectors::manifest::is_name;
use crate::error::{ApiError, ApiResult};
use crate::model::{self, ConnectorInstance, InstanceDeletion, Settings};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_instance, list_instances))
        .routes(routes!(get_instance, patch_instance, delete_instance))
}

/// A connector instance. Values of secret settings are `null` (all of them while the
/// connector is not loaded on the instance of the hub that answers).
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceDetail {
    pub id: Uuid,
    pub connector: String,
    pub name: String,
    pub settings: BTreeMap<String, Option<String>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceList {
    pub data: Vec<InstanceDetail>,
}

/// A new instance of a connector.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInstance {
    /// Unique among the connector's instances: lower-case letters, digits, `-` and `_`.
    #[schema(example = "alerts")]
    pub name: String,
    /// Values of the connector's settings (its manifest's `config`), by key.
    #[serde(default)]
    #[schema(example = json!({"bot_token": "xoxb-…", "default_channel": "#alerts"}))]
    pub settings: BTreeMap<String, String>,
}

/// Changes to an instance's settings: a value sets a key, `null` removes it, absent keys stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pub settings: BTreeMap<String, Option<String>>,
}

fn shown(state: &AppState, instance: ConnectorInstance) -> InstanceDetail {
    let secret = state.connectors.secret_keys(&instance.connector);
    let settings = instance
        .settings
        .0
        .into_iter()
        .map(|(key, value)| {
            let visible = secret.as_ref().is_some_and(|keys| !keys.contains(&key));
            (key, visible.then_some(value))
        })
        .collect();
    InstanceDetail {
        id: instance.id,
        connector: instance.connector,
        name: instance.name,
        settings,
        created_at: instance.created_at,
        updated_at: instance.updated_at,
    }
}

/// The settings as the connector loaded here accepts them, or the 422 that says why not.
async fn checked(
    state: &AppState,
    connector: &str,
    settings: &BTreeMap<String, String>,
) -> ApiResult<()> {
    let mut errors = Errors::default();
    match state.connectors.check_settings(connector, settings).await {
        Ok(problems) => {
            for (field, message) in problems {
                errors.add(field, message);
            }
        }
        Err(why) => errors.add("connector", why),
    }
    errors.finish()
}

fn no_instance(connector: &str, name: &str) -> ApiError {
    ApiError::NotFound(format!("{connector} has no instance {name:?}"))
}

async fn found(state: &AppState, connector: &str, name: &str) -> ApiResult<ConnectorInstance> {
    let found = if is_name(connector) && is_name(name) {
        state.store.connector_instance(connector, name).await?
    } else {
        None
    };
    found.ok_or_else(|| no_instance(connector, name))
}

/// Create an instance of a connector loaded here.
#[utoipa::path(post, path = "/api/v1/connectors/{name}/instances", tag = "connectors", params(("name" = String, Path, description = "Connector name")), request_body = NewInstance,
    responses((status = 201, description = "Created", body = InstanceDetail), (status = 409, description = "The connector has an instance of that name"), (status = 422, description = "Invalid name or settings, or the connector is not loaded here")))]
async fn create_instance(
    State(state): State<AppState>,
    Path(connector): Path<String>,
    ApiJson(body): ApiJson<NewInstance>,
) -> ApiResult<(StatusCode, Json<InstanceDetail>)> {
    if !is_name(&body.name) {
        let mut errors = Errors::default();
        errors.add(
            "name",
            "lower-case letters, digits, `-` and `_`, starting with a letter",
        );
        errors.finish()?;
    }
    checked(&state, &connector, &body.settings).await?;
    let now = model::now();
    let instance = ConnectorInstance {
        id: Uuid::now_v7(),
        connector,
        name: body.name,
        settings: Settings(body.settings),
        created_at: now,
        updated_at: now,
    };
    let (connector, name) = (instance.connector.clone(), instance.name.clone());
    let Some(created) = state.store.create_connector_instance(instance).await? else {
        return Err(ApiError::Conflict(format!(
            "{connector} already has an instance {name:?}"
        )));
    };
    tracing::info!(connector = %connector, instance = %name, id = %created.id, "connector instance created");
    Ok((StatusCode::CREATED, Json(shown(&state, created))))
}

/// A connector's instances, by name.
#[utoipa::path(get, path = "/api/v1/connectors/{name}/instances", tag = "connectors", params(("name" = String, Path, description = "Connector name")),
    responses((status = 200, description = "Its instances", body = InstanceList)))]
async fn list_instances(
    State(state): State<AppState>,
    Path(connector): Path<String>,
) -> ApiResult<Json<InstanceList>> {
    let instances = state.store.connector_instances(&connector).await?;
    let data = instances.into_iter().map(|i| shown(&state, i)).collect();
    Ok(Json(InstanceList { data }))
}

/// One instance.
#[utoipa::path(get, path = "/api/v1/connectors/{name}/instances/{instance}", tag = "connectors", params(("name" = String, Path, description = "Connector name"), ("instance" = String, Path, description = "Instance name")),
    responses((status = 200, description = "The instance", body = InstanceDetail), (status = 404, description = "No such instance")))]
async fn get_instance(
    State(state): State<AppState>,
    Path((connector, name)): Path<(String, String)>,
) -> ApiResult<Json<InstanceDetail>> {
    let instance = found(&state, &connector, &name).await?;
    Ok(Json(shown(&state, instance)))
}

/// Change an instance's settings; the next delivery uses them (no restart).
#[utoipa::path(patch, path = "/api/v1/connectors/{name}/instances/{instance}", tag = "connectors", params(("name" = String, Path, description = "Connector name"), ("instance" = String, Path, description = "Instance name")), request_body = SettingsPatch,
    responses((status = 200, description = "The instance", body = InstanceDetail), (status = 404, description = "No such instance"), (status = 422, description = "Invalid settings, or the connector is not loaded here")))]
async fn patch_instance(
    State(state): State<AppState>,
    Path((connector, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<SettingsPatch>,
) -> ApiResult<Json<InstanceDetail>> {
    let current = found(&state, &connector, &name).await?;
    let mut settings = current.settings.0;
    for (key, value) in body.settings {
        match value {
            Some(value) => settings.insert(key, value),
            None => settings.remove(&key),
        };
    }
    checked(&state, &connector, &settings).await?;
    let updated = state
        .store
        .update_connector_instance(current.id, &settings, model::now())
        .await?;
    let updated = updated.ok_or_else(|| no_instance(&connector, &name))?;
    tracing::info!(connector = %connector, instance = %name, "connector instance updated");
    Ok(Json(shown(&state, updated)))
}

/// Delete an instance no subscription delivers to.
#[utoipa::path(delete, path = "/api/v1/connectors/{name}/instances/{instance}", tag = "connectors", params(("name" = String, Path, description = "Connector name"), ("instance" = String, Path, description = "Instance name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such instance"), (status = 409, description = "Subscriptions deliver to it: delete them first")))]
async fn delete_instance(
    State(state): State<AppState>,
    Path((connector, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let current = found(&state, &connector, &name).await?;
    match state
        .store
        .delete_connector_instance(current.id, model::now())
        .await?
    {
        InstanceDeletion::Deleted => {
            tracing::info!(connector = %connector, instance = %name, "connector instance deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        InstanceDeletion::NotFound => Err(no_instance(&connector, &name)),
        InstanceDeletion::InUse(subscriptions) => Err(ApiError::Conflict(format!(
            "subscriptions deliver to {connector}/{name}: {}; delete them first",
            subscriptions
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
