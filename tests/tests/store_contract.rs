//! The storage contract: every `Store` operation, run identically against SQLite and Postgres.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::TimeDelta;
use integrations_hub::Config;
use integrations_hub::store::{
    self, CircuitState, DeliveryStatus, Destination, IdempotencyKey, NewEvent, NewSubscription,
    PublishOutcome, Store, SubscriptionPatch,
};
use integrations_hub_tests::{Backend, TestDb, backend_tests};
use uuid::Uuid;

backend_tests!(
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
);

async fn open(backend: Backend) -> Option<(TestDb, Arc<dyn Store>)> {
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
            Backend::Sqlite => store::Backend::Sqlite,
            Backend::Postgres => store::Backend::Postgres,
        }
    );
    Some((db, store))
}

fn new_sub(events: &[&str]) -> NewSubscription {
    NewSubscription {
        id: Uuid::now_v7(),
        url: format!("https://example.com/{}", Uuid::now_v7()),
        secret: "first-secret-0123456789".into(),
        events: events.iter().map(|s| s.to_string()).collect(),
        enabled: true,
        description: Some("billing team".into()),
        headers: BTreeMap::from([("x-team".to_string(), "billing".to_string())]),
        created_at: store::now(),
    }
}

fn event(event_type: &str, payload: &str) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        event_type: event_type.into(),
        payload: payload.into(),
        created_at: store::now(),
        connectors: Vec::new(),
    }
}

fn created(outcome: PublishOutcome) -> Vec<store::PublishedEvent> {
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
    assert_eq!(sub.id, new.id);
    assert_eq!(sub.url, new.url);
    assert_eq!(sub.events, new.events);
    assert!(sub.enabled);
    assert_eq!(sub.description.as_deref(), Some("billing team"));
    assert_eq!(sub.headers, new.headers);
    assert_eq!(
        sub.created_at, new.created_at,
        "timestamps round-trip at microsecond precision"
    );
    assert_eq!(sub.updated_at, new.created_at);
    assert_eq!(sub.circuit.state, CircuitState::Closed);
    assert_eq!(sub.circuit.consecutive_failures, 0);
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
    let first = store.list_subscriptions(None, 2).await.expect("page 1");
    let second = store
        .list_subscriptions(Some(first[1].id), 2)
        .await
        .expect("page 2");
    let third = store
        .list_subscriptions(Some(second[1].id), 2)
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
            .list_subscriptions(Some(ids[4]), 2)
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
    let after_grace = t1 + store::SECRET_GRACE + TimeDelta::seconds(1);
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
    disabled.enabled = false;
    store.create_subscription(disabled).await.expect("disabled");
    let deleted = store
        .create_subscription(new_sub(&["request_submitted"]))
        .await
        .expect("deleted");
    store
        .delete_subscription(deleted.id, store::now())
        .await
        .expect("delete");

    let mut e = event("request_submitted", r#"{"title":"x"}"#);
    e.connectors = vec!["slack".into()];
    let published = created(
        store
            .publish(vec![e.clone()], None, store::now())
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
            .publish(vec![event("nobody_listens", "{}")], None, store::now())
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
            .publish(batch, None, store::now())
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
        .publish(vec![fresh.clone(), dup], None, store::now())
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
        .publish(vec![e.clone()], None, store::now())
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
    let t0 = store::now();
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
    let later = t0 + store::IDEMPOTENCY_TTL + TimeDelta::seconds(1);
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
    let now = store::now();
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
        .publish(vec![e.clone()], None, store::now())
        .await
        .expect("publish");
    assert_eq!(
        store
            .delete_subscription(sub.id, store::now())
            .await
            .expect("delete"),
        Some(1)
    );
    assert!(store.get_subscription(sub.id).await.expect("get").is_none());
    assert_eq!(
        store
            .list_subscriptions(None, 10)
            .await
            .expect("list")
            .len(),
        1
    );
    assert!(
        store
            .subscription_secrets(sub.id, store::now())
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
            .delete_subscription(sub.id, store::now())
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
            .delete_subscription(Uuid::now_v7(), store::now())
            .await
            .expect("delete")
            .is_none()
    );
}
