//! The store hands new deliveries to the local engine as their event is written, leased to it
//! (`host/src/store/handoff.rs`), on both backends: what a claim would take at once, while the
//! engine has room; everything else stays `pending` for a claim.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use integrations_hub::model::{
    self, AttemptResult, ClaimedDelivery, IdempotencyKey, NewEvent, SubscriptionPatch, Target,
    TransformRef, rate::RateLimit,
};
use integrations_hub::store::{DestinationReads, Handoff, Reserved, Store};
use integrations_hub_testkit::{Backend, backend_tests};
use uuid::Uuid;

use crate::store_contract::{claim, created, event, new_sub, open, record};

backend_tests!(
    new_deliveries_are_handed_to_the_engine_leased_or_left_pending,
    remembered_destinations_are_checked_by_each_publish,
);

/// An engine as the store sees it, with room for `room` more deliveries.
#[derive(Debug, Default)]
struct Engine {
    room: AtomicUsize,
    started: Arc<Mutex<Vec<ClaimedDelivery>>>,
}

const OWNER: &str = "engine";

impl Handoff for Engine {
    fn owner(&self) -> &str {
        OWNER
    }

    fn lease_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + TimeDelta::seconds(30)
    }

    fn reserve(&self, _subscription: Uuid) -> Option<Box<dyn Reserved>> {
        (self.room)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()?;
        Some(Box::new(Seat(self.started.clone())))
    }
}

/// A seat reserved in an [`Engine`]: started, its delivery joins the engine's list.
struct Seat(Arc<Mutex<Vec<ClaimedDelivery>>>);

impl Reserved for Seat {
    fn start(self: Box<Self>, delivery: ClaimedDelivery) {
        self.0.lock().expect("lock").push(delivery);
    }
}

fn subscription_of(d: &ClaimedDelivery) -> Option<Uuid> {
    match &d.target {
        Target::Webhook {
            subscription_id, ..
        } => Some(*subscription_id),
        Target::Connector { .. } => None,
    }
}

/// The subscriptions of `claimed`'s webhook deliveries, sorted.
fn subscriptions(claimed: &[ClaimedDelivery]) -> Vec<Uuid> {
    sorted(claimed.iter().filter_map(subscription_of).collect())
}

fn keyed(key: &str) -> NewEvent {
    NewEvent {
        ordering_key: Some(key.into()),
        ..event("a", r#"{"n":1}"#)
    }
}

async fn new_deliveries_are_handed_to_the_engine_leased_or_left_pending(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let now = model::now();
    // Taken at once: a plain subscription (with a transform), and one whose filter passes.
    let mut plain = new_sub(&["a"]);
    plain.subscription.transform = Some(TransformRef {
        name: "reshape".into(),
        settings: [("k".to_owned(), "v".to_owned())].into(),
    });
    let plain = store.create_subscription(plain).await.expect("plain");
    let mut filtered = new_sub(&["a"]);
    filtered.subscription.filter =
        Some(model::filter::Filter::parse(&serde_json::json!({"payload.n": 1})).expect("filter"));
    let filtered = store.create_subscription(filtered).await.expect("filtered");
    // Left for a claim: paused, ordered (its key may have earlier work), rate limited, and a
    // connector.
    let mut paused = new_sub(&["a"]);
    paused.subscription.paused = true;
    store.create_subscription(paused).await.expect("paused");
    let mut ordered = new_sub(&["a"]);
    ordered.subscription.ordered = true;
    let ordered = store.create_subscription(ordered).await.expect("ordered");
    let mut limited = new_sub(&["a"]);
    limited.subscription.rate_limit = Some(RateLimit {
        per_second: 5,
        burst: 2,
    });
    let limited = store.create_subscription(limited).await.expect("limited");
    store
        .bind_connector("slack", &["a".to_owned()], now)
        .await
        .expect("bind");

    // Without an engine, nothing is handed: what a claim reads is the reference.
    let first = created(
        store
            .publish(vec![keyed("k")], None, model::now())
            .await
            .expect("publish"),
    );
    assert_eq!((first[0].deliveries, first[0].started), (6, 0));
    let reference = claim(store.as_ref(), "reference", model::now(), 10).await;
    let plain_ref = (reference.iter())
        .find(|d| subscription_of(d) == Some(plain.id))
        .expect("the plain subscription's delivery is claimed")
        .clone();
    for d in &reference {
        store
            .record_attempt(
                record(d, "reference", AttemptResult::Succeeded, subscription_of(d)),
                model::now(),
            )
            .await
            .expect("record");
    }

    let engine = Arc::new(Engine {
        room: AtomicUsize::new(10),
        ..Engine::default()
    });
    store.hand_off_to(Some(engine.clone()));
    // Once without an idempotency key (PostgreSQL's one-statement publish), once with one (a
    // transaction on both backends).
    let key = IdempotencyKey {
        key: "handed".into(),
        fingerprint: "f".into(),
    };
    let mut handed = Vec::new();
    for key in [None, Some(key)] {
        let e = keyed("k");
        let published = created(
            store
                .publish(vec![e.clone()], key, model::now())
                .await
                .expect("publish"),
        );
        assert_eq!((published[0].deliveries, published[0].started), (6, 2));
        let started: Vec<ClaimedDelivery> =
            std::mem::take(&mut *engine.started.lock().expect("lock"));
        assert_eq!(
            subscriptions(&started),
            sorted(vec![plain.id, filtered.id]),
            "only the plain and the filtered subscription are handed"
        );
        let d = (started.iter())
            .find(|d| subscription_of(d) == Some(plain.id))
            .expect("plain");
        // What the engine gets is what a claim would have read.
        assert_eq!(
            (&d.event_id, &d.event_type, &d.payload, d.attempts),
            (&e.id, &e.event_type, &e.payload, 0)
        );
        assert_eq!(d.event_created_at, e.created_at);
        let (
            Target::Webhook {
                url,
                headers,
                secrets,
                transform,
                ..
            },
            Target::Webhook {
                url: url_ref,
                headers: headers_ref,
                secrets: secrets_ref,
                transform: transform_ref,
                ..
            },
        ) = (&d.target, &plain_ref.target)
        else {
            panic!("webhook targets: {d:?}");
        };
        assert_eq!(
            (url, headers, secrets, transform),
            (url_ref, headers_ref, secrets_ref, transform_ref)
        );
        assert_eq!(secrets, &["first-secret-0123456789".to_owned()]);
        handed.extend(started);
    }
    assert_eq!(engine.room.load(Ordering::Acquire), 6, "a seat each");

    // Leased to the engine: another instance's claim passes them by and takes the rest (the
    // ordered subscription's head of key, the rate-limited one's first, the connector's).
    let other = claim(store.as_ref(), "other", model::now(), 50).await;
    let handed_ids: Vec<Uuid> = handed.iter().map(|d| d.id).collect();
    assert!(
        other.iter().all(|d| !handed_ids.contains(&d.id)),
        "handed deliveries are leased: {other:?}"
    );
    assert!(subscriptions(&other).contains(&ordered.id));
    assert!(subscriptions(&other).contains(&limited.id));
    assert!(other.iter().any(|d| subscription_of(d).is_none()));
    // The engine's lease is a lease: its record moves the delivery, and the rest go back to
    // `pending` when it lets go.
    let moved = store
        .record_attempt(
            record(
                &handed[0],
                OWNER,
                AttemptResult::Succeeded,
                subscription_of(&handed[0]),
            ),
            model::now(),
        )
        .await
        .expect("record");
    assert!(moved, "recorded under the engine's lease");
    assert_eq!(
        store
            .release_leases(OWNER, model::now())
            .await
            .expect("release"),
        3
    );
    let back = claim(store.as_ref(), "other", model::now(), 50).await;
    let back_ids: Vec<Uuid> = back.iter().map(|d| d.id).collect();
    assert!(handed_ids[1..].iter().all(|id| back_ids.contains(id)));

    // No room: nothing handed. No engine: the same.
    engine.room.store(0, Ordering::Release);
    assert_eq!(publish_one(store.as_ref()).await, (6, 0));
    engine.room.store(10, Ordering::Release);
    store.hand_off_to(None);
    assert_eq!(publish_one(store.as_ref()).await, (6, 0));
    assert!(engine.started.lock().expect("lock").is_empty());
}

/// A publish on PostgreSQL writes with the destinations an earlier one read, checked by its own
/// statement (`host/src/store/remembered.rs`): every change a publish must see is seen by the
/// next one, which then reads them again; an unchanged publish reads nothing. SQLite always reads.
async fn remembered_destinations_are_checked_by_each_publish(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let engine = Arc::new(Engine {
        room: AtomicUsize::new(1000),
        ..Engine::default()
    });
    store.hand_off_to(Some(engine.clone()));
    let sub = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("sub");
    let t0 = model::now();
    // One publish: its deliveries, how many were handed, the handed one's url and secrets, and
    // whether it read the destinations.
    let publish = |at: DateTime<Utc>| {
        let (store, engine) = (store.clone(), engine.clone());
        async move {
            let before = store.destination_reads();
            // Due at once: published no earlier than its event was made.
            let e = event("a", r#"{"n":1}"#);
            let outcome = store.publish(vec![e], None, at.max(model::now()));
            let published = created(outcome.await.expect("publish"));
            let started: Vec<ClaimedDelivery> =
                std::mem::take(&mut *engine.started.lock().expect("lock"));
            let sent = started.iter().find_map(|d| match &d.target {
                Target::Webhook { url, secrets, .. } => Some((url.clone(), secrets.clone())),
                Target::Connector { .. } => None,
            });
            let after = store.destination_reads();
            let read = match backend {
                Backend::Postgres => {
                    let diff = (
                        after.remembered - before.remembered,
                        after.read - before.read,
                    );
                    assert!(
                        matches!(diff, (1, 0) | (0, 1)),
                        "one way or the other: {diff:?}"
                    );
                    diff.1 == 1
                }
                Backend::Sqlite => {
                    assert_eq!(after, DestinationReads::default(), "SQLite reads each time");
                    true
                }
            };
            (published[0].deliveries, published[0].started, sent, read)
        }
    };
    let secrets = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let first = secrets(&["first-secret-0123456789"]);
    let postgres = backend == Backend::Postgres;

    assert_eq!(
        publish(t0).await,
        (1, 1, Some((sub.url.clone(), first.clone())), true)
    );
    // Nothing changed: on PostgreSQL, nothing read.
    for _ in 0..3 {
        assert_eq!(
            publish(t0).await,
            (1, 1, Some((sub.url.clone(), first.clone())), !postgres)
        );
    }

    // Each change is seen by the next publish, which reads; the one after it reads nothing.
    let change = |patch: SubscriptionPatch| {
        let store = store.clone();
        async move {
            (store.update_subscription(sub.id, patch, t0).await)
                .expect("update")
                .expect("exists")
        }
    };
    let url = format!("{}/moved", sub.url);
    change(SubscriptionPatch {
        url: Some(url.clone()),
        ..Default::default()
    })
    .await;
    let moved = Some((url.clone(), first.clone()));
    assert_eq!(publish(t0).await, (1, 1, moved.clone(), true));
    assert_eq!(publish(t0).await, (1, 1, moved, !postgres));

    change(SubscriptionPatch {
        secret: Some("second-secret-0123456789".into()),
        ..Default::default()
    })
    .await;
    let both = secrets(&["second-secret-0123456789", "first-secret-0123456789"]);
    assert_eq!(
        publish(t0).await,
        (1, 1, Some((url.clone(), both.clone())), true)
    );
    assert_eq!(
        publish(t0).await,
        (1, 1, Some((url.clone(), both)), !postgres)
    );
    // Time alone changes them: past the grace period the old secret is gone.
    let later = t0 + model::SECRET_GRACE + TimeDelta::seconds(1);
    let second = secrets(&["second-secret-0123456789"]);
    assert_eq!(
        publish(later).await,
        (1, 1, Some((url.clone(), second.clone())), true)
    );

    change(SubscriptionPatch {
        paused: Some(true),
        ..Default::default()
    })
    .await;
    assert_eq!(publish(later).await, (1, 0, None, true), "held, not handed");
    assert_eq!(publish(later).await, (1, 0, None, !postgres));
    change(SubscriptionPatch {
        paused: Some(false),
        ..Default::default()
    })
    .await;
    let resumed = Some((url.clone(), second));
    assert_eq!(publish(later).await, (1, 1, resumed.clone(), true));

    let other = store
        .create_subscription(new_sub(&["*"]))
        .await
        .expect("other");
    assert_eq!(
        publish(later).await.0,
        2,
        "a new subscription gets the next event"
    );
    store
        .bind_connector("slack", &["a".to_owned()], later)
        .await
        .expect("bind");
    assert_eq!(publish(later).await.0, 3, "so does a bound connector");
    assert_eq!(publish(later).await.3, !postgres);
    store
        .delete_subscription(other.id, later)
        .await
        .expect("delete")
        .expect("existed");
    assert_eq!(
        publish(later).await.0,
        2,
        "a deleted subscription gets nothing more"
    );
    change(SubscriptionPatch {
        enabled: Some(false),
        ..Default::default()
    })
    .await;
    let (deliveries, started, _, read) = publish(later).await;
    assert_eq!(
        (deliveries, started, read),
        (1, 0, true),
        "disabled: the connector's only"
    );
    change(SubscriptionPatch {
        enabled: Some(true),
        ..Default::default()
    })
    .await;
    assert_eq!(publish(later).await.0, 2);
}

/// Publishes one event of type `a`: its deliveries, and how many were handed over.
async fn publish_one(store: &dyn Store) -> (u32, u32) {
    let outcome = store.publish(vec![event("a", r#"{"n":1}"#)], None, model::now());
    let published = created(outcome.await.expect("publish"));
    (published[0].deliveries, published[0].started)
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}
