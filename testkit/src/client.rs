//! A client of the hub's API whose every call states the status it expects: a test reads as
//! the exchange it checks, and an unexpected answer fails with the body that explains it.
//! Typed helpers cover the steps most tests share (subscribe, publish, wait until delivered,
//! read the attempts); [`crate::fixtures`] holds the values they use.

use std::time::{Duration, Instant};

use reqwest::RequestBuilder;
use serde_json::{Value, json};

use crate::fixtures::SECRET;

/// How long [`Api::wait_status`] waits for a delivery to reach a status.
pub const WAIT: Duration = Duration::from_secs(20);

/// The API of one running hub (in-process or a process of its own).
#[derive(Debug, Clone)]
pub struct Api {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request to build further (headers, raw bodies); send it with [`Api::expect`].
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.http.post(self.url(path))
    }

    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.http.patch(self.url(path))
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.http.delete(self.url(path))
    }

    /// Sends `request`, asserts it is answered `status`, and returns the JSON body (`Null` when
    /// empty).
    pub async fn expect(&self, request: RequestBuilder, status: u16) -> Value {
        let (got, body) = send(request).await;
        assert_eq!(got, status, "expected HTTP {status}, got {got}: {body}");
        body
    }

    pub async fn get_json(&self, path: &str, status: u16) -> Value {
        self.expect(self.get(path), status).await
    }

    pub async fn post_json(&self, path: &str, body: &Value, status: u16) -> Value {
        self.expect(self.post(path).json(body), status).await
    }

    pub async fn patch_json(&self, path: &str, body: &Value, status: u16) -> Value {
        self.expect(self.patch(path).json(body), status).await
    }

    pub async fn delete_path(&self, path: &str, status: u16) -> Value {
        self.expect(self.delete(path), status).await
    }

    /// Creates a subscription of `url` to `events` signed with [`SECRET`] (and an `X-Team`
    /// header); returns it.
    pub async fn subscribe(&self, url: &str, events: Value) -> Value {
        self.post_json(
            "/api/v1/subscriptions",
            &json!({
                "url": url,
                "secret": SECRET,
                "events": events,
                "headers": {"X-Team": "ops"},
            }),
            201,
        )
        .await
    }

    /// Publishes one event; returns the answer (`id`, `deliveries`, …).
    pub async fn publish(&self, event_type: &str, payload: Value) -> Value {
        self.post_json(
            "/api/v1/events",
            &json!({"event_type": event_type, "payload": payload}),
            202,
        )
        .await
    }

    /// Publishes one event; returns its id.
    pub async fn publish_id(&self, event_type: &str, payload: Value) -> String {
        let published = self.publish(event_type, payload).await;
        published["id"].as_str().expect("event id").to_owned()
    }

    /// Publishes a batch (`[{"event_type", "payload"}, …]`) in one request; returns the ids.
    pub async fn publish_batch(&self, events: &[Value]) -> Vec<String> {
        let body = self
            .post_json("/api/v1/events/batch", &json!({ "events": events }), 202)
            .await;
        body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// An event with its deliveries.
    pub async fn event(&self, id: &str) -> Value {
        self.get_json(&format!("/api/v1/events/{id}"), 200).await
    }

    /// Polls the event until its first delivery reaches `status` ([`WAIT`] at most).
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let event = self.event(id).await;
            if event["deliveries"][0]["status"] == status {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "delivery never became {status}: {event}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the event until its first delivery succeeded.
    pub async fn wait_delivered(&self, id: &str) -> Value {
        self.wait_status(id, "succeeded").await
    }

    /// The attempts of an event, oldest first.
    pub async fn attempts(&self, id: &str) -> Vec<Value> {
        let body = self
            .get_json(&format!("/api/v1/admin/events/{id}/attempts"), 200)
            .await;
        body["data"].as_array().expect("data").clone()
    }

    /// Sum of every `/metrics` sample whose line starts with `prefix` (name and labels).
    pub async fn metric(&self, prefix: &str) -> f64 {
        let text = self
            .get("/metrics")
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Sends a request and returns the status and the JSON body (`Null` when the body is empty),
/// for the few tests that branch on the status (outages: 202 or 503).
pub async fn send(request: RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request reaches the hub");
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"))
    };
    (status, body)
}
