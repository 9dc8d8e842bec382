//! Request extractors that turn every malformed request into the right problem.
//!
//! [`ApiJson`] reads the body itself (so the size cap and its 413 are ours, with the limit in the
//! message), demands a JSON content type (415), tells malformed JSON (400) from well-formed JSON
//! of the wrong shape (422, with the field's path), and rejects trailing garbage.

use axum::body::Body;
use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::AppState;
use crate::error::{ApiError, FieldError};
use crate::model::PageRequest;

/// A JSON request body of type `T`. `BATCH` selects the larger batch size cap
/// (`IH_MAX_BATCH_BYTES`) instead of `IH_MAX_PAYLOAD_BYTES`.
#[derive(Debug)]
pub struct ApiJson<T, const BATCH: bool = false>(pub T);

impl<T: DeserializeOwned, const BATCH: bool> FromRequest<AppState> for ApiJson<T, BATCH> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (limit, variable) = if BATCH {
            (state.config.max_batch_bytes, "IH_MAX_BATCH_BYTES")
        } else {
            (state.config.max_payload_bytes, "IH_MAX_PAYLOAD_BYTES")
        };
        check_content_type(req.headers())?;
        let bytes = read_body(req.into_body(), limit, variable).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn check_content_type(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType(
            "missing Content-Type: send the body as application/json".into(),
        ));
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {essence:?} is not supported: send the body as application/json"
        )))
    }
}

async fn read_body(
    body: Body,
    limit: usize,
    variable: &str,
) -> Result<axum::body::Bytes, ApiError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                Err(ApiError::PayloadTooLarge(limit, variable.to_owned()))
            } else {
                Err(ApiError::BadRequest {
                    detail: format!("could not read the request body: {e}"),
                    errors: Vec::new(),
                })
            }
        }
    }
}

/// Parses strict JSON into `T`, naming the offending field on shape errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            return Err(json_error(path, inner));
        }
    };
    de.end().map_err(|e| json_error(".".into(), e))?;
    Ok(value)
}

fn json_error(path: String, e: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let message = e.to_string();
    // serde appends the position; the field path says more and the position stays in `detail`.
    let bare = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::BadRequest {
            detail: format!("the body is not valid JSON: {message}"),
            errors: Vec::new(),
        },
        Category::Data => {
            // Missing and unknown fields are reported at their parent; name the field itself.
            let named = bare
                .split('`')
                .nth(1)
                .filter(|_| bare.starts_with("missing field") || bare.starts_with("unknown field"));
            let field = match (path.as_str(), named) {
                (".", Some(name)) => name.to_owned(),
                (p, Some(name)) if p == name || p.ends_with(&format!(".{name}")) => p.to_owned(),
                (parent, Some(name)) => format!("{parent}.{name}"),
                (".", None) => "body".to_owned(),
                (p, None) => p.to_owned(),
            };
            ApiError::Unprocessable {
                detail: format!("{field}: {bare}"),
                errors: vec![FieldError::new(field, bare)],
            }
        }
    }
}

/// The query of a list request as the OpenAPI document shows it (`params(PageQuery)`); [`Page`]
/// is what parses it.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `?limit=` and `?cursor=` of a list request (limit 1–500, default 50).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: u32,
    /// The last id of the previous page.
    pub after: Option<Uuid>,
}

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 500;

impl Page {
    /// The page as the store takes it.
    pub fn request(&self) -> PageRequest {
        PageRequest {
            after: self.after,
            limit: self.limit,
        }
    }

    /// A page of `items` as the API answers it: each mapped to its response type, and the
    /// cursor to the next page (by `id`) when the page is full.
    pub fn answer<T, O: From<T>>(
        &self,
        items: Vec<T>,
        id: impl Fn(&T) -> Uuid,
    ) -> (Vec<O>, Option<String>) {
        let next_cursor = self.next_cursor(items.last().map(id), items.len());
        (items.into_iter().map(O::from).collect(), next_cursor)
    }

    /// The cursor that continues after `last`, when a full page was returned.
    fn next_cursor(&self, last: Option<Uuid>, returned: usize) -> Option<String> {
        (returned >= self.limit as usize)
            .then_some(last)
            .flatten()
            .map(|id| URL_SAFE_NO_PAD.encode(id.as_bytes()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Page {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut page = Page {
            limit: DEFAULT_PAGE,
            after: None,
        };
        let query = parts.uri.query().unwrap_or("");
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "limit" => {
                    page.limit = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "limit",
                                format!(
                                    "must be a whole number from 1 to {MAX_PAGE}, got {value:?}"
                                ),
                            )
                        })?;
                }
                "cursor" if !value.is_empty() => {
                    let id = URL_SAFE_NO_PAD
                        .decode(value.as_bytes())
                        .ok()
                        .and_then(|b| Uuid::from_slice(&b).ok())
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "cursor",
                                "is not a cursor returned by this API (use next_cursor as given)",
                            )
                        })?;
                    page.after = Some(id);
                }
                _ => {}
            }
        }
        Ok(page)
    }
}

/// The filters of a list request, from its query string: every parameter but `limit` and
/// `cursor` (which [`Page`] reads) must be a field of `T`; a bad or unknown one is a 400 naming
/// it. Values are strings to `T` (ids, times and names parse from them).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let mut fields = serde_json::Map::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if key == "limit" || key == "cursor" {
                continue;
            }
            if fields.contains_key(key.as_ref()) {
                return Err(ApiError::bad_request(&key, "is given more than once"));
            }
            fields.insert(
                key.into_owned(),
                serde_json::Value::String(value.into_owned()),
            );
        }
        serde_path_to_error::deserialize(serde_json::Value::Object(fields))
            .map(ApiQuery)
            .map_err(|e| {
                let field = e.path().to_string();
                let message = e.into_inner().to_string();
                // An unknown or missing field is reported at the root: name the field itself.
                let named = message.split('`').nth(1).filter(|_| field == ".");
                let field = named.map_or(field, str::to_owned);
                ApiError::bad_request(&field, message)
            })
    }
}

/// What an id in a path names, for the 404 that says so.
pub trait Noun {
    const NOUN: &'static str;
}

/// The resources a path's id can name.
pub mod noun {
    macro_rules! nouns {
        ($($name:ident = $noun:literal),* $(,)?) => {$(
            #[derive(Debug)]
            pub enum $name {}
            impl super::Noun for $name {
                const NOUN: &'static str = $noun;
            }
        )*};
    }
    nouns!(
        Subscription = "subscription",
        Event = "event",
        DeadLetter = "dead letter"
    );
}

/// The id in the path of a route with one parameter. A malformed id is a 404 ("no such
/// thing") with a hint, since no resource can have it.
#[derive(Debug, Clone, Copy)]
pub struct Id<N>(Uuid, PhantomData<N>);

impl<N: Noun> Id<N> {
    /// The 404 for an id that names nothing.
    pub fn missing(&self) -> ApiError {
        ApiError::NotFound(format!("no {} with id {}", N::NOUN, self.0))
    }
}

impl<N> std::fmt::Display for Id<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<N> std::ops::Deref for Id<N> {
    type Target = Uuid;

    fn deref(&self) -> &Uuid {
        &self.0
    }
}

impl<N: Noun, S: Send + Sync> FromRequestParts<S> for Id<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("path", e.body_text()))?;
        Uuid::try_parse(&raw)
            .map(|id| Id(id, PhantomData))
            .map_err(|_| {
                ApiError::NotFound(format!("no {} with id {raw:?} (ids are UUIDs)", N::NOUN))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        tags: Vec<String>,
        raw: Box<serde_json::value::RawValue>,
    }

    fn field_of(e: ApiError) -> (u16, String) {
        match e {
            ApiError::Unprocessable { errors, .. } => (422, errors[0].field.clone()),
            ApiError::BadRequest { .. } => (400, String::new()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_name_the_field() {
        let ok: Sample =
            parse_json(br#"{"name":"a","tags":["x"],"raw":{"k": [1, 2]}}"#).expect("valid");
        assert_eq!(
            ok.raw.get(),
            r#"{"k": [1, 2]}"#,
            "raw values keep their exact bytes"
        );
        let e = |b: &[u8]| field_of(parse_json::<Sample>(b).expect_err("invalid"));
        assert_eq!(e(b"{\"name\": "), (400, String::new()));
        assert_eq!(
            e(br#"{"name":"a","tags":[],"raw":{}} x"#),
            (400, String::new())
        );
        assert_eq!(
            e(br#"{"name":"a","tags":[1],"raw":{}}"#),
            (422, "tags[0]".into())
        );
        assert_eq!(e(br#"{"name":"a","raw":{}}"#), (422, "tags".into()));
        assert_eq!(
            e(br#"{"name":"a","tags":[],"raw":{},"extra":1}"#),
            (422, "extra".into())
        );
        assert_eq!(e(b"5"), (422, "body".into()));
    }
}
