//! Transforms: components of the `integrations-hub:transform` world
//! (`wit/transform/transform.wit`) that reshape a webhook subscription's deliveries. They load
//! from the connectors directory through the same registry (hot reload, signatures, the last
//! good version serving) and run in the same sandbox as connectors, importing nothing.
//!
//! Invariants:
//! - what a transform returns is checked here before anything is sent: the body at most
//!   [`MAX_BODY`], at most [`MAX_HEADERS`] headers, none of them one the hub sets itself
//!   (`model::names::is_set_by_hub`, the rule a subscription's headers follow), a valid media
//!   type;
//! - a transform that is not loaded is [`TransformError::Unavailable`] (the delivery waits), one
//!   that ran and failed is [`TransformError::Failed`] (the attempt fails): nothing is ever sent
//!   untransformed;
//! - an instance is reused ([`WarmInstances`]) only by later calls of the same loaded file for
//!   the same subscription, at most [`MAX_CALLS_PER_INSTANCE`] times, and only after a call that
//!   returned (not trapped, timed out or hit a limit) without writing to stderr; dry runs
//!   ([`Reuse::Fresh`]) always get a fresh one. So nothing a transform keeps in memory crosses
//!   from one subscription to another, and a broken instance is never called again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use reqwest::header::{HeaderName, HeaderValue};

use super::outcome::{EventData, FailureKind, MAX_REASON, bounded};
use super::runtime::{HostState, Runtime, TICK};
use crate::model::names::is_set_by_hub;

use super::runtime::WARM_INSTANCES;
use super::runtime::bindings_transform::{
    Transform, TransformPre, integrations_hub::transform::types,
};

/// The largest body a transform may return.
pub const MAX_BODY: usize = 1 << 20;
/// Headers a transform may add.
pub const MAX_HEADERS: usize = 16;
const MAX_HEADER_VALUE: usize = 4096;
/// Calls one instance serves before it is replaced (bounds what a guest can accumulate).
pub const MAX_CALLS_PER_INSTANCE: u32 = 10_000;

/// Whether a call may take, and keep, an instance from an earlier call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Deliveries: instantiating costs more than most transforms' work.
    Warm,
    /// Dry runs: nothing from deliveries reaches them, nothing of theirs is kept.
    Fresh,
}

/// Which calls an idle instance may serve: one loaded file's (its [`super::Shared`], which
/// lives as long as an instance holds it, so the address is not reused meanwhile), for one
/// subscription.
type WarmKey = (usize, uuid::Uuid);

/// An instance between two calls.
pub(super) struct Warm {
    store: wasmtime::Store<HostState>,
    instance: Transform,
    calls: u32,
}

/// Instances kept between calls, oldest first, at most [`WARM_INSTANCES`] in all (the pooling
/// allocator reserves slots for them).
pub(super) type WarmInstances = Idle<WarmKey, Warm>;

/// A bounded set of idle things by key, the oldest evicted first.
pub(super) struct Idle<K, T> {
    items: Mutex<VecDeque<(K, T)>>,
    capacity: usize,
}

impl<K, T> Default for Idle<K, T> {
    fn default() -> Self {
        Self {
            items: Mutex::default(),
            capacity: WARM_INSTANCES as usize,
        }
    }
}

impl<K: PartialEq, T> Idle<K, T> {
    /// The most recently kept item for `key`.
    fn take(&self, key: &K) -> Option<T> {
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let at = items.iter().rposition(|(k, _)| k == key)?;
        items.remove(at).map(|(_, item)| item)
    }

    /// Keeps `item`, first dropping the items that are `stale` (no call can take them any
    /// more), then the oldest when full. They are dropped outside the lock: freeing an instance
    /// resets its slot of the pooling allocator.
    fn keep(&self, key: K, item: T, stale: impl Fn(&T) -> bool) {
        let mut evicted = Vec::new();
        {
            let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
            let mut at = 0;
            while at < items.len() {
                if stale(&items[at].1) {
                    evicted.extend(items.remove(at));
                } else {
                    at += 1;
                }
            }
            if items.len() >= self.capacity {
                evicted.extend(items.pop_front());
            }
            items.push_back((key, item));
        }
        drop(evicted);
    }
}

/// What one transform call is given.
#[derive(Debug, Clone)]
pub struct TransformInput {
    pub event: EventData,
    pub subscription_id: uuid::Uuid,
    pub url: String,
    pub settings: BTreeMap<String, String>,
}

/// What a transform made of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformed {
    Deliver(TransformedBody),
    /// Send the hub's own body, unchanged.
    Keep,
    /// Nothing to send: the delivery ends as skipped, with this reason.
    Drop(String),
}

/// The request a transform asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformedBody {
    pub body: Vec<u8>,
    /// `None`: `application/json`.
    pub content_type: Option<HeaderValue>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Why a transform gave nothing to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransformError {
    /// Not loaded in this hub (absent, failed to load, or not a transform): the delivery is
    /// held until it is.
    Unavailable(String),
    /// It ran and failed (its error, a trap, a limit, an output the hub refuses): the attempt
    /// fails with this reason.
    Failed(FailureKind, String),
}

impl std::fmt::Display for TransformError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(why) | Self::Failed(_, why) => f.write_str(why),
        }
    }
}

impl Runtime {
    /// Calls `transform`, in an instance from `warm` kept by an earlier call where `reuse`
    /// allows, otherwise in a fresh one.
    pub(super) async fn call_transform(
        &self,
        pre: &TransformPre<HostState>,
        shared: std::sync::Arc<super::Shared>,
        input: TransformInput,
        reuse: Reuse,
        warm: &WarmInstances,
    ) -> Result<Transformed, TransformError> {
        let name = shared.name.clone();
        let key = (
            std::sync::Arc::as_ptr(&shared) as usize,
            input.subscription_id,
        );
        let kept = match reuse {
            Reuse::Warm => warm.take(&key),
            Reuse::Fresh => None,
        };
        let (mut store, kept, calls) = match kept {
            Some(mut idle) => {
                self.rearm(&mut idle.store);
                (idle.store, Some(idle.instance), idle.calls)
            }
            None => (self.store(shared, None), None, 0),
        };
        let deadline = store.data().deadline;
        let event = types::Event {
            id: input.event.id,
            event_type: input.event.event_type,
            created_at: input.event.created_at,
            payload: input.event.payload.into_bytes(),
        };
        let context = types::Context {
            subscription_id: input.subscription_id.to_string(),
            url: input.url,
            settings: (input.settings.into_iter())
                .map(|(key, value)| types::Setting { key, value })
                .collect(),
        };
        let call = async {
            let instance = match kept {
                Some(instance) => instance,
                None => pre.instantiate_async(&mut store).await?,
            };
            let result = instance
                .call_transform(&mut store, &event, &context)
                .await?;
            Ok::<_, wasmtime::Error>((instance, result))
        };
        let failed =
            |kind, why: String| TransformError::Failed(kind, format!("transform {name:?} {why}"));
        let answer = match tokio::time::timeout_at((deadline + TICK * 10).into(), call).await {
            Ok(Ok((instance, answer))) => {
                let calls = calls + 1;
                if reuse == Reuse::Warm
                    && calls < MAX_CALLS_PER_INSTANCE
                    && !store.data().wrote_stderr()
                {
                    let idle = Warm {
                        store,
                        instance,
                        calls,
                    };
                    // An instance of a file the registry no longer holds (replaced, removed, or
                    // rebound by a rescan) holds the last reference to its `Shared`.
                    let stale =
                        |w: &Warm| std::sync::Arc::strong_count(&w.store.data().shared) == 1;
                    warm.keep(key, idle, stale);
                }
                answer
            }
            Ok(Err(e)) => {
                let (kind, why) = self.describe_failure(store.data(), &e);
                return Err(failed(kind, why));
            }
            Err(_) => return Err(failed(FailureKind::Timeout, self.timed_out())),
        };
        match answer {
            Ok(types::Transformed::Deliver(output)) => checked(output)
                .map(Transformed::Deliver)
                .map_err(|why| failed(FailureKind::Trap, why)),
            Ok(types::Transformed::Keep) => Ok(Transformed::Keep),
            Ok(types::Transformed::Drop(reason)) => {
                Ok(Transformed::Drop(bounded(reason, MAX_REASON)))
            }
            Err(error) => Err(failed(
                FailureKind::Trap,
                format!("refused the event: {}", bounded(error, MAX_REASON)),
            )),
        }
    }
}

/// The output as the hub will send it, or why it is refused.
fn checked(output: types::Output) -> Result<TransformedBody, String> {
    if output.body.len() > MAX_BODY {
        return Err(format!(
            "returned a body of {} bytes; the limit is {MAX_BODY}",
            output.body.len()
        ));
    }
    if output.headers.len() > MAX_HEADERS {
        return Err(format!(
            "returned {} headers; the limit is {MAX_HEADERS}",
            output.headers.len()
        ));
    }
    let content_type = match output.content_type {
        Some(text) => Some(
            is_media_type(&text)
                .then(|| HeaderValue::from_str(&text).ok())
                .flatten()
                .ok_or_else(|| format!("returned the content type {text:?}, not a media type"))?,
        ),
        None => None,
    };
    let mut headers = Vec::with_capacity(output.headers.len());
    for header in output.headers {
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
            format!(
                "returned the header name {:?}, not a valid one",
                header.name
            )
        })?;
        if is_set_by_hub(name.as_str()) {
            return Err(format!(
                "set the header {name}, which the hub sets itself (or only HTTP may)"
            ));
        }
        if header.value.len() > MAX_HEADER_VALUE {
            return Err(format!(
                "returned a {name} header of {} bytes; the limit is {MAX_HEADER_VALUE}",
                header.value.len()
            ));
        }
        let value = HeaderValue::from_str(&header.value)
            .map_err(|_| format!("returned a {name} header value that is not valid in HTTP"))?;
        headers.push((name, value));
    }
    Ok(TransformedBody {
        body: output.body,
        content_type,
        headers,
    })
}

/// `type/subtype`, optionally followed by `;` parameters (RFC 9110's media-type).
fn is_media_type(text: &str) -> bool {
    let essence = text.split(';').next().unwrap_or_default();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    essence
        .split_once('/')
        .is_some_and(|(kind, sub)| token(kind) && token(sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(headers: &[(&str, &str)]) -> types::Output {
        types::Output {
            body: b"{}".to_vec(),
            content_type: Some("application/cloudevents+json; charset=utf-8".into()),
            headers: (headers.iter())
                .map(|(n, v)| types::Header {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn outputs_are_checked_before_anything_is_sent() {
        let ok = checked(output(&[("x-tenant", "acme")])).expect("test value");
        assert_eq!(ok.headers[0].0.as_str(), "x-tenant");
        assert!(ok.content_type.is_some());
        for forged in [
            "webhook-signature",
            "X-Webhook-Signature",
            "Content-Length",
            "host",
        ] {
            let refused = checked(output(&[(forged, "x")])).expect_err("refused");
            assert!(refused.contains("sets itself"), "{forged}: {refused}");
        }
        assert!(checked(output(&[("bad name", "x")])).is_err());
        assert!(checked(output(&[("x-a", "line\nbreak")])).is_err());
        let many: Vec<(String, String)> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-{i}"), "v".into()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert!(
            checked(output(&many))
                .expect_err("refused")
                .contains("limit")
        );
        let mut big = output(&[]);
        big.body = vec![b' '; MAX_BODY + 1];
        assert!(checked(big).expect_err("refused").contains("limit"));
        let mut typed = output(&[]);
        typed.content_type = Some("not a type".into());
        assert!(checked(typed).is_err());
    }

    #[test]
    fn idle_items_are_taken_by_key_newest_first_and_the_oldest_evicted() {
        let idle: Idle<&str, u32> = Idle {
            items: Mutex::default(),
            capacity: 3,
        };
        let fresh = |_: &u32| false;
        idle.keep("a", 1, fresh);
        idle.keep("b", 2, fresh);
        idle.keep("a", 3, fresh);
        assert_eq!(idle.take(&"a"), Some(3));
        assert_eq!(idle.take(&"c"), None);
        idle.keep("a", 4, fresh);
        idle.keep("c", 5, fresh);
        // Full at three: the oldest (a: 1) made room.
        assert_eq!(idle.take(&"a"), Some(4));
        assert_eq!(idle.take(&"a"), None);
        assert_eq!(idle.take(&"b"), Some(2));
        assert_eq!(idle.take(&"c"), Some(5));
        // Stale items go first, whatever their age.
        idle.keep("a", 6, fresh);
        idle.keep("b", 7, fresh);
        idle.keep("c", 8, |n| *n == 6);
        assert_eq!(idle.take(&"a"), None);
        assert_eq!(idle.take(&"b"), Some(7));
        assert_eq!(idle.take(&"c"), Some(8));
    }
}
