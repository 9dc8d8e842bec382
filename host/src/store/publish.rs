//! Publishing: a group of publish requests (`group.rs` gathers them) decided and written in one
//! go — idempotency keys claimed or replayed, each event's destinations read, the event and
//! delivery rows inserted, one commit. The hub's own notices (`notices.rs`) write their events
//! through the same [`write_events`].

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::common::Tx;
use super::handoff::{Handed, Handoff, hand_off};
use super::plan::{
    Decision, DeliveryRow, KeyClaims, Match, Matches, decode_ids, distinct_types, encode_ids,
    events_to_write, group_outcomes, in_order, plan_deliveries,
};
use super::remembered::{Known, Remembered};
use super::rows;
use super::sql::{Arg, Conn, DbRow, Dialect, Fingerprints};
use super::{Keyring, StoreError, StoreResult};
use crate::model::{
    IDEMPOTENCY_TTL, IdempotencyKey, NewEvent, PublishOutcome, PublishRequest, PublishedEvent,
    held_until,
};

/// See [`super::Store::publish_group`].
pub(super) async fn group<D: Dialect>(
    store: &D,
    requests: Vec<PublishRequest>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<PublishOutcome>> {
    let engine = store.pools().taker.get();
    let to = Destinations {
        engine: engine.as_deref(),
        keyring: store.keyring(),
        now,
        remembered: D::CHECKS_DESTINATIONS.then(|| &store.pools().remembered),
    };
    if D::ONE_STATEMENT_PUBLISH && requests.iter().all(|r| r.idempotency.is_none()) {
        // Nothing to claim first: the destinations are read, then the events and their
        // deliveries written by one statement, atomic on its own (a read in the transaction
        // would see what this read sees: it locks nothing).
        let decisions: Vec<Decision> = requests.iter().map(|_| Decision::Write).collect();
        let events = events_to_write(&requests, &decisions);
        let mut conn = store.publisher().take().await?;
        let written = write_events::<D>(&mut conn, &events, &to, Commit::ByItself).await?;
        conn.keep();
        return Ok(written.committed(&requests, decisions));
    }
    let mut conn = store.publisher().take().await?;
    let mut tx = conn.begin().await?;
    let mut decisions = Vec::with_capacity(requests.len());
    let mut claims = KeyClaims::default();
    for (i, request) in requests.iter().enumerate() {
        let Some(key) = &request.idempotency else {
            decisions.push(Decision::Write);
            continue;
        };
        if let Some(first) = claims.claimed_by(key) {
            decisions.push(Decision::SameKeyAs(first));
            continue;
        }
        let ids: Vec<Uuid> = request.events.iter().map(|e| e.id).collect();
        match claim_key(&mut *tx, key, &ids, now).await? {
            None => {
                claims.claim(key, i);
                decisions.push(Decision::Write);
            }
            Some(answer) => decisions.push(Decision::Answered(answer)),
        }
    }

    let events = events_to_write(&requests, &decisions);
    let written = write_events::<D>(&mut tx, &events, &to, Commit::Later).await?;
    commit_publish::<D>(tx).await?;
    conn.keep();
    Ok(written.committed(&requests, decisions))
}

/// Commits a publish: a connection broken during the commit leaves its outcome unknown
/// ([`StoreError::CommitUncertain`]), which the API says, so the client retries with the same
/// `Idempotency-Key`.
async fn commit_publish<D: Dialect>(tx: Tx<'_, D>) -> StoreResult<()> {
    tx.commit().await.map_err(StoreError::from_commit)
}

async fn published_events<C: Conn>(conn: &mut C, ids: &[Uuid]) -> StoreResult<Vec<PublishedEvent>> {
    let found = conn
        .rows_in(
            "SELECT e.id, e.event_type, e.created_at, \
             (SELECT COUNT(*) FROM deliveries d WHERE d.event_id = e.id) AS deliveries \
             FROM events e WHERE e.id IN ({ids})",
            &[],
            ids,
        )
        .await?
        .iter()
        .map(rows::published_event)
        .collect::<StoreResult<Vec<_>>>()?;
    in_order(ids, found)
}

/// Claims an idempotency key for a publish of `ids`: `None` when claimed (new, or expired and
/// taken over), otherwise what the request is answered instead. On PostgreSQL a concurrent
/// request with the same key waits here for the first to commit, then replays it.
async fn claim_key<C: Conn>(
    conn: &mut C,
    key: &IdempotencyKey,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<Option<PublishOutcome>> {
    let encoded = encode_ids(ids);
    let claimed = conn
        .exec(
            "INSERT INTO idempotency_keys (key, fingerprint, event_ids, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             event_ids = excluded.event_ids, created_at = excluded.created_at, expires_at = excluded.expires_at \
             WHERE idempotency_keys.expires_at <= $4",
            &[
                Arg::Text(&key.key),
                Arg::Text(&key.fingerprint),
                Arg::Text(&encoded),
                Arg::Time(now),
                Arg::Time(now + IDEMPOTENCY_TTL),
            ],
        )
        .await?
        == 1;
    if claimed {
        return Ok(None);
    }
    let row = conn
        .row(
            "SELECT fingerprint, event_ids FROM idempotency_keys WHERE key = $1",
            &[Arg::Text(&key.key)],
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("idempotency key vanished while claimed".into()))?;
    if row.text("fingerprint")? != key.fingerprint {
        return Ok(Some(PublishOutcome::KeyMismatch));
    }
    let first = decode_ids(&row.text("event_ids")?)?;
    Ok(Some(PublishOutcome::Replayed(
        published_events(conn, &first).await?,
    )))
}

/// Writes `events` and a delivery for each destination each one matches (live subscriptions
/// whose filter takes it, held if paused or past an open circuit; bound connectors), those the
/// local engine takes leased to it (`handoff.rs`). The publish path and the hub's own notices
/// share it.
pub(super) async fn write_events<D: Dialect>(
    conn: &mut D::Conn,
    events: &[&NewEvent],
    to: &Destinations<'_>,
    commit: Commit,
) -> StoreResult<Written> {
    if let (Commit::ByItself, Some(memory)) = (&commit, to.remembered)
        && let Some(written) = write_remembered::<D>(conn, events, to, memory).await?
    {
        return Ok(written);
    }
    let matches = matching_destinations::<D>(conn, events, to).await?;
    let (rows, written) = plan(events, &matches, to);
    let owner = to.engine.map(|e| e.owner());
    let inserted = D::insert_published(conn, events, &rows, owner).await;
    match commit {
        Commit::Later => inserted?,
        Commit::ByItself => inserted.map_err(StoreError::uncertain_if_broken)?,
    }
    Ok(written)
}

/// [`write_events`] in one statement with the destinations remembered from earlier publishes,
/// if every type's are and they are still what the database holds (`remembered.rs`); `None`
/// when the destinations have to be read (nothing was written, nothing handed).
async fn write_remembered<D: Dialect>(
    conn: &mut D::Conn,
    events: &[&NewEvent],
    to: &Destinations<'_>,
    memory: &Remembered,
) -> StoreResult<Option<Written>> {
    let types = distinct_types(events);
    let Some(known) = memory.recall(&types, to.engine.is_some()) else {
        return Ok(None);
    };
    let (mut fingerprints, mut matches) = (Vec::new(), HashMap::new());
    for (event_type, known) in known {
        fingerprints.push(known.fingerprint);
        matches.insert(event_type, known.matches);
    }
    let (rows, written) = plan(events, &matches, to);
    let known = Fingerprints {
        types,
        fingerprints,
        at: to.now,
    };
    let owner = to.engine.map(|e| e.owner());
    let same = D::insert_published_if_same(conn, events, &rows, owner, &known)
        .await
        .map_err(StoreError::uncertain_if_broken)?;
    // Not the same: the reservations of `written` are dropped, their slots given back.
    Ok(same.then(|| {
        memory.count(true);
        written
    }))
}

/// The delivery rows of `events` to `matches`, with those the engine takes handed to it.
fn plan<'a>(
    events: &[&'a NewEvent],
    matches: &'a HashMap<&str, Matches>,
    to: &Destinations<'_>,
) -> (Vec<DeliveryRow<'a>>, Written) {
    let (mut rows, counts) = plan_deliveries(events, matches);
    let handed = match to.engine {
        Some(engine) => hand_off(engine, events, &mut rows, to.now),
        None => Handed::default(),
    };
    (rows, Written { counts, handed })
}

/// Where [`write_events`] looks for its destinations and sends what it may send at once.
pub(super) struct Destinations<'a> {
    /// The local engine that takes new deliveries, if any (the hub's notices have none).
    pub engine: Option<&'a dyn Handoff>,
    pub keyring: &'a Keyring,
    pub now: DateTime<Utc>,
    /// Where the destinations read are remembered, if the backend checks them as it writes
    /// (`remembered.rs`).
    pub remembered: Option<&'a Remembered>,
}

/// What [`write_events`] wrote: the number of deliveries per event, and those handed to the
/// engine, to start once committed.
pub(super) struct Written {
    pub counts: HashMap<Uuid, u32>,
    pub handed: Handed,
}

impl Written {
    /// The group's outcomes, its rows committed: the handed deliveries start.
    fn committed(
        self,
        requests: &[PublishRequest],
        decisions: Vec<Decision>,
    ) -> Vec<PublishOutcome> {
        let started: HashMap<Uuid, u32> = (self.counts.keys())
            .map(|id| (*id, self.handed.of(*id)))
            .collect();
        self.handed.start();
        group_outcomes(requests, decisions, &self.counts, &started)
    }
}

/// How the rows [`write_events`] inserts are committed.
pub(super) enum Commit {
    /// By the transaction they are written in: a failure stores nothing.
    Later,
    /// By their one statement ([`Dialect::ONE_STATEMENT_PUBLISH`]): a connection broken on the
    /// way leaves the outcome unknown, as for a failed COMMIT.
    ByItself,
}

/// The destinations of each distinct event type of `events`, in one query per type; with an
/// engine to hand deliveries to, what sending a subscription's at once needs.
async fn matching_destinations<'e, D: Dialect>(
    conn: &mut D::Conn,
    events: &[&'e NewEvent],
    to: &Destinations<'_>,
) -> StoreResult<HashMap<&'e str, Matches>> {
    let mut matches: HashMap<&str, Matches> = HashMap::new();
    for event_type in distinct_types(events) {
        let found = matches.entry(event_type).or_default();
        let read = conn
            .rows(
                D::MATCHING_DESTINATIONS,
                &[Arg::Text(event_type), Arg::Time(to.now)],
            )
            .await?;
        for row in &read {
            match row.opt_text("connector")? {
                Some(name) => found.connectors.push(name),
                None => {
                    let id = row.uuid("id")?;
                    let direct = match to.engine.is_some() && row.bool("direct")? {
                        true => Some(rows::direct(row, id, to.keyring)?),
                        false => None,
                    };
                    found.subscriptions.push(Match {
                        id,
                        blocked_until: if row.bool("paused")? {
                            Some(held_until())
                        } else {
                            row.opt_time("blocked_until")?
                        },
                        filter: rows::filter(row.opt_text("filter")?)?.map(Arc::new),
                        ordered: row.bool("ordered")?,
                        direct,
                    })
                }
            }
        }
        if let Some(memory) = to.remembered {
            let fingerprint = match read.first() {
                Some(row) => row.opt_text("fingerprint")?,
                None => None,
            };
            let known = Known {
                matches: found.clone(),
                fingerprint,
                direct: to.engine.is_some(),
            };
            memory.learn(event_type, known);
        }
    }
    if let Some(memory) = to.remembered {
        memory.count(false);
    }
    Ok(matches)
}
