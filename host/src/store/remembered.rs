//! The destinations of recent event types, remembered between publishes, so that a publish on
//! PostgreSQL is one statement instead of two (README, Performance): the insert itself checks
//! that the destinations it was planned for are still exactly what the database answers at its
//! own snapshot, and writes nothing otherwise; the publish then reads them and writes as before.
//!
//! The check compares fingerprints the database computes both times, over the very rows of
//! `Dialect::MATCHING_DESTINATIONS` (a SHA-256 of their text, `store/postgres.rs`): any change
//! that would change what a publish writes — a subscription created, changed, paused, disabled or
//! deleted, a circuit opened or closed, a secret rotated or expired, a connector bound or
//! unbound — changes the fingerprint. Nothing has to remember to invalidate anything, and
//! several hubs on one database need no message between them.
//!
//! Invariants (test `store_handoff::remembered_destinations_are_checked_by_each_publish`):
//! - a publish writes deliveries only for the destinations its statement's snapshot holds;
//! - at most [`MAX_TYPES`] event types are remembered (beyond it the memory starts afresh).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::plan::Matches;

/// Most event types remembered at once.
pub const MAX_TYPES: usize = 1024;

/// An event type's destinations as last read, with the database's fingerprint of them.
#[derive(Debug, Clone)]
pub(super) struct Known {
    pub matches: Matches,
    /// `None` for no destination at all.
    pub fingerprint: Option<String>,
    /// Read with what sending at once needs (`handoff.rs`), as a publish with an engine needs.
    pub direct: bool,
}

/// The remembered destinations of a store's recent event types.
#[derive(Debug, Default)]
pub(crate) struct Remembered {
    /// Per event type, as last read.
    known: Mutex<HashMap<String, Known>>,
    checked: AtomicU64,
    read: AtomicU64,
}

/// How a store's publish groups found their destinations ([`super::Store::destination_reads`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationReads {
    /// Groups written with remembered destinations the insert found unchanged.
    pub remembered: u64,
    /// Groups that read them first (nothing remembered, or something had changed).
    pub read: u64,
}

impl Remembered {
    /// The destinations of every one of `types`, if all are remembered.
    pub(super) fn recall<'t>(
        &self,
        types: &[&'t str],
        direct: bool,
    ) -> Option<Vec<(&'t str, Known)>> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let found = types
            .iter()
            .map(|t| Some((*t, known.get(*t).filter(|k| k.direct == direct)?.clone())))
            .collect::<Option<Vec<_>>>();
        drop(known);
        found
    }

    /// Remembers what was just read of `event_type`.
    pub(super) fn learn(&self, event_type: &str, read: Known) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_TYPES {
            known.clear();
        }
        known.insert(event_type.to_owned(), read);
    }

    /// Counts a group by how it found its destinations.
    pub(super) fn count(&self, remembered: bool) {
        let counter = if remembered {
            &self.checked
        } else {
            &self.read
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn reads(&self) -> DestinationReads {
        DestinationReads {
            remembered: self.checked.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(fingerprint: &str) -> Known {
        Known {
            matches: Matches::default(),
            fingerprint: Some(fingerprint.to_owned()),
            direct: true,
        }
    }

    #[test]
    fn recalls_only_when_every_type_is_known_as_asked_and_stays_bounded() {
        let memory = Remembered::default();
        memory.learn("a", known("1"));
        assert!(memory.recall(&["a", "b"], true).is_none());
        assert!(memory.recall(&["a"], false).is_none());
        let found = memory.recall(&["a"], true).expect("known");
        assert_eq!(found[0].1.fingerprint.as_deref(), Some("1"));
        for n in 0..MAX_TYPES {
            memory.learn(&format!("t{n}"), known("2"));
        }
        assert!(memory.known.lock().expect("lock").len() <= MAX_TYPES);
        assert!(
            memory.recall(&["a"], true).is_none(),
            "started afresh when full"
        );
    }
}
