//! `POST /api/v1/admin/bootstrap` (root key): runs the bootstrap pipeline. Idempotent.

use std::sync::Arc;

use axum::{extract::State, Json};
use cloudact_pipeline::{CancellationToken, RunRequest, RunStatus};
use cloudact_web::{ApiError, AppContext, OptionalJson, RootAuth};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub(crate) const BOOTSTRAP_SPEC: &str = "setup/bootstrap/pipeline.yml";

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapRequest {
    /// Delete the central dataset (every org's records!) and create it again.
    #[serde(default)]
    pub force_recreate_dataset: bool,
    /// Drop and recreate every central table.
    #[serde(default)]
    pub force_recreate_tables: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BootstrapResponse {
    pub status: String,
    pub dataset: String,
    pub dataset_created: bool,
    pub tables_created: Vec<String>,
    pub tables_existed: Vec<String>,
    /// Table → columns added to bring an existing table up to its schema file.
    pub columns_added: std::collections::BTreeMap<String, Vec<String>>,
    pub total_tables: usize,
    pub pipeline_logging_id: String,
    pub message: String,
}

/// Creates the central dataset and tables; a re-run reports them as existing.
#[utoipa::path(post, path = "/api/v1/admin/bootstrap", tag = "admin", request_body(content = BootstrapRequest, description = "optional"),
    security(("root_key" = [])),
    responses((status = 200, body = BootstrapResponse), (status = 401), (status = 403), (status = 422)))]
pub async fn bootstrap(
    State(ctx): State<Arc<AppContext>>,
    _root: RootAuth,
    OptionalJson(req): OptionalJson<BootstrapRequest>,
) -> Result<Json<BootstrapResponse>, ApiError> {
    let spec = ctx.catalog.require(BOOTSTRAP_SPEC).map_err(ApiError::internal)?;
    let mut params = serde_json::Map::new();
    params.insert("force_recreate_dataset".into(), req.force_recreate_dataset.into());
    params.insert("force_recreate_tables".into(), req.force_recreate_tables.into());
    let report = ctx
        .executor
        .run(
            &spec,
            RunRequest {
                params,
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await;
    if report.status != RunStatus::Completed {
        let error = report.error.unwrap_or_default();
        if let Some(problems) = schema_incompatibility(&error) {
            return Err(ApiError::conflict(
                "SCHEMA_INCOMPATIBLE",
                format!(
                    "the central tables cannot be brought up to the schema files, so nothing was changed: {problems}"
                ),
            ));
        }
        return Err(ApiError::internal(format!("bootstrap failed: {error}")));
    }
    let out = report.steps.first().map(|s| s.output.clone()).unwrap_or_default();
    let list = |k: &str| -> Vec<String> { serde_json::from_value(out[k].clone()).unwrap_or_default() };
    let (created, existed) = (list("tables_created"), list("tables_existed"));
    let added: std::collections::BTreeMap<String, Vec<String>> =
        serde_json::from_value(out["columns_added"].clone()).unwrap_or_default();
    let message = if !added.is_empty() {
        format!(
            "migrated: {} columns added to {} existing tables; {} tables created",
            added.values().map(Vec::len).sum::<usize>(),
            added.len(),
            created.len()
        )
    } else if created.is_empty() {
        format!("already bootstrapped: all {} tables exist", existed.len())
    } else {
        format!("created {} tables ({} already existed)", created.len(), existed.len())
    };
    ctx.auth.invalidate_all();
    Ok(Json(BootstrapResponse {
        status: "SUCCESS".into(),
        dataset: out["dataset"].as_str().unwrap_or_default().to_string(),
        dataset_created: out["dataset_created"].as_bool().unwrap_or(false),
        total_tables: out["total_tables"].as_u64().unwrap_or(0) as usize,
        tables_created: created,
        tables_existed: existed,
        columns_added: serde_json::from_value(out["columns_added"].clone()).unwrap_or_default(),
        pipeline_logging_id: report.run_id,
        message,
    }))
}

/// The problems of a migration refused as incompatible, from a failed setup run's error.
pub(crate) fn schema_incompatibility(error: &str) -> Option<&str> {
    error.split_once("nothing was changed: ").map(|(_, problems)| problems)
}
