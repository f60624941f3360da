//! The middleware stack, applied to both services by [`apply`]:
//! request id (accepted or generated, echoed, on every log line via the request span),
//! access log, JSON bodies for errors axum produces itself, global rate limit, body size
//! limit, CORS.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{Request, State},
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

use crate::{context::AppContext, error::ApiError, extract::MAX_BODY_BYTES};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled (empty outside a request).
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

fn acceptable_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Assigns the request id, opens the request span, logs the outcome, and rewrites any
/// non-JSON error response into the JSON error format.
async fn request_context(req: Request, next: Next) -> Response {
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
    REQUEST_ID
        .scope(request_id.clone(), async move {
            let response = next.run(req).await;
            let mut response = json_errors(response).await;
            if let Ok(v) = HeaderValue::from_str(&rid) {
                response.headers_mut().insert(REQUEST_ID_HEADER, v);
            }
            let status = response.status().as_u16();
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            if status >= 500 {
                tracing::error!(status, latency_ms, "request failed");
            } else {
                tracing::info!(status, latency_ms, "request finished");
            }
            response
        })
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
        .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600))
}

/// Wraps a service's router in the shared middleware stack.
pub fn apply(router: Router<Arc<AppContext>>, ctx: Arc<AppContext>) -> Router {
    router
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(ctx.clone(), global_rate_limit))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(cors(&ctx))
        .layer(middleware::from_fn(request_context))
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
