//! The pipeline catalogue (no auth): every spec under `configs/`.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    Json,
};
use cloudact_pipeline::CatalogEntry;
use cloudact_web::{ApiError, AppContext};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CatalogQuery {
    /// Only pipelines of this provider (e.g. `openai`, `setup`).
    pub provider: Option<String>,
    /// Only enabled pipelines (default true).
    pub enabled_only: Option<bool>,
    /// `data` (default: the runnable pipelines), `setup` (bootstrap, dryrun, onboarding) or
    /// `all`.
    pub kind: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub provider: String,
    pub domain: Option<String>,
    pub pipeline: String,
    pub path: String,
    pub schedule: Option<String>,
    pub required_integration: Option<String>,
    pub enabled: bool,
    pub steps: usize,
    pub timeout_minutes: u32,
    /// Other run paths of this pipeline (the original system's documented ones).
    pub aliases: Vec<String>,
}

impl From<&CatalogEntry> for PipelineInfo {
    fn from(e: &CatalogEntry) -> Self {
        PipelineInfo {
            id: e.id.clone(),
            name: e.name.clone(),
            description: e.description.clone(),
            kind: e.kind.to_string(),
            provider: e.provider.clone(),
            domain: e.domain.clone(),
            pipeline: e.pipeline.clone(),
            path: e.path.clone(),
            schedule: e.schedule.clone(),
            required_integration: e.required_integration.clone(),
            enabled: e.enabled,
            steps: e.steps,
            timeout_minutes: e.timeout_minutes,
            aliases: e.aliases.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogResponse {
    pub success: bool,
    pub pipelines: Vec<PipelineInfo>,
    pub total: usize,
}

/// Lists the pipeline catalogue.
#[utoipa::path(get, path = "/api/v1/validator/pipelines", tag = "validator", params(CatalogQuery),
    responses((status = 200, body = CatalogResponse), (status = 400)))]
pub async fn list_pipelines(
    State(ctx): State<Arc<AppContext>>,
    query: Result<Query<CatalogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CatalogResponse>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    let enabled_only = q.enabled_only.unwrap_or(true);
    let kind = match q.kind.as_deref().unwrap_or("data") {
        k @ ("data" | "setup") => Some(k),
        "all" => None,
        other => {
            return Err(ApiError::bad_request(
                "INVALID_QUERY",
                format!("kind {other:?} is not one of data, setup, all"),
            ))
        }
    };
    let pipelines: Vec<PipelineInfo> = ctx
        .catalog
        .entries()
        .iter()
        .filter(|e| q.provider.as_deref().is_none_or(|p| e.provider == p))
        .filter(|e| !enabled_only || e.enabled)
        .filter(|e| kind.is_none_or(|k| e.kind == k))
        .map(PipelineInfo::from)
        .collect();
    Ok(Json(CatalogResponse {
        success: true,
        total: pipelines.len(),
        pipelines,
    }))
}

/// One catalogue entry by pipeline id.
#[utoipa::path(get, path = "/api/v1/validator/pipelines/{pipeline_id}", tag = "validator",
    params(("pipeline_id" = String, Path)), responses((status = 200, body = PipelineInfo), (status = 404)))]
pub async fn get_pipeline(
    State(ctx): State<Arc<AppContext>>,
    Path(pipeline_id): Path<String>,
) -> Result<Json<PipelineInfo>, ApiError> {
    ctx.catalog
        .by_id(&pipeline_id)
        .map(|e| Json(PipelineInfo::from(&e)))
        .ok_or_else(|| ApiError::not_found("PIPELINE_NOT_FOUND", format!("no pipeline with id {pipeline_id:?}")))
}
