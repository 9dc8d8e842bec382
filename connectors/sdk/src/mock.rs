//! A [`Host`] for native unit tests: configuration you set, HTTP answers you script, and a record
//! of every request, log line and cached value, so a test can say what the connector did.
//!
//! ```
//! use integrations_hub_connector::{Host, Request, Response, HttpError};
//! use integrations_hub_connector::mock::MockHost;
//!
//! let host = MockHost::new()
//!     .with_config("webhook_url", "https://hooks.example.com/x")
//!     .answer("POST", "https://hooks.example.com/", Response::new(204));
//! let sent = host.send(&Request::post("https://hooks.example.com/x", "{}"));
//! assert_eq!(sent.map(|r| r.status), Ok(204));
//! assert_eq!(host.requests()[0].url, "https://hooks.example.com/x");
//! // Nothing scripted for this one: a connection error, as with an unreachable host.
//! assert!(matches!(host.send(&Request::get("https://other.example.com/")), Err(HttpError::Connection(_))));
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::{Host, HttpError, Level, Request, Response};

/// One scripted answer: to the first request whose method matches and whose URL starts with
/// `url_prefix`. An answer is used once unless it is the last for its prefix.
#[derive(Debug, Clone)]
struct Scripted {
    method: String,
    url_prefix: String,
    answer: Result<Response, HttpError>,
}

/// A logged line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// The test host. Interior mutability: a connector gets `&dyn Host`.
#[derive(Debug, Default)]
pub struct MockHost {
    config: BTreeMap<String, String>,
    script: RefCell<VecDeque<Scripted>>,
    requests: RefCell<Vec<Request>>,
    logs: RefCell<Vec<LogLine>>,
    kv: RefCell<BTreeMap<String, Vec<u8>>>,
}

impl MockHost {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a configuration value (as an instance's setting or `IH_<NAME>_<KEY>` would).
    pub fn with_config(mut self, key: &str, value: &str) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Scripts `response` for the next `method` request to a URL starting with `url_prefix`.
    pub fn answer(self, method: &str, url_prefix: &str, response: Response) -> Self {
        self.push(method, url_prefix, Ok(response))
    }

    /// Scripts a failure (timeout, connection error, denial) instead of a response.
    pub fn fail(self, method: &str, url_prefix: &str, error: HttpError) -> Self {
        self.push(method, url_prefix, Err(error))
    }

    fn push(self, method: &str, url_prefix: &str, answer: Result<Response, HttpError>) -> Self {
        self.script.borrow_mut().push_back(Scripted {
            method: method.to_ascii_uppercase(),
            url_prefix: url_prefix.into(),
            answer,
        });
        self
    }

    /// Every request sent, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.borrow().clone()
    }

    /// Every log line written, in order.
    pub fn logs(&self) -> Vec<LogLine> {
        self.logs.borrow().clone()
    }

    /// The cached value of `key`.
    pub fn cached(&self, key: &str) -> Option<Vec<u8>> {
        self.kv.borrow().get(key).cloned()
    }
}

impl Host for MockHost {
    fn config(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }

    fn send(&self, request: &Request) -> Result<Response, HttpError> {
        self.requests.borrow_mut().push(request.clone());
        let mut script = self.script.borrow_mut();
        let matches = |s: &Scripted| {
            s.method == request.method.to_ascii_uppercase()
                && request.url.starts_with(&s.url_prefix)
        };
        let Some(at) = script.iter().position(matches) else {
            return Err(HttpError::Connection(format!(
                "no scripted answer for {} {}",
                request.method, request.url
            )));
        };
        let more_for_it = script.iter().skip(at + 1).any(matches);
        if more_for_it {
            script
                .remove(at)
                .map_or_else(|| unreachable!(), |s| s.answer)
        } else {
            script[at].answer.clone()
        }
    }

    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        self.logs.borrow_mut().push(LogLine {
            level,
            message: message.into(),
            fields: (fields.iter())
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        });
    }

    fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        self.cached(key)
    }

    fn kv_set(&self, key: &str, value: &[u8], _ttl: Option<Duration>) -> Result<(), String> {
        if key.is_empty() || key.len() > 128 || value.len() > 16 * 1024 {
            return Err("key of 1-128 bytes and value of at most 16 KiB".into());
        }
        self.kv.borrow_mut().insert(key.into(), value.to_vec());
        Ok(())
    }

    fn kv_delete(&self, key: &str) {
        self.kv.borrow_mut().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_used_in_order_and_the_last_one_repeats() {
        let host = MockHost::new()
            .answer("POST", "https://a/", Response::new(429))
            .answer("POST", "https://a/", Response::new(200));
        let status = |h: &MockHost| {
            h.send(&Request::post("https://a/x", "{}"))
                .map(|r| r.status)
        };
        assert_eq!(status(&host), Ok(429));
        assert_eq!(status(&host), Ok(200));
        assert_eq!(status(&host), Ok(200));
        assert_eq!(host.requests().len(), 3);
    }

    #[test]
    fn kv_logs_and_config_are_recorded() {
        let host = MockHost::new().with_config("k", "v");
        assert_eq!(host.config("k").as_deref(), Some("v"));
        assert_eq!(host.config("other"), None);
        host.kv_set("token", b"t", None).expect("set");
        assert_eq!(host.kv_get("token"), Some(b"t".to_vec()));
        host.kv_delete("token");
        assert_eq!(host.cached("token"), None);
        host.log(Level::Info, "hi", &[("a", "1")]);
        assert_eq!(host.logs()[0].fields, [("a".to_owned(), "1".to_owned())]);
    }
}
