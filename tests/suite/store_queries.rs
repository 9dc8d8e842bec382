//! The store contract for the visibility queries, on both backends: events by filter, a
//! subscription's deliveries, dead letters by filter (and bulk replay by the same filter).

use chrono::TimeDelta;
use integrations_hub::model::Subscription;
use integrations_hub::model::{
    self, AttemptResult, DeadLetterFilter, DeliveryCounts, DeliveryStatus, EventFilter,
    PageRequest, StatsOf, TypeMatch,
};
use integrations_hub::store::Store;
use integrations_hub_testkit::{Backend, backend_tests};
use uuid::Uuid;

use crate::store_contract::{claim, created, event, new_sub, open, page, record};

backend_tests!(
    events_are_listed_newest_first_by_every_filter,
    a_subscriptions_deliveries_show_their_latest_answer,
    dead_letters_are_filtered_and_replayed_by_the_same_filter,
    stats_count_a_windows_attempts_and_the_backlog,
    stats_read_from_rolled_up_counts_agree_with_the_attempts,
);

/// The event types of the events `filter` lists, newest first.
async fn listed(store: &dyn Store, filter: EventFilter) -> Vec<String> {
    let events = store.list_events(&filter, page(50)).await.expect("list");
    events.into_iter().map(|e| e.event_type).collect()
}

/// A subscription to `order.created` and `order.paid`, and one to `user.created`.
async fn orders_and_users(store: &dyn Store) -> (Subscription, Subscription) {
    let orders = new_sub(&["order.created", "order.paid"]);
    let orders = store.create_subscription(orders).await.expect("sub");
    let users = new_sub(&["user.created"]);
    let users = store.create_subscription(users).await.expect("sub");
    (orders, users)
}

/// Publishes one event of each type, in order; their ids.
async fn publish_each(store: &dyn Store, types: &[&str]) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for event_type in types {
        let outcome = store.publish(vec![event(event_type, "{}")], None, model::now());
        ids.push(created(outcome.await.expect("publish"))[0].id);
    }
    ids
}

async fn events_are_listed_newest_first_by_every_filter(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let (orders, _) = orders_and_users(store.as_ref()).await;
    let start = model::now();
    store
        .bind_connector("slack", &["order.paid".to_owned()], start)
        .await
        .expect("bind");
    let types = ["order.created", "order.paid", "user.created", "other"];
    let ids = publish_each(store.as_ref(), &types).await;
    let all = store
        .list_events(&EventFilter::default(), page(50))
        .await
        .expect("list");
    let types: Vec<&str> = all.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["other", "user.created", "order.paid", "order.created"]
    );
    assert_eq!(
        all[2].deliveries,
        DeliveryCounts {
            pending: 2,
            ..DeliveryCounts::default()
        },
        "order.paid: its subscription and the connector"
    );
    assert_eq!(all[0].deliveries, DeliveryCounts::default());

    let by = |filter: EventFilter| listed(store.as_ref(), filter);
    let exact = TypeMatch::Exact("order.paid".into());
    assert_eq!(
        by(EventFilter {
            event_type: Some(exact),
            ..Default::default()
        })
        .await,
        ["order.paid"]
    );
    assert_eq!(
        by(EventFilter {
            event_type: Some(TypeMatch::parse("order.*")),
            ..Default::default()
        })
        .await,
        ["order.paid", "order.created"]
    );
    assert_eq!(
        by(EventFilter {
            event_type: Some(TypeMatch::parse("order_")),
            ..Default::default()
        })
        .await,
        Vec::<String>::new(),
        "`_` is a character, not a wildcard"
    );
    assert_eq!(
        by(EventFilter {
            subscription_id: Some(orders.id),
            ..Default::default()
        })
        .await,
        ["order.paid", "order.created"]
    );
    assert_eq!(
        by(EventFilter {
            connector: Some("slack".into()),
            ..Default::default()
        })
        .await,
        ["order.paid"]
    );
    assert_eq!(
        by(EventFilter {
            delivery_status: vec![DeliveryStatus::Pending],
            ..Default::default()
        })
        .await,
        ["user.created", "order.paid", "order.created"]
    );
    // One delivery dead: only its event has a dead delivery.
    let now = model::now();
    let claimed = claim(store.as_ref(), "me", now, 1).await;
    let dead_event = claimed[0].event_id;
    store
        .record_attempt(record(&claimed[0], "me", AttemptResult::Dead, None), now)
        .await
        .expect("record");
    let dead = store
        .list_events(
            &EventFilter {
                delivery_status: vec![DeliveryStatus::Dead, DeliveryStatus::Cancelled],
                ..Default::default()
            },
            page(50),
        )
        .await
        .expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, dead_event);
    assert_eq!(dead[0].deliveries.dead, 1);
    // A time window and pages.
    let all_ids: Vec<_> = all.iter().map(|e| e.id).collect();
    let window = store
        .list_events(
            &EventFilter {
                since: Some(start - TimeDelta::seconds(1)),
                until: Some(start - TimeDelta::microseconds(1)),
                ..Default::default()
            },
            page(50),
        )
        .await
        .expect("list");
    assert!(window.is_empty(), "all were created after the window");
    let first = store
        .list_events(&EventFilter::default(), page(3))
        .await
        .expect("page");
    let rest = store
        .list_events(
            &EventFilter::default(),
            PageRequest {
                after: first.last().map(|e| e.id),
                limit: 3,
            },
        )
        .await
        .expect("next page");
    let paged: Vec<_> = first.iter().chain(&rest).map(|e| e.id).collect();
    assert_eq!(paged, all_ids);
    assert_eq!(ids.len(), 4);
}

async fn a_subscriptions_deliveries_show_their_latest_answer(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let sub = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("sub");
    let other = store
        .create_subscription(new_sub(&["a"]))
        .await
        .expect("sub");
    for _ in 0..3 {
        store
            .publish(vec![event("a", "{}")], None, model::now())
            .await
            .expect("publish");
    }
    let now = model::now();
    let retry_at = now + TimeDelta::seconds(60);
    for d in claim(store.as_ref(), "me", now, 10).await {
        let result = AttemptResult::Retry(retry_at);
        store
            .record_attempt(record(&d, "me", result, None), now)
            .await
            .expect("record");
    }
    let lines = store
        .subscription_deliveries(sub.id, &[], page(50))
        .await
        .expect("list");
    assert_eq!(lines.len(), 3, "its own deliveries only");
    assert!(lines.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    for line in &lines {
        assert_eq!(line.event_type, "a");
        assert_eq!(line.status, DeliveryStatus::Pending);
        assert_eq!(line.attempts, 1);
        assert_eq!(line.next_attempt_at, Some(retry_at));
        assert_eq!(line.last_response_status, Some(500));
        assert_eq!(line.last_error.as_deref(), Some("HTTP 500"));
    }
    assert!(
        store
            .subscription_deliveries(sub.id, &[DeliveryStatus::Dead], page(50))
            .await
            .expect("list")
            .is_empty()
    );
    let next = store
        .subscription_deliveries(
            other.id,
            &[DeliveryStatus::Pending, DeliveryStatus::Dead],
            PageRequest {
                after: None,
                limit: 2,
            },
        )
        .await
        .expect("list");
    assert_eq!(next.len(), 2);
}

async fn dead_letters_are_filtered_and_replayed_by_the_same_filter(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let (orders, users) = orders_and_users(store.as_ref()).await;
    publish_each(
        store.as_ref(),
        &["order.created", "order.paid", "user.created"],
    )
    .await;
    let now = model::now();
    for d in claim(store.as_ref(), "me", now, 10).await {
        store
            .record_attempt(record(&d, "me", AttemptResult::Dead, None), now)
            .await
            .expect("record");
    }
    let count = |filter: DeadLetterFilter| {
        let store = store.clone();
        async move {
            store
                .list_dead_letters(&filter, page(50))
                .await
                .expect("list")
                .len()
        }
    };
    assert_eq!(count(DeadLetterFilter::default()).await, 3);
    let paid = || DeadLetterFilter {
        event_type: Some(TypeMatch::parse("order.paid")),
        ..Default::default()
    };
    assert_eq!(count(paid()).await, 1);
    let order_prefix = DeadLetterFilter {
        event_type: Some(TypeMatch::parse("order.")),
        ..Default::default()
    };
    assert_eq!(count(order_prefix).await, 2);
    let of_users = DeadLetterFilter {
        subscription_id: Some(users.id),
        ..Default::default()
    };
    assert_eq!(count(of_users).await, 1);
    let later = DeadLetterFilter {
        since: Some(now + TimeDelta::seconds(1)),
        ..Default::default()
    };
    assert_eq!(count(later).await, 0);
    assert_eq!(
        store
            .replay_dead_letters(paid(), now)
            .await
            .expect("replay"),
        1,
        "the replay takes what the list shows"
    );
    let waiting = store
        .subscription_deliveries(orders.id, &[DeliveryStatus::Pending], page(50))
        .await
        .expect("list");
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].event_type, "order.paid");
}

async fn stats_count_a_windows_attempts_and_the_backlog(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let (orders, users) = orders_and_users(store.as_ref()).await;
    store
        .bind_connector("slack", &["user.created".to_owned()], model::now())
        .await
        .expect("bind");
    publish_each(
        store.as_ref(),
        &["order.created", "order.paid", "order.paid"],
    )
    .await;
    publish_each(store.as_ref(), &["user.created"]).await;
    let start = model::now();
    let retry_at = start + TimeDelta::seconds(60);
    let claimed = claim(store.as_ref(), "me", start, 10).await;
    let mut results = vec![
        AttemptResult::Succeeded,
        AttemptResult::Succeeded,
        AttemptResult::Retry(retry_at),
    ]
    .into_iter();
    for d in claimed
        .iter()
        .filter(|d| d.event_type.starts_with("order."))
    {
        let result = results.next().expect("three order deliveries");
        store
            .record_attempt(record(d, "me", result, Some(orders.id)), start)
            .await
            .expect("record");
    }
    let since = start - TimeDelta::hours(1);
    let stats = store
        .destination_stats(StatsOf::Subscription(orders.id), since)
        .await
        .expect("stats");
    assert_eq!(stats.attempts, 3);
    assert_eq!(stats.succeeded, 2);
    assert_eq!(stats.durations_ms, [12, 12, 12]);
    assert!(stats.last_success_at.is_some());
    let (_, error) = stats.last_failure.clone().expect("a failure");
    assert_eq!(error.as_deref(), Some("HTTP 500"));
    assert_eq!(stats.pending, 1, "the retried one");
    assert!(stats.oldest_pending_created_at.is_some());

    // A window after the attempts: none counted, the latest ones still known.
    let later = store
        .destination_stats(
            StatsOf::Subscription(orders.id),
            start + TimeDelta::seconds(1),
        )
        .await
        .expect("stats");
    assert_eq!((later.attempts, later.succeeded), (0, 0));
    assert!(later.durations_ms.is_empty());
    assert_eq!(later.last_success_at, stats.last_success_at);
    assert_eq!(later.pending, 1);

    // The connector's deliveries (here, through its binding), apart from the subscriptions'.
    let slack = store
        .destination_stats(StatsOf::Connector("slack"), since)
        .await
        .expect("stats");
    assert_eq!(slack.pending, 1, "{slack:?}");
    let users = store
        .destination_stats(StatsOf::Subscription(users.id), since)
        .await
        .expect("stats");
    assert_eq!(users.pending, 1);
    assert_eq!(users.attempts, 0);
}

/// Attempts spread over two days: what the statistics say for every window and destination is
/// the same before and after their 5-minute buckets are counted, and a failure found only in a
/// counted bucket is still the latest failure.
async fn stats_read_from_rolled_up_counts_agree_with_the_attempts(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let (orders, _) = orders_and_users(store.as_ref()).await;
    store
        .bind_connector("slack", &["user.created".to_owned()], model::now())
        .await
        .expect("bind");
    publish_each(store.as_ref(), &["order.paid"; 5]).await;
    publish_each(store.as_ref(), &["user.created"]).await;
    let now = model::now();
    let claimed = claim(store.as_ref(), "me", now, 10).await;
    let ago = |minutes: i64| now - TimeDelta::minutes(minutes);
    let retry = AttemptResult::Retry(now + TimeDelta::hours(1));
    let plan = [
        (ago(30 * 60), AttemptResult::Succeeded),
        (ago(30 * 60 - 10), retry),
        (ago(5 * 60), AttemptResult::Succeeded),
        (ago(5 * 60 - 1), retry),
        (ago(2), AttemptResult::Succeeded),
    ];
    let (order_deliveries, slack): (Vec<_>, Vec<_>) = claimed
        .iter()
        .partition(|d| d.event_type.starts_with("order."));
    for (d, (at, result)) in order_deliveries.iter().zip(plan) {
        let mut r = record(d, "me", result, Some(orders.id));
        r.started_at = at;
        store.record_attempt(r, now).await.expect("record");
    }
    let mut r = record(slack[0], "me", AttemptResult::Succeeded, None);
    (r.started_at, r.connector) = (ago(3 * 60), Some("slack".to_owned()));
    store.record_attempt(r, now).await.expect("record");

    let whose = [
        StatsOf::Hub,
        StatsOf::Subscription(orders.id),
        StatsOf::Connector("slack"),
    ];
    let windows = [
        TimeDelta::hours(1),
        TimeDelta::hours(24),
        TimeDelta::days(7),
    ];
    let mut before = Vec::new();
    for of in whose {
        for window in windows {
            let stats = store.destination_stats(of, now - window).await;
            before.push(stats.expect("stats"));
        }
    }
    let week: Vec<_> = before
        .iter()
        .skip(2)
        .step_by(3)
        .map(|s| s.attempts)
        .collect();
    assert_eq!(week, [6, 5, 1], "hub, orders, slack over 7 days");
    assert_eq!(
        (before[4].attempts, before[4].succeeded),
        (3, 2),
        "orders, 24 h"
    );
    assert_eq!(before[3].attempts, 1, "orders, 1 h");
    let (failed_at, _) = before[3].last_failure.clone().expect("a failure");
    assert_eq!(failed_at, ago(5 * 60 - 1));

    let counted = store.roll_up_attempts(now, 1000).await.expect("roll up");
    // 30 hours less the 10 minutes' grace, in 5-minute buckets (the first one ragged).
    assert!(
        (357..=360).contains(&counted),
        "{counted} buckets since the first attempt"
    );
    assert_eq!(store.roll_up_attempts(now, 1000).await.expect("again"), 0);
    let mut after = Vec::new();
    for of in whose {
        for window in windows {
            let stats = store.destination_stats(of, now - window).await;
            after.push(stats.expect("stats"));
        }
    }
    assert_eq!(after, before);
}
