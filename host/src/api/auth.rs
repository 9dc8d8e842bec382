//! Bearer-token authentication for `/api/*` (`IH_API_KEYS`).
//!
//! Keys are compared as SHA-256 digests with a constant-time equality, and every configured key
//! is checked on every request, so neither the position of a match nor the length of a key can
//! be learned from response times.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::AppState;
use crate::config::Secret;
use crate::error::ApiError;

/// Digests of the configured API keys. Empty means authentication is off (loopback-only hubs).
pub struct ApiKeys(Vec<[u8; 32]>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

impl ApiKeys {
    pub fn new(keys: &[Secret]) -> Self {
        Self(
            keys.iter()
                .map(|k| Sha256::digest(k.expose().as_bytes()).into())
                .collect(),
        )
    }

    /// Whether `token` is one of the keys. Constant time in the token and the key set.
    pub fn accepts(&self, token: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut matched = Choice::from(0);
        for key in &self.0 {
            matched |= key.ct_eq(&presented);
        }
        matched.into()
    }
}

/// Middleware: lets a request through when auth is off or it carries `Authorization: Bearer <key>`
/// with a configured key; answers 401 otherwise.
pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.api_keys.0.is_empty() {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match token {
        Some(token) if state.api_keys.accepts(token) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_keys() {
        let keys = ApiKeys::new(&[
            Secret::new("first-key-0123456789"),
            Secret::new("second-key-0123456789"),
        ]);
        assert!(keys.accepts("first-key-0123456789"));
        assert!(keys.accepts("second-key-0123456789"));
        assert!(!keys.accepts("first-key-012345678"));
        assert!(!keys.accepts(""));
        assert!(!ApiKeys::new(&[]).accepts("anything"));
    }
}

/// Property test: the constant-time check accepts exactly the configured keys.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn accepts_exactly_the_configured_keys(
            keys in proptest::collection::vec("[ -~]{1,24}", 0..4),
            token in "[ -~]{0,24}",
            pick in any::<prop::sample::Index>(),
        ) {
            let secrets: Vec<Secret> = keys.iter().map(|k| Secret::new(k.clone())).collect();
            let api_keys = ApiKeys::new(&secrets);
            prop_assert_eq!(api_keys.accepts(&token), keys.contains(&token));
            if !keys.is_empty() {
                prop_assert!(api_keys.accepts(&keys[pick.index(keys.len())]));
            }
        }
    }
}
