//! The store contract for the delivery controls, on both backends: payload filters decide in
//! the publish transaction; a paused subscription's deliveries are created and held.

use chrono::TimeDelta;
use integrations_hub::model::filter::Filter;
use integrations_hub::model::{
    self, AttemptResult, ClaimedDelivery, DeadLetterFilter, DeliveryStatus, EventFilter, StatsOf,
    SubscriptionPatch, Target, TypeMatch, rate::RateLimit,
};
use integrations_hub::store::Store;
use integrations_hub_testkit::{Backend, backend_tests};
use serde_json::json;
use uuid::Uuid;

use crate::store_contract::{claim, created, event, new_sub, open, page, record};

backend_tests!(
    a_filter_decides_in_the_publish_transaction,
    a_paused_subscription_holds_its_deliveries_until_resumed,
    circuit_notices_are_written_with_the_transition_and_published_once,
    an_ordered_key_goes_one_at_a_time_in_publish_order,
    a_rate_limit_lets_the_rate_and_the_burst_through_and_no_more,
);

/// Publishes one event of type `a` with `key`; its id.
async fn keyed(store: &dyn Store, key: Option<&str>) -> Uuid {
    let mut e = event("a", "{}");
    e.ordering_key = key.map(str::to_owned);
    let outcome = store.publish(vec![e], None, model::now());
    created(outcome.await.expect("publish"))[0].id
}

/// The events of what `claimed` holds for subscription `id`.
fn events_to(claimed: &[ClaimedDelivery], id: Uuid) -> Vec<Uuid> {
    (claimed.iter())
        .filter(|d| to_subscription(d, id))
        .map(|d| d.event_id)
        .collect()
}

fn to_subscription(d: &ClaimedDelivery, id: Uuid) -> bool {
    matches!(&d.target, Target::Webhook { subscription_id, .. } if *subscription_id == id)
}

/// How many deliveries publishing one event of `event_type` with `payload` created.
async fn deliveries(store: &dyn Store, event_type: &str, payload: &str) -> u32 {
    let outcome = store.publish(vec![event(event_type, payload)], None, model::now());
    created(outcome.await.expect("publish"))[0].deliveries
}

async fn a_filter_decides_in_the_publish_transaction(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let document = json!({"payload.total": {"$gte": 100}, "event_type": {"$ne": "order.test"}});
    let mut big = new_sub(&["order.paid", "order.test"]);
    big.subscription.filter = Some(Filter::parse(&document).expect("valid"));
    let big = store.create_subscription(big).await.expect("create");
    assert_eq!(big.filter.as_ref().map(Filter::source), Some(&document));
    let all = store
        .create_subscription(new_sub(&["order.paid"]))
        .await
        .expect("create");

    assert_eq!(
        deliveries(store.as_ref(), "order.paid", r#"{"total": 250}"#).await,
        2
    );
    assert_eq!(
        deliveries(store.as_ref(), "order.paid", r#"{"total": 99}"#).await,
        1
    );
    assert_eq!(
        deliveries(store.as_ref(), "order.paid", r#"{"other": 1}"#).await,
        1
    );
    assert_eq!(
        deliveries(store.as_ref(), "order.test", r#"{"total": 500}"#).await,
        0
    );
    let claimed = claim(store.as_ref(), "me", model::now(), 10).await;
    let to = |id: Uuid| claimed.iter().filter(|d| to_subscription(d, id)).count();
    assert_eq!(to(big.id), 1, "only the event the filter takes");
    assert_eq!(to(all.id), 3);

    // Removed: every event of its types again.
    let patch = SubscriptionPatch {
        filter: Some(None),
        ..Default::default()
    };
    let updated = store.update_subscription(big.id, patch, model::now()).await;
    assert_eq!(updated.expect("update").expect("found").filter, None);
    assert_eq!(
        deliveries(store.as_ref(), "order.paid", r#"{"total": 1}"#).await,
        2
    );
}

async fn a_paused_subscription_holds_its_deliveries_until_resumed(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let sub = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("create");
    let pause = |paused: bool| SubscriptionPatch {
        paused: Some(paused),
        ..Default::default()
    };
    assert_eq!(
        deliveries(store.as_ref(), "a", "{}").await,
        1,
        "waiting before the pause"
    );
    let paused = store.update_subscription(sub.id, pause(true), model::now());
    assert!(paused.await.expect("pause").expect("found").paused);
    assert_eq!(
        deliveries(store.as_ref(), "a", "{}").await,
        1,
        "created while paused"
    );

    // Held: not claimed, not even when their time has long come, and counted as backlog.
    let much_later = model::now() + TimeDelta::days(365);
    assert!(claim(store.as_ref(), "me", much_later, 10).await.is_empty());
    let since = model::now() - TimeDelta::hours(1);
    let stats = store.destination_stats(StatsOf::Subscription(sub.id), since);
    assert_eq!(stats.await.expect("stats").pending, 2);

    let resumed = store.update_subscription(sub.id, pause(false), model::now());
    assert!(!resumed.await.expect("resume").expect("found").paused);
    let claimed = claim(store.as_ref(), "me", model::now(), 10).await;
    assert_eq!(claimed.len(), 2, "both delivered after resuming");
}

/// The hub's events of `event_type` stored so far.
async fn hub_events(store: &dyn Store, event_type: &str) -> usize {
    let filter = EventFilter {
        event_type: Some(TypeMatch::Exact(event_type.to_owned())),
        ..Default::default()
    };
    store
        .list_events(&filter, page(100))
        .await
        .expect("list")
        .len()
}

async fn circuit_notices_are_written_with_the_transition_and_published_once(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let ops = new_sub(&["hub.circuit.opened", "hub.circuit.closed"]);
    let ops = store.create_subscription(ops).await.expect("create");
    let sub = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("create");
    for _ in 0..11 {
        deliveries(store.as_ref(), "a", "{}").await;
    }
    // Ten failures in a row open the circuit (and say so once).
    let now = model::now();
    let claimed = claim(store.as_ref(), "me", now, 10).await;
    let retry = AttemptResult::Retry(now + TimeDelta::seconds(1));
    for d in &claimed {
        let r = record(d, "me", retry, Some(sub.id));
        store.record_attempt(r, now).await.expect("record");
    }
    assert_eq!(store.publish_notices(100).await.expect("publish"), 1);
    assert_eq!(hub_events(store.as_ref(), "hub.circuit.opened").await, 1);
    assert_eq!(store.publish_notices(100).await.expect("again"), 0, "once");

    // The probe after the cool-off succeeds: closed, said once.
    let later = now + TimeDelta::minutes(1);
    let probe = claim(store.as_ref(), "me", later, 10).await;
    let probe: Vec<_> = probe
        .iter()
        .filter(|d| to_subscription(d, sub.id))
        .collect();
    assert_eq!(probe.len(), 1, "one probe");
    let r = record(probe[0], "me", AttemptResult::Succeeded, Some(sub.id));
    store.record_attempt(r, later).await.expect("record");
    assert_eq!(store.publish_notices(100).await.expect("publish"), 1);
    assert_eq!(hub_events(store.as_ref(), "hub.circuit.closed").await, 1);
    // A success on a closed circuit says nothing.
    let next = claim(store.as_ref(), "me", later, 10).await;
    let next = next
        .iter()
        .find(|d| to_subscription(d, sub.id))
        .expect("the rest");
    let r = record(next, "me", AttemptResult::Succeeded, Some(sub.id));
    store.record_attempt(r, later).await.expect("record");
    assert_eq!(store.publish_notices(100).await.expect("publish"), 0);

    // The notices were delivered like any event: the operations subscription has both.
    let ops_deliveries = store
        .subscription_deliveries(ops.id, &[], page(10))
        .await
        .expect("deliveries");
    assert_eq!(ops_deliveries.len(), 2);
}

async fn an_ordered_key_goes_one_at_a_time_in_publish_order(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let mut ordered = new_sub(&["a"]);
    ordered.subscription.ordered = true;
    let ordered = store.create_subscription(ordered).await.expect("create");
    let free = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("create");
    let k1 = [
        keyed(store.as_ref(), Some("k1")).await,
        keyed(store.as_ref(), Some("k1")).await,
    ];
    let k2 = keyed(store.as_ref(), Some("k2")).await;
    let unkeyed = keyed(store.as_ref(), None).await;
    let k1_third = keyed(store.as_ref(), Some("k1")).await;

    let now = model::now();
    let claimed = claim(store.as_ref(), "me", now, 50).await;
    let mut heads = events_to(&claimed, ordered.id);
    heads.sort();
    assert_eq!(
        heads,
        [k1[0], k2, unkeyed],
        "the head of each key, and what has none"
    );
    assert_eq!(
        events_to(&claimed, free.id).len(),
        5,
        "an unordered subscription takes all"
    );

    // The head fails and waits for its retry: its key waits with it, even when the rest is due.
    let head = claimed
        .iter()
        .find(|d| to_subscription(d, ordered.id) && d.event_id == k1[0]);
    let retry_at = now + TimeDelta::seconds(30);
    let r = record(
        head.expect("head"),
        "me",
        AttemptResult::Retry(retry_at),
        Some(ordered.id),
    );
    store.record_attempt(r, now).await.expect("record");
    assert!(events_to(&claim(store.as_ref(), "me", now, 50).await, ordered.id).is_empty());
    let again = claim(store.as_ref(), "me", retry_at, 50).await;
    assert_eq!(
        events_to(&again, ordered.id),
        [k1[0]],
        "the head again, alone"
    );

    // Dead-lettered, it no longer holds its key back: the next goes.
    let head = again.iter().find(|d| to_subscription(d, ordered.id));
    let r = record(
        head.expect("head"),
        "me",
        AttemptResult::Dead,
        Some(ordered.id),
    );
    store.record_attempt(r, retry_at).await.expect("record");
    let next = claim(store.as_ref(), "me", retry_at, 50).await;
    assert_eq!(events_to(&next, ordered.id), [k1[1]]);
    let d = next.iter().find(|d| to_subscription(d, ordered.id));
    let later = retry_at + TimeDelta::seconds(30);
    let r = record(
        d.expect("next"),
        "me",
        AttemptResult::Retry(later),
        Some(ordered.id),
    );
    store.record_attempt(r, retry_at).await.expect("record");

    // Replayed, the dead head is the head again, ahead of what of its key still waits.
    let all = DeadLetterFilter::default();
    let letters = store
        .list_dead_letters(&all, page(10))
        .await
        .expect("dead letters");
    let letter = letters
        .iter()
        .find(|l| l.event_id == k1[0])
        .expect("its dead letter");
    store
        .replay_dead_letter(letter.id, retry_at)
        .await
        .expect("replay");
    let mut order = Vec::new();
    for _ in 0..3 {
        let claimed = claim(store.as_ref(), "me", later, 50).await;
        let mine: Vec<_> = claimed
            .iter()
            .filter(|d| to_subscription(d, ordered.id))
            .collect();
        assert_eq!(mine.len(), 1, "one at a time");
        order.push(mine[0].event_id);
        let r = record(mine[0], "me", AttemptResult::Succeeded, Some(ordered.id));
        store.record_attempt(r, later).await.expect("record");
    }
    assert_eq!(order, [k1[0], k1[1], k1_third], "publish order again");
}

async fn a_rate_limit_lets_the_rate_and_the_burst_through_and_no_more(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let mut limited = new_sub(&["a"]);
    limited.subscription.rate_limit = Some(RateLimit {
        per_second: 5,
        burst: 2,
    });
    let limited = store.create_subscription(limited).await.expect("create");
    let free = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("create");
    for _ in 0..30 {
        keyed(store.as_ref(), None).await;
    }
    let start = model::now();
    let mut taken = Vec::new();
    let mut free_taken = 0;
    // Claims every 50 ms for two seconds, as several instances would.
    for step in 0..40 {
        let at = start + TimeDelta::milliseconds(50 * step);
        let claimed = claim(store.as_ref(), "me", at, 50).await;
        let n = events_to(&claimed, limited.id).len();
        taken.extend(std::iter::repeat_n(at, n));
        free_taken += events_to(&claimed, free.id).len();
    }
    assert_eq!(
        free_taken, 30,
        "the unlimited subscription took everything at once"
    );
    let at_once = taken.iter().filter(|t| **t == start).count();
    assert!(
        (1..=3).contains(&at_once),
        "at most the burst and one at once: {at_once}"
    );
    for (i, t) in taken.iter().enumerate() {
        let window = taken[i..]
            .iter()
            .take_while(|u| **u < *t + TimeDelta::seconds(1));
        assert!(
            window.count() <= 7,
            "at most 5 a second plus a burst of 2: {taken:?}"
        );
    }
    assert!(
        taken.len() >= 10,
        "and the rate is nearly reached: {}",
        taken.len()
    );
    let waiting = store.subscription_deliveries(limited.id, &[DeliveryStatus::Pending], page(100));
    let waiting = waiting.await.expect("deliveries").len();
    assert_eq!(waiting, 30 - taken.len(), "the rest waits, none dropped");
}
