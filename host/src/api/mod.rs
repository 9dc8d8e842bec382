//! The HTTP surface: REST API, operations endpoints, OpenAPI document and UI.
//!
//! One file per resource, each exporting an `OpenApiRouter` whose handlers carry their own
//! OpenAPI annotations, so the published document cannot drift from the code. This module
//! assembles them and adds what every route shares: API-key auth on `/api/*`, request ids,
//! tracing, per-route metrics, panic capture and problem-details fallbacks.
//!
//! Invariant: every body is read through [`ApiJson`], which enforces the size cap, the content
//! type and strict JSON, and maps each failure to its problem (400, 413, 415, 422).

mod admin;
mod auth;
mod connectors;
mod console;
mod events;
mod extract;
mod feed;
mod instances;
mod ops;
mod schema;
mod stats;
mod subscriptions;
mod transforms;
pub(crate) mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Level;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::connectors::Connectors;
use crate::delivery::Sender;
use crate::egress::Policy;
use crate::error::ApiError;
use crate::metrics::{HttpLabels, Metrics, RouteLabels};
use crate::model::{PublishOutcome, PublishRequest};
use crate::store::Store;
use crate::store::group::{self, GroupCommit};

pub use extract::{ApiJson, Page, PageQuery};

/// Longest time a request may take before the hub answers 503 itself.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    /// Wakes the delivery engine when new work is committed.
    pub wake: Arc<tokio::sync::Notify>,
    /// Loaded connectors: listed by the API, and consulted when an event is published.
    pub connectors: Arc<Connectors>,
    /// Writes concurrent publishes together (group commit); each is answered once committed.
    pub publisher: Arc<GroupCommit<PublishRequest, PublishOutcome>>,
    /// Sends test events exactly as the engine sends deliveries.
    pub sender: Sender,
    /// Which destinations URLs may name (checked again at every attempt).
    pub policy: Policy,
    /// Live feeds open (at most `feed::MAX_FEEDS`).
    feeds: Arc<tokio::sync::Semaphore>,
    /// Turns true when the hub shuts down: live feeds end.
    stop: tokio::sync::watch::Receiver<bool>,
    api_keys: Arc<auth::ApiKeys>,
    /// `IH_METRICS_KEY`, checked as API keys are; `None`: `/metrics` is open.
    metrics_key: Option<Arc<auth::ApiKeys>>,
}

impl AppState {
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        wake: Arc<tokio::sync::Notify>,
        connectors: Arc<Connectors>,
        sender: Sender,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            publisher: Arc::new(group::publishes(store.clone())),
            sender,
            feeds: Arc::new(tokio::sync::Semaphore::new(feed::MAX_FEEDS)),
            stop,
            wake,
            connectors,
            api_keys: Arc::new(auth::ApiKeys::new(&config.api_keys)),
            metrics_key: config.metrics_key.as_ref().map(|key| {
                let only = crate::config::ApiKey {
                    scope: crate::config::Scope::Read,
                    key: key.clone(),
                };
                Arc::new(auth::ApiKeys::new(&[only]))
            }),
            policy: Policy::from_config(&config),
            store,
            metrics,
            config: Arc::new(config),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Integrations Hub",
        description = "Publish your product's events; the hub stores them durably and delivers them, signed, \
                       to subscribed webhooks and to sandboxed WebAssembly connectors.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    tags(
        (name = "subscriptions", description = "Webhook endpoints and the events they receive"),
        (name = "events", description = "Publishing events and following their deliveries"),
        (name = "admin", description = "Attempts, dead letters and replay"),
        (name = "connectors", description = "WebAssembly connectors loaded from IH_CONNECTORS_DIR"),
        (name = "transforms", description = "WebAssembly transforms (from IH_CONNECTORS_DIR) that reshape webhook bodies"),
        (name = "operations", description = "Health and metrics (no API key needed)")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI document of the whole HTTP surface, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = api_routes().split_for_parts();
    let (_, ops) = ops::router().split_for_parts();
    with_common_responses(api.merge_from(ops))
}

/// Documents the answers every operation can give whatever its handler does, so no handler has
/// to list them (and gives the errors a handler lists their problem body): 401 from the auth layer on `/api/*`, 400/413/415 from [`ApiJson`] wherever a
/// body is read, 400 from [`Page`] wherever a list is paged, and 503 when the database is
/// unreachable.
fn with_common_responses(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
    let problem = |description: &str| -> RefOr<Response> {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
            .into()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/api/") {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            let responses = &mut op.responses.responses;
            // Handlers list their errors by status and meaning; every error body is a problem.
            for (status, response) in responses.iter_mut() {
                if let RefOr::T(declared) = response
                    && declared.content.is_empty()
                    && (status.starts_with('4') || status.starts_with('5'))
                {
                    *response = problem(&declared.description);
                }
            }
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem(description));
            };
            add("401", "Missing or wrong API key");
            add("403", "The API key's scope does not cover this request");
            add(
                "503",
                "The database is unreachable: nothing was changed, retry later (or, as `detail` \
                 then says, the connection broke during the commit: retry with the same \
                 Idempotency-Key)",
            );
            let paged = op.parameters.iter().flatten().any(|p| p.name == "limit");
            if paged {
                add("400", "Bad limit or cursor");
            }
            if op.request_body.is_some() {
                add("400", "Malformed JSON");
                add("413", "Body too large");
                add("415", "Content type is not application/json");
            }
        }
    }
    doc
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(subscriptions::router())
        .merge(events::router())
        .merge(admin::router())
        .merge(connectors::router())
        .merge(transforms::router())
        .merge(instances::router())
        .merge(stats::router())
        .merge(feed::router())
        .merge(auth::router())
}

/// Builds the complete application for `state`.
pub fn router(state: AppState) -> Router {
    let (api, api_doc) = api_routes().split_for_parts();
    let (ops, ops_doc) = ops::router().split_for_parts();
    let api = api.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_api_key,
    ));
    let request_id = HeaderName::from_static("x-request-id");

    Router::new()
        .merge(api)
        .merge(ops)
        .merge(console::router())
        .merge(SwaggerUi::new("/docs").url(
            "/openapi.json",
            with_common_responses(api_doc.merge_from(ops_doc)),
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a request handler panicked").into_response()
        }))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let (method, path) = (req.method(), req.uri().path());
                    // Probes and scrapes come every few seconds: at debug, not among requests.
                    if matches!(path, "/health" | "/livez" | "/readyz" | "/metrics") {
                        tracing::debug_span!("request", method = %method, path = %path, request_id = %id)
                    } else {
                        tracing::info_span!("request", method = %method, path = %path, request_id = %id)
                    }
                })
                .on_response(|res: &Response, latency: Duration, span: &tracing::Span| {
                    // The event at the span's level (none when the span is filtered out), with
                    // the latency as a number: log queries compare numbers, not "3 ms".
                    let status = res.status().as_u16();
                    let latency_ms = latency.as_secs_f64() * 1000.0;
                    match span.metadata().map(|m| *m.level()) {
                        Some(Level::INFO) => tracing::info!(status, latency_ms, "finished processing request"),
                        Some(_) => tracing::debug!(status, latency_ms, "finished processing request"),
                        None => {}
                    }
                }),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Counts every matched request by route template and status.
async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    observe(
        &state.metrics,
        method,
        route,
        response.status().as_u16(),
        started,
    );
    response
}

fn observe(metrics: &Metrics, method: String, route: String, status: u16, started: Instant) {
    metrics
        .http_request_duration
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status,
        })
        .inc();
}

async fn not_found(
    State(state): State<AppState>,
    method: Method,
    uri: axum::http::Uri,
) -> ApiError {
    observe(
        &state.metrics,
        method.to_string(),
        "unmatched".into(),
        404,
        Instant::now(),
    );
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
