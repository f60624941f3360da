//! Prometheus metrics through the `metrics` facade and `metrics-exporter-prometheus`: one
//! recorder per process (installed on first use), rendered by `GET /metrics` on both services.
//!
//! What is recorded, and where (labels are bounded: route templates, pipeline ids, provider
//! and backend names; never an org key, credential or raw path):
//! - `http_requests_total{service,route,method,status}` and
//!   `http_request_duration_seconds{service,route,method}` (the request middleware);
//! - `pipeline_runs_started_total{pipeline}`, `pipeline_runs_finished_total{pipeline,status}`,
//!   `pipeline_run_duration_seconds{pipeline,status}`,
//!   `pipeline_step_duration_seconds{pipeline,step_type,status}`,
//!   `pipeline_rows_loaded_total{table}` (the executor and the day loaders);
//! - `provider_requests_total{provider,status}`, `provider_retries_total{provider}`,
//!   `provider_rate_limited_total{provider}` (the provider HTTP helper);
//! - `warehouse_operation_duration_seconds{backend,op}`, `warehouse_errors_total{backend,op}`
//!   (the [`cloudact_core::warehouse::metered::Metered`] decorator);
//! - `auth_cache_hits_total`, `auth_cache_misses_total`, `rate_limit_refusals_total{scope,window}`;
//! - `scheduler_queue_depth` (the scheduler's queue, after each tick).

use std::sync::{Arc, OnceLock};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::ExposeSecret;

use crate::{context::AppContext, error::ApiError};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets (seconds) for every `*_duration_seconds` histogram.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0,
];

/// The process's recorder, installed on first call (`None` if another recorder was
/// installed first: metrics are then not rendered here).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// `GET /metrics`: Prometheus text format. With `METRICS_TOKEN` set, only with
/// `Authorization: Bearer <token>`. Not rate-limited.
pub async fn render(State(ctx): State<Arc<AppContext>>, headers: HeaderMap) -> Response {
    if let Some(token) = &ctx.settings.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = presented.is_some_and(|p| {
            use subtle::ConstantTimeEq;
            bool::from(p.as_bytes().ct_eq(token.expose_secret().as_bytes()))
        });
        if !ok {
            return ApiError::unauthorized(
                "METRICS_TOKEN_REQUIRED",
                "send the metrics token as Authorization: Bearer <METRICS_TOKEN>",
            )
            .into_response();
        }
    }
    let Some(h) = handle() else {
        return ApiError::unavailable("METRICS_UNAVAILABLE", "metrics are not recorded in this process")
            .into_response();
    };
    h.run_upkeep();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        h.render(),
    )
        .into_response()
}
