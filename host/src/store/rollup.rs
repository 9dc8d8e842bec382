//! Attempt counts in 5-minute buckets (`attempt_buckets`), so statistics over an hour, a day or a
//! week do not count every attempt again: once a bucket is over, plus [`GRACE`] for attempts
//! still being recorded, its attempts are counted for the hub, per subscription and per
//! connector, and `attempt_rollup.rolled_until` moves past it. Counting is idempotent (a second
//! instance rolling the same bucket writes the same rows), and readers take the buckets before
//! `rolled_until` from here and the rest from `attempts` (`queries::destination_stats`): at most
//! one bucket at the window's start plus `GRACE` and a bucket at its end.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::StoreResult;
use super::common::commit;
use super::sql::{Arg, Conn, DbRow, Dialect};
use crate::model::StatsOf;

/// How long after a bucket ends its attempts may still arrive (an attempt is recorded when it
/// ends, with the time it started; a group of records commits within seconds).
pub const GRACE: TimeDelta = TimeDelta::minutes(10);

/// A bucket's length: short, so that little of a window is read from `attempts` row by row;
/// a week is 2,016 rows per destination.
pub const BUCKET: TimeDelta = TimeDelta::minutes(5);

/// The start of `t`'s bucket.
pub(super) fn bucket_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(BUCKET).unwrap_or(t)
}

/// The rows of `of` in `attempt_buckets`: its scope and name.
pub(super) fn key(of: StatsOf<'_>) -> (&'static str, String) {
    match of {
        StatsOf::Hub => ("hub", String::new()),
        StatsOf::Subscription(id) => ("subscription", id.to_string()),
        StatsOf::Connector(name) => ("connector", name.to_owned()),
    }
}

/// Buckets before this are counted in `attempt_buckets`; `None` before the first roll-up.
pub(super) async fn rolled_until<C: Conn>(conn: &mut C) -> StoreResult<Option<DateTime<Utc>>> {
    let row = conn
        .row("SELECT rolled_until FROM attempt_rollup WHERE id = 1", &[])
        .await?;
    Ok(row
        .map(|r| r.opt_time("rolled_until"))
        .transpose()?
        .flatten())
}

/// Counts up to `max_buckets` finished buckets not counted yet, oldest first; answers how many.
pub(super) async fn roll_up<D: Dialect>(
    store: &D,
    now: DateTime<Utc>,
    max_buckets: u32,
) -> StoreResult<u32> {
    let end = bucket_of(now - GRACE);
    let mut bucket = {
        let mut conn = store.reader().acquire().await?;
        match rolled_until(&mut *conn).await? {
            Some(until) => until,
            None => {
                let first = conn
                    .row("SELECT MIN(started_at) AS first FROM attempts", &[])
                    .await?;
                match first.map(|r| r.opt_time("first")).transpose()?.flatten() {
                    Some(first) => bucket_of(first),
                    None => end,
                }
            }
        }
    };
    let mut rolled = 0;
    let mut conn = store.writer().take().await?;
    let mut tx = conn.begin().await?;
    while bucket < end && rolled < max_buckets {
        let next = bucket + BUCKET;
        let in_bucket = [Arg::Time(bucket), Arg::Time(next)];
        let counted = "COUNT(*) AS attempts, \
             COALESCE(SUM(CASE WHEN outcome = 'succeeded' THEN 1 ELSE 0 END), 0) AS succeeded \
             FROM attempts WHERE started_at >= $1 AND started_at < $2";
        let mut counts = Vec::new();
        let hub = format!("SELECT {counted}");
        for row in tx.rows(&hub, &in_bucket).await? {
            counts.push((
                "hub",
                String::new(),
                row.int("attempts")?,
                row.int("succeeded")?,
            ));
        }
        let by_subscription = format!(
            "SELECT subscription_id, {counted} AND subscription_id IS NOT NULL GROUP BY subscription_id"
        );
        for row in tx.rows(&by_subscription, &in_bucket).await? {
            let id = row.uuid("subscription_id")?.to_string();
            counts.push((
                "subscription",
                id,
                row.int("attempts")?,
                row.int("succeeded")?,
            ));
        }
        let by_connector =
            format!("SELECT connector, {counted} AND connector IS NOT NULL GROUP BY connector");
        for row in tx.rows(&by_connector, &in_bucket).await? {
            let name = row.text("connector")?;
            counts.push((
                "connector",
                name,
                row.int("attempts")?,
                row.int("succeeded")?,
            ));
        }
        for (scope, name, attempts, succeeded) in &counts {
            if *attempts == 0 {
                continue;
            }
            tx.exec(
                "INSERT INTO attempt_buckets (scope, name, bucket, attempts, succeeded) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, name, bucket) DO NOTHING",
                &[
                    Arg::Text(scope),
                    Arg::Text(name),
                    Arg::Time(bucket),
                    Arg::Int(*attempts),
                    Arg::Int(*succeeded),
                ],
            )
            .await?;
        }
        bucket = next;
        rolled += 1;
    }
    tx.exec(
        "UPDATE attempt_rollup SET rolled_until = $1 \
         WHERE id = 1 AND (rolled_until IS NULL OR rolled_until < $1)",
        &[Arg::Time(bucket)],
    )
    .await?;
    commit::<D>(tx).await?;
    conn.keep();
    Ok(rolled)
}
