//! Connector instances (`connector_instances`): one component, many configured destinations.
//! The `Store` methods in `ops.rs` call these; the statements are shared by both backends.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;
use super::common::commit;
use super::plan::encode_json;
use super::rows;
use super::sql::{Arg, Conn, DbRow, Dialect};
use crate::model::{ConnectorInstance, InstanceDeletion};

const COLUMNS: &str =
    "id, connector, name, CAST(settings AS TEXT) AS settings, created_at, updated_at";

pub(super) async fn create<D: Dialect>(
    store: &D,
    instance: ConnectorInstance,
) -> StoreResult<Option<ConnectorInstance>> {
    let mut conn = store.writer().take().await?;
    let settings = encode_json(&instance.settings.0);
    let inserted = conn
        .exec(
            "INSERT INTO connector_instances (id, connector, name, settings, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (connector, name) WHERE deleted_at IS NULL DO NOTHING",
            &[
                Arg::Uuid(instance.id),
                Arg::Text(&instance.connector),
                Arg::Text(&instance.name),
                Arg::Json(&settings),
                Arg::Time(instance.created_at),
            ],
        )
        .await?;
    conn.keep();
    Ok((inserted == 1).then_some(instance))
}

pub(super) async fn list<D: Dialect>(
    store: &D,
    connector: &str,
) -> StoreResult<Vec<ConnectorInstance>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM connector_instances \
         WHERE connector = $1 AND deleted_at IS NULL ORDER BY name"
    );
    let mut conn = store.reader().acquire().await?;
    let found = conn.rows(&sql, &[Arg::Text(connector)]).await?;
    found.iter().map(rows::connector_instance).collect()
}

pub(super) async fn get<D: Dialect>(
    store: &D,
    connector: &str,
    name: &str,
) -> StoreResult<Option<ConnectorInstance>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM connector_instances \
         WHERE connector = $1 AND name = $2 AND deleted_at IS NULL"
    );
    let mut conn = store.reader().acquire().await?;
    let found = conn
        .row(&sql, &[Arg::Text(connector), Arg::Text(name)])
        .await?;
    found.as_ref().map(rows::connector_instance).transpose()
}

pub(super) async fn update<D: Dialect>(
    store: &D,
    id: Uuid,
    settings: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> StoreResult<Option<ConnectorInstance>> {
    let mut conn = store.writer().take().await?;
    let mut tx = conn.begin().await?;
    let settings = encode_json(settings);
    let changed = tx
        .exec(
            "UPDATE connector_instances SET settings = $1, updated_at = $2 \
             WHERE id = $3 AND deleted_at IS NULL",
            &[Arg::Json(&settings), Arg::Time(now), Arg::Uuid(id)],
        )
        .await?;
    if changed == 0 {
        return Ok(None);
    }
    let sql = format!("SELECT {COLUMNS} FROM connector_instances WHERE id = $1");
    let updated = tx.row(&sql, &[Arg::Uuid(id)]).await?;
    let updated = updated.as_ref().map(rows::connector_instance).transpose()?;
    commit::<D>(tx).await?;
    conn.keep();
    Ok(updated)
}

/// Deletes an instance no live subscription delivers to. The row stays (marked deleted) so
/// that past deliveries still name it.
pub(super) async fn delete<D: Dialect>(
    store: &D,
    id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<InstanceDeletion> {
    let mut conn = store.writer().take().await?;
    let mut tx = conn.begin().await?;
    let sql = format!(
        "SELECT id FROM connector_instances WHERE id = $1 AND deleted_at IS NULL{}",
        D::lock(" FOR UPDATE")
    );
    if tx.row(&sql, &[Arg::Uuid(id)]).await?.is_none() {
        return Ok(InstanceDeletion::NotFound);
    }
    let users = tx
        .rows(
            "SELECT id FROM subscriptions WHERE instance_id = $1 AND deleted_at IS NULL ORDER BY id",
            &[Arg::Uuid(id)],
        )
        .await?;
    if !users.is_empty() {
        let ids = users
            .iter()
            .map(|row| row.uuid("id"))
            .collect::<StoreResult<_>>()?;
        return Ok(InstanceDeletion::InUse(ids));
    }
    tx.exec(
        "UPDATE connector_instances SET deleted_at = $1, updated_at = $1 WHERE id = $2",
        &[Arg::Time(now), Arg::Uuid(id)],
    )
    .await?;
    commit::<D>(tx).await?;
    conn.keep();
    Ok(InstanceDeletion::Deleted)
}
