//! What a connector call takes (the event and its context) and what it came to, typed from the
//! guest's WIT result up to the engine's retry policy (`delivery/retry.rs`), and the bound on
//! text a guest hands the host.

use std::time::Duration;

use uuid::Uuid;

use crate::model::trace::TraceParent;

/// One event as a connector receives it.
#[derive(Debug, Clone)]
pub struct EventData {
    pub id: String,
    pub event_type: String,
    /// RFC 3339.
    pub created_at: String,
    /// The payload's JSON text.
    pub payload: String,
}

impl EventData {
    /// An event as stored: its creation time written as RFC 3339 with microseconds, UTC.
    pub fn new(
        id: uuid::Uuid,
        event_type: String,
        created_at: chrono::DateTime<chrono::Utc>,
        payload: String,
    ) -> Self {
        Self {
            id: id.to_string(),
            event_type,
            created_at: created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            payload,
        }
    }
}

/// Which delivery a call is an attempt of (the guest's `context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// 1-based attempt number within the delivery's current budget.
    pub attempt: u32,
    pub max_attempts: u32,
    pub delivery_id: Uuid,
    /// `None` for the default instance.
    pub instance_id: Option<Uuid>,
    pub subscription_id: Option<Uuid>,
    /// The event's trace: its HTTP calls carry it on (`model/trace.rs`).
    pub traceparent: Option<TraceParent>,
}

/// Bytes of a failure reason a connector returns that are kept (attempt records, logs).
pub const MAX_REASON: usize = 1024;
/// Bytes of an upstream id a connector reports that are kept.
pub const MAX_EXTERNAL_ID: usize = 256;

/// `text` cut to at most `max` bytes on a character boundary, with `…` when it was cut: what a
/// guest hands the host (log lines, failure reasons) is kept within a bound.
pub fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// What a call to `handle` came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// Delivered; with what the upstream answered, when the connector says (WIT 0.2).
    Delivered {
        upstream_status: Option<u16>,
        external_id: Option<String>,
    },
    /// Nothing to do for this event: the delivery ends (WIT 0.2).
    Skipped(String),
    /// The connector asked to be retried, optionally after a delay.
    Retry {
        reason: String,
        after: Option<Duration>,
        upstream_status: Option<u16>,
    },
    /// The connector says retrying will not help.
    Permanent(String),
    /// The sandbox stopped the guest (trap, timeout, memory) or it could not run at all.
    Failed(FailureKind, String),
}

/// Why a call produced no answer from the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Timeout,
    Memory,
    Trap,
    /// Not loaded, inactive, or the instance could not be created.
    Unavailable,
}

impl CallOutcome {
    /// The `outcome` label of `ih_connector_invocations_total` (one of
    /// `metrics::CONNECTOR_OUTCOMES`, whose series exist from the connector's load on).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "ok",
            Self::Skipped(_) => "skipped",
            Self::Retry { .. } => "retry",
            Self::Permanent(_) => "permanent",
            Self::Failed(FailureKind::Timeout, _) => "timeout",
            Self::Failed(FailureKind::Memory, _) => "memory",
            Self::Failed(FailureKind::Trap, _) => "trap",
            Self::Failed(FailureKind::Unavailable, _) => "unavailable",
        }
    }
}

/// Property test: whatever text a guest returns, what the host keeps is a bounded prefix of it.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn guest_text_is_kept_as_a_bounded_prefix(text in "\\PC{0,300}", max in 0usize..200) {
            let kept = bounded(text.clone(), max);
            let body = kept.strip_suffix('…').unwrap_or(&kept);
            prop_assert!(body.len() <= max);
            prop_assert!(text.starts_with(body));
            prop_assert_eq!(kept == text, text.len() <= max);
        }
    }
}
