//! Subscription secrets as rows, written once for both backends: added sealed (`seal.rs`),
//! rotated with a grace period, re-sealed under the first key
//! ([`super::Store::reseal_secrets`]).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;
use super::common::commit;
use super::seal::Keyring;
use super::sql::{Arg, Conn, DbRow, Dialect};
use crate::model::SECRET_GRACE;

/// Stores `secret` as the current secret of `subscription`, sealed.
pub(super) async fn add<C: Conn>(
    conn: &mut C,
    keyring: &Keyring,
    subscription: Uuid,
    secret: &str,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let (key_id, sealed) = keyring.seal(subscription, secret)?;
    conn.exec(
        "INSERT INTO subscription_secrets (subscription_id, secret, created_at, key_id) VALUES ($1, $2, $3, $4)",
        &[
            Arg::Uuid(subscription),
            Arg::Text(&sealed),
            Arg::Time(at),
            Arg::Text(&key_id),
        ],
    )
    .await?;
    Ok(())
}

/// Makes `secret` the current secret of `subscription` (unless it already is): the current one
/// stays valid for [`SECRET_GRACE`], those whose grace is over go.
pub(super) async fn rotate<C: Conn>(
    conn: &mut C,
    keyring: &Keyring,
    subscription: Uuid,
    secret: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let current = conn
        .row(
            "SELECT key_id, secret FROM subscription_secrets WHERE subscription_id = $1 AND expires_at IS NULL",
            &[Arg::Uuid(subscription)],
        )
        .await?
        .map(|row| keyring.open(subscription, &row.text("key_id")?, &row.text("secret")?))
        .transpose()?;
    if current.as_deref() == Some(secret) {
        return Ok(());
    }
    conn.exec(
        "DELETE FROM subscription_secrets WHERE subscription_id = $1 AND expires_at <= $2",
        &[Arg::Uuid(subscription), Arg::Time(now)],
    )
    .await?;
    conn.exec(
        "UPDATE subscription_secrets SET expires_at = $1 WHERE subscription_id = $2 AND expires_at IS NULL",
        &[Arg::Time(now + SECRET_GRACE), Arg::Uuid(subscription)],
    )
    .await?;
    add(conn, keyring, subscription, secret, now).await
}

/// Secrets re-sealed per transaction.
const RESEAL_BATCH: i64 = 500;

/// Seals every secret stored plain or under another key than the first; returns how many.
pub(super) async fn reseal<D: Dialect>(store: &D) -> StoreResult<u64> {
    let keyring = store.keyring();
    let sealing = keyring.sealing_key().unwrap_or("");
    let mut resealed = 0;
    loop {
        // Bounded rounds: a large table is re-sealed in short transactions. A failed
        // round changes nothing; the rows before it stay re-sealed (each is valid alone).
        let mut conn = store.writer().take().await?;
        let mut tx = conn.begin().await?;
        let rows = tx
            .rows(
                "SELECT id, subscription_id, key_id, secret FROM subscription_secrets \
                     WHERE key_id <> $1 ORDER BY id LIMIT $2",
                &[Arg::Text(sealing), Arg::Int(RESEAL_BATCH)],
            )
            .await?;
        if rows.is_empty() {
            // Ended, not dropped: a dropped transaction costs SQLite's writer a reconnect.
            commit::<D>(tx).await?;
            conn.keep();
            return Ok(resealed);
        }
        for row in &rows {
            let subscription = row.uuid("subscription_id")?;
            let secret = keyring.open(subscription, &row.text("key_id")?, &row.text("secret")?)?;
            let (key_id, sealed) = keyring.seal(subscription, &secret)?;
            tx.exec(
                "UPDATE subscription_secrets SET key_id = $1, secret = $2 WHERE id = $3",
                &[
                    Arg::Text(&key_id),
                    Arg::Text(&sealed),
                    Arg::Int(row.int("id")?),
                ],
            )
            .await?;
        }
        commit::<D>(tx).await?;
        conn.keep();
        resealed += rows.len() as u64;
    }
}
