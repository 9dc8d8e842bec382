//! The one error type of the REST API, rendered as RFC 9457 problem details.
//!
//! Every handler returns `Result<_, ApiError>`. Client mistakes carry a precise `detail` (and
//! per-field `errors` for validation); server-side causes are logged with their full chain and the
//! client only sees a generic message, so internals (SQL, paths, addresses) never leak.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// Base of the `type` URIs; each problem kind appends its slug (documented in the README).
pub const PROBLEM_BASE: &str = "https://integrations-hub.dev/problems/";

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path in the request, e.g. `events[2]` or `limit`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem details document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("missing or invalid API key")]
    Unauthorized,
    /// A valid key whose scope does not cover the request.
    #[error("{}", forbidden_detail(*.0))]
    Forbidden(crate::config::Scope),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than the limit of {0} bytes (set by {1})")]
    PayloadTooLarge(usize, String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{detail}")]
    Unprocessable {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("{0}")]
    Unavailable(String),
    /// The database connection broke during the commit: stored or not, nobody knows.
    #[error("{0}")]
    Uncertain(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a key of `scope` may do instead, for a 403's detail.
fn forbidden_detail(scope: crate::config::Scope) -> &'static str {
    use crate::config::Scope;
    match scope {
        Scope::Publish => {
            "this API key may only publish events (POST /api/v1/events and /api/v1/events/batch)"
        }
        Scope::Read => "this API key may only read (GET); changes need an admin key",
        Scope::Admin => "this API key may not do this",
    }
}

impl ApiError {
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        ApiError::Unprocessable { detail, errors }
    }

    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::BadRequest {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError::new(field, message)],
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::PayloadTooLarge(..) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::Unprocessable { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Validation failed",
            ),
            ApiError::Unavailable(_) | ApiError::Uncertain(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_uncertain() {
            ApiError::Uncertain(e.to_string())
        } else if e.is_unavailable() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let (detail, errors) = match self {
            ApiError::BadRequest { detail, errors }
            | ApiError::Unprocessable { detail, errors } => (detail, errors),
            ApiError::Internal(cause) => {
                // The cause stays in the logs: it may name tables, hosts or files.
                tracing::error!(error = %cause, "request failed");
                (
                    "the server could not complete the request; the cause has been logged"
                        .to_owned(),
                    Vec::new(),
                )
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "request failed: storage unavailable");
                (
                    "the database is unreachable; nothing was stored, retry later".to_owned(),
                    Vec::new(),
                )
            }
            ApiError::Uncertain(cause) => {
                tracing::warn!(error = %cause, "request failed: commit outcome unknown");
                (
                    "the database connection broke while committing: this may or may not have \
                     been stored. A retry with the same Idempotency-Key stores it exactly once; \
                     without one, a retry may store it twice"
                        .to_owned(),
                    Vec::new(),
                )
            }
            other => (other.to_string(), Vec::new()),
        };
        let problem = Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"integrations-hub\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// Result of a request handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn detail(e: ApiError) -> (StatusCode, String) {
        let response = e.into_response();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("problem JSON");
        (
            status,
            problem["detail"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// A database that cannot be reached stored nothing; a connection that broke during the
    /// commit may have stored everything: the two 503s must not say the same thing.
    #[tokio::test]
    async fn a_lost_commit_is_not_reported_as_nothing_stored() {
        let io = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let refused = StoreError::from(io());
        let lost = StoreError::Shared(std::sync::Arc::new(StoreError::from_commit(io())));
        assert!(!refused.is_uncertain() && lost.is_uncertain() && lost.is_unavailable());
        let (status, said) = detail(refused.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(said.contains("nothing was stored"), "{said}");
        let (status, said) = detail(lost.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            said.contains("may or may not") && said.contains("Idempotency-Key"),
            "{said}"
        );
        // A COMMIT the server answered with an error did not commit.
        let answered = StoreError::from_commit(sqlx::Error::RowNotFound);
        assert!(!answered.is_uncertain());
    }
}
