//! What `connector test` (`super::trial`) gives a call's host: scripted HTTP answers, and a
//! record of every request and log line.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Scripted answers read by a trial at most.
pub const MAX_FIXTURES: usize = 1000;

/// One scripted answer: to the first request whose method matches (any, when absent) and whose
/// URL starts with `url`. Each is used once, except the last one left for its URL, which repeats.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    #[serde(default)]
    pub method: Option<String>,
    pub url: String,
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body: a string as is, any other JSON value as its JSON text.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
}

fn ok_status() -> u16 {
    200
}

impl Fixture {
    fn matches(&self, method: &str, url: &str) -> bool {
        self.method
            .as_ref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && url.starts_with(&self.url)
    }

    pub(super) fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            None => Vec::new(),
            Some(serde_json::Value::String(text)) => text.clone().into_bytes(),
            Some(other) => other.to_string().into_bytes(),
        }
    }
}

/// A request the connector made.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy), at most 4 KiB.
    pub body: String,
    /// What it got: `HTTP 200`, or the error.
    pub answer: String,
}

/// A line the connector logged.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SeenLog {
    pub level: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// What a trial's host records, and its script.
#[derive(Debug, Default)]
pub(super) struct Recorder {
    /// `None`: real calls to granted hosts.
    pub(super) script: Option<Mutex<VecDeque<Fixture>>>,
    pub(super) requests: Mutex<Vec<SeenRequest>>,
    pub(super) logs: Mutex<Vec<SeenLog>>,
}

impl Recorder {
    /// The scripted answer for a request, if this trial is scripted: `Some(None)` when nothing
    /// matches.
    pub(super) fn answer(&self, method: &str, url: &str) -> Option<Option<Fixture>> {
        let script = self.script.as_ref()?;
        let mut script = script.lock().unwrap_or_else(|p| p.into_inner());
        let Some(at) = script.iter().position(|f| f.matches(method, url)) else {
            return Some(None);
        };
        let more = script.iter().skip(at + 1).any(|f| f.matches(method, url));
        Some(if more {
            script.remove(at)
        } else {
            script.get(at).cloned()
        })
    }

    pub(super) fn request(&self, seen: SeenRequest) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(seen);
    }

    pub(super) fn log(&self, seen: SeenLog) {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(seen);
    }
}
