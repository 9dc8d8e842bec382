//! W3C Trace Context (`traceparent`): taken from a publish request, stored with its events, and
//! passed on to every webhook and connector HTTP call they cause, so a receiver can tie what it
//! gets to the request that caused it.
//!
//! The hub is a hop of the trace. When traces are exported (`telemetry.rs`), its spans join the
//! caller's trace ([`adopt`]) and each outgoing call names the span it was made in
//! ([`of_span`]); otherwise each call carries the same trace id and flags with a fresh parent id
//! ([`TraceParent::child`]).

use std::fmt;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rand::RngCore;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes `span` a child of the caller's `parent` in the exported trace (nothing when traces are
/// not exported).
pub fn adopt(span: &tracing::Span, parent: &TraceParent) {
    let context = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.parent_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    let parent = opentelemetry::Context::new().with_remote_span_context(context);
    // Fails only when no exporter is installed: then there is no trace to join.
    let _ = span.set_parent(parent);
}

/// `span` as the parent of a call made inside it, when traces are exported.
pub fn of_span(span: &tracing::Span) -> Option<TraceParent> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| TraceParent {
        trace_id: span_context.trace_id().to_bytes(),
        parent_id: span_context.span_id().to_bytes(),
        flags: span_context.trace_flags().to_u8(),
    })
}

/// A valid `traceparent` (version `00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Reads a header value; `None` for anything the W3C format does not allow (a malformed
    /// header is ignored, as the specification asks, never refused).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        // Version 00 has exactly four parts; a later version may append more.
        let known = version == "00" && parts.next().is_none();
        if !(lower_hex(version, 2) && version != "ff" && (known || version != "00")) {
            return None;
        }
        if !(lower_hex(trace, 32) && lower_hex(parent, 16) && lower_hex(flags, 2)) {
            return None;
        }
        let mut parsed = Self {
            trace_id: [0; 16],
            parent_id: [0; 8],
            flags: 0,
        };
        hex::decode_to_slice(trace, &mut parsed.trace_id).ok()?;
        hex::decode_to_slice(parent, &mut parsed.parent_id).ok()?;
        let mut flag = [0u8; 1];
        hex::decode_to_slice(flags, &mut flag).ok()?;
        parsed.flags = flag[0];
        let zero = parsed.trace_id == [0; 16] || parsed.parent_id == [0; 8];
        (!zero).then_some(parsed)
    }

    /// The `traceparent` of a call made now in this trace: the current span when traces are
    /// exported, else [`TraceParent::child`].
    pub fn for_call(&self) -> Self {
        of_span(&tracing::Span::current()).unwrap_or_else(|| self.child())
    }

    /// The same trace, with a new parent id: the header of one outgoing call.
    pub fn child(&self) -> Self {
        let mut parent_id = [0u8; 8];
        while parent_id == [0; 8] {
            rand::thread_rng().fill_bytes(&mut parent_id);
        }
        Self { parent_id, ..*self }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_specification_example_and_writes_it_back() {
        let parsed = TraceParent::parse(EXAMPLE).expect("valid");
        assert_eq!(parsed.to_string(), EXAMPLE);
        assert_eq!(parsed.flags, 1);
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_a_new_parent() {
        let parsed = TraceParent::parse(EXAMPLE).expect("valid");
        let child = parsed.child();
        assert_eq!(child.trace_id, parsed.trace_id);
        assert_eq!(child.flags, parsed.flags);
        assert_ne!(child.parent_id, parsed.parent_id);
        assert_eq!(TraceParent::parse(&child.to_string()), Some(child));
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version may carry more; its first four parts are still read.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later")
                .is_some()
        );
    }
}
