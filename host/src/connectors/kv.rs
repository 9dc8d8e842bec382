//! The `kv` import: a small cache per connector instance, in this process's memory, for what a
//! connector would otherwise fetch on every call (an OAuth token).
//!
//! Invariants:
//! - an instance sees only its own keys (the default instance of a connector is one instance);
//! - everything is bounded: [`MAX_KEYS`] keys of [`MAX_KEY`] bytes per instance, values of
//!   [`MAX_VALUE`] bytes, [`MAX_SCOPES`] instances (the least recently used is dropped first);
//! - an expired value is never answered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Keys one instance may hold.
pub const MAX_KEYS: usize = 64;
/// Bytes of a key.
pub const MAX_KEY: usize = 128;
/// Bytes of a value.
pub const MAX_VALUE: usize = 16 * 1024;
/// Instances whose values are kept at once.
pub const MAX_SCOPES: usize = 4096;

/// Whose values: a connector and one of its instances (`None`: the default one).
pub type Scope = (String, Option<Uuid>);

#[derive(Debug)]
struct Value {
    bytes: Vec<u8>,
    expires: Option<Instant>,
}

impl Value {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

#[derive(Debug, Default)]
struct Bucket {
    values: HashMap<String, Value>,
    used: Option<Instant>,
}

/// Every instance's values.
#[derive(Debug, Default)]
pub struct Kv {
    buckets: Mutex<HashMap<Scope, Bucket>>,
}

/// Why a value was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge(pub String);

impl Kv {
    fn with<T>(&self, scope: &Scope, f: impl FnOnce(&mut Bucket, Instant) -> T) -> T {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(scope) && buckets.len() >= MAX_SCOPES {
            let oldest = buckets
                .iter()
                .min_by_key(|(_, b)| b.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                buckets.remove(&oldest);
            }
        }
        let bucket = buckets.entry(scope.clone()).or_default();
        bucket.used = Some(now);
        f(bucket, now)
    }

    /// The live value of `key`.
    pub fn get(&self, scope: &Scope, key: &str) -> Option<Vec<u8>> {
        self.with(scope, |bucket, now| {
            let value = bucket.values.get(key)?;
            if value.live(now) {
                Some(value.bytes.clone())
            } else {
                bucket.values.remove(key);
                None
            }
        })
    }

    /// Stores `value` under `key`, expiring after `ttl` when given.
    pub fn set(
        &self,
        scope: &Scope,
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), TooLarge> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(TooLarge(format!(
                "a key must have 1 to {MAX_KEY} bytes (this one has {})",
                key.len()
            )));
        }
        if value.len() > MAX_VALUE {
            return Err(TooLarge(format!(
                "a value may have at most {MAX_VALUE} bytes (this one has {})",
                value.len()
            )));
        }
        self.with(scope, |bucket, now| {
            if !bucket.values.contains_key(&key) && bucket.values.len() >= MAX_KEYS {
                bucket.values.retain(|_, v| v.live(now));
                if bucket.values.len() >= MAX_KEYS {
                    return Err(TooLarge(format!(
                        "this instance already holds {MAX_KEYS} keys; delete one first"
                    )));
                }
            }
            let expires = ttl.and_then(|ttl| now.checked_add(ttl));
            bucket.values.insert(
                key,
                Value {
                    bytes: value,
                    expires,
                },
            );
            Ok(())
        })
    }

    /// Removes `key`.
    pub fn delete(&self, scope: &Scope, key: &str) {
        self.with(scope, |bucket, _| bucket.values.remove(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(instance: Option<Uuid>) -> Scope {
        ("oauth".to_owned(), instance)
    }

    #[test]
    fn instances_see_only_their_own_values() {
        let kv = Kv::default();
        let (a, b) = (scope(None), scope(Some(Uuid::now_v7())));
        kv.set(&a, "token".into(), b"A".to_vec(), None)
            .expect("set");
        assert_eq!(kv.get(&a, "token"), Some(b"A".to_vec()));
        assert_eq!(kv.get(&b, "token"), None);
        kv.delete(&a, "token");
        assert_eq!(kv.get(&a, "token"), None);
    }

    #[test]
    fn expired_values_are_not_answered() {
        let kv = Kv::default();
        let a = scope(None);
        kv.set(&a, "t".into(), b"x".to_vec(), Some(Duration::ZERO))
            .expect("set");
        assert_eq!(kv.get(&a, "t"), None);
        kv.set(&a, "t".into(), b"x".to_vec(), Some(Duration::from_secs(60)))
            .expect("set");
        assert_eq!(kv.get(&a, "t"), Some(b"x".to_vec()));
    }

    #[test]
    fn keys_values_and_counts_are_bounded() {
        let kv = Kv::default();
        let a = scope(None);
        assert!(kv.set(&a, String::new(), vec![], None).is_err());
        assert!(kv.set(&a, "k".repeat(MAX_KEY + 1), vec![], None).is_err());
        assert!(
            kv.set(&a, "k".into(), vec![0; MAX_VALUE + 1], None)
                .is_err()
        );
        for i in 0..MAX_KEYS {
            kv.set(&a, format!("k{i}"), vec![0; MAX_VALUE], None)
                .expect("within the bound");
        }
        let full = kv.set(&a, "one more".into(), vec![], None);
        assert!(full.expect_err("full").0.contains("64 keys"));
        kv.set(&a, "k0".into(), b"replaced".to_vec(), None)
            .expect("replacing is not adding");
        // Expired values make room.
        kv.delete(&a, "k1");
        kv.set(&a, "short".into(), vec![], Some(Duration::ZERO))
            .expect("set");
        kv.set(&a, "new".into(), vec![], None).expect("room again");
    }

    #[test]
    fn the_least_recently_used_instance_is_dropped_past_the_bound() {
        let kv = Kv::default();
        let first = scope(Some(Uuid::now_v7()));
        kv.set(&first, "k".into(), b"v".to_vec(), None)
            .expect("set");
        for _ in 0..MAX_SCOPES {
            kv.set(&scope(Some(Uuid::now_v7())), "k".into(), vec![], None)
                .expect("set");
        }
        assert_eq!(kv.get(&first, "k"), None);
        assert!(kv.buckets.lock().expect("lock").len() <= MAX_SCOPES);
    }
}
