//! Pipeline runs (org key; the org always comes from the key):
//! `POST /pipelines/run/{org}/{provider}[/{domain}]/{pipeline}`, `GET /pipelines/runs`,
//! `GET|DELETE /pipelines/runs/{id}`, `POST /pipelines/runs/{id}/retry`, `GET /pipelines`.
//!
//! URL → spec is one file: `configs/{provider}/{domain}/{pipeline}.yml` or
//! `configs/{provider}/{pipeline}.yml`; each segment must match `^[a-z0-9_]{1,64}$`.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    Json,
};
use cloudact_core::{
    meta::runs::{truncate, RunFilter},
    warehouse::Row,
};
use cloudact_pipeline::{
    runs::{resolve_dates, SubmitError, SubmitRequest, Submitted},
    CatalogEntry,
};
use cloudact_web::{ApiError, AppContext, OptionalJson, OrgAuth, OrgPath};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

/// Body of a run request (all optional; no body = yesterday, UTC).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// One day, `YYYY-MM-DD`.
    pub date: Option<String>,
    /// First day of a range (with `end_date`; at most 366 days).
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    /// Free-text attribution (who or what asked), at most 200 characters.
    pub trigger_by: Option<String>,
    /// Accepted for compatibility: every load already replaces its day.
    pub force_refresh: Option<bool>,
    /// Extra typed parameters passed to the processors.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunAccepted {
    pub pipeline_logging_id: String,
    pub pipeline_id: String,
    pub org_slug: String,
    pub status: String,
    pub start_date: String,
    pub end_date: String,
    pub message: String,
}

pub(crate) fn segment(s: &str) -> Result<&str, ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(s)
    } else {
        Err(ApiError::bad_request(
            "INVALID_PIPELINE_PATH",
            format!("path segment {s:?} must match ^[a-z0-9_]{{1,64}}$"),
        ))
    }
}

fn find_spec(ctx: &AppContext, segments: &[&str]) -> Result<CatalogEntry, ApiError> {
    for s in segments {
        segment(s)?;
    }
    let rel = format!("{}.yml", segments.join("/"));
    match ctx.catalog.by_run_path(&rel) {
        Some(e) if e.kind == "data" => Ok(e),
        _ => Err(ApiError::not_found(
            "PIPELINE_NOT_FOUND",
            format!("no pipeline spec at configs/{rel}"),
        )),
    }
}

fn user_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("x-user-id") {
        None => Ok(None),
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| ApiError::bad_request("INVALID_USER_ID", "X-User-ID must be ASCII"))?;
            if v.len() > 128 || v.chars().any(char::is_control) {
                return Err(ApiError::bad_request(
                    "INVALID_USER_ID",
                    "X-User-ID must be at most 128 printable characters",
                ));
            }
            Ok(Some(v.to_string()))
        }
    }
}

fn submit_error(e: SubmitError) -> ApiError {
    let detail = e.to_string();
    match e {
        SubmitError::NoSubscription | SubmitError::SubscriptionInactive(_) => {
            ApiError::forbidden("SUBSCRIPTION_INACTIVE", detail)
        }
        SubmitError::SubscriptionEnded(_) => ApiError::new(StatusCode::PAYMENT_REQUIRED, "SUBSCRIPTION_EXPIRED", detail),
        SubmitError::Quota { limit, allowed, used, retry_after_secs } => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "QUOTA_EXCEEDED", detail)
                .with_header(header::RETRY_AFTER, &retry_after_secs.to_string())
                .with_extra(json!({"limit": limit.as_str(), "allowed": allowed, "used": used, "retry_after_seconds": retry_after_secs}))
        }
        SubmitError::IntegrationMissing { .. } => ApiError::bad_request("INTEGRATION_NOT_CONFIGURED", detail),
        SubmitError::Disabled(_) => ApiError::forbidden("PIPELINE_DISABLED", detail),
        SubmitError::InvalidParameters(_) => ApiError::unprocessable("INVALID_PARAMETERS", detail),
        SubmitError::Meta(m) => m.into(),
    }
}

async fn start(
    ctx: &Arc<AppContext>,
    org: &OrgAuth,
    entry: &CatalogEntry,
    body: RunBody,
    user: Option<String>,
    retry_of: Option<String>,
) -> Result<(StatusCode, Json<RunAccepted>), ApiError> {
    let today = ctx.clock.now().date_naive();
    let (start_date, end_date) = resolve_dates(
        body.date.as_deref(),
        body.start_date.as_deref(),
        body.end_date.as_deref(),
        today,
    )
    .map_err(|e| ApiError::unprocessable("INVALID_DATES", e))?;
    if body.trigger_by.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(ApiError::unprocessable(
            "INVALID_TRIGGER_BY",
            "trigger_by must be at most 200 characters",
        ));
    }
    let mut parameters = body.parameters.unwrap_or_default();
    if parameters.to_string_len() > 16_384 {
        return Err(ApiError::unprocessable(
            "PARAMETERS_TOO_LARGE",
            "parameters must be at most 16 KiB of JSON",
        ));
    }
    parameters.insert("start_date".into(), json!(start_date.to_string()));
    parameters.insert("end_date".into(), json!(end_date.to_string()));
    if let Some(f) = body.force_refresh {
        parameters.insert("force_refresh".into(), json!(f));
    }
    let request = SubmitRequest {
        org_slug: org.org_slug.clone(),
        org_api_key_id: Some(org.org_api_key_id.clone()),
        start_date,
        end_date,
        trigger_type: if retry_of.is_some() {
            "retry".into()
        } else {
            "api".into()
        },
        trigger_by: body.trigger_by.map(|t| truncate(&t, 200)),
        user_id: user,
        parameters,
        retry_of,
        scheduled: None,
    };
    let (status, id, message) = match ctx.runs.submit(entry, request).await.map_err(submit_error)? {
        Submitted::Started(id) => (
            StatusCode::ACCEPTED,
            id,
            "pipeline run accepted; poll GET /api/v1/pipelines/runs/{id}",
        ),
        Submitted::AlreadyRunning(id) => (
            StatusCode::OK,
            id,
            "the same pipeline and dates is already pending or running: returning that run",
        ),
        Submitted::AlreadyAdmitted => {
            return Err(ApiError::conflict("ALREADY_ADMITTED", "this run was already admitted"));
        }
    };
    let current = ctx
        .store
        .run(&org.org_slug, &id)
        .await?
        .and_then(|r| r.string("status"))
        .unwrap_or_else(|| "PENDING".into());
    Ok((
        status,
        Json(RunAccepted {
            pipeline_logging_id: id,
            pipeline_id: entry.id.clone(),
            org_slug: org.org_slug.clone(),
            status: current,
            start_date: start_date.to_string(),
            end_date: end_date.to_string(),
            message: message.to_string(),
        }),
    ))
}

trait JsonLen {
    fn to_string_len(&self) -> usize;
}

impl JsonLen for serde_json::Map<String, Value> {
    fn to_string_len(&self) -> usize {
        serde_json::to_vec(self).map(|v| v.len()).unwrap_or(usize::MAX)
    }
}

/// Starts `configs/{provider}/{domain}/{pipeline}.yml` for the key's org.
#[utoipa::path(post, path = "/api/v1/pipelines/run/{org_slug}/{provider}/{domain}/{pipeline}", tag = "pipelines",
    params(("org_slug" = String, Path), ("provider" = String, Path), ("domain" = String, Path), ("pipeline" = String, Path),
           ("X-User-ID" = Option<String>, Header, description = "unverified attribution, recorded as given")),
    request_body(content = RunBody, description = "optional"), security(("api_key" = [])),
    responses((status = 202, body = RunAccepted), (status = 200, body = RunAccepted, description = "already running"),
        (status = 400), (status = 401), (status = 402), (status = 403), (status = 404), (status = 422), (status = 429)))]
pub async fn run_with_domain(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    headers: HeaderMap,
    Path((_org_slug, provider, domain, pipeline)): Path<(String, String, String, String)>,
    OptionalJson(body): OptionalJson<RunBody>,
) -> Result<(StatusCode, Json<RunAccepted>), ApiError> {
    let entry = find_spec(&ctx, &[&provider, &domain, &pipeline])?;
    start(&ctx, &org, &entry, body, user_id(&headers)?, None).await
}

/// Starts `configs/{provider}/{pipeline}.yml` for the key's org.
#[utoipa::path(post, path = "/api/v1/pipelines/run/{org_slug}/{provider}/{pipeline}", tag = "pipelines",
    params(("org_slug" = String, Path), ("provider" = String, Path), ("pipeline" = String, Path)),
    request_body(content = RunBody, description = "optional"), security(("api_key" = [])),
    responses((status = 202, body = RunAccepted), (status = 200, body = RunAccepted), (status = 400), (status = 401),
        (status = 402), (status = 403), (status = 404), (status = 422), (status = 429)))]
pub async fn run_short(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    headers: HeaderMap,
    Path((_org_slug, provider, pipeline)): Path<(String, String, String)>,
    OptionalJson(body): OptionalJson<RunBody>,
) -> Result<(StatusCode, Json<RunAccepted>), ApiError> {
    let entry = find_spec(&ctx, &[&provider, &pipeline])?;
    start(&ctx, &org, &entry, body, user_id(&headers)?, None).await
}

fn run_json(r: &Row) -> Value {
    let pick = |c: &str| r.get(c).map(|v| v.to_json()).unwrap_or(Value::Null);
    json!({
        "pipeline_logging_id": pick("pipeline_logging_id"),
        "pipeline_id": pick("pipeline_id"),
        "org_slug": pick("org_slug"),
        "status": pick("status"),
        "trigger_type": pick("trigger_type"),
        "trigger_by": pick("trigger_by"),
        "user_id": pick("user_id"),
        "start_time": pick("start_time"),
        "end_time": pick("end_time"),
        "duration_ms": pick("duration_ms"),
        "run_date": pick("run_date"),
        "end_date": pick("end_date"),
        "parameters": pick("parameters"),
        "run_metadata": pick("run_metadata"),
        "error_message": pick("error_message"),
        "retry_of": pick("retry_of"),
    })
}

fn step_json(r: &Row) -> Value {
    let pick = |c: &str| r.get(c).map(|v| v.to_json()).unwrap_or(Value::Null);
    json!({
        "step_logging_id": pick("step_logging_id"),
        "step_name": pick("step_name"),
        "step_type": pick("step_type"),
        "step_index": pick("step_index"),
        "status": pick("status"),
        "start_time": pick("start_time"),
        "end_time": pick("end_time"),
        "duration_ms": pick("duration_ms"),
        "rows_processed": pick("rows_processed"),
        "error_message": pick("error_message"),
        "metadata": pick("metadata"),
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT or CANCELLED.
    pub status: Option<String>,
    pub pipeline_id: Option<String>,
    /// Runs whose first day is on or after this date.
    pub start_date: Option<String>,
    /// Runs whose first day is on or before this date.
    pub end_date: Option<String>,
    /// 1..=100, default 20.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// Deepest page offset of the runs list (filter by dates to reach older runs).
const MAX_OFFSET: i64 = 100_000;

/// The key's org's runs, newest first.
#[utoipa::path(get, path = "/api/v1/pipelines/runs", tag = "pipelines", params(RunsQuery), security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401)))]
pub async fn list_runs(
    State(ctx): State<Arc<AppContext>>,
    org: OrgAuth,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    const STATUSES: [&str; 6] = ["PENDING", "RUNNING", "COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"];
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::bad_request(
                "INVALID_QUERY",
                format!("status must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let date = |v: &Option<String>, name: &str| -> Result<Option<chrono::NaiveDate>, ApiError> {
        v.as_deref()
            .map(|d| {
                d.parse()
                    .map_err(|_| ApiError::bad_request("INVALID_QUERY", format!("{name} must be YYYY-MM-DD")))
            })
            .transpose()
    };
    let limit = q.limit.unwrap_or(20);
    let offset = q.offset.unwrap_or(0);
    if !(1..=100).contains(&limit) || !(0..=MAX_OFFSET).contains(&offset) {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            format!("limit must be 1..=100 and offset 0..={MAX_OFFSET}"),
        ));
    }
    let filter = RunFilter {
        status: q.status.clone(),
        pipeline_id: q.pipeline_id.clone(),
        from: date(&q.start_date, "start_date")?,
        to: date(&q.end_date, "end_date")?,
        limit,
        offset,
    };
    let (rows, total) = ctx.store.runs(&org.org_slug, &filter).await?;
    Ok(Json(json!({
        "runs": rows.iter().map(run_json).collect::<Vec<_>>(),
        "total": total,
        "limit": limit,
        "offset": offset,
    })))
}

async fn own_run(ctx: &AppContext, org: &OrgAuth, id: &str) -> Result<Row, ApiError> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err(ApiError::bad_request("INVALID_RUN_ID", "run ids are UUIDs"));
    }
    ctx.store.run(&org.org_slug, id).await?.ok_or_else(|| {
        ApiError::not_found(
            "RUN_NOT_FOUND",
            format!("no run {id} for organization '{}'", org.org_slug),
        )
    })
}

/// One run with its step logs (another org's run id is 404).
#[utoipa::path(get, path = "/api/v1/pipelines/runs/{run_id}", tag = "pipelines", params(("run_id" = String, Path)),
    security(("api_key" = [])), responses((status = 200), (status = 401), (status = 404)))]
pub async fn get_run(
    State(ctx): State<Arc<AppContext>>,
    org: OrgAuth,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = own_run(&ctx, &org, &run_id).await?;
    let steps = ctx.store.run_steps(&org.org_slug, &run_id).await?;
    let mut body = run_json(&run);
    body["steps"] = Value::Array(steps.iter().map(step_json).collect());
    Ok(Json(body))
}

/// Cancels a PENDING or RUNNING run (status CANCELLED; its steps stop at their next await).
#[utoipa::path(delete, path = "/api/v1/pipelines/runs/{run_id}", tag = "pipelines", params(("run_id" = String, Path)),
    security(("api_key" = [])), responses((status = 200), (status = 401), (status = 404), (status = 409)))]
pub async fn cancel_run(
    State(ctx): State<Arc<AppContext>>,
    org: OrgAuth,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = own_run(&ctx, &org, &run_id).await?;
    if !ctx.runs.cancel(&org.org_slug, &run_id).await? {
        return Err(ApiError::conflict(
            "RUN_FINISHED",
            format!(
                "run {run_id} already finished with status {}",
                run.string("status").unwrap_or_default()
            ),
        ));
    }
    Ok(Json(
        json!({"pipeline_logging_id": run_id, "status": "CANCELLED", "message": "run cancelled"}),
    ))
}

/// Starts a new run of the same pipeline, dates and parameters.
#[utoipa::path(post, path = "/api/v1/pipelines/runs/{run_id}/retry", tag = "pipelines", params(("run_id" = String, Path)),
    security(("api_key" = [])), responses((status = 202, body = RunAccepted), (status = 200), (status = 401), (status = 404), (status = 429)))]
pub async fn retry_run(
    State(ctx): State<Arc<AppContext>>,
    org: OrgAuth,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<(StatusCode, Json<RunAccepted>), ApiError> {
    let run = own_run(&ctx, &org, &run_id).await?;
    let pipeline_id = run.string("pipeline_id").unwrap_or_default();
    let entry = ctx
        .catalog
        .by_id(&pipeline_id)
        .filter(|e| e.kind == "data")
        .ok_or_else(|| ApiError::not_found("PIPELINE_NOT_FOUND", format!("pipeline {pipeline_id} no longer exists")))?;
    let mut parameters = run
        .json("parameters")
        .and_then(|p| p.as_object().cloned())
        .unwrap_or_default();
    parameters.remove("start_date");
    parameters.remove("end_date");
    parameters.remove("force_refresh");
    let body = RunBody {
        start_date: run.date("run_date").map(|d| d.to_string()),
        end_date: run.date("end_date").or(run.date("run_date")).map(|d| d.to_string()),
        trigger_by: run.string("trigger_by"),
        parameters: Some(parameters),
        ..Default::default()
    };
    start(&ctx, &org, &entry, body, user_id(&headers)?, Some(run_id)).await
}

/// The runnable pipelines (data pipelines of the catalogue).
#[utoipa::path(get, path = "/api/v1/pipelines", tag = "pipelines", responses((status = 200)))]
pub async fn catalogue(State(ctx): State<Arc<AppContext>>) -> Json<Value> {
    let pipelines: Vec<Value> = ctx
        .catalog
        .entries()
        .iter()
        .filter(|e| e.kind == "data")
        .map(|e| {
            let url = match &e.domain {
                Some(d) => format!("/api/v1/pipelines/run/{{org_slug}}/{}/{d}/{}", e.provider, e.pipeline),
                None => format!("/api/v1/pipelines/run/{{org_slug}}/{}/{}", e.provider, e.pipeline),
            };
            json!({"id": e.id, "name": e.name, "description": e.description, "provider": e.provider, "domain": e.domain,
                   "pipeline": e.pipeline, "path": e.path, "run_url": url, "schedule": e.schedule,
                   "required_integration": e.required_integration, "enabled": e.enabled, "steps": e.steps})
        })
        .collect();
    Json(json!({"total": pipelines.len(), "pipelines": pipelines}))
}
