//! The hub's notices (`hub_notices`, `model/notice.rs`): written in the transaction of what they
//! report, and published as `hub.*` events once, in the transaction that removes them. The
//! `Store` methods in `ops.rs` call these; the statements are shared by both backends.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;
use super::common::{Notify, commit};
use super::publish::{Commit, Destinations, write_events};
use super::rows;
use super::sql::{Arg, Conn, Dialect};
use crate::model::NewEvent;
use crate::model::notice::{self, Notice};

/// Notes that connector file `connector` failed to load.
pub(super) async fn connector_failed<D: Dialect>(
    store: &D,
    connector: &str,
    problem: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let notice = Notify {
        connector: Some(connector),
        detail: Some(problem),
        ..Notify::default()
    };
    let mut conn = store.writer().take().await?;
    notice
        .write(&mut *conn, notice::CONNECTOR_FAILED, now)
        .await?;
    conn.keep();
    Ok(())
}

/// Publishes up to `limit` notices as events and removes them, in one transaction.
pub(super) async fn publish<D: Dialect>(store: &D, limit: u32) -> StoreResult<u32> {
    let mut conn = store.writer().take().await?;
    let mut tx = conn.begin().await?;
    // Locked and skipped by other instances: each notice is published once.
    let sql = format!(
        "SELECT n.id, n.kind, n.subscription_id, s.url, n.delivery_id, d.event_id, \
         e.event_type, d.attempts, COALESCE(n.connector, d.connector) AS connector, n.detail, \
         n.created_at FROM hub_notices n \
         LEFT JOIN subscriptions s ON s.id = n.subscription_id \
         LEFT JOIN deliveries d ON d.id = n.delivery_id \
         LEFT JOIN events e ON e.id = d.event_id \
         ORDER BY n.created_at, n.id LIMIT $1{}",
        D::lock(" FOR UPDATE OF n SKIP LOCKED")
    );
    let notices = (tx.rows(&sql, &[Arg::Int(limit.into())]).await?.iter())
        .map(rows::notice)
        .collect::<StoreResult<Vec<_>>>()?;
    if notices.is_empty() {
        // Ended here, not dropped: SQLite's writer must go back to the pool outside a
        // transaction (`sqlite.rs`, `outside_transaction`).
        commit::<D>(tx).await?;
        conn.keep();
        return Ok(0);
    }
    let events: Vec<NewEvent> = notices.iter().map(Notice::event).collect();
    // Not handed to the engine: the maintenance loop wakes it once they are committed.
    let to = Destinations {
        engine: None,
        keyring: store.keyring(),
        now: crate::model::now(),
        remembered: None,
    };
    let events: Vec<&NewEvent> = events.iter().collect();
    let _ = write_events::<D>(&mut tx, &events, &to, Commit::Later).await?;
    let ids: Vec<Uuid> = notices.iter().map(|n| n.id).collect();
    tx.exec_in("DELETE FROM hub_notices WHERE id IN ({ids})", &[], &ids)
        .await?;
    commit::<D>(tx).await?;
    conn.keep();
    notices.iter().for_each(Notice::log);
    Ok(notices.len() as u32)
}
