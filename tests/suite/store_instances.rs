//! The store contract for connector instances, on both backends: created once per name,
//! listed, changed, deleted only when unused; a subscription to one is claimed only where its
//! component is loaded, and carries the instance's settings to the attempt.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use integrations_hub::model::{
    self, Claim, ConnectorInstance, Destination, InstanceDeletion, Settings, Skip, Target,
};
use integrations_hub_testkit::{Backend, backend_tests};
use uuid::Uuid;

use crate::store_contract::{created, event, new_sub, open};

backend_tests!(
    instances_are_unique_per_name_changed_and_deleted_only_when_unused,
    an_instance_subscription_is_claimed_where_its_component_is_loaded,
);

fn instance(name: &str, settings: &[(&str, &str)]) -> ConnectorInstance {
    let now = model::now();
    ConnectorInstance {
        id: Uuid::now_v7(),
        connector: "slack".into(),
        name: name.into(),
        settings: Settings(
            settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        created_at: now,
        updated_at: now,
    }
}

async fn instances_are_unique_per_name_changed_and_deleted_only_when_unused(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let alerts = instance("alerts", &[("bot_token", "t1"), ("default_channel", "#a")]);
    let stored = store
        .create_connector_instance(alerts.clone())
        .await
        .expect("create")
        .expect("created");
    assert_eq!(stored, alerts);
    let twin = instance("alerts", &[]);
    assert!(
        store
            .create_connector_instance(twin)
            .await
            .expect("create")
            .is_none(),
        "one live instance per name"
    );
    let mut other = instance("alerts", &[]);
    other.connector = "discord".into();
    store
        .create_connector_instance(other)
        .await
        .expect("create")
        .expect("the same name under another connector");
    store
        .create_connector_instance(instance("billing", &[]))
        .await
        .expect("create")
        .expect("created");
    let names: Vec<String> = store
        .connector_instances("slack")
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["alerts", "billing"]);
    assert_eq!(
        store
            .connector_instance("slack", "alerts")
            .await
            .expect("get"),
        Some(alerts.clone())
    );
    assert_eq!(
        store
            .connector_instance("slack", "nope")
            .await
            .expect("get"),
        None
    );

    let later = alerts.created_at + TimeDelta::seconds(1);
    let settings = BTreeMap::from([("bot_token".to_owned(), "t2".to_owned())]);
    let changed = store
        .update_connector_instance(alerts.id, &settings, later)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(changed.settings.0, settings);
    assert_eq!(changed.updated_at, later);
    assert_eq!(changed.created_at, alerts.created_at);
    assert!(
        store
            .update_connector_instance(Uuid::now_v7(), &settings, later)
            .await
            .expect("update")
            .is_none()
    );

    let mut sub = new_sub(&["a"]);
    sub.subscription.instance = Some(alerts.reference());
    sub.subscription.url = String::new();
    sub.secret = None;
    let sub = store.create_subscription(sub).await.expect("subscribe");
    assert_eq!(sub.instance, Some(alerts.reference()));
    assert_eq!(
        store.get_subscription(sub.id).await.expect("get"),
        Some(sub.clone())
    );
    assert!(
        store
            .subscription_secrets(sub.id, later)
            .await
            .expect("secrets")
            .is_empty(),
        "nothing is signed for a connector"
    );
    let delete = || async {
        let deleted = store.delete_connector_instance(alerts.id, later).await;
        deleted.expect("delete")
    };
    assert_eq!(delete().await, InstanceDeletion::InUse(vec![sub.id]));
    store
        .delete_subscription(sub.id, later)
        .await
        .expect("delete subscription")
        .expect("existed");
    assert_eq!(delete().await, InstanceDeletion::Deleted);
    assert_eq!(delete().await, InstanceDeletion::NotFound);
    assert_eq!(
        store
            .connector_instance("slack", "alerts")
            .await
            .expect("get"),
        None
    );
    store
        .create_connector_instance(instance("alerts", &[]))
        .await
        .expect("create")
        .expect("the name is free again");
}

async fn an_instance_subscription_is_claimed_where_its_component_is_loaded(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let alerts = instance("alerts", &[("bot_token", "t1")]);
    store
        .create_connector_instance(alerts.clone())
        .await
        .expect("create")
        .expect("created");
    let mut sub = new_sub(&["a"]);
    sub.subscription.instance = Some(alerts.reference());
    sub.subscription.url = String::new();
    sub.secret = None;
    let sub = store.create_subscription(sub).await.expect("subscribe");
    let e = event("a", "{}");
    let published = created(
        store
            .publish(vec![e.clone()], None, model::now())
            .await
            .expect("publish"),
    );
    assert_eq!(published[0].deliveries, 1);
    let detail = store.get_event(e.id).await.expect("get").expect("event");
    assert_eq!(
        detail.deliveries[0].destination,
        Destination::Instance {
            subscription_id: sub.id,
            connector: "slack".into(),
            instance: "alerts".into(),
        }
    );

    let now = model::now();
    let claim = |loaded: Vec<String>, running: Vec<String>| {
        let store = store.clone();
        async move {
            store
                .claim_deliveries(Claim {
                    owner: "me",
                    now,
                    lease_until: now + TimeDelta::seconds(30),
                    limit: 10,
                    skip: &Skip::default(),
                    connectors: &running,
                    loaded: &loaded,
                })
                .await
                .expect("claim")
        }
    };
    assert!(
        claim(vec!["other".into()], vec!["slack".into()])
            .await
            .is_empty(),
        "its component is not loaded here (running the default instance is not enough)"
    );
    // Nobody has it: it is deferred, saying why, without spending an attempt.
    let until = now + TimeDelta::seconds(5);
    let deferred = store
        .defer_waiting_connectors(now - TimeDelta::seconds(10), until, now)
        .await
        .expect("defer");
    assert_eq!(deferred, 1);
    let waiting = store.get_event(e.id).await.expect("get").expect("event");
    assert_eq!(waiting.deliveries[0].attempts, 0);
    assert!(
        waiting.deliveries[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .starts_with("waiting"),
        "{waiting:?}"
    );
    // Loaded (its default instance inactive): claimed once due, with the instance's settings.
    store
        .report_connectors("other-hub", &[("slack".to_owned(), false)], now)
        .await
        .expect("report");
    let claimed = store
        .claim_deliveries(Claim {
            owner: "me",
            now: until,
            lease_until: until + TimeDelta::seconds(30),
            limit: 10,
            skip: &Skip::default(),
            connectors: &[],
            loaded: &["slack".to_owned()],
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    match &claimed[0].target {
        Target::Connector {
            name,
            instance: Some(target),
        } => {
            assert_eq!(name, "slack");
            assert_eq!(target.id, alerts.id);
            assert_eq!(target.subscription_id, sub.id);
            assert_eq!(target.settings, alerts.settings);
        }
        other => panic!("an instance target expected, got {other:?}"),
    }
}
