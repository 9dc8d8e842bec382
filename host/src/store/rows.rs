//! Rows to domain types, written once for both backends over [`DbRow`].

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::plan::{Direct, decode_strings};
use super::seal::Keyring;
use super::sql::DbRow;
use super::{StoreError, StoreResult};
use crate::model::filter::Filter;
use crate::model::notice::Notice;
use crate::model::rate::RateLimit;
use crate::model::{
    AttemptOutcome, AttemptView, Circuit, CircuitState, ClaimedDelivery, ConnectorBinding,
    ConnectorInstance, ConnectorReport, DeadLetter, DeliveryCounts, DeliveryLine, DeliveryStatus,
    DeliverySummary, Destination, EventSummary, InstanceRef, InstanceTarget, PublishedEvent,
    ReportKind, Settings, Subscription, Target, TransformRef,
};

/// `Ok($ty { .. })` from `$row`: each field named alone is read from the column of its name, as
/// its type ([`super::sql::Column`]); `field = expr` takes the value given.
macro_rules! decode {
    ($row:ident => $ty:ident { $($field:ident $(= $value:expr)?),* $(,)? }) => {
        Ok($ty { $($field: decode!(@field $row, $field $(, $value)?),)* })
    };
    (@field $row:ident, $field:ident) => {
        $row.get(stringify!($field))?
    };
    (@field $row:ident, $field:ident, $value:expr) => {
        $value
    };
}

/// The columns [`subscription`] reads.
macro_rules! subscription_columns {
    () => {
        "id, url, description, events, CAST(headers AS TEXT) AS headers, enabled, paused, filter, \
         transform, ordered, rate_per_second, rate_burst, circuit_state, \
         consecutive_failures, created_at, updated_at, instance_id, \
         (SELECT ci.connector FROM connector_instances ci WHERE ci.id = subscriptions.instance_id) \
           AS instance_connector, \
         (SELECT ci.name FROM connector_instances ci WHERE ci.id = subscriptions.instance_id) \
           AS instance_name"
    };
}
pub(super) use subscription_columns;

/// The columns [`destination`] reads (a delivery `d` joined with its subscription `s`).
macro_rules! destination_columns {
    () => {
        "d.kind, d.subscription_id, s.url, d.connector, \
         (SELECT ci.connector FROM connector_instances ci WHERE ci.id = s.instance_id) \
           AS instance_connector, \
         (SELECT ci.name FROM connector_instances ci WHERE ci.id = s.instance_id) AS instance_name"
    };
}
pub(super) use destination_columns;

/// `SELECT … FROM` attempts with their destinations, the columns [`attempt_view`] reads; the
/// caller adds `WHERE` and `ORDER BY`.
macro_rules! attempt_views {
    () => {
        concat!(
            "SELECT a.id, a.event_id, a.delivery_id, ",
            destination_columns!(),
            ", a.attempt, a.outcome, a.response_status, a.response_body, a.error, \
             a.duration_ms, a.started_at, a.reported, a.external_id, a.retry_after_ms, a.body_sha256 \
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
             LEFT JOIN subscriptions s ON s.id = d.subscription_id"
        )
    };
}
pub(super) use attempt_views;

pub(super) fn circuit_state(raw: &str) -> StoreResult<CircuitState> {
    CircuitState::parse(raw)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown circuit state {raw:?}")))
}

pub(super) fn subscription(row: &impl DbRow) -> StoreResult<Subscription> {
    let circuit = Circuit {
        state: circuit_state(&row.text("circuit_state")?)?,
        consecutive_failures: row.count("consecutive_failures")?,
    };
    let headers = decode_strings(&row.text("headers")?)?;
    decode!(row => Subscription {
        id, url, instance = instance(row)?, events, enabled, description, headers = headers,
        filter = filter(row.opt_text("filter")?)?, paused, ordered,
        rate_limit = rate_limit(row)?, transform = transform(row)?, created_at, updated_at,
        circuit = circuit,
    })
}

/// A subscription row's rate limit (`rate_per_second`, `rate_burst`), if it has one.
pub(super) fn rate_limit(row: &impl DbRow) -> StoreResult<Option<RateLimit>> {
    let Some(per_second) = row.opt_int("rate_per_second")? else {
        return Ok(None);
    };
    Ok(Some(RateLimit {
        per_second: per_second.clamp(1, i64::from(u32::MAX)) as u32,
        burst: row
            .opt_int("rate_burst")?
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32,
    }))
}

/// A stored filter (validated when it was set).
pub(super) fn filter(text: Option<String>) -> StoreResult<Option<Filter>> {
    text.map(|t| Filter::from_json(&t))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("a stored filter does not parse: {e}")))
}

/// A subscription row's transform (`transform`, JSON), if it has one.
pub(super) fn transform(row: &impl DbRow) -> StoreResult<Option<TransformRef>> {
    row.opt_text("transform")?
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("a stored transform does not parse: {e}")))
}

/// The connector instance a subscription row names (`instance_id`, `instance_connector`,
/// `instance_name`), if any.
fn instance(row: &impl DbRow) -> StoreResult<Option<InstanceRef>> {
    let Some(id) = row.opt_uuid("instance_id")? else {
        return Ok(None);
    };
    Ok(Some(InstanceRef {
        id,
        connector: row.opt_text("instance_connector")?.unwrap_or_default(),
        name: row.opt_text("instance_name")?.unwrap_or_default(),
    }))
}

pub(super) fn connector_instance(row: &impl DbRow) -> StoreResult<ConnectorInstance> {
    let settings = Settings(decode_strings(&row.text("settings")?)?);
    decode!(row => ConnectorInstance {
        id, connector, name, settings = settings, created_at, updated_at,
    })
}

pub(super) fn destination(row: &impl DbRow) -> StoreResult<Destination> {
    let kind = row.text("kind")?;
    match (
        kind.as_str(),
        row.opt_uuid("subscription_id")?,
        row.opt_text("connector")?,
    ) {
        ("webhook", Some(subscription_id), _) => match row.opt_text("instance_connector")? {
            Some(connector) => Ok(Destination::Instance {
                subscription_id,
                connector,
                instance: row.opt_text("instance_name")?.unwrap_or_default(),
            }),
            None => Ok(Destination::Webhook {
                subscription_id,
                url: row.opt_text("url")?.unwrap_or_default(),
            }),
        },
        ("connector", _, Some(connector)) => Ok(Destination::Connector { connector }),
        (other, _, _) => Err(StoreError::Corrupt(format!(
            "delivery of kind {other:?} without its target"
        ))),
    }
}

pub(super) fn connector_binding(row: &impl DbRow) -> StoreResult<ConnectorBinding> {
    decode!(row => ConnectorBinding { name, events, created_at, updated_at, pending })
}

pub(super) fn published_event(row: &impl DbRow) -> StoreResult<PublishedEvent> {
    decode!(row => PublishedEvent { id, event_type, created_at, deliveries, started = 0 })
}

pub(super) fn delivery_status(raw: &str) -> StoreResult<DeliveryStatus> {
    DeliveryStatus::parse(raw)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery status {raw:?}")))
}

/// A delivery's status, and when its next attempt is due if it is pending.
fn status_and_next(row: &impl DbRow) -> StoreResult<(DeliveryStatus, Option<DateTime<Utc>>)> {
    let status = delivery_status(&row.text("status")?)?;
    let next_attempt_at = match status {
        DeliveryStatus::Pending => Some(row.time("next_attempt_at")?),
        _ => None,
    };
    Ok((status, next_attempt_at))
}

pub(super) fn event_summary(row: &impl DbRow) -> StoreResult<EventSummary> {
    decode!(row => EventSummary { id, event_type, created_at, deliveries = DeliveryCounts::default() })
}

pub(super) fn delivery_line(row: &impl DbRow) -> StoreResult<DeliveryLine> {
    let (status, next_attempt_at) = status_and_next(row)?;
    decode!(row => DeliveryLine {
        id, event_id, event_type, status = status, attempts, next_attempt_at = next_attempt_at,
        last_error, last_response_status, created_at, updated_at,
    })
}

pub(super) fn delivery_summary(row: &impl DbRow) -> StoreResult<DeliverySummary> {
    let (status, next_attempt_at) = status_and_next(row)?;
    decode!(row => DeliverySummary {
        id, destination = destination(row)?, status = status, attempts,
        next_attempt_at = next_attempt_at, last_error, updated_at,
    })
}

pub(super) fn attempt_view(row: &impl DbRow) -> StoreResult<AttemptView> {
    let outcome = match row.text("outcome")?.as_str() {
        "succeeded" => AttemptOutcome::Succeeded,
        _ => AttemptOutcome::Failed,
    };
    decode!(row => AttemptView {
        id, event_id, delivery_id, destination = destination(row)?, attempt, outcome = outcome,
        response_status, response_body, error, duration_ms, started_at, report = report(row)?,
        body_sha256,
    })
}

/// What the connector reported of an attempt (`reported`, `external_id`, `retry_after_ms`).
fn report(row: &impl DbRow) -> StoreResult<Option<ConnectorReport>> {
    let Some(kind) = row.opt_text("reported")? else {
        return Ok(None);
    };
    let kind = ReportKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown connector report {kind:?}")))?;
    Ok(Some(ConnectorReport {
        kind,
        external_id: row.opt_text("external_id")?,
        retry_after_ms: row.opt_int("retry_after_ms")?.map(|ms| ms.max(0) as u64),
    }))
}

pub(super) fn dead_letter(row: &impl DbRow) -> StoreResult<DeadLetter> {
    decode!(row => DeadLetter {
        id, event_id, event_type, delivery_id, destination = destination(row)?, attempts, last_error,
        created_at, replayed_at,
    })
}

/// A claimed delivery (columns of a claim: the delivery, its event, its subscription's `url`
/// and `headers`) with its subscription's valid secrets as stored (`key_id:text`), newest first.
pub(super) fn claimed(
    row: &impl DbRow,
    keyring: &Keyring,
    secrets: Vec<String>,
) -> StoreResult<ClaimedDelivery> {
    let target = match destination(row)? {
        Destination::Webhook {
            subscription_id,
            url,
        } => Target::Webhook {
            secrets: secrets
                .iter()
                .map(|s| keyring.open_joined(subscription_id, s))
                .collect::<StoreResult<_>>()?,
            subscription_id,
            url,
            headers: decode_strings(&row.opt_text("headers")?.ok_or_else(|| {
                StoreError::Corrupt("webhook delivery without its subscription".into())
            })?)?,
            transform: transform(row)?,
        },
        Destination::Connector { connector } => Target::Connector {
            name: connector,
            instance: None,
        },
        Destination::Instance {
            subscription_id,
            connector,
            ..
        } => Target::Connector {
            name: connector,
            instance: Some(InstanceTarget {
                subscription_id,
                id: row.uuid("instance_id")?,
                settings: Settings(decode_strings(&row.text("instance_settings")?)?),
            }),
        },
    };
    decode!(row => ClaimedDelivery {
        id, event_id, event_type, event_created_at, payload, attempts, target = target,
        traceparent = row.opt_text("traceparent")?,
    })
}

/// What sending a subscription's delivery at once needs (`handoff.rs`): its `url`, `headers`,
/// `transform` and valid `secrets` (a JSON array as stored, newest first), opened.
pub(super) fn direct(
    row: &impl DbRow,
    subscription_id: Uuid,
    keyring: &Keyring,
) -> StoreResult<Direct> {
    let sealed: Vec<String> = match row.opt_text("secrets")? {
        Some(list) => serde_json::from_str(&list)
            .map_err(|e| StoreError::Corrupt(format!("a subscription's secrets: {e}")))?,
        None => Vec::new(),
    };
    Ok(Direct {
        url: row.text("url")?,
        headers: decode_strings(&row.text("headers")?)?,
        secrets: (sealed.iter())
            .map(|s| keyring.open_joined(subscription_id, s))
            .collect::<StoreResult<_>>()?,
        transform: transform(row)?,
    })
}

pub(super) fn notice(row: &impl DbRow) -> StoreResult<Notice> {
    decode!(row => Notice {
        id, kind, subscription_id, url, delivery_id, event_id, event_type, attempts, connector,
        detail, created_at,
    })
}
