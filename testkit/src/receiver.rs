//! A real local webhook receiver: records every request and answers from a script, so tests
//! can make an endpoint fail, stall, rate-limit or vanish on cue.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// Status with extra headers (e.g. `Retry-After`).
    WithHeaders(u16, Vec<(&'static str, String)>),
    /// Wait, then answer with the status.
    Slow(Duration, u16),
    /// A status with a body of this many bytes.
    Big(u16, usize),
    /// A status with a JSON body (a fake API).
    Json(u16, serde_json::Value),
}

#[derive(Debug)]
struct Inner {
    requests: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    arrived: Notify,
    /// Requests being answered right now, by `webhook-id`.
    active: Mutex<HashMap<String, usize>>,
    /// Requests that arrived while another for the same `webhook-id` was still being answered.
    overlaps: Mutex<usize>,
}

/// The receiver, serving on 127.0.0.1:0 until dropped.
#[derive(Debug)]
pub struct Receiver {
    pub base: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver that answers `default` unless a scripted reply is queued.
    pub async fn start(default: Reply) -> Self {
        let inner = Arc::new(Inner {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            arrived: Notify::new(),
            active: Mutex::new(HashMap::new()),
            overlaps: Mutex::new(0),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, inner, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Queues replies for the next requests (in order); afterwards the default applies.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().expect("lock").extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.inner.default.lock().expect("lock") = reply;
    }

    /// How often two attempts for the same event were being answered at the same time.
    pub fn overlaps(&self) -> usize {
        *self.inner.overlaps.lock().expect("lock")
    }

    pub fn requests(&self) -> Vec<Received> {
        self.inner.requests.lock().expect("lock").clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until at least `n` requests reached `path` (panics after `timeout`).
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.inner.arrived.notified();
            let got = self.requests_to(path);
            if got.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{path}: {} of {n} requests within {timeout:?}",
                got.len()
            );
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let scripted = inner.script.lock().expect("lock").pop_front();
        scripted.unwrap_or_else(|| inner.default.lock().expect("lock").clone())
    };
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    {
        let mut active = inner.active.lock().expect("lock");
        let count = active.entry(id.clone()).or_default();
        if *count > 0 {
            *inner.overlaps.lock().expect("lock") += 1;
        }
        *count += 1;
    }
    inner.requests.lock().expect("lock").push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    });
    inner.arrived.notify_waiters();
    let response = answer(reply).await;
    if let Some(count) = inner.active.lock().expect("lock").get_mut(&id) {
        *count -= 1;
    }
    response
}

async fn answer(reply: Reply) -> Response {
    let status = |s: u16| StatusCode::from_u16(s).expect("valid status");
    match reply {
        Reply::Status(s) => (status(s), format!("reply {s}")).into_response(),
        Reply::WithHeaders(s, extra) => {
            let mut response = (status(s), format!("reply {s}")).into_response();
            for (name, value) in extra {
                response
                    .headers_mut()
                    .insert(name, value.parse().expect("header value"));
            }
            response
        }
        Reply::Big(s, size) => (status(s), "x".repeat(size)).into_response(),
        Reply::Json(s, body) => (status(s), axum::Json(body)).into_response(),
        Reply::Slow(wait, s) => {
            tokio::time::sleep(wait).await;
            (status(s), "slow reply").into_response()
        }
    }
}

/// The seed's verification, as the README gives it in Python:
/// `hmac.new(secret.encode(), f"{timestamp}.{raw_body}".encode(), hashlib.sha256).hexdigest()`.
pub fn verify_seed_signature(secret: &str, request: &Received) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(request.header("x-webhook-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&request.body);
    hex::encode(mac.finalize().into_bytes()) == request.header("x-webhook-signature")
}

/// Standard Webhooks verification, as its libraries do it with `whsec_` + base64(secret) (or a
/// `whsec_…` secret as it is): true when one of the space-separated `v1,` entries matches.
pub fn verify_standard_signature(secret: &str, request: &Received) -> bool {
    use base64::Engine;
    let whsec = if secret.starts_with("whsec_") {
        secret.to_owned()
    } else {
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(secret.as_bytes())
        )
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(whsec.trim_start_matches("whsec_"))
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(request.header("webhook-id").as_bytes());
    mac.update(b".");
    mac.update(request.header("webhook-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&request.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    request
        .header("webhook-signature")
        .split(' ')
        .any(|entry| entry == expected)
}
