//! The middleware stack, applied to both services by [`apply`] (outermost first):
//! request context (request id accepted or generated and echoed, the request span, access
//! log, HTTP metrics by route template, `X-Process-Time`, `X-API-Version`, `RateLimit-*`
//! headers, JSON bodies for errors axum produces itself), CORS, body size limit, maintenance
//! mode and the service-wide rate limit, and the audit trail of state changes
//! ([`crate::audit`]).

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    body::Body,
    extract::{MatchedPath, Request, State},
    http::{header, HeaderName, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    limit::RequestBodyLimitLayer,
};
use tracing::Instrument;

use crate::{context::AppContext, error::ApiError, extract::MAX_BODY_BYTES, rate_limit::RateBudget};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
    static NOTES: Arc<Mutex<RequestNotes>>;
}

/// What the layers inside a request learn that the outer layers need: the rate budget
/// (headers), who the caller is and what the handler says about its change (audit), the
/// error a person saw.
#[derive(Debug, Default, Clone)]
pub struct RequestNotes {
    pub rate: Option<RateBudget>,
    /// `root` or `key:{fingerprint}`, once authenticated.
    pub actor: Option<String>,
    /// The org the change concerned when the path does not name it (onboarding).
    pub audit_org: Option<String>,
    /// The handler's before/after summary (never a secret).
    pub audit_details: Option<serde_json::Value>,
    pub error_detail: Option<String>,
}

/// Records something about the current request (a no-op outside one).
pub fn note(f: impl FnOnce(&mut RequestNotes)) {
    let _ = NOTES.try_with(|n| {
        if let Ok(mut n) = n.lock() {
            f(&mut n);
        }
    });
}

/// What has been recorded about the current request so far.
pub fn notes() -> RequestNotes {
    NOTES
        .try_with(|n| n.lock().map(|n| n.clone()).unwrap_or_default())
        .unwrap_or_default()
}

/// The id of the request being handled (empty outside a request).
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

fn acceptable_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Assigns the request id, opens the request span, logs the outcome, records the HTTP
/// metrics, adds the operator headers, and rewrites any non-JSON error response into the JSON
/// error format.
async fn request_context(State(ctx): State<Arc<AppContext>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (trace_id, span_id) = {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        match crate::logging::trace_context(header("x-cloud-trace-context"), header("traceparent")) {
            Some((t, s)) => (Some(t), s),
            None => (None, None),
        }
    };
    let span = tracing::info_span!("request", request_id = %request_id, method = %req.method(),
        path = %req.uri().path(), trace_id = trace_id.as_deref(), span_id = span_id.as_deref());
    let started = Instant::now();
    let rid = request_id.clone();
    let notes = Arc::new(Mutex::new(RequestNotes::default()));
    let scoped = notes.clone();
    REQUEST_ID
        .scope(
            request_id.clone(),
            NOTES.scope(scoped, async move {
                let response = next.run(req).await;
                let mut response = json_errors(response).await;
                let elapsed = started.elapsed().as_secs_f64();
                let headers = response.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&rid) {
                    headers.insert(REQUEST_ID_HEADER, v);
                }
                headers.insert(
                    HeaderName::from_static("x-process-time"),
                    HeaderValue::from_str(&format!("{elapsed:.6}")).unwrap_or(HeaderValue::from_static("0")),
                );
                if let Ok(v) = HeaderValue::from_str(ctx.version) {
                    headers.insert(HeaderName::from_static("x-api-version"), v);
                }
                let rate = notes.lock().ok().and_then(|n| n.rate);
                if let Some(b) = rate {
                    for (name, value) in [
                        ("ratelimit-limit", b.limit.to_string()),
                        ("ratelimit-remaining", b.remaining.to_string()),
                        ("ratelimit-reset", b.reset_seconds.to_string()),
                    ] {
                        if let Ok(v) = HeaderValue::from_str(&value) {
                            headers.insert(HeaderName::from_static(name), v);
                        }
                    }
                }
                let status = response.status().as_u16();
                metrics::counter!("http_requests_total", "service" => ctx.service_name, "route" => route.clone(),
                    "method" => method.clone(), "status" => status.to_string())
                .increment(1);
                metrics::histogram!("http_request_duration_seconds", "service" => ctx.service_name, "route" => route,
                    "method" => method)
                .record(elapsed);
                let latency_ms = elapsed * 1000.0;
                if status >= 500 {
                    tracing::error!(status, latency_ms, "request failed");
                } else {
                    tracing::info!(status, latency_ms, "request finished");
                }
                response
            }),
        )
        .instrument(span)
        .await
}

/// Errors from axum itself (404 no route, 405, 413 from the body limit) come as plain
/// text: give them the same JSON shape as ours.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if status.as_u16() < 400 {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return response;
    }
    let detail = match status {
        StatusCode::NOT_FOUND => "no such route; see /docs for the API".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "this route does not accept that HTTP method".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        s => s.canonical_reason().unwrap_or("request failed").to_string(),
    };
    let mut rewritten = ApiError::new(status, ApiError::code_for_status(status), detail).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = response.headers().get(&name) {
            rewritten.headers_mut().insert(name, v.clone());
        }
    }
    rewritten
}

async fn global_rate_limit(State(ctx): State<Arc<AppContext>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let exempt = path.starts_with("/health") || path == "/" || path == "/metrics";
    let docs = path == "/openapi.json" || path.starts_with("/docs") || path.starts_with("/redoc");
    if ctx.settings.maintenance_mode && !exempt {
        return ApiError::unavailable(
            "MAINTENANCE",
            "the service is in maintenance mode (MAINTENANCE_MODE=true); retry later",
        )
        .with_header(header::RETRY_AFTER, "3600")
        .with_header(HeaderName::from_static("x-maintenance-mode"), "true")
        .with_extra(serde_json::json!({"maintenance": true}))
        .into_response();
    }
    if !exempt && !docs {
        let problems = ctx.config_health.problems();
        if !problems.is_empty() {
            return ApiError::unavailable(
                "CONFIGURATION_ERROR",
                format!(
                    "the service is misconfigured and cannot serve requests: {}",
                    problems.join("; ")
                ),
            )
            .into_response();
        }
    }
    if !exempt {
        if let Err(e) = ctx.limits.check_global() {
            return e.into_response();
        }
    }
    next.run(req).await
}

fn cors(ctx: &AppContext) -> CorsLayer {
    let origins = &ctx.settings.cors_origins;
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-ca-root-key"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-user-id"),
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            HeaderName::from_static("x-process-time"),
            HeaderName::from_static("x-api-version"),
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// Wraps a service's router in the shared middleware stack.
pub fn apply(router: Router<Arc<AppContext>>, ctx: Arc<AppContext>) -> Router {
    router
        .route("/metrics", axum::routing::get(crate::metrics::render))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(ctx.clone(), crate::audit::audit_changes))
        .layer(middleware::from_fn_with_state(ctx.clone(), global_rate_limit))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(cors(&ctx))
        .layer(middleware::from_fn_with_state(ctx.clone(), request_context))
        .with_state(ctx)
}

/// An empty body with a status, for tests of the error rewriting.
#[doc(hidden)]
pub fn bare(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .unwrap_or_default()
}
