//! Rows to domain types, written once for both backends over [`DbRow`].

use super::plan::decode_headers;
use super::sql::DbRow;
use super::{StoreError, StoreResult};
use crate::model::{
    AttemptView, Circuit, CircuitState, ClaimedDelivery, ConnectorBinding, DeadLetter,
    DeliveryStatus, DeliverySummary, Destination, PublishedEvent, Subscription, Target,
};

/// The columns [`subscription`] reads.
macro_rules! subscription_columns {
    () => {
        "id, url, description, events, CAST(headers AS TEXT) AS headers, enabled, circuit_state, \
         consecutive_failures, created_at, updated_at"
    };
}
pub(super) use subscription_columns;

/// The columns [`destination`] reads (a delivery `d` joined with its subscription `s`).
macro_rules! destination_columns {
    () => {
        "d.kind, d.subscription_id, s.url, d.connector"
    };
}
pub(super) use destination_columns;

pub(super) fn circuit_state(raw: &str) -> StoreResult<CircuitState> {
    CircuitState::parse(raw)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown circuit state {raw:?}")))
}

pub(super) fn subscription(row: &impl DbRow) -> StoreResult<Subscription> {
    Ok(Subscription {
        id: row.uuid("id")?,
        url: row.text("url")?,
        events: row.names("events")?,
        enabled: row.bool("enabled")?,
        description: row.opt_text("description")?,
        headers: decode_headers(&row.text("headers")?)?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        circuit: Circuit {
            state: circuit_state(&row.text("circuit_state")?)?,
            consecutive_failures: row.count("consecutive_failures")?,
        },
    })
}

pub(super) fn destination(row: &impl DbRow) -> StoreResult<Destination> {
    let kind = row.text("kind")?;
    match (
        kind.as_str(),
        row.opt_uuid("subscription_id")?,
        row.opt_text("connector")?,
    ) {
        ("webhook", Some(subscription_id), _) => Ok(Destination::Webhook {
            subscription_id,
            url: row.opt_text("url")?.unwrap_or_default(),
        }),
        ("connector", _, Some(connector)) => Ok(Destination::Connector { connector }),
        (other, _, _) => Err(StoreError::Corrupt(format!(
            "delivery of kind {other:?} without its target"
        ))),
    }
}

pub(super) fn connector_binding(row: &impl DbRow) -> StoreResult<ConnectorBinding> {
    Ok(ConnectorBinding {
        name: row.text("name")?,
        events: row.names("events")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        pending: row.int("pending")?.max(0) as u64,
    })
}

pub(super) fn published_event(row: &impl DbRow) -> StoreResult<PublishedEvent> {
    Ok(PublishedEvent {
        id: row.uuid("id")?,
        event_type: row.text("event_type")?,
        created_at: row.time("created_at")?,
        deliveries: row.count("deliveries")?,
    })
}

pub(super) fn delivery_summary(row: &impl DbRow) -> StoreResult<DeliverySummary> {
    let raw = row.text("status")?;
    let status = DeliveryStatus::parse(&raw)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery status {raw:?}")))?;
    Ok(DeliverySummary {
        id: row.uuid("id")?,
        destination: destination(row)?,
        status,
        attempts: row.count("attempts")?,
        next_attempt_at: match status {
            DeliveryStatus::Pending => Some(row.time("next_attempt_at")?),
            _ => None,
        },
        last_error: row.opt_text("last_error")?,
        updated_at: row.time("updated_at")?,
    })
}

pub(super) fn attempt_view(row: &impl DbRow) -> StoreResult<AttemptView> {
    Ok(AttemptView {
        id: row.uuid("id")?,
        event_id: row.uuid("event_id")?,
        delivery_id: row.uuid("delivery_id")?,
        destination: destination(row)?,
        attempt: row.count("attempt")?,
        succeeded: row.text("outcome")? == "succeeded",
        response_status: row.opt_int("response_status")?.map(|s| s as u16),
        response_body: row.opt_text("response_body")?,
        error: row.opt_text("error")?,
        duration_ms: row.int("duration_ms")?.max(0) as u64,
        started_at: row.time("started_at")?,
    })
}

pub(super) fn dead_letter(row: &impl DbRow) -> StoreResult<DeadLetter> {
    Ok(DeadLetter {
        id: row.uuid("id")?,
        event_id: row.uuid("event_id")?,
        delivery_id: row.uuid("delivery_id")?,
        destination: destination(row)?,
        attempts: row.count("attempts")?,
        last_error: row.opt_text("last_error")?,
        created_at: row.time("created_at")?,
        replayed_at: row.opt_time("replayed_at")?,
    })
}

/// A claimed delivery (columns of a claim: the delivery, its event, its subscription's `url`
/// and `headers`) with its subscription's valid secrets, newest first.
pub(super) fn claimed(row: &impl DbRow, secrets: Vec<String>) -> StoreResult<ClaimedDelivery> {
    let target = match destination(row)? {
        Destination::Webhook {
            subscription_id,
            url,
        } => Target::Webhook {
            subscription_id,
            url,
            headers: decode_headers(&row.opt_text("headers")?.ok_or_else(|| {
                StoreError::Corrupt("webhook delivery without its subscription".into())
            })?)?,
            secrets,
        },
        Destination::Connector { connector } => Target::Connector { name: connector },
    };
    Ok(ClaimedDelivery {
        id: row.uuid("id")?,
        event_id: row.uuid("event_id")?,
        event_type: row.text("event_type")?,
        event_created_at: row.time("event_created_at")?,
        payload: row.text("payload")?,
        attempts: row.count("attempts")?,
        target,
    })
}
