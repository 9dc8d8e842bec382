//! Bearer-token authentication for `/api/*` (`IH_API_KEYS`), with scopes: `admin`, `read`,
//! `publish` (see [`permits`]).
//!
//! Keys are compared as SHA-256 digests with a constant-time equality, and every configured key
//! is checked on every request, so neither the position of a match nor the length of a key can
//! be learned from response times.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::config::{ApiKey, Scope};
use crate::error::{ApiError, ApiResult};

/// Digests of the configured API keys with their scopes. Empty means authentication is off
/// (loopback-only hubs).
pub struct ApiKeys(Vec<([u8; 32], Scope)>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

/// A scope as the byte the constant-time search selects (0: no key matched).
fn code(scope: Scope) -> u8 {
    match scope {
        Scope::Publish => 1,
        Scope::Read => 2,
        Scope::Admin => 3,
    }
}

impl ApiKeys {
    pub fn new(keys: &[ApiKey]) -> Self {
        Self(
            keys.iter()
                .map(|k| (Sha256::digest(k.key.expose().as_bytes()).into(), k.scope))
                .collect(),
        )
    }

    /// The scope of `token`, if it is one of the keys. Constant time in the token and the key
    /// set: every key is compared and the match is selected without branching on it.
    pub fn scope_of(&self, token: &str) -> Option<Scope> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = 0u8;
        for (key, scope) in &self.0 {
            found.conditional_assign(&code(*scope), key.ct_eq(&presented));
        }
        Scope::ALL.into_iter().find(|s| code(*s) == found)
    }
}

/// `Authorization: Bearer <token>`, if the request carries one.
pub fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// Whether `scope` may make this request: `read` every `GET`, `publish` only the two publish
/// routes, `admin` everything. `GET /api/v1/key` (what a key may do) is open to every key.
pub fn permits(scope: Scope, method: &Method, path: &str) -> bool {
    let reading = *method == Method::GET || *method == Method::HEAD;
    match scope {
        Scope::Admin => true,
        _ if reading && path == KEY_PATH => true,
        Scope::Read => reading,
        Scope::Publish => {
            *method == Method::POST && (path == "/api/v1/events" || path == "/api/v1/events/batch")
        }
    }
}

const KEY_PATH: &str = "/api/v1/key";

/// Middleware: lets a request through when auth is off, or when it carries
/// `Authorization: Bearer <key>` with a configured key whose scope permits it; 401 for no or an
/// unknown key, 403 for a key that may not do this.
pub async fn require_api_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let scope = if state.api_keys.0.is_empty() {
        Scope::Admin
    } else {
        match bearer(&req).and_then(|token| state.api_keys.scope_of(token)) {
            Some(scope) => scope,
            None => return ApiError::Unauthorized.into_response(),
        }
    };
    if !permits(scope, req.method(), req.uri().path()) {
        return ApiError::Forbidden(scope).into_response();
    }
    req.extensions_mut().insert(scope);
    next.run(req).await
}

/// What the key of a request may do.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyOut {
    /// `admin` (everything), `read` (read only) or `publish` (publish events only). `admin`
    /// when authentication is off.
    #[schema(example = "read")]
    pub scope: &'static str,
    /// Whether the hub checks API keys at all.
    pub authentication: bool,
}

/// What the presented API key may do (the console asks, to show only what it can use).
#[utoipa::path(get, path = "/api/v1/key", tag = "operations",
    responses((status = 200, description = "The key's scope", body = KeyOut), (status = 401, description = "Missing or wrong API key")))]
async fn key(State(state): State<AppState>, req: Request) -> ApiResult<Json<KeyOut>> {
    let scope = req
        .extensions()
        .get::<Scope>()
        .copied()
        .unwrap_or(Scope::Admin);
    Ok(Json(KeyOut {
        scope: scope.as_str(),
        authentication: !state.api_keys.0.is_empty(),
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn accepts_only_configured_keys_with_their_scopes() {
        let keys = ApiKeys::new(&[
            key(Scope::Admin, "first-key-0123456789"),
            key(Scope::Read, "second-key-0123456789"),
            key(Scope::Publish, "third-key-0123456789"),
        ]);
        assert_eq!(keys.scope_of("first-key-0123456789"), Some(Scope::Admin));
        assert_eq!(keys.scope_of("second-key-0123456789"), Some(Scope::Read));
        assert_eq!(keys.scope_of("third-key-0123456789"), Some(Scope::Publish));
        assert_eq!(keys.scope_of("first-key-012345678"), None);
        assert_eq!(keys.scope_of(""), None);
        assert_eq!(ApiKeys::new(&[]).scope_of("anything"), None);
    }

    fn key(scope: Scope, text: &str) -> ApiKey {
        ApiKey {
            scope,
            key: Secret::new(text),
        }
    }

    #[test]
    fn scopes_permit_what_their_names_say() {
        let (get, post, patch, delete) = (Method::GET, Method::POST, Method::PATCH, Method::DELETE);
        let table: &[(&Method, &str, [bool; 3])] = &[
            // (publish, read, admin)
            (&post, "/api/v1/events", [true, false, true]),
            (&post, "/api/v1/events/batch", [true, false, true]),
            (&get, "/api/v1/events", [false, true, true]),
            (&get, "/api/v1/subscriptions", [false, true, true]),
            (&post, "/api/v1/subscriptions", [false, false, true]),
            (&patch, "/api/v1/subscriptions/x", [false, false, true]),
            (&delete, "/api/v1/subscriptions/x", [false, false, true]),
            (
                &post,
                "/api/v1/admin/dead-letters/x/replay",
                [false, false, true],
            ),
            (&get, "/api/v1/key", [true, true, true]),
        ];
        for (method, path, expected) in table {
            for (scope, want) in Scope::ALL.iter().zip(expected) {
                assert_eq!(
                    permits(*scope, method, path),
                    *want,
                    "{scope:?} {method} {path}"
                );
            }
        }
    }
}

/// Property test: the constant-time check accepts exactly the configured keys.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::config::Secret;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn accepts_exactly_the_configured_keys(
            keys in proptest::collection::vec("[ -~]{1,24}", 0..4),
            token in "[ -~]{0,24}",
            pick in any::<prop::sample::Index>(),
        ) {
            let configured: Vec<ApiKey> = keys
                .iter()
                .map(|k| ApiKey { scope: Scope::Read, key: Secret::new(k.clone()) })
                .collect();
            let api_keys = ApiKeys::new(&configured);
            prop_assert_eq!(api_keys.scope_of(&token).is_some(), keys.contains(&token));
            if !keys.is_empty() {
                prop_assert_eq!(api_keys.scope_of(&keys[pick.index(keys.len())]), Some(Scope::Read));
            }
        }
    }
}
