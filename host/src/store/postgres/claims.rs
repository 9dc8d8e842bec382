//! PostgreSQL's claims: the common case's one statement ([`FAST_CLAIM`], run by
//! `Dialect::claim` in `postgres.rs`) and the probe- and rate-aware transaction behind it.

use sqlx::postgres::PgRow;

use super::super::StoreResult;
use super::super::common::{HEAD_OF_ITS_KEY, admit_probes, admit_rated, commit, rate_allows};
use super::super::rows;
use super::super::seal::Keyring;
use super::super::sql::{DbRow, Dialect};
use super::PostgresStore;
use crate::model::{Claim, ClaimedDelivery};

impl PostgresStore {
    /// The claim when some circuit's cool-off is over: due work of every live subscription,
    /// with at most one probe per subscription whose circuit is not closed (the conditional
    /// UPDATE admits exactly one across instances), in one transaction.
    pub(super) async fn claim_with_probes(
        &self,
        claim: Claim<'_>,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let (now, lease_until, skip) = (claim.now, claim.lease_until, claim.skip);
        let mut conn = self.claims.take().await?;
        let mut tx = conn.begin().await?;
        // SKIP LOCKED: instances claiming at the same moment take disjoint rows, never wait.
        let rows = sqlx::query(&SLOW_CANDIDATES)
            .bind(now)
            .bind(i64::from(claim.limit))
            .bind(&skip.subscriptions)
            .bind(&skip.connectors)
            .bind(claim.connectors)
            .bind(claim.loaded)
            .fetch_all(&mut *tx)
            .await?;

        let chosen = admit_probes(&mut *tx, &rows, now, lease_until).await?;
        let chosen = admit_rated(&mut *tx, chosen, now, " FOR UPDATE").await?;
        let ids = chosen
            .iter()
            .map(|r| r.uuid("id"))
            .collect::<StoreResult<Vec<_>>>()?;
        if ids.is_empty() {
            commit::<Self>(tx).await?;
            conn.keep();
            return Ok(Vec::new());
        }
        // Leases taken and everything the attempts need read back, in one round trip.
        let claimed = sqlx::query(&LEASE_AND_READ)
            .bind(claim.owner)
            .bind(lease_until)
            .bind(now)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        commit::<Self>(tx).await?;
        conn.keep();

        claimed
            .iter()
            .map(|row| claimed_from_row(row, self.keyring()))
            .collect()
    }
}

/// Candidates of the probe- and rate-aware claim: due work of every live subscription whose
/// cool-off is over and whose rate limit allows one now, the heads of ordered keys only.
static SLOW_CANDIDATES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT d.id, d.subscription_id, s.circuit_state, s.rate_per_second \
         FROM deliveries d LEFT JOIN subscriptions s ON s.id = d.subscription_id \
         WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
         AND ((d.kind = 'connector' AND d.connector = ANY ($5)) \
           OR (s.enabled AND NOT s.paused AND (s.circuit_open_until IS NULL OR s.circuit_open_until <= $1) \
             AND {rate} \
             AND (s.instance_id IS NULL OR EXISTS (SELECT 1 FROM connector_instances ci \
               WHERE ci.id = s.instance_id AND ci.connector = ANY ($6))))) \
         AND (d.subscription_id IS NULL OR NOT (d.subscription_id = ANY ($3))) \
         AND (d.connector IS NULL OR NOT (d.connector = ANY ($4))) \
         AND {HEAD_OF_ITS_KEY} \
         ORDER BY d.next_attempt_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED",
        rate = rate_allows("$1")
    )
});

/// The common-case claim (see [`Store::claim_deliveries`]), built once.
pub(super) static FAST_CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH picked AS ( \
               SELECT d.id FROM deliveries d LEFT JOIN subscriptions s ON s.id = d.subscription_id \
               WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
               AND ((d.kind = 'connector' AND d.connector = ANY ($7)) OR (s.enabled AND NOT s.paused AND s.circuit_state = 'closed' \
                 AND s.rate_per_second IS NULL \
                 AND (s.instance_id IS NULL OR EXISTS (SELECT 1 FROM connector_instances ci \
                   WHERE ci.id = s.instance_id AND ci.connector = ANY ($8))))) \
               AND (d.subscription_id IS NULL OR NOT (d.subscription_id = ANY ($3))) \
               AND (d.connector IS NULL OR NOT (d.connector = ANY ($4))) \
               AND {HEAD_OF_ITS_KEY} \
               ORDER BY d.next_attempt_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED), \
             claimed AS ( \
               UPDATE deliveries SET status = 'in_flight', lease_owner = $5, lease_expires_at = $6, updated_at = $1 \
               WHERE id IN (SELECT id FROM picked) \
               RETURNING id, event_id, kind, subscription_id, connector, attempts, next_attempt_at, updated_at), \
             got AS ({CLAIMED_ROWS}) \
             SELECT p.probes_due, got.* FROM ( \
               SELECT EXISTS (SELECT 1 FROM subscriptions WHERE enabled AND circuit_state <> 'closed' \
                 AND (circuit_open_until IS NULL OR circuit_open_until <= $1)) \
               OR EXISTS (SELECT 1 FROM subscriptions s WHERE s.rate_per_second IS NOT NULL \
                 AND s.enabled AND NOT s.paused AND s.deleted_at IS NULL AND {rate} \
                 AND EXISTS (SELECT 1 FROM deliveries d3 WHERE d3.subscription_id = s.id \
                   AND d3.status = 'pending' AND d3.next_attempt_at <= $1)) AS probes_due) p \
             LEFT JOIN got ON TRUE ORDER BY got.next_attempt_at",
        rate = rate_allows("$1")
    )
});

/// Leases the deliveries `$4` for `$1` until `$2` and reads them back (probe-aware claim).
static LEASE_AND_READ: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH claimed AS ( \
               UPDATE deliveries SET status = 'in_flight', lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
               WHERE id = ANY($4) \
               RETURNING id, event_id, kind, subscription_id, connector, attempts, next_attempt_at, updated_at) \
             {CLAIMED_ROWS} ORDER BY c.next_attempt_at"
    )
});

/// Reads claimed rows back (`claimed` is a CTE of leased deliveries) with the event, the
/// subscription and its valid secrets, newest first.
const CLAIMED_ROWS: &str = "SELECT c.id, c.event_id, c.kind, c.subscription_id, c.connector, c.attempts, \
     c.next_attempt_at, e.event_type, e.payload::text AS payload, e.created_at AS event_created_at, \
     e.traceparent, \
     s.url, s.headers::text AS headers, s.transform, ci.id AS instance_id, ci.connector AS instance_connector, \
     ci.name AS instance_name, ci.settings::text AS instance_settings, \
     ARRAY(SELECT ss.key_id || ':' || ss.secret FROM subscription_secrets ss WHERE ss.subscription_id = c.subscription_id \
           AND (ss.expires_at IS NULL OR ss.expires_at > c.updated_at) ORDER BY ss.id DESC) AS secrets \
     FROM claimed c JOIN events e ON e.id = c.event_id \
     LEFT JOIN subscriptions s ON s.id = c.subscription_id \
     LEFT JOIN connector_instances ci ON ci.id = s.instance_id";

pub(super) fn claimed_from_row(row: &PgRow, keyring: &Keyring) -> StoreResult<ClaimedDelivery> {
    rows::claimed(row, keyring, row.names("secrets")?)
}
