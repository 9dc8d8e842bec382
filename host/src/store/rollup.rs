//! Hourly attempt counts (`attempt_hours`), so statistics over a day or a week do not count
//! every attempt again: once an hour is over, plus [`GRACE`] for attempts still being recorded,
//! its attempts are counted for the hub, per subscription and per connector, and
//! `attempt_rollup.rolled_until` moves past it. Counting is idempotent (a second instance
//! rolling the same hour writes the same rows), and readers take the hours before
//! `rolled_until` from here and the rest from `attempts` (`queries::destination_stats`).

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::StoreResult;
use super::common::commit;
use super::sql::{Arg, Conn, DbRow, Dialect};
use crate::model::StatsOf;

/// How long after an hour ends its attempts may still arrive (an attempt is recorded when it
/// ends, with the time it started; a group of records commits within seconds).
pub const GRACE: TimeDelta = TimeDelta::minutes(10);

pub(super) const HOUR: TimeDelta = TimeDelta::hours(1);

/// The start of `t`'s hour.
pub(super) fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(HOUR).unwrap_or(t)
}

/// The rows of `of` in `attempt_hours`: its scope and name.
pub(super) fn key(of: StatsOf<'_>) -> (&'static str, String) {
    match of {
        StatsOf::Hub => ("hub", String::new()),
        StatsOf::Subscription(id) => ("subscription", id.to_string()),
        StatsOf::Connector(name) => ("connector", name.to_owned()),
    }
}

/// Hours before this are counted in `attempt_hours`; `None` before the first roll-up.
pub(super) async fn rolled_until<C: Conn>(conn: &mut C) -> StoreResult<Option<DateTime<Utc>>> {
    let row = conn
        .row("SELECT rolled_until FROM attempt_rollup WHERE id = 1", &[])
        .await?;
    Ok(row
        .map(|r| r.opt_time("rolled_until"))
        .transpose()?
        .flatten())
}

/// Counts up to `max_hours` finished hours not counted yet, oldest first; answers how many.
pub(super) async fn roll_up<D: Dialect>(
    store: &D,
    now: DateTime<Utc>,
    max_hours: u32,
) -> StoreResult<u32> {
    let end = hour_of(now - GRACE);
    let mut hour = {
        let mut conn = store.reader().acquire().await?;
        match rolled_until(&mut *conn).await? {
            Some(until) => until,
            None => {
                let first = conn
                    .row("SELECT MIN(started_at) AS first FROM attempts", &[])
                    .await?;
                match first.map(|r| r.opt_time("first")).transpose()?.flatten() {
                    Some(first) => hour_of(first),
                    None => end,
                }
            }
        }
    };
    let mut rolled = 0;
    let mut tx = store.writer().begin().await?;
    while hour < end && rolled < max_hours {
        let next = hour + HOUR;
        let in_hour = [Arg::Time(hour), Arg::Time(next)];
        let counted = "COUNT(*) AS attempts, \
             COALESCE(SUM(CASE WHEN outcome = 'succeeded' THEN 1 ELSE 0 END), 0) AS succeeded \
             FROM attempts WHERE started_at >= $1 AND started_at < $2";
        let mut counts = Vec::new();
        let hub = format!("SELECT {counted}");
        for row in tx.rows(&hub, &in_hour).await? {
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
        for row in tx.rows(&by_subscription, &in_hour).await? {
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
        for row in tx.rows(&by_connector, &in_hour).await? {
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
                "INSERT INTO attempt_hours (scope, name, hour, attempts, succeeded) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, name, hour) DO NOTHING",
                &[
                    Arg::Text(scope),
                    Arg::Text(name),
                    Arg::Time(hour),
                    Arg::Int(*attempts),
                    Arg::Int(*succeeded),
                ],
            )
            .await?;
        }
        hour = next;
        rolled += 1;
    }
    tx.exec(
        "UPDATE attempt_rollup SET rolled_until = $1 \
         WHERE id = 1 AND (rolled_until IS NULL OR rolled_until < $1)",
        &[Arg::Time(hour)],
    )
    .await?;
    commit::<D>(tx).await?;
    Ok(rolled)
}
