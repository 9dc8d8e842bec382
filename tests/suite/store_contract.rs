//! The storage contract: every `Store` operation, run identically against SQLite and Postgres.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use integrations_hub::Config;
use integrations_hub::model::{
    self, AttemptOutcome, AttemptRecord, AttemptResult, Circuit, CircuitState, Claim,
    ClaimedDelivery, DeadLetterFilter, DeliveryStatus, Destination, IdempotencyKey, NewEvent,
    NewSubscription, PageRequest, PublishOutcome, PublishRequest, ReplayOutcome, Skip,
    Subscription, SubscriptionPatch, Target,
};
use integrations_hub::store::{self, Store};
use integrations_hub_testkit::{Backend, TestDb, backend_tests};
use uuid::Uuid;

backend_tests!(
    claims_leave_skipped_connectors_alone,
    connector_deliveries_wait_for_their_connector_and_unbinding_cancels_them,
    subscriptions_round_trip,
    list_paginates_in_creation_order,
    patch_changes_only_given_fields,
    secret_rotation_keeps_the_old_secret_for_24_hours,
    publish_matches_enabled_live_subscriptions_and_connectors,
    batch_publish_keeps_order_and_is_atomic,
    payload_bytes_are_stored_exactly,
    idempotency_key_replays_refuses_mismatch_and_expires,
    concurrent_publishes_with_one_key_create_once,
    delete_cancels_open_deliveries_and_hides_the_subscription,
    unknown_ids_are_none,
    claims_are_exclusive_leased_and_released,
    attempts_move_deliveries_only_under_the_lease,
    dead_letters_replay_once_and_in_bulk,
    circuit_opens_after_ten_failures_and_admits_one_probe,
    prune_removes_only_finished_old_events,
    a_publish_group_answers_each_request_as_if_alone,
    a_group_of_attempt_records_applies_each_in_order,
    a_group_of_successes_moves_what_it_holds_and_closes_circuits,
    concurrent_groups_failing_the_same_subscriptions_never_deadlock,
    a_transform_rides_with_its_subscription_and_held_deliveries_wait,
);

pub(crate) async fn open(backend: Backend) -> Option<(TestDb, Arc<dyn Store>)> {
    let db = TestDb::create(backend).await?;
    let config = Config::from_vars([
        ("IH_DATABASE_URL", db.url.as_str()),
        ("IH_DATABASE_MAX_CONNECTIONS", "8"),
    ])
    .expect("valid config");
    let store = store::connect(&config)
        .await
        .expect("store opens and migrates");
    assert_eq!(
        store.backend(),
        match backend {
            Backend::Sqlite => model::Backend::Sqlite,
            Backend::Postgres => model::Backend::Postgres,
        }
    );
    Some((db, store))
}

pub(crate) fn new_sub(events: &[&str]) -> NewSubscription {
    let now = model::now();
    let subscription = Subscription {
        id: Uuid::now_v7(),
        url: format!("https://example.com/{}", Uuid::now_v7()),
        instance: None,
        events: events.iter().map(|s| s.to_string()).collect(),
        enabled: true,
        description: Some("billing team".into()),
        headers: BTreeMap::from([("x-team".to_string(), "billing".to_string())]),
        filter: None,
        paused: false,
        ordered: false,
        rate_limit: None,
        transform: None,
        created_at: now,
        updated_at: now,
        circuit: Circuit::CLOSED,
    };
    NewSubscription {
        subscription,
        secret: Some("first-secret-0123456789".into()),
    }
}

pub(crate) fn event(event_type: &str, payload: &str) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        event_type: event_type.into(),
        payload: payload.into(),
        created_at: model::now(),
        ordering_key: None,
        traceparent: None,
    }
}

/// The connectors the claims of these tests can run.
pub(crate) fn running() -> Vec<String> {
    vec!["slack".into(), "example".into()]
}

/// A subscription to `a`, and `n` events of that type published (payloads `{"i": 0}`, …).
pub(crate) async fn subscribed_and_published(store: &dyn Store, n: usize) -> Subscription {
    let sub = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("sub");
    let events: Vec<NewEvent> = (0..n)
        .map(|i| event("a", &format!("{{\"i\":{i}}}")))
        .collect();
    store
        .publish(events, None, model::now())
        .await
        .expect("publish");
    sub
}

/// Claims up to `limit` deliveries due at `at` for `owner`, leased for 30 s, skipping nothing.
pub(crate) async fn claim(
    store: &dyn Store,
    owner: &str,
    at: DateTime<Utc>,
    limit: u32,
) -> Vec<ClaimedDelivery> {
    store
        .claim_deliveries(Claim {
            owner,
            now: at,
            lease_until: at + TimeDelta::seconds(30),
            limit,
            skip: &Skip::default(),
            connectors: &running(),
            loaded: &running(),
        })
        .await
        .expect("claim")
}

/// The first page of up to `limit` items.
pub(crate) fn page(limit: u32) -> PageRequest {
    PageRequest { after: None, limit }
}

pub(crate) fn created(outcome: PublishOutcome) -> Vec<model::PublishedEvent> {
    match outcome {
        PublishOutcome::Created(events) => events,
        other => panic!("expected Created, got {other:?}"),
    }
}

async fn subscriptions_round_trip(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    store.ping().await.expect("ping");
    let new = new_sub(&["request_submitted", "*"]);
    let sub = store
        .create_subscription(new.clone())
        .await
        .expect("create");
    assert_eq!(
        sub, new.subscription,
        "reads back as created (timestamps at microsecond precision), circuit closed"
    );
    assert_eq!(sub.description.as_deref(), Some("billing team"));
    let got = store
        .get_subscription(sub.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got, sub);
}

async fn list_paginates_in_creation_order(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            store
                .create_subscription(new_sub(&["a"]))
                .await
                .expect("create")
                .id,
        );
    }
    let first = store
        .list_subscriptions(PageRequest {
            after: None,
            limit: 2,
        })
        .await
        .expect("page 1");
    let second = store
        .list_subscriptions(PageRequest {
            after: Some(first[1].id),
            limit: 2,
        })
        .await
        .expect("page 2");
    let third = store
        .list_subscriptions(PageRequest {
            after: Some(second[1].id),
            limit: 2,
        })
        .await
        .expect("page 3");
    let seen: Vec<Uuid> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|s| s.id)
        .collect();
    assert_eq!(seen, ids);
    assert!(
        store
            .list_subscriptions(PageRequest {
                after: Some(ids[4]),
                limit: 2
            })
            .await
            .expect("past the end")
            .is_empty()
    );
}

async fn patch_changes_only_given_fields(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let sub = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("create");
    let later = sub.created_at + TimeDelta::seconds(5);
    let patch = SubscriptionPatch {
        events: Some(vec!["b".into(), "c".into()]),
        enabled: Some(false),
        description: Some(None),
        ..Default::default()
    };
    let updated = store
        .update_subscription(sub.id, patch, later)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(updated.events, ["b", "c"]);
    assert!(!updated.enabled);
    assert_eq!(updated.description, None, "Some(None) clears");
    assert_eq!(updated.url, sub.url, "absent fields stay");
    assert_eq!(updated.headers, sub.headers);
    assert_eq!(updated.created_at, sub.created_at);
    assert_eq!(updated.updated_at, later);
    let none = store
        .update_subscription(Uuid::now_v7(), SubscriptionPatch::default(), later)
        .await
        .expect("update of unknown id");
    assert!(none.is_none());
}

async fn secret_rotation_keeps_the_old_secret_for_24_hours(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let sub = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("create");
    let t0 = sub.created_at;
    assert_eq!(
        store
            .subscription_secrets(sub.id, t0)
            .await
            .expect("secrets"),
        ["first-secret-0123456789"]
    );
    let rotate = |secret: &str| SubscriptionPatch {
        secret: Some(secret.into()),
        ..Default::default()
    };
    let t1 = t0 + TimeDelta::hours(1);
    store
        .update_subscription(sub.id, rotate("second-secret-0123456789"), t1)
        .await
        .expect("rotate");
    assert_eq!(
        store
            .subscription_secrets(sub.id, t1)
            .await
            .expect("secrets"),
        ["second-secret-0123456789", "first-secret-0123456789"],
        "newest first, old one still valid"
    );
    // Rotating to the same secret changes nothing.
    store
        .update_subscription(sub.id, rotate("second-secret-0123456789"), t1)
        .await
        .expect("same secret");
    assert_eq!(
        store
            .subscription_secrets(sub.id, t1)
            .await
            .expect("secrets")
            .len(),
        2
    );
    let after_grace = t1 + model::SECRET_GRACE + TimeDelta::seconds(1);
    assert_eq!(
        store
            .subscription_secrets(sub.id, after_grace)
            .await
            .expect("secrets"),
        ["second-secret-0123456789"]
    );
}

async fn publish_matches_enabled_live_subscriptions_and_connectors(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let exact = store
        .create_subscription(new_sub(&["request_submitted"]))
        .await
        .expect("exact");
    let wildcard = store
        .create_subscription(new_sub(&["*"]))
        .await
        .expect("wildcard");
    store
        .create_subscription(new_sub(&["request_approved"]))
        .await
        .expect("other type");
    let mut disabled = new_sub(&["request_submitted"]);
    disabled.subscription.enabled = false;
    store.create_subscription(disabled).await.expect("disabled");
    let deleted = store
        .create_subscription(new_sub(&["request_submitted"]))
        .await
        .expect("deleted");
    store
        .delete_subscription(deleted.id, model::now())
        .await
        .expect("delete");

    let now = model::now();
    let bind = |name: &'static str, events: &[&str]| {
        let events: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        let store = store.clone();
        async move { store.bind_connector(name, &events, now).await }
    };
    bind("slack", &["request_submitted"]).await.expect("bind");
    bind("other", &["order.created"]).await.expect("bind");
    let e = event("request_submitted", r#"{"title":"x"}"#);
    let published = created(
        store
            .publish(vec![e.clone()], None, model::now())
            .await
            .expect("publish"),
    );
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].id, e.id);
    assert_eq!(published[0].deliveries, 3, "exact + wildcard + connector");

    let detail = store.get_event(e.id).await.expect("get").expect("exists");
    assert_eq!(detail.event_type, "request_submitted");
    assert_eq!(detail.created_at, e.created_at);
    let mut destinations: Vec<Destination> = detail
        .deliveries
        .iter()
        .map(|d| d.destination.clone())
        .collect();
    destinations.sort_by_key(|d| format!("{d:?}"));
    let mut expected = vec![
        Destination::Webhook {
            subscription_id: exact.id,
            url: exact.url.clone(),
        },
        Destination::Webhook {
            subscription_id: wildcard.id,
            url: wildcard.url.clone(),
        },
        Destination::Connector {
            connector: "slack".into(),
        },
    ];
    expected.sort_by_key(|d| format!("{d:?}"));
    assert_eq!(destinations, expected);
    for d in &detail.deliveries {
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.next_attempt_at, Some(e.created_at), "due at once");
    }

    let unmatched = created(
        store
            .publish(vec![event("nobody_listens", "{}")], None, model::now())
            .await
            .expect("publish"),
    );
    assert_eq!(unmatched[0].deliveries, 1, "only the wildcard subscription");
}

async fn batch_publish_keeps_order_and_is_atomic(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("sub");
    let batch: Vec<NewEvent> = (0..1000)
        .map(|i| {
            event(
                if i % 2 == 0 { "a" } else { "b" },
                &format!(r#"{{"n":{i}}}"#),
            )
        })
        .collect();
    let ids: Vec<Uuid> = batch.iter().map(|e| e.id).collect();
    let published = created(
        store
            .publish(batch, None, model::now())
            .await
            .expect("publish 1000"),
    );
    assert_eq!(published.iter().map(|p| p.id).collect::<Vec<_>>(), ids);
    assert_eq!(published.iter().map(|p| p.deliveries).sum::<u32>(), 500);

    // A batch that fails part-way (duplicate id) stores nothing.
    let fresh = event("a", "{}");
    let mut dup = event("a", "{}");
    dup.id = ids[0];
    let result = store
        .publish(vec![fresh.clone(), dup], None, model::now())
        .await;
    assert!(result.is_err(), "duplicate id must fail");
    assert!(
        store.get_event(fresh.id).await.expect("get").is_none(),
        "rolled back"
    );
}

async fn payload_bytes_are_stored_exactly(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let payload = "{\"z\": 1,\n  \"a\": [1.50, \"é\\u00e9\"], \"nested\": {\"k\": null}}";
    let e = event("a", payload);
    store
        .publish(vec![e.clone()], None, model::now())
        .await
        .expect("publish");
    let detail = store.get_event(e.id).await.expect("get").expect("exists");
    assert_eq!(
        detail.payload, payload,
        "key order, spacing and escapes survive"
    );
}

async fn idempotency_key_replays_refuses_mismatch_and_expires(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    store
        .create_subscription(new_sub(&["*"]))
        .await
        .expect("sub");
    let key = |fp: &str| {
        Some(IdempotencyKey {
            key: "order-42".into(),
            fingerprint: fp.into(),
        })
    };
    let t0 = model::now();
    let first = created(
        store
            .publish(vec![event("a", "{}")], key("fp1"), t0)
            .await
            .expect("first"),
    );
    let again_event = event("a", "{}");
    let again = store
        .publish(
            vec![again_event.clone()],
            key("fp1"),
            t0 + TimeDelta::hours(23),
        )
        .await
        .expect("second");
    assert_eq!(again, PublishOutcome::Replayed(first.clone()));
    assert!(
        store
            .get_event(again_event.id)
            .await
            .expect("get")
            .is_none(),
        "replay creates nothing"
    );
    let mismatch = store
        .publish(vec![event("a", "{}")], key("fp2"), t0)
        .await
        .expect("third");
    assert_eq!(mismatch, PublishOutcome::KeyMismatch);
    let later = t0 + model::IDEMPOTENCY_TTL + TimeDelta::seconds(1);
    let renewed = created(
        store
            .publish(vec![event("a", "{}")], key("fp2"), later)
            .await
            .expect("after expiry"),
    );
    assert_ne!(renewed[0].id, first[0].id);
}

async fn concurrent_publishes_with_one_key_create_once(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let now = model::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = IdempotencyKey {
                    key: "same".into(),
                    fingerprint: "fp".into(),
                };
                store
                    .publish(vec![event("a", "{}")], Some(key), now)
                    .await
                    .expect("publish")
            })
        })
        .collect();
    let mut created_ids = Vec::new();
    let mut replayed_ids = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            PublishOutcome::Created(e) => created_ids.push(e[0].id),
            PublishOutcome::Replayed(e) => replayed_ids.push(e[0].id),
            PublishOutcome::KeyMismatch => panic!("same fingerprint"),
        }
    }
    assert_eq!(created_ids.len(), 1, "exactly one publish creates");
    assert!(replayed_ids.iter().all(|id| *id == created_ids[0]));
}

async fn delete_cancels_open_deliveries_and_hides_the_subscription(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let sub = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("sub");
    let keep = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("other sub");
    let e = event("a", "{}");
    store
        .publish(vec![e.clone()], None, model::now())
        .await
        .expect("publish");
    assert_eq!(
        store
            .delete_subscription(sub.id, model::now())
            .await
            .expect("delete"),
        Some(1)
    );
    assert!(store.get_subscription(sub.id).await.expect("get").is_none());
    assert_eq!(
        store
            .list_subscriptions(PageRequest {
                after: None,
                limit: 10
            })
            .await
            .expect("list")
            .len(),
        1
    );
    assert!(
        store
            .subscription_secrets(sub.id, model::now())
            .await
            .expect("secrets")
            .is_empty()
    );
    let detail = store.get_event(e.id).await.expect("get").expect("exists");
    for d in &detail.deliveries {
        match &d.destination {
            Destination::Webhook {
                subscription_id, ..
            } if *subscription_id == sub.id => {
                assert_eq!(d.status, DeliveryStatus::Cancelled);
                assert_eq!(d.next_attempt_at, None);
            }
            Destination::Webhook {
                subscription_id, ..
            } => {
                assert_eq!(*subscription_id, keep.id);
                assert_eq!(
                    d.status,
                    DeliveryStatus::Pending,
                    "other subscriptions are untouched"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        store
            .delete_subscription(sub.id, model::now())
            .await
            .expect("again"),
        None
    );
}

async fn unknown_ids_are_none(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    assert!(
        store
            .get_subscription(Uuid::now_v7())
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .get_event(Uuid::now_v7())
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .delete_subscription(Uuid::now_v7(), model::now())
            .await
            .expect("delete")
            .is_none()
    );
}

pub(crate) fn record(
    d: &model::ClaimedDelivery,
    owner: &str,
    result: AttemptResult,
    sub: Option<Uuid>,
) -> AttemptRecord {
    AttemptRecord {
        delivery_id: d.id,
        event_id: d.event_id,
        owner: owner.into(),
        attempt: d.attempts + 1,
        started_at: model::now(),
        duration_ms: 12,
        response_status: Some(if result == AttemptResult::Succeeded {
            200
        } else {
            500
        }),
        response_body: Some("body".into()),
        error: (result != AttemptResult::Succeeded).then(|| "HTTP 500".to_owned()),
        result,
        subscription_id: sub,
        gone: false,
        connector: None,
        quiet: false,
        report: None,
        body_sha256: None,
    }
}

async fn status_of(store: &Arc<dyn Store>, event: Uuid) -> DeliveryStatus {
    store
        .get_event(event)
        .await
        .expect("get")
        .expect("exists")
        .deliveries[0]
        .status
}

async fn claims_leave_skipped_connectors_alone(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let now = model::now();
    let types = |t: &str| vec![t.to_owned()];
    store
        .bind_connector("slack", &types("request_submitted"), now)
        .await
        .expect("bind");
    store
        .bind_connector("example", &types("order.created"), now)
        .await
        .expect("bind");
    let events = vec![
        event("request_submitted", "{}"),
        event("request_submitted", "{}"),
        event("order.created", "{}"),
    ];
    store
        .publish(events, None, model::now())
        .await
        .expect("publish");
    let now = model::now();
    let lease = now + TimeDelta::seconds(30);
    let skip_slack = Skip {
        connectors: vec!["slack".into()],
        ..Skip::default()
    };
    let claimed = store
        .claim_deliveries(Claim {
            owner: "one",
            now,
            lease_until: lease,
            limit: 10,
            skip: &skip_slack,
            connectors: &running(),
            loaded: &running(),
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "only the example delivery: {claimed:?}");
    assert!(
        matches!(&claimed[0].target, Target::Connector { name, instance: None } if name == "example")
    );
    let rest = claim(store.as_ref(), "one", now, 10).await;
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(
        |d| matches!(&d.target, Target::Connector { name, instance: None } if name == "slack")
    ));
}

async fn claims_are_exclusive_leased_and_released(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let sub = subscribed_and_published(store.as_ref(), 20).await;
    let now = model::now();
    let lease = now + TimeDelta::seconds(30);
    let first = claim(store.as_ref(), "one", now, 15).await;
    let second = claim(store.as_ref(), "two", now, 15).await;
    assert_eq!(first.len(), 15);
    assert_eq!(second.len(), 5, "only what the first left");
    let mut ids: Vec<Uuid> = first.iter().chain(&second).map(|d| d.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "no delivery claimed twice");
    let d = &first[0];
    assert_eq!(d.attempts, 0);
    assert!(d.payload.starts_with("{\"i\":"));
    match &d.target {
        Target::Webhook {
            subscription_id,
            url,
            secrets,
            headers,
            transform,
        } => {
            assert_eq!(transform, &None);
            assert_eq!(*subscription_id, sub.id);
            assert_eq!(url, &sub.url);
            assert_eq!(secrets, &["first-secret-0123456789"]);
            assert_eq!(headers, &sub.headers);
        }
        Target::Connector { .. } => panic!("webhook expected"),
    }
    assert!(claim(store.as_ref(), "three", now, 10).await.is_empty());
    // Handing back specific deliveries, and skipping a subscription, work as the engine needs.
    let handed_back: Vec<Uuid> = first.iter().take(3).map(|d| d.id).collect();
    assert_eq!(
        store
            .release_deliveries("two", &handed_back, now)
            .await
            .expect("wrong owner"),
        0
    );
    assert_eq!(
        store
            .release_deliveries("one", &handed_back, now)
            .await
            .expect("release 3"),
        3
    );
    assert!(
        store
            .claim_deliveries(Claim {
                owner: "three",
                now,
                lease_until: lease,
                limit: 10,
                skip: &Skip {
                    subscriptions: vec![sub.id],
                    ..Skip::default()
                },
                connectors: &running(),
                loaded: &running(),
            })
            .await
            .expect("skip")
            .is_empty(),
        "a skipped subscription's work is left alone"
    );
    let back = claim(store.as_ref(), "one", now, 10).await;
    assert_eq!(back.len(), 3);
    // Expired leases come back; graceful release hands back what an owner holds.
    assert_eq!(
        store
            .release_expired_leases(now + TimeDelta::seconds(10))
            .await
            .expect("early"),
        0
    );
    assert_eq!(store.release_leases("two", now).await.expect("release"), 5);
    assert_eq!(
        store
            .release_expired_leases(lease + TimeDelta::seconds(1))
            .await
            .expect("expired"),
        15
    );
    let again = store
        .claim_deliveries(Claim {
            owner: "four",
            now: lease + TimeDelta::seconds(1),
            lease_until: lease + TimeDelta::seconds(60),
            limit: 50,
            skip: &Skip::default(),
            connectors: &running(),
            loaded: &running(),
        })
        .await
        .expect("reclaim");
    assert_eq!(again.len(), 20);
}

async fn attempts_move_deliveries_only_under_the_lease(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let sub = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("sub");
    let e = event("a", "{}");
    store
        .publish(vec![e.clone()], None, model::now())
        .await
        .expect("publish");
    let now = model::now();
    let claimed = claim(store.as_ref(), "me", now, 10).await;
    let d = &claimed[0];
    let retry_at = now + TimeDelta::seconds(5);
    let lost = store
        .record_attempt(
            record(
                d,
                "someone-else",
                AttemptResult::Retry(retry_at),
                Some(sub.id),
            ),
            now,
        )
        .await
        .expect("record");
    assert!(!lost, "a stale owner cannot move the delivery");
    assert_eq!(status_of(&store, e.id).await, DeliveryStatus::InFlight);
    assert!(
        store
            .record_attempt(
                record(d, "me", AttemptResult::Retry(retry_at), Some(sub.id)),
                now
            )
            .await
            .expect("record")
    );
    let detail = store.get_event(e.id).await.expect("get").expect("exists");
    assert_eq!(detail.deliveries[0].status, DeliveryStatus::Pending);
    assert_eq!(detail.deliveries[0].attempts, 1);
    assert_eq!(detail.deliveries[0].next_attempt_at, Some(retry_at));
    assert_eq!(detail.deliveries[0].last_error.as_deref(), Some("HTTP 500"));
    assert!(
        claim(store.as_ref(), "me", now, 10).await.is_empty(),
        "not due yet"
    );
    let claimed = claim(store.as_ref(), "me", retry_at, 10).await;
    assert_eq!(claimed[0].attempts, 1);
    assert!(
        store
            .record_attempt(
                record(&claimed[0], "me", AttemptResult::Succeeded, Some(sub.id)),
                retry_at
            )
            .await
            .expect("record")
    );
    assert_eq!(status_of(&store, e.id).await, DeliveryStatus::Succeeded);
    let attempts = store.list_attempts(e.id).await.expect("attempts");
    assert_eq!(
        attempts.len(),
        3,
        "every attempt is recorded, even the stale one"
    );
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::Succeeded)
            .count(),
        1
    );
    assert_eq!(attempts[0].response_body.as_deref(), Some("body"));
    let sub_after = store
        .get_subscription(sub.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        sub_after.circuit.consecutive_failures, 0,
        "success resets the count"
    );
}

async fn dead_letters_replay_once_and_in_bulk(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let sub = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("sub");
    let events: Vec<NewEvent> = (0..3).map(|_| event("a", "{}")).collect();
    store
        .publish(events.clone(), None, model::now())
        .await
        .expect("publish");
    let now = model::now();
    for d in claim(store.as_ref(), "me", now, 10).await {
        assert!(
            store
                .record_attempt(record(&d, "me", AttemptResult::Dead, Some(sub.id)), now)
                .await
                .expect("record")
        );
    }
    let letters = store
        .list_dead_letters(
            &DeadLetterFilter::default(),
            PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert_eq!(letters.len(), 3);
    assert!(
        letters.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
    assert_eq!(
        store
            .list_dead_letters(
                &DeadLetterFilter::default(),
                PageRequest {
                    after: Some(letters[0].id),
                    limit: 10,
                },
            )
            .await
            .expect("page")
            .len(),
        2
    );
    assert_eq!(letters[0].attempts, 1);
    assert_eq!(letters[0].last_error.as_deref(), Some("HTTP 500"));
    let one = letters[2].clone();
    let replayed = store.replay_dead_letter(one.id, now).await.expect("replay");
    assert_eq!(
        replayed,
        ReplayOutcome::Replayed {
            delivery_id: one.delivery_id
        }
    );
    assert_eq!(
        store.replay_dead_letter(one.id, now).await.expect("again"),
        ReplayOutcome::AlreadyReplayed
    );
    assert_eq!(
        store
            .replay_dead_letter(Uuid::now_v7(), now)
            .await
            .expect("unknown"),
        ReplayOutcome::NotFound
    );
    assert_eq!(
        status_of(&store, one.event_id).await,
        DeliveryStatus::Pending
    );
    let bulk = store
        .replay_dead_letters(
            DeadLetterFilter {
                subscription_id: Some(sub.id),
                ..Default::default()
            },
            now,
        )
        .await
        .expect("bulk");
    assert_eq!(bulk, 2, "the two not replayed yet");
    assert_eq!(
        store
            .replay_dead_letters(DeadLetterFilter::default(), now)
            .await
            .expect("bulk again"),
        0
    );
    let claimed = claim(store.as_ref(), "me", now, 10).await;
    assert_eq!(claimed.len(), 3);
    assert!(claimed.iter().all(|d| d.attempts == 0), "a fresh budget");
    // A deleted subscription's dead letters cannot be replayed.
    for d in &claimed {
        store
            .record_attempt(record(d, "me", AttemptResult::Dead, Some(sub.id)), now)
            .await
            .expect("record");
    }
    store
        .delete_subscription(sub.id, now)
        .await
        .expect("delete");
    let newest = store
        .list_dead_letters(
            &DeadLetterFilter::default(),
            PageRequest {
                after: None,
                limit: 1,
            },
        )
        .await
        .expect("list");
    assert_eq!(
        store
            .replay_dead_letter(newest[0].id, now)
            .await
            .expect("replay"),
        ReplayOutcome::SubscriptionDeleted
    );
}

async fn circuit_opens_after_ten_failures_and_admits_one_probe(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let sub = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("sub");
    let events: Vec<NewEvent> = (0..15).map(|_| event("a", "{}")).collect();
    store
        .publish(events, None, model::now())
        .await
        .expect("publish");
    let now = model::now();
    let claimed = claim(store.as_ref(), "me", now, 10).await;
    assert_eq!(claimed.len(), 10);
    let retry = now + TimeDelta::milliseconds(1);
    for d in &claimed {
        store
            .record_attempt(
                record(d, "me", AttemptResult::Retry(retry), Some(sub.id)),
                now,
            )
            .await
            .expect("record");
    }
    let s = store
        .get_subscription(sub.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(s.circuit.state, CircuitState::Open);
    assert_eq!(s.circuit.consecutive_failures, 10);
    let later = now + TimeDelta::seconds(5);
    assert!(
        claim(store.as_ref(), "me", later, 50).await.is_empty(),
        "open: nothing is tried"
    );
    let stats = store.outbox_stats(later).await.expect("stats");
    assert_eq!(stats.open_circuits, 1);
    assert_eq!(stats.pending, 15);
    // Published while the circuit is open: due when the cool-off ends, not now (a claim never
    // walks past work it may not take).
    let blocked = event("a", "{}");
    let blocked_id = blocked.id;
    store
        .publish(vec![blocked], None, later)
        .await
        .expect("publish while open");
    let detail = store
        .get_event(blocked_id)
        .await
        .expect("get event")
        .expect("stored");
    let due = detail.deliveries[0].next_attempt_at.expect("pending");
    assert!(
        due >= now + model::circuit::cooloff(1),
        "due at the end of the cool-off, not at once: {due} vs {now}"
    );
    let stats = store.outbox_stats(later).await.expect("stats");
    assert_eq!(stats.pending, 16);
    let after = now + model::circuit::cooloff(1) + TimeDelta::seconds(1);
    let probe = claim(store.as_ref(), "me", after, 50).await;
    assert_eq!(probe.len(), 1, "exactly one probe after the cool-off");
    assert_eq!(
        store
            .get_subscription(sub.id)
            .await
            .expect("get")
            .expect("exists")
            .circuit
            .state,
        CircuitState::HalfOpen
    );
    assert!(claim(store.as_ref(), "other", after, 50).await.is_empty());
    store
        .record_attempt(
            record(&probe[0], "me", AttemptResult::Succeeded, Some(sub.id)),
            after,
        )
        .await
        .expect("record");
    let s = store
        .get_subscription(sub.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(s.circuit.state, CircuitState::Closed);
    assert_eq!(s.circuit.consecutive_failures, 0);
    let rest = claim(store.as_ref(), "me", after, 50).await;
    assert_eq!(
        rest.len(),
        15,
        "closed again: everything flows, including what was published while open"
    );
}

async fn prune_removes_only_finished_old_events(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let sub = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("sub");
    let done = event("a", "{}");
    let waiting = event("a", "{}");
    let unrouted = event("b", "{}");
    store
        .publish(
            vec![done.clone(), waiting.clone(), unrouted.clone()],
            None,
            model::now(),
        )
        .await
        .expect("publish");
    let now = model::now();
    let claimed = claim(store.as_ref(), "me", now, 10).await;
    let finished = claimed
        .iter()
        .find(|d| d.event_id == done.id)
        .expect("claimed");
    store
        .record_attempt(
            record(finished, "me", AttemptResult::Succeeded, Some(sub.id)),
            now,
        )
        .await
        .expect("record");
    store.release_leases("me", now).await.expect("release");
    assert_eq!(
        store
            .prune(now - TimeDelta::days(1), now, 100)
            .await
            .expect("prune"),
        0,
        "nothing is old yet"
    );
    let future = now + TimeDelta::days(31);
    assert_eq!(
        store
            .prune(future - TimeDelta::days(30), future, 100)
            .await
            .expect("prune"),
        2
    );
    assert!(store.get_event(done.id).await.expect("get").is_none());
    assert!(store.get_event(unrouted.id).await.expect("get").is_none());
    assert!(
        store.get_event(waiting.id).await.expect("get").is_some(),
        "unfinished work is never pruned"
    );
    assert!(
        store
            .list_attempts(done.id)
            .await
            .expect("attempts")
            .is_empty()
    );
}

async fn a_publish_group_answers_each_request_as_if_alone(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("sub");
    let key = |k: &str, fp: &str| {
        Some(IdempotencyKey {
            key: k.into(),
            fingerprint: fp.into(),
        })
    };
    let now = model::now();
    // A key already used by an earlier, separate publish.
    let earlier = created(
        store
            .publish(vec![event("a", "{}")], key("old", "fp"), now)
            .await
            .expect("earlier"),
    );
    let request = |events: Vec<NewEvent>, idempotency| PublishRequest {
        events,
        idempotency,
    };
    let requests = vec![
        request(vec![event("a", "{}"), event("b", "{}")], None),
        request(vec![event("a", "{\"n\":1}")], key("k1", "fp1")),
        request(vec![event("a", "{\"n\":1}")], key("k1", "fp1")),
        request(vec![event("a", "{\"n\":2}")], key("k1", "fp2")),
        request(vec![event("a", "{}")], key("old", "fp")),
        request(vec![event("a", "{}")], key("old", "other")),
    ];
    let ids: Vec<Vec<Uuid>> = requests
        .iter()
        .map(|r| r.events.iter().map(|e| e.id).collect())
        .collect();
    let outcomes = store.publish_group(requests, now).await.expect("group");
    assert_eq!(outcomes.len(), 6);
    let plain = created(outcomes[0].clone());
    assert_eq!(
        plain
            .iter()
            .map(|e| (e.id, e.deliveries))
            .collect::<Vec<_>>(),
        vec![(ids[0][0], 1), (ids[0][1], 0)],
        "events in request order, each with its own deliveries"
    );
    let keyed = created(outcomes[1].clone());
    assert_eq!(keyed[0].id, ids[1][0]);
    assert_eq!(
        outcomes[2],
        PublishOutcome::Replayed(keyed.clone()),
        "the same key and request again in one group replays the first"
    );
    assert_eq!(outcomes[3], PublishOutcome::KeyMismatch);
    assert_eq!(outcomes[4], PublishOutcome::Replayed(earlier));
    assert_eq!(outcomes[5], PublishOutcome::KeyMismatch);
    for (i, written) in [
        (0, true),
        (1, true),
        (2, false),
        (3, false),
        (4, false),
        (5, false),
    ] {
        for id in &ids[i] {
            assert_eq!(
                store.get_event(*id).await.expect("get").is_some(),
                written,
                "request {i}"
            );
        }
    }
}

/// The common group — every attempt a success, each delivery once — has its own path on each
/// backend (SQLite: three statements per 500 records): more records than one round holds, one
/// of them without its lease.
async fn a_group_of_successes_moves_what_it_holds_and_closes_circuits(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let sub = subscribed_and_published(store.as_ref(), 503).await;
    let now = model::now();
    let claimed = claim(store.as_ref(), "me", now, 1000).await;
    assert_eq!(claimed.len(), 503);
    let retry = now + TimeDelta::seconds(60);
    assert!(
        store
            .record_attempt(
                record(&claimed[0], "me", AttemptResult::Retry(retry), Some(sub.id)),
                now
            )
            .await
            .expect("record a failure")
    );
    let circuit = |s: Option<Subscription>| s.expect("exists").circuit;
    let before = circuit(store.get_subscription(sub.id).await.expect("get"));
    assert_eq!(before.consecutive_failures, 1);

    let mut records: Vec<AttemptRecord> = claimed[1..]
        .iter()
        .map(|d| record(d, "me", AttemptResult::Succeeded, Some(sub.id)))
        .collect();
    records[7].owner = "someone-else".into();
    let moved = store
        .record_attempts(records, now)
        .await
        .expect("record group");
    assert_eq!(moved.len(), 502);
    assert!(!moved[7], "a record without the lease moves nothing");
    assert_eq!(moved.iter().filter(|m| **m).count(), 501, "{moved:?}");

    let after = circuit(store.get_subscription(sub.id).await.expect("get"));
    assert_eq!(after.consecutive_failures, 0, "successes reset the count");
    assert_eq!(after.state, CircuitState::Closed);
    for (d, expected) in [
        (&claimed[1], DeliveryStatus::Succeeded),
        (&claimed[8], DeliveryStatus::InFlight),
        (&claimed[502], DeliveryStatus::Succeeded),
    ] {
        let detail = store
            .get_event(d.event_id)
            .await
            .expect("get")
            .expect("event");
        assert_eq!(detail.deliveries[0].status, expected, "{}", d.id);
        let attempts = store.list_attempts(d.event_id).await.expect("attempts");
        assert_eq!(attempts.len(), 1, "every attempt is history, moved or not");
    }
    let last = store
        .get_event(claimed[502].event_id)
        .await
        .expect("get")
        .expect("event");
    assert_eq!(last.deliveries[0].attempts, 1);
    assert_eq!(last.deliveries[0].last_error, None);
}

async fn a_group_of_attempt_records_applies_each_in_order(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let failing = store
        .create_subscription(new_sub(&["f"]))
        .await
        .expect("sub");
    let healthy = store
        .create_subscription(new_sub(&["h"]))
        .await
        .expect("sub");
    let mut events: Vec<NewEvent> = (0..11).map(|_| event("f", "{}")).collect();
    events.extend((0..3).map(|_| event("h", "{}")));
    store
        .publish(events, None, model::now())
        .await
        .expect("publish");
    let now = model::now();
    let claimed = claim(store.as_ref(), "me", now, 50).await;
    assert_eq!(claimed.len(), 14);
    let sub_of = |d: &model::ClaimedDelivery| match &d.target {
        Target::Webhook {
            subscription_id, ..
        } => *subscription_id,
        Target::Connector { .. } => panic!("webhook deliveries only"),
    };
    let retry = now + TimeDelta::seconds(1);
    let mut records = Vec::new();
    let mut first_failing = true;
    for d in &claimed {
        let sub = sub_of(d);
        let result = if sub == healthy.id {
            AttemptResult::Succeeded
        } else if first_failing {
            first_failing = false;
            AttemptResult::Dead
        } else {
            AttemptResult::Retry(retry)
        };
        records.push(record(d, "me", result, Some(sub)));
    }
    // Someone else's lease: recorded as history, but it moves nothing.
    let mut stranger = records
        .iter()
        .find(|r| r.subscription_id == Some(healthy.id))
        .expect("a healthy record")
        .clone();
    stranger.owner = "someone-else".into();
    records.push(stranger);
    let moved = store
        .record_attempts(records, now)
        .await
        .expect("record group");
    assert_eq!(moved.len(), 15);
    assert!(moved[..14].iter().all(|m| *m), "{moved:?}");
    assert!(!moved[14], "a record without the lease moves nothing");

    let failing_now = store
        .get_subscription(failing.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(failing_now.circuit.consecutive_failures, 11);
    assert_eq!(
        failing_now.circuit.state,
        CircuitState::Open,
        "the tenth failure within the group opened the circuit"
    );
    let healthy_now = store
        .get_subscription(healthy.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(healthy_now.circuit.state, CircuitState::Closed);
    let dead = store
        .list_dead_letters(
            &DeadLetterFilter::default(),
            PageRequest {
                after: None,
                limit: 50,
            },
        )
        .await
        .expect("dead");
    assert_eq!(dead.len(), 1, "exactly the dead attempt left a dead letter");
    for d in &claimed {
        let expected = if sub_of(d) == healthy.id {
            DeliveryStatus::Succeeded
        } else if d.id == dead[0].delivery_id {
            DeliveryStatus::Dead
        } else {
            DeliveryStatus::Pending
        };
        let event = store
            .get_event(d.event_id)
            .await
            .expect("get")
            .expect("event");
        assert_eq!(event.deliveries[0].status, expected);
    }
    let history: usize = {
        let mut n = 0;
        for d in &claimed {
            n += store
                .list_attempts(d.event_id)
                .await
                .expect("attempts")
                .len();
        }
        n
    };
    assert_eq!(history, 15, "every record is kept as an attempt");
}

/// The engine's record writers run concurrently; groups whose failures touch the same
/// subscriptions in opposite orders must all commit (on PostgreSQL each would otherwise hold a
/// subscription row the other waits for, and one would be aborted as a deadlock).
async fn concurrent_groups_failing_the_same_subscriptions_never_deadlock(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    // (`open` gives the hot path two connections: two groups at a time, as in the engine.)
    let subs: Vec<model::Subscription> = {
        let mut subs = Vec::new();
        for _ in 0..8 {
            subs.push(
                store
                    .create_subscription(new_sub(&["a"]))
                    .await
                    .expect("sub"),
            );
        }
        subs
    };
    let events: Vec<NewEvent> = (0..30).map(|_| event("a", "{}")).collect();
    store
        .publish(events, None, model::now())
        .await
        .expect("publish");
    let now = model::now();
    let claimed = store
        .claim_deliveries(Claim {
            owner: "me",
            now,
            lease_until: now + TimeDelta::seconds(60),
            limit: 240,
            skip: &Skip::default(),
            connectors: &running(),
            loaded: &running(),
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 240);
    let retry = now + TimeDelta::seconds(1);
    let fail = |d: &model::ClaimedDelivery| {
        let sub = match &d.target {
            model::Target::Webhook {
                subscription_id, ..
            } => *subscription_id,
            other => panic!("a webhook delivery, got {other:?}"),
        };
        record(d, "me", AttemptResult::Retry(retry), Some(sub))
    };
    // Twenty groups of twelve, half of them in reverse order: every group fails most
    // subscriptions, taking their rows in opposite orders.
    let mut groups: Vec<Vec<AttemptRecord>> = claimed
        .chunks(12)
        .map(|c| c.iter().map(fail).collect())
        .collect();
    for group in groups.iter_mut().skip(1).step_by(2) {
        group.reverse();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for group in groups {
        let store = store.clone();
        tasks.spawn(async move { store.record_attempts(group, model::now()).await });
    }
    while let Some(done) = tasks.join_next().await {
        let moved = done
            .expect("task")
            .expect("every group commits, none deadlocks");
        assert!(moved.iter().all(|m| *m), "every delivery moved on");
    }
    for sub in &subs {
        let s = store
            .get_subscription(sub.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(s.circuit.state, CircuitState::Open, "30 failures opened it");
        assert_eq!(s.circuit.consecutive_failures, 30);
    }
}

/// A bound connector gets deliveries whether or not any engine runs it; claims take them only
/// where it runs; elsewhere they are deferred (not attempted, still counted); unbinding cancels
/// those waiting and routes nothing more.
async fn connector_deliveries_wait_for_their_connector_and_unbinding_cancels_them(
    backend: Backend,
) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let bound_at = model::now();
    assert!(
        store
            .bind_connector("slack", &["*".to_owned()], bound_at)
            .await
            .expect("bind")
    );
    assert!(
        !store
            .bind_connector("slack", &["*".to_owned()], bound_at)
            .await
            .expect("bind the same"),
        "binding the same again writes nothing"
    );
    // Binding again changes the event types, not the binding's age.
    let changed = store
        .bind_connector(
            "slack",
            &["a".to_owned(), "b".to_owned()],
            bound_at + TimeDelta::seconds(1),
        )
        .await
        .expect("bind again");
    assert!(changed, "a change of event types is written");
    let e = event("a", "{}");
    let published = created(
        store
            .publish(vec![e.clone()], None, model::now())
            .await
            .expect("publish"),
    );
    assert_eq!(
        published[0].deliveries, 1,
        "bound, though no engine runs it"
    );
    // Due from the event's creation.
    let now = model::now();
    let nobody: Vec<String> = Vec::new();
    let claim_with = |running: &[String], at| {
        let store = store.clone();
        let running = running.to_vec();
        async move {
            store
                .claim_deliveries(Claim {
                    owner: "me",
                    now: at,
                    lease_until: at + TimeDelta::seconds(30),
                    limit: 10,
                    skip: &Skip::default(),
                    connectors: &running,
                    loaded: &running,
                })
                .await
                .expect("claim")
        }
    };
    assert!(
        claim_with(&nobody, now).await.is_empty(),
        "not claimed where it does not run"
    );
    let until = now + TimeDelta::seconds(5);
    let alive_since = now - TimeDelta::seconds(10);
    assert_eq!(
        store
            .defer_waiting_connectors(alive_since, until, now)
            .await
            .expect("defer"),
        1,
        "no instance runs it"
    );
    let waiting = &store
        .get_event(e.id)
        .await
        .expect("get")
        .expect("event")
        .deliveries[0];
    assert_eq!(waiting.status, DeliveryStatus::Pending);
    assert_eq!(waiting.attempts, 0, "waiting costs no attempt");
    assert_eq!(waiting.next_attempt_at, Some(until));
    assert!(
        waiting
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("waiting")),
        "{waiting:?}"
    );
    store
        .report_connectors("other-instance", &[("slack".to_owned(), true)], until)
        .await
        .expect("report");
    assert_eq!(
        store
            .defer_waiting_connectors(alive_since, until + TimeDelta::seconds(5), until)
            .await
            .expect("defer"),
        0,
        "nothing is deferred while an instance runs it"
    );
    store
        .report_connectors("other-instance", &[], until)
        .await
        .expect("report none");
    let bindings = store.connector_bindings().await.expect("bindings");
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].name, "slack");
    assert_eq!(bindings[0].events, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(bindings[0].created_at, bound_at);
    assert_eq!(bindings[0].pending, 1);
    assert_eq!(claim_with(&["slack".to_owned()], until).await.len(), 1);

    // Unbinding cancels what waits and routes nothing more.
    let e2 = event("b", "{}");
    store
        .publish(vec![e2.clone()], None, now)
        .await
        .expect("publish");
    assert_eq!(
        store.unbind_connector("slack", now).await.expect("unbind"),
        Some(2),
        "the waiting delivery and the one in flight"
    );
    assert_eq!(status_of(&store, e2.id).await, DeliveryStatus::Cancelled);
    assert_eq!(
        store.unbind_connector("slack", now).await.expect("again"),
        None
    );
    assert!(
        store
            .connector_bindings()
            .await
            .expect("bindings")
            .is_empty()
    );
    let after = created(
        store
            .publish(vec![event("a", "{}")], None, now)
            .await
            .expect("publish"),
    );
    assert_eq!(after[0].deliveries, 0);
}

/// A subscription's transform is stored, patched and removed, claims carry it, a delivery held
/// for it is due again only at the time given (unattempted), and an attempt keeps the digest of
/// the body it sent.
async fn a_transform_rides_with_its_subscription_and_held_deliveries_wait(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let transform = model::TransformRef {
        name: "cloudevents".into(),
        settings: BTreeMap::from([("source".to_string(), "/shop".to_string())]),
    };
    let mut new = new_sub(&["a"]);
    new.subscription.transform = Some(transform.clone());
    let sub = store.create_subscription(new).await.expect("sub");
    assert_eq!(sub.transform.as_ref(), Some(&transform));
    let read = store
        .get_subscription(sub.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(read.transform.as_ref(), Some(&transform));

    store
        .publish(vec![event("a", "{}")], None, model::now())
        .await
        .expect("publish");
    let now = model::now();
    let claimed = claim(store.as_ref(), "me", now, 10).await;
    assert_eq!(claimed.len(), 1);
    let Target::Webhook {
        transform: carried, ..
    } = &claimed[0].target
    else {
        panic!("a webhook delivery");
    };
    assert_eq!(carried.as_ref(), Some(&transform));

    // Held: back to pending, due later, no attempt spent; only its owner can hold it.
    let ids = [claimed[0].id];
    let until = now + TimeDelta::seconds(5);
    assert_eq!(
        store
            .postpone_deliveries("other", &ids, until, now)
            .await
            .expect("hold"),
        0
    );
    assert_eq!(
        store
            .postpone_deliveries("me", &ids, until, now)
            .await
            .expect("hold"),
        1
    );
    assert!(
        claim(store.as_ref(), "me", now + TimeDelta::seconds(4), 10)
            .await
            .is_empty()
    );
    let again = claim(store.as_ref(), "me", until + TimeDelta::seconds(1), 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 0, "holding spends no attempt");

    let mut sent = record(&again[0], "me", AttemptResult::Succeeded, Some(sub.id));
    sent.body_sha256 = Some("ab".repeat(32));
    store
        .record_attempts(vec![sent], model::now())
        .await
        .expect("record");
    let attempts = store
        .list_attempts(again[0].event_id)
        .await
        .expect("attempts");
    assert_eq!(
        attempts[0].body_sha256.as_deref(),
        Some("ab".repeat(32).as_str())
    );

    let other = model::TransformRef {
        name: "slack-text".into(),
        settings: BTreeMap::new(),
    };
    let patched = store
        .update_subscription(
            sub.id,
            SubscriptionPatch {
                transform: Some(Some(other.clone())),
                ..Default::default()
            },
            model::now(),
        )
        .await
        .expect("patch")
        .expect("found");
    assert_eq!(patched.transform, Some(other));
    let untouched = store
        .update_subscription(
            sub.id,
            SubscriptionPatch {
                enabled: Some(true),
                ..Default::default()
            },
            model::now(),
        )
        .await
        .expect("patch")
        .expect("found");
    assert!(untouched.transform.is_some(), "a patch without it keeps it");
    let removed = store
        .update_subscription(
            sub.id,
            SubscriptionPatch {
                transform: Some(None),
                ..Default::default()
            },
            model::now(),
        )
        .await
        .expect("patch")
        .expect("found");
    assert_eq!(removed.transform, None);
}
