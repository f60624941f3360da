//! Config reload: `POST /api/v1/admin/reload-configs` (root key) and SIGHUP re-read every
//! pipeline spec under `configs/`, validate all of them, and swap the new catalogue in at
//! once; on any problem the old catalogue stays and every problem is reported. Runs already
//! started keep the spec they started with (they hold it).

use std::sync::Arc;

use axum::{extract::State, Json};
use cloudact_pipeline::catalog::ReloadReport;
use serde_json::{json, Value};

use crate::{auth::RootAuth, context::AppContext, error::ApiError};

/// Reloads the catalogue of this process.
pub fn reload(ctx: &AppContext) -> Result<ReloadReport, Vec<String>> {
    let result = ctx.catalog.reload(&ctx.settings.configs_dir, &ctx.registry);
    match &result {
        Ok(r) => {
            metrics::counter!("config_reloads_total", "outcome" => "success").increment(1);
            tracing::info!(pipelines = r.pipelines, added = ?r.added, removed = ?r.removed, changed = ?r.changed,
                "configs reloaded");
        }
        Err(problems) => {
            metrics::counter!("config_reloads_total", "outcome" => "refused").increment(1);
            tracing::error!(?problems, "config reload refused: the previous catalogue stays");
        }
    }
    result
}

/// Re-reads `configs/`: all specs validated first, swapped atomically; 422 with every
/// problem (and nothing changed) otherwise.
#[utoipa::path(post, path = "/api/v1/admin/reload-configs", tag = "admin", security(("root_key" = [])),
    responses((status = 200), (status = 401), (status = 403), (status = 422)))]
pub async fn reload_configs(State(ctx): State<Arc<AppContext>>, _root: RootAuth) -> Result<Json<Value>, ApiError> {
    match reload(&ctx) {
        Ok(r) => {
            crate::layers::note(|n| {
                n.audit_details = Some(json!({"added": r.added, "removed": r.removed, "changed": r.changed}))
            });
            Ok(Json(json!({
                "status": "SUCCESS", "service": ctx.service_name, "pipelines": r.pipelines,
                "added": r.added, "removed": r.removed, "changed": r.changed,
                "message": format!("{} pipeline specs loaded and swapped in; runs in flight keep their spec", r.pipelines),
            })))
        }
        Err(problems) => Err(ApiError::unprocessable(
            "INVALID_CONFIGS",
            format!(
                "configs/ has {} problem(s); the previous catalogue is still in use: {}",
                problems.len(),
                problems.join("; ")
            ),
        )
        .with_extra(json!({"problems": problems}))),
    }
}

/// Reloads on every SIGHUP until shutdown (both services start this).
pub fn start_sighup_reload(ctx: &Arc<AppContext>) {
    #[cfg(unix)]
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                tracing::warn!("SIGHUP handler not installed: reload with POST /api/v1/admin/reload-configs");
                return;
            };
            loop {
                tokio::select! {
                    _ = hup.recv() => { let _ = reload(&ctx); }
                    _ = ctx.shutdown.cancelled() => return,
                }
            }
        });
    }
}
