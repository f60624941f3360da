//! Health routes (no auth): `/`, `/health`, `/health/live`, `/health/ready`.
//! Ready means: not shutting down, and the warehouse answers within 5 seconds.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::context::AppContext;

#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    pub status: String,
    pub service: String,
    pub version: String,
    pub environment: String,
}

/// The health routes, for merging into a service router.
pub fn routes() -> Router<Arc<AppContext>> {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
}

async fn root(State(ctx): State<Arc<AppContext>>) -> Json<Value> {
    let docs = if ctx.settings.enable_api_docs {
        "/docs"
    } else {
        "disabled"
    };
    Json(json!({
        "message": format!("Welcome to CloudAct {}", ctx.service_name),
        "service": ctx.service_name,
        "version": ctx.version,
        "environment": ctx.settings.environment.as_str(),
        "docs": docs,
        "openapi": if ctx.settings.enable_api_docs { "/openapi.json" } else { "disabled" },
    }))
}

/// Service identity; always 200 while the process serves.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = HealthBody)))]
pub async fn health(State(ctx): State<Arc<AppContext>>) -> Json<HealthBody> {
    Json(HealthBody {
        status: "healthy".into(),
        service: ctx.service_name.into(),
        version: ctx.version.into(),
        environment: ctx.settings.environment.as_str().into(),
    })
}

/// Liveness: 503 once shutdown has begun.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200), (status = 503)))]
pub async fn live(State(ctx): State<Arc<AppContext>>) -> (StatusCode, Json<Value>) {
    let shutting_down = ctx.shutting_down.load(Ordering::Relaxed);
    let status = if shutting_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let label = if shutting_down { "shutting_down" } else { "alive" };
    (
        status,
        Json(json!({"status": label, "service": ctx.service_name, "version": ctx.version})),
    )
}

/// Readiness: the warehouse answers and the service is not shutting down.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses((status = 200), (status = 503)))]
pub async fn ready(State(ctx): State<Arc<AppContext>>) -> (StatusCode, Json<Value>) {
    let not_shutting_down = !ctx.shutting_down.load(Ordering::Relaxed);
    let warehouse = matches!(
        tokio::time::timeout(Duration::from_secs(5), ctx.warehouse.ping()).await,
        Ok(Ok(()))
    );
    let problems = ctx.config_health.problems();
    let ok = not_shutting_down && warehouse && problems.is_empty();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ok { "ready" } else { "not_ready" },
            "service": ctx.service_name,
            "version": ctx.version,
            "checks": {"shutdown": not_shutting_down, "warehouse": warehouse, "warehouse_backend": ctx.warehouse.backend_name(),
                       "configuration": problems.is_empty()},
            "problems": problems,
        })),
    )
}
