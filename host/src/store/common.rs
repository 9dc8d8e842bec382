//! Steps shared by the store's operations (`ops.rs`) and by the backends' own paths: applying an
//! attempt record and its circuit-breaker transition, admitting probes, requeueing dead
//! letters. Written once, over [`Conn`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;
use super::rows::{self, subscription_columns};
use super::sql::{Arg, Conn, DbRow, Dialect};
use crate::model::{AttemptRecord, AttemptResult, Subscription, circuit, notice};

pub(super) type Tx<'c, D> = sqlx::Transaction<'c, <D as Dialect>::Db>;

/// Commits `tx` (on a pooled connection of its own, or on one lent by `kept.rs`).
pub(super) async fn commit<D: Dialect>(tx: Tx<'_, D>) -> StoreResult<()> {
    Ok(tx.commit().await?)
}

pub(super) async fn live_subscription<D: Dialect>(
    conn: &mut D::Conn,
    id: Uuid,
    lock: &str,
) -> StoreResult<Option<Subscription>> {
    let sql = format!(
        concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM subscriptions WHERE id = $1 AND deleted_at IS NULL{}"
        ),
        lock
    );
    conn.row(&sql, &[Arg::Uuid(id)])
        .await?
        .as_ref()
        .map(rows::subscription)
        .transpose()
}

/// A notice to write in the transaction of what it reports (`model/notice.rs`).
#[derive(Debug, Default)]
pub(super) struct Notify<'a> {
    pub subscription_id: Option<Uuid>,
    pub delivery_id: Option<Uuid>,
    pub connector: Option<&'a str>,
    pub detail: Option<&'a str>,
}

impl<'a> Notify<'a> {
    /// About a subscription.
    pub(super) fn about(subscription_id: Uuid, detail: Option<&'a str>) -> Self {
        Self {
            subscription_id: Some(subscription_id),
            detail,
            ..Self::default()
        }
    }

    pub(super) async fn write<C: Conn>(
        &self,
        conn: &mut C,
        kind: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        conn.exec(
            "INSERT INTO hub_notices (id, kind, subscription_id, delivery_id, connector, detail, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                Arg::Uuid(Uuid::now_v7()),
                Arg::Text(kind),
                Arg::OptUuid(self.subscription_id),
                Arg::OptUuid(self.delivery_id),
                Arg::OptText(self.connector),
                Arg::OptText(self.detail),
                Arg::Time(now),
            ],
        )
        .await?;
        Ok(())
    }
}

/// Hands `owner`'s in-flight deliveries `ids` back to `pending`, unattempted: due at `until`,
/// or (`None`) at the time they had.
pub(super) async fn hand_back<D: Dialect>(
    store: &D,
    owner: &str,
    ids: &[Uuid],
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let mut conn = store.writer().take().await?;
    let handed_back = conn
        .exec_in(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, \
             next_attempt_at = COALESCE($3, next_attempt_at), updated_at = $1 \
             WHERE status = 'in_flight' AND lease_owner = $2 AND id IN ({ids})",
            &[Arg::Time(now), Arg::Text(owner), Arg::OptTime(until)],
            ids,
        )
        .await?;
    conn.keep();
    Ok(handed_back)
}

/// The attempts table's columns, in the order of [`attempt_args`].
pub(super) const INSERT_ATTEMPTS: &str = "INSERT INTO attempts (id, delivery_id, event_id, attempt, \
     outcome, response_status, response_body, error, duration_ms, started_at, subscription_id, \
     connector, reported, external_id, retry_after_ms, body_sha256)";

/// Values per attempt row of [`INSERT_ATTEMPTS`].
pub(super) const ATTEMPT_COLUMNS: usize = 16;

/// One attempt row's values (a new id), in [`INSERT_ATTEMPTS`]' order.
pub(super) fn attempt_args(record: &AttemptRecord) -> [Arg<'_>; ATTEMPT_COLUMNS] {
    [
        Arg::Uuid(Uuid::now_v7()),
        Arg::Uuid(record.delivery_id),
        Arg::Uuid(record.event_id),
        Arg::Int(record.attempt.into()),
        Arg::Text(record.outcome()),
        Arg::OptInt(record.response_status.map(i64::from)),
        Arg::OptText(record.response_body.as_deref()),
        Arg::OptText(record.error.as_deref()),
        Arg::Int(record.duration_ms as i64),
        Arg::Time(record.started_at),
        Arg::OptUuid(record.subscription_id),
        Arg::OptText(record.connector.as_deref()),
        Arg::OptText(record.reported()),
        Arg::OptText(record.external_id()),
        Arg::OptInt(record.retry_after_ms()),
        Arg::OptText(record.body_sha256.as_deref()),
    ]
}

/// `rows` parenthesised rows of `width` placeholders each, numbered from `$first`:
/// `($1, $2), ($3, $4)`.
pub(super) fn placeholders(first: usize, rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (0..width)
                .map(|c| format!("${}", first + r * width + c))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies one attempt record (see [`Store::record_attempt`]): the attempt row, the delivery's
/// move when `owner` still holds its lease, its dead letter, and the circuit breaker.
pub(super) async fn record_one<C: Conn>(
    conn: &mut C,
    record: &AttemptRecord,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    static INSERT_ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{INSERT_ATTEMPTS} VALUES {}",
            placeholders(1, 1, ATTEMPT_COLUMNS)
        )
    });
    conn.exec(&INSERT_ONE, &attempt_args(record)).await?;
    let (status, next_at, error) = record.delivery_change();
    let updated = conn
        .exec(
            "UPDATE deliveries SET status = $1, attempts = $2, next_attempt_at = COALESCE($3, next_attempt_at), \
             last_error = $4, lease_owner = NULL, lease_expires_at = NULL, updated_at = $5 \
             WHERE id = $6 AND status = 'in_flight' AND lease_owner = $7",
            &[
                Arg::Text(status),
                Arg::Int(record.attempt.into()),
                Arg::OptTime(next_at),
                Arg::OptText(error.as_deref()),
                Arg::Time(now),
                Arg::Uuid(record.delivery_id),
                Arg::Text(&record.owner),
            ],
        )
        .await?
        == 1;
    if updated && record.result == AttemptResult::Dead && !record.quiet {
        let notice = Notify {
            subscription_id: record.subscription_id,
            delivery_id: Some(record.delivery_id),
            connector: record.connector.as_deref(),
            detail: error.as_deref(),
        };
        notice.write(conn, notice::DELIVERY_DEAD, now).await?;
    }
    if updated && record.result == AttemptResult::Dead {
        conn.exec(
            "INSERT INTO dead_letters (id, delivery_id, event_id, attempts, last_error, created_at, \
             event_type) VALUES ($1, $2, $3, $4, $5, $6, (SELECT event_type FROM events WHERE id = $3))",
            &[
                Arg::Uuid(Uuid::now_v7()),
                Arg::Uuid(record.delivery_id),
                Arg::Uuid(record.event_id),
                Arg::Int(record.attempt.into()),
                Arg::OptText(error.as_deref()),
                Arg::Time(now),
            ],
        )
        .await?;
    }
    apply_to_circuit(conn, record, now).await?;
    Ok(updated)
}

/// Resets the circuit breakers of `subscriptions` (their attempts all succeeded).
pub(super) const CLOSE_CIRCUITS: &str = "UPDATE subscriptions SET consecutive_failures = 0, circuit_state = 'closed', \
     circuit_open_until = NULL, circuit_trips = 0 \
     WHERE id IN ({ids}) AND (consecutive_failures <> 0 OR circuit_state <> 'closed')";

/// What one attempt does to its subscription's circuit breaker (policy: `model/circuit.rs`), and
/// a `410 Gone` disables the subscription.
pub(super) async fn apply_to_circuit<C: Conn>(
    conn: &mut C,
    record: &AttemptRecord,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let Some(sub) = record.subscription_id else {
        return Ok(());
    };
    if record.result == AttemptResult::Succeeded {
        // A closing circuit is noticed by a trigger (`hub_notice_circuit_closed`).
        conn.exec_in(CLOSE_CIRCUITS, &[], &[sub]).await?;
        return Ok(());
    }
    let row = conn
        .row(
            "UPDATE subscriptions SET consecutive_failures = consecutive_failures + 1 WHERE id = $1 \
             RETURNING consecutive_failures, circuit_state, circuit_trips",
            &[Arg::Uuid(sub)],
        )
        .await?;
    if let Some(row) = row {
        let state = rows::circuit_state(&row.text("circuit_state")?)?;
        if circuit::opens(state, row.count("consecutive_failures")?) {
            let open_until = now + circuit::cooloff(row.count("circuit_trips")? + 1);
            conn.exec(
                "UPDATE subscriptions SET circuit_state = 'open', circuit_open_until = $1, \
                 circuit_trips = circuit_trips + 1 WHERE id = $2",
                &[Arg::Time(open_until), Arg::Uuid(sub)],
            )
            .await?;
            // Waiting work moves past the cool-off, so claims never wade through it.
            conn.exec(
                "UPDATE deliveries SET next_attempt_at = $1 \
                 WHERE subscription_id = $2 AND status = 'pending' AND next_attempt_at < $1",
                &[Arg::Time(open_until), Arg::Uuid(sub)],
            )
            .await?;
            if !record.quiet {
                let until = open_until.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                let notice = Notify::about(sub, Some(&until));
                notice.write(conn, notice::CIRCUIT_OPENED, now).await?;
            }
        }
    }
    if record.gone && !record.quiet {
        let notice = Notify::about(sub, Some("gone"));
        notice
            .write(conn, notice::SUBSCRIPTION_DISABLED, now)
            .await?;
    }
    if record.gone {
        conn.exec(
            "UPDATE subscriptions SET enabled = FALSE, disabled_reason = $1, updated_at = $2 WHERE id = $3",
            &[
                Arg::Text("the endpoint answered 410 Gone"),
                Arg::Time(now),
                Arg::Uuid(sub),
            ],
        )
        .await?;
    }
    Ok(())
}

/// Of claim candidates (`subscription_id`, `circuit_state` columns), those to lease: everything
/// of closed circuits and connectors, and one probe per subscription whose cool-off is over.
/// The conditional UPDATE admits exactly one probe across instances; the rest wait for its
/// verdict.
pub(super) async fn admit_probes<'r, C: Conn>(
    conn: &mut C,
    candidates: &'r [C::Row],
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> StoreResult<Vec<&'r C::Row>> {
    let mut probes: HashMap<Uuid, bool> = HashMap::new();
    let mut chosen = Vec::with_capacity(candidates.len());
    for row in candidates {
        let state = row.opt_text("circuit_state")?;
        if let (Some(sub), Some(state)) = (row.opt_uuid("subscription_id")?, state.as_deref())
            && state != "closed"
        {
            if probes.contains_key(&sub) {
                continue;
            }
            let took = conn
                .exec(
                    "UPDATE subscriptions SET circuit_state = 'half_open', circuit_open_until = $1 \
                     WHERE id = $2 AND (circuit_open_until IS NULL OR circuit_open_until <= $3)",
                    &[Arg::Time(lease_until), Arg::Uuid(sub), Arg::Time(now)],
                )
                .await?
                == 1;
            probes.insert(sub, took);
            if !took {
                continue;
            }
        }
        chosen.push(row);
    }
    Ok(chosen)
}

/// A claim candidate `d` of an ordered subscription is the oldest unfinished delivery of its
/// key (`deliveries_by_key`): the ones behind it wait, however due they are.
pub(super) const HEAD_OF_ITS_KEY: &str = "(d.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries d2 \
     WHERE d2.subscription_id = d.subscription_id AND d2.ordering_key = d.ordering_key \
     AND d2.status IN ('pending', 'in_flight') AND d2.id < d.id))";

/// A claim candidate's subscription `s`, if rate-limited, may send one at `now` (a placeholder).
pub(super) fn rate_allows(now: &str) -> String {
    format!("(s.rate_per_second IS NULL OR s.rate_allow_at IS NULL OR s.rate_allow_at <= {now})")
}

/// Of claim candidates (`subscription_id`, `rate_per_second` columns), those the rate limits let
/// go now, in order: per limited subscription, its schedule is read under its row lock (`lock`)
/// and moved past what is taken (`model/rate.rs`), so instances sharing the database never
/// exceed it together. The rest stay pending.
pub(super) async fn admit_rated<'r, C: Conn>(
    conn: &mut C,
    candidates: Vec<&'r C::Row>,
    now: DateTime<Utc>,
    lock: &str,
) -> StoreResult<Vec<&'r C::Row>> {
    let mut wanted: std::collections::BTreeMap<Uuid, u32> = std::collections::BTreeMap::new();
    for row in &candidates {
        if row.opt_int("rate_per_second")?.is_some()
            && let Some(sub) = row.opt_uuid("subscription_id")?
        {
            *wanted.entry(sub).or_default() += 1;
        }
    }
    if wanted.is_empty() {
        return Ok(candidates);
    }
    let mut allowed: HashMap<Uuid, u32> = HashMap::new();
    // In id order, as every transaction that locks several subscriptions does.
    for (sub, n) in wanted {
        let sql = format!(
            "SELECT rate_per_second, rate_burst, rate_allow_at FROM subscriptions WHERE id = $1{lock}"
        );
        let Some(row) = conn.row(&sql, &[Arg::Uuid(sub)]).await? else {
            continue;
        };
        let Some(limit) = rows::rate_limit(&row)? else {
            allowed.insert(sub, n);
            continue;
        };
        let (taken, next) = limit.take(row.opt_time("rate_allow_at")?, now, n);
        if taken > 0 {
            conn.exec(
                "UPDATE subscriptions SET rate_allow_at = $1 WHERE id = $2",
                &[Arg::OptTime(next), Arg::Uuid(sub)],
            )
            .await?;
        }
        allowed.insert(sub, taken);
    }
    let mut chosen = Vec::with_capacity(candidates.len());
    for row in candidates {
        let left = match row.opt_uuid("subscription_id")? {
            Some(sub) => allowed.get_mut(&sub),
            None => None,
        };
        match left {
            Some(0) => continue,
            Some(n) => *n -= 1,
            None => {}
        }
        chosen.push(row);
    }
    Ok(chosen)
}

/// Marks dead letters replayed and queues their deliveries again with a fresh attempt budget.
pub(super) async fn requeue_dead<C: Conn>(
    conn: &mut C,
    dead_letters: &[Uuid],
    deliveries: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    conn.exec_in(
        "UPDATE dead_letters SET replayed_at = $1 WHERE id IN ({ids})",
        &[Arg::Time(now)],
        dead_letters,
    )
    .await?;
    conn.exec_in(
        "UPDATE deliveries SET status = 'pending', attempts = 0, last_error = NULL, lease_owner = NULL, \
         lease_expires_at = NULL, next_attempt_at = $1, updated_at = $1 WHERE status = 'dead' AND id IN ({ids})",
        &[Arg::Time(now)],
        deliveries,
    )
    .await?;
    Ok(())
}
