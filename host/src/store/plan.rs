//! The pure part of the store's algorithms: what a publish group decides before writing, which
//! rows it writes, how attempt records are grouped. No I/O, so unit tests cover it directly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{StoreError, StoreResult};
use crate::model::{
    AttemptRecord, AttemptResult, IdempotencyKey, NewEvent, PublishOutcome, PublishRequest,
    PublishedEvent, TransformRef, filter::Filter,
};

/// Event ids of an idempotency record, stored as a JSON array of strings.
pub(super) fn encode_ids(ids: &[Uuid]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())
}

pub(super) fn decode_ids(raw: &str) -> StoreResult<Vec<Uuid>> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("idempotency record: {e}")))
}

pub(super) fn decode_strings(raw: &str) -> StoreResult<BTreeMap<String, String>> {
    serde_json::from_str(raw)
        .map_err(|e| StoreError::Corrupt(format!("stored headers or settings: {e}")))
}

pub(super) fn encode_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// What a group publish decided about one request before writing anything.
#[derive(Debug)]
pub(super) enum Decision {
    /// Its events are written in this transaction.
    Write,
    /// Answered without writing (a live idempotency key: replayed, or a mismatch).
    Answered(PublishOutcome),
    /// Its idempotency key was claimed by an earlier request (this index) of the same group.
    SameKeyAs(usize),
}

/// One delivery row to insert with its event.
#[derive(Debug)]
pub(crate) struct DeliveryRow<'a> {
    pub id: Uuid,
    pub event_id: Uuid,
    pub subscription: Option<Uuid>,
    pub connector: Option<&'a str>,
    /// The event's ordering key, for a subscription that keeps order.
    pub ordering_key: Option<&'a str>,
    /// When the event was created (the delivery's creation time).
    pub at: DateTime<Utc>,
    /// When it is first due: at once, or when its subscription's open circuit cools off.
    pub due: DateTime<Utc>,
    /// What sending it at once needs, when its subscription allows that (`handoff.rs`).
    pub direct: Option<&'a Direct>,
    /// Written `in_flight`, leased to the local engine until then (`handoff.rs`).
    pub leased_until: Option<DateTime<Utc>>,
}

/// A subscription an event type matches, with the end of its circuit's cool-off if it is open:
/// new deliveries wait for it, so a claim never walks past blocked work. (Not while half-open:
/// the probe's answer comes within one attempt, and a success must not leave them waiting.)
#[derive(Debug, Clone)]
pub(super) struct Match {
    pub id: Uuid,
    pub blocked_until: Option<DateTime<Utc>>,
    /// Its payload filter: an event it refuses gets no delivery.
    pub filter: Option<Arc<Filter>>,
    /// It keeps order: its deliveries carry their event's ordering key.
    pub ordered: bool,
    /// Its deliveries may be handed to the local engine, with what sending them needs: read
    /// only while an engine takes them (`handoff.rs`).
    pub direct: Option<Direct>,
}

/// What a subscription's delivery needs to be sent at once, read with the publish's
/// destinations (`Dialect::MATCHING_DESTINATIONS`; `handoff.rs`) when an engine takes deliveries.
#[derive(Clone)]
pub(crate) struct Direct {
    pub url: String,
    pub headers: BTreeMap<String, String>,
    /// Valid secrets, opened, newest first.
    pub secrets: Vec<String>,
    pub transform: Option<TransformRef>,
}

/// Never shows the secrets (nor header values, which may hold credentials).
impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Idempotency keys claimed for writing within one group, with the claiming request.
#[derive(Debug, Default)]
pub(super) struct KeyClaims<'a> {
    written: HashMap<&'a str, usize>,
}

impl<'a> KeyClaims<'a> {
    /// The request that already claimed `key` for writing in this group, if any.
    pub(super) fn claimed_by(&self, key: &IdempotencyKey) -> Option<usize> {
        self.written.get(key.key.as_str()).copied()
    }

    pub(super) fn claim(&mut self, key: &'a IdempotencyKey, request: usize) {
        self.written.insert(&key.key, request);
    }
}

/// The events of the requests decided [`Decision::Write`], in request order.
pub(super) fn events_to_write<'a>(
    requests: &'a [PublishRequest],
    decisions: &[Decision],
) -> Vec<&'a NewEvent> {
    requests
        .iter()
        .zip(decisions)
        .filter(|(_, d)| matches!(d, Decision::Write))
        .flat_map(|(r, _)| r.events.iter())
        .collect()
}

/// The distinct event types of `events`, in first-seen order.
pub(super) fn distinct_types<'a>(events: &[&'a NewEvent]) -> Vec<&'a str> {
    let mut types: Vec<&str> = Vec::new();
    for e in events {
        if !types.contains(&e.event_type.as_str()) {
            types.push(&e.event_type);
        }
    }
    types
}

/// The destinations an event type matches: live subscriptions, and bound connectors.
#[derive(Debug, Default, Clone)]
pub(super) struct Matches {
    pub subscriptions: Vec<Match>,
    pub connectors: Vec<String>,
}

/// One delivery per matching subscription and per bound connector of each event; returns the
/// rows and the number of deliveries per event.
pub(super) fn plan_deliveries<'a>(
    events: &[&'a NewEvent],
    matches: &'a HashMap<&str, Matches>,
) -> (Vec<DeliveryRow<'a>>, HashMap<Uuid, u32>) {
    const NONE: &Matches = &Matches {
        subscriptions: Vec::new(),
        connectors: Vec::new(),
    };
    let mut rows = Vec::new();
    let mut counts = HashMap::with_capacity(events.len());
    for event in events {
        let matched = matches.get(event.event_type.as_str()).unwrap_or(NONE);
        // The payload is parsed only when a filter asks, once per event.
        let mut payload: Option<Value> = None;
        let subs: Vec<&Match> = (matched.subscriptions.iter())
            .filter(|s| match &s.filter {
                None => true,
                Some(filter) => {
                    let payload = payload.get_or_insert_with(|| {
                        serde_json::from_str(&event.payload).unwrap_or(Value::Null)
                    });
                    filter.matches(&event.event_type, payload)
                }
            })
            .collect();
        rows.extend(subs.iter().map(|s| {
            DeliveryRow {
                id: Uuid::now_v7(),
                event_id: event.id,
                subscription: Some(s.id),
                connector: None,
                ordering_key: event.ordering_key.as_deref().filter(|_| s.ordered),
                at: event.created_at,
                due: s
                    .blocked_until
                    .map_or(event.created_at, |until| until.max(event.created_at)),
                direct: s.direct.as_ref(),
                leased_until: None,
            }
        }));
        rows.extend(matched.connectors.iter().map(|c| DeliveryRow {
            id: Uuid::now_v7(),
            event_id: event.id,
            subscription: None,
            connector: Some(c.as_str()),
            ordering_key: None,
            at: event.created_at,
            due: event.created_at,
            direct: None,
            leased_until: None,
        }));
        counts.insert(event.id, (subs.len() + matched.connectors.len()) as u32);
    }
    (rows, counts)
}

/// Turns the decisions of a committed group into one outcome per request, given each written
/// event's deliveries and how many of them the local engine started.
pub(super) fn group_outcomes(
    requests: &[PublishRequest],
    decisions: Vec<Decision>,
    counts: &HashMap<Uuid, u32>,
    started: &HashMap<Uuid, u32>,
) -> Vec<PublishOutcome> {
    let created = |r: &PublishRequest| -> Vec<PublishedEvent> {
        r.events
            .iter()
            .map(|e| PublishedEvent {
                id: e.id,
                event_type: e.event_type.clone(),
                created_at: e.created_at,
                deliveries: counts.get(&e.id).copied().unwrap_or(0),
                started: started.get(&e.id).copied().unwrap_or(0),
            })
            .collect()
    };
    let fingerprint = |i: usize| requests[i].idempotency.as_ref().map(|k| &k.fingerprint);
    decisions
        .into_iter()
        .enumerate()
        .map(|(i, decision)| match decision {
            Decision::Write => PublishOutcome::Created(created(&requests[i])),
            Decision::Answered(outcome) => outcome,
            Decision::SameKeyAs(first) if fingerprint(first) == fingerprint(i) => {
                PublishOutcome::Replayed(created(&requests[first]))
            }
            Decision::SameKeyAs(_) => PublishOutcome::KeyMismatch,
        })
        .collect()
}

impl AttemptRecord {
    /// What the attempt does to its delivery: the new status, the next attempt time (retries)
    /// and the error shown on the delivery.
    pub(crate) fn delivery_change(&self) -> (&'static str, Option<DateTime<Utc>>, Option<String>) {
        let last_error = self
            .error
            .clone()
            .or_else(|| self.response_status.map(|s| format!("HTTP {s}")));
        match self.result {
            AttemptResult::Succeeded => ("succeeded", None, None),
            AttemptResult::Retry(when) => ("pending", Some(when), last_error),
            AttemptResult::Dead => ("dead", None, last_error),
        }
    }

    /// The attempt's `reported` column.
    pub(crate) fn reported(&self) -> Option<&'static str> {
        self.report.as_ref().map(|r| r.kind.as_str())
    }

    /// The attempt's `external_id` column.
    pub(crate) fn external_id(&self) -> Option<&str> {
        self.report.as_ref()?.external_id.as_deref()
    }

    /// The attempt's `retry_after_ms` column.
    pub(crate) fn retry_after_ms(&self) -> Option<i64> {
        let ms = self.report.as_ref()?.retry_after_ms?;
        Some(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    /// The attempt's `outcome` column.
    pub(crate) fn outcome(&self) -> &'static str {
        if self.result == AttemptResult::Succeeded {
            "succeeded"
        } else {
            "failed"
        }
    }
}

/// Splits the subscriptions of `records`: those whose every attempt succeeded (their circuit
/// breakers can be reset in one statement) and those with a failure (their attempts must be
/// applied one by one, in order).
pub(super) fn split_by_failures(records: &[AttemptRecord]) -> (Vec<Uuid>, HashSet<Uuid>) {
    let failed: HashSet<Uuid> = records
        .iter()
        .filter(|r| r.result != AttemptResult::Succeeded)
        .filter_map(|r| r.subscription_id)
        .collect();
    let mut ok: Vec<Uuid> = records
        .iter()
        .filter_map(|r| r.subscription_id)
        .filter(|s| !failed.contains(s))
        .collect();
    ok.sort();
    ok.dedup();
    (ok, failed)
}

/// Splits `records` (by index) into rounds in which each delivery appears at most once,
/// keeping the order of a delivery's records across rounds. Almost always one round; a delivery
/// recorded twice (a lease lost and won again) puts its second record in a second round.
pub(super) fn rounds_of_distinct_deliveries(records: &[AttemptRecord]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<Uuid, usize> = HashMap::with_capacity(records.len());
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let round = seen.entry(r.delivery_id).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(i);
        *round += 1;
    }
    rounds
}

/// Puts events back into the order of `ids` (the order the client sent them).
pub(super) fn in_order(
    ids: &[Uuid],
    mut found: Vec<PublishedEvent>,
) -> StoreResult<Vec<PublishedEvent>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let pos = found.iter().position(|e| e.id == *id).ok_or_else(|| {
            StoreError::Corrupt(format!("idempotency record names missing event {id}"))
        })?;
        out.push(found.swap_remove(pos));
    }
    Ok(out)
}
