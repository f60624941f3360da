//! Scheduler routes. Org key, own org only: `GET/POST /scheduler/org/{org}/pipelines`,
//! `GET/PUT/DELETE /scheduler/org/{org}/pipelines/{config_id}`, `GET /scheduler/org/{org}/runs`,
//! `GET/PUT /scheduler/org/{org}/settings` (the org's schedule timezone).
//! Root key (Cloud Scheduler, operators): `POST /scheduler/trigger`,
//! `POST /scheduler/queue/process` (also `/scheduler/process-queue`), `GET /scheduler/queue`,
//! `GET /scheduler/status`, `POST /scheduler/reset-daily-quotas`,
//! `POST /scheduler/cleanup-orphaned-pipelines`.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    http::StatusCode,
    Json,
};
use cloudact_core::{meta::schedules::ScheduleConfig, warehouse::Row};
use cloudact_pipeline::scheduler::{ProcessReport, RuleError, ScheduleRule, SchedulerError, TriggerReport};
use cloudact_web::{ApiError, ApiJson, AppContext, OrgAuth, OrgPath, RootAuth};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::pipelines::segment;

fn scheduler_error(e: SchedulerError) -> ApiError {
    match e {
        SchedulerError::Meta(m) => m.into(),
        SchedulerError::PubSub(p) => {
            tracing::error!(error = %p, "Pub/Sub unavailable");
            ApiError::unavailable(
                "PUBSUB_UNAVAILABLE",
                "the Pub/Sub queue cannot be reached; nothing was lost (queued items are published on the next call)",
            )
        }
    }
}

fn rule_error(e: RuleError) -> ApiError {
    match e {
        RuleError::Cron(..) => ApiError::bad_request("INVALID_CRON", e.to_string()),
        RuleError::Timezone(_) => ApiError::bad_request("INVALID_TIMEZONE", e.to_string()),
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))
}

fn config_json(c: &ScheduleConfig) -> Value {
    json!({
        "config_id": c.config_id,
        "org_slug": c.org_slug,
        "provider": c.provider,
        "domain": if c.domain.is_empty() { Value::Null } else { json!(c.domain) },
        "pipeline_template": c.pipeline_template,
        "pipeline_id": c.pipeline_id,
        "schedule_cron": c.schedule_cron,
        "timezone": c.timezone,
        "is_active": c.is_active,
        "next_run_time": c.next_run_time,
        "last_run_time": c.last_run_time,
        "last_run_status": c.last_run_status,
        "last_skip_reason": c.last_skip_reason,
        "parameters": c.parameters,
        "priority": c.priority,
        "max_retries": c.max_retries,
        "integration": c.integration,
        "source": c.source,
        "deactivated_reason": c.deactivated_reason,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    })
}

fn row_json(r: &Row) -> Value {
    Value::Object(
        r.columns()
            .map(|c| (c.clone(), r.get(c).map(|v| v.to_json()).unwrap_or(Value::Null)))
            .collect(),
    )
}

/// Checks schedule parameters: a JSON object of at most 16 KiB, without the day fields the
/// scheduler sets itself for every occurrence.
fn check_parameters(p: Option<serde_json::Map<String, Value>>) -> Result<Option<Value>, ApiError> {
    let Some(p) = p else { return Ok(None) };
    if serde_json::to_vec(&p).map(|v| v.len()).unwrap_or(usize::MAX) > 16_384 {
        return Err(ApiError::unprocessable(
            "PARAMETERS_TOO_LARGE",
            "parameters must be at most 16 KiB of JSON",
        ));
    }
    if let Some(k) = ["date", "start_date", "end_date"].iter().find(|k| p.contains_key(**k)) {
        return Err(ApiError::unprocessable(
            "INVALID_PARAMETERS",
            format!("parameters may not set {k}: each occurrence loads the previous day in the schedule's timezone"),
        ));
    }
    Ok(Some(Value::Object(p)))
}

/// A body field in range (else 422 `INVALID_SCHEDULE`).
fn check_range(name: &str, v: Option<i64>, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    in_range(name, v, min, max).map_err(|m| ApiError::unprocessable("INVALID_SCHEDULE", m))
}

/// A query parameter in range (else 400 `INVALID_QUERY`).
fn query_range(name: &str, v: Option<i64>, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    in_range(name, v, min, max).map_err(|m| ApiError::bad_request("INVALID_QUERY", m))
}

fn in_range(name: &str, v: Option<i64>, min: i64, max: i64) -> Result<Option<i64>, String> {
    match v {
        Some(n) if !(min..=max).contains(&n) => Err(format!("{name} must be from {min} to {max}")),
        other => Ok(other),
    }
}

async fn own_schedule(ctx: &AppContext, org: &OrgAuth, id: &str) -> Result<ScheduleConfig, ApiError> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err(ApiError::bad_request("INVALID_CONFIG_ID", "schedule ids are UUIDs"));
    }
    ctx.store.schedule(&org.org_slug, id).await?.ok_or_else(|| {
        ApiError::not_found(
            "SCHEDULE_NOT_FOUND",
            format!("no schedule {id} for organization '{}'", org.org_slug),
        )
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only active (`true`) or inactive (`false`) schedules.
    pub is_active: Option<bool>,
}

/// The org's schedules.
#[utoipa::path(get, path = "/api/v1/scheduler/org/{org_slug}/pipelines", tag = "scheduler",
    params(("org_slug" = String, Path), ListQuery), security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403)))]
pub async fn list(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let configs = ctx.store.schedules(&org.org_slug, q.is_active).await?;
    Ok(Json(json!({
        "org_slug": org.org_slug,
        "total": configs.len(),
        "pipelines": configs.iter().map(config_json).collect::<Vec<_>>(),
    })))
}

/// A new schedule.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// `configs/{provider}/…`
    pub provider: String,
    /// Omit (or empty) for `configs/{provider}/{pipeline_template}.yml`.
    pub domain: Option<String>,
    pub pipeline_template: String,
    /// Five-field cron (`0 6 * * *`), or `daily` / `monthly` / `hourly` / `weekly`.
    pub schedule_cron: String,
    /// IANA timezone the cron is read in (default UTC).
    pub timezone: Option<String>,
    pub is_active: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Map<String, Value>>,
    /// 1 (first) ..= 10, default 5.
    pub priority: Option<i64>,
    /// 0..=10, default `SCHEDULER_MAX_RETRIES`.
    pub max_retries: Option<i64>,
}

/// Creates a schedule for one of the org's pipelines.
#[utoipa::path(post, path = "/api/v1/scheduler/org/{org_slug}/pipelines", tag = "scheduler",
    params(("org_slug" = String, Path)), request_body = CreateBody, security(("api_key" = [])),
    responses((status = 201), (status = 400), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub async fn create(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut segments = vec![segment(&body.provider)?];
    if let Some(d) = body.domain.as_deref().filter(|d| !d.is_empty()) {
        segments.push(segment(d)?);
    }
    segments.push(segment(&body.pipeline_template)?);
    let rel = format!("{}.yml", segments.join("/"));
    let entry = ctx
        .catalog
        .by_path(&rel)
        .filter(|e| e.kind == "data")
        .ok_or_else(|| ApiError::not_found("PIPELINE_NOT_FOUND", format!("no pipeline spec at configs/{rel}")))?;
    if !entry.enabled {
        return Err(ApiError::forbidden(
            "PIPELINE_DISABLED",
            format!("pipeline {} is disabled and cannot be scheduled", entry.id),
        ));
    }
    let timezone = body.timezone.as_deref().map(str::trim).unwrap_or("UTC").to_string();
    let rule = ScheduleRule::parse(&body.schedule_cron, &timezone).map_err(rule_error)?;
    let parameters = check_parameters(body.parameters)?.unwrap_or_else(|| json!({}));
    let priority = check_range("priority", body.priority, 1, 10)?.unwrap_or(5);
    let max_retries = check_range("max_retries", body.max_retries, 0, 10)?;
    let mut config = ctx.scheduler.new_schedule(
        &org.org_slug,
        &entry,
        &rule,
        &timezone,
        parameters,
        body.is_active.unwrap_or(true),
        priority,
        "USER",
    );
    if let Some(m) = max_retries {
        config.max_retries = m;
    }
    ctx.store.insert_schedule(&config).await?;
    tracing::info!(org_slug = %org.org_slug, config_id = %config.config_id, pipeline_id = %config.pipeline_id, "schedule created");
    Ok((StatusCode::CREATED, Json(config_json(&config))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OneQuery {
    /// Recent occurrences to include (0..=100, default 20).
    pub runs: Option<i64>,
}

/// One schedule with its recent occurrences.
#[utoipa::path(get, path = "/api/v1/scheduler/org/{org_slug}/pipelines/{config_id}", tag = "scheduler",
    params(("org_slug" = String, Path), ("config_id" = String, Path), OneQuery), security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn get_one(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, config_id)): Path<(String, String)>,
    q: Result<Query<OneQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let limit = query_range("runs", q.runs, 0, 100)?.unwrap_or(20);
    let config = own_schedule(&ctx, &org, &config_id).await?;
    let runs = if limit > 0 {
        ctx.store
            .scheduled_runs(&org.org_slug, Some(&config.config_id), limit)
            .await?
    } else {
        Vec::new()
    };
    let mut body = config_json(&config);
    body["recent_runs"] = Value::Array(runs.iter().map(row_json).collect());
    Ok(Json(body))
}

/// Changes to a schedule (every field optional).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    pub schedule_cron: Option<String>,
    pub timezone: Option<String>,
    pub is_active: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Map<String, Value>>,
    pub priority: Option<i64>,
    pub max_retries: Option<i64>,
}

/// Updates a schedule; a new cron or timezone (or re-activation) recomputes the next run.
#[utoipa::path(put, path = "/api/v1/scheduler/org/{org_slug}/pipelines/{config_id}", tag = "scheduler",
    params(("org_slug" = String, Path), ("config_id" = String, Path)), request_body = UpdateBody,
    security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub async fn update(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, config_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    let mut config = own_schedule(&ctx, &org, &config_id).await?;
    let parameters = check_parameters(body.parameters)?;
    let priority = check_range("priority", body.priority, 1, 10)?;
    let max_retries = check_range("max_retries", body.max_retries, 0, 10)?;
    let cron = body
        .schedule_cron
        .clone()
        .unwrap_or_else(|| config.schedule_cron.clone());
    let timezone = body
        .timezone
        .as_deref()
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| config.timezone.clone());
    let rule = ScheduleRule::parse(&cron, &timezone).map_err(rule_error)?;
    let now = ctx.clock.now();
    let was_active = config.is_active;
    let timing_changed = rule.expression != config.schedule_cron || timezone != config.timezone;
    config.schedule_cron = rule.expression.clone();
    config.timezone = timezone;
    if let Some(a) = body.is_active {
        config.is_active = a;
    }
    if let Some(p) = parameters {
        config.parameters = p;
    }
    if let Some(p) = priority {
        config.priority = p;
    }
    if let Some(m) = max_retries {
        config.max_retries = m;
    }
    if body.is_active == Some(false) {
        config.deactivated_reason = Some("USER".into());
    } else if config.is_active && (!was_active || timing_changed || config.next_run_time.is_none()) {
        config.deactivated_reason = None;
        config.next_run_time = rule.next_after(now);
    }
    config.updated_at = Some(now);
    if !ctx.store.update_schedule(&config).await? {
        return Err(ApiError::not_found(
            "SCHEDULE_NOT_FOUND",
            format!("schedule {config_id} is gone"),
        ));
    }
    Ok(Json(config_json(&config)))
}

/// Deactivates a schedule (kept, with its history; `PUT is_active: true` brings it back).
#[utoipa::path(delete, path = "/api/v1/scheduler/org/{org_slug}/pipelines/{config_id}", tag = "scheduler",
    params(("org_slug" = String, Path), ("config_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn deactivate(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, config_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let mut config = own_schedule(&ctx, &org, &config_id).await?;
    config.is_active = false;
    config.deactivated_reason = Some("USER".into());
    config.updated_at = Some(ctx.clock.now());
    ctx.store.update_schedule(&config).await?;
    Ok(Json(
        json!({"success": true, "config_id": config.config_id, "is_active": false,
                   "message": "schedule deactivated"}),
    ))
}

/// The org's scheduler settings.
#[utoipa::path(get, path = "/api/v1/scheduler/org/{org_slug}/settings", tag = "scheduler",
    params(("org_slug" = String, Path)), security(("api_key" = [])),
    responses((status = 200), (status = 401), (status = 403)))]
pub async fn get_settings(State(ctx): State<Arc<AppContext>>, OrgPath(org): OrgPath) -> Result<Json<Value>, ApiError> {
    let tz = ctx.store.org_timezone(&org.org_slug).await?;
    Ok(Json(json!({"org_slug": org.org_slug, "timezone_set": tz.is_some(),
                   "timezone": tz.unwrap_or_else(|| "UTC".into())})))
}

/// Changes to the org's scheduler settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// IANA timezone for the org's schedules (the ones made when an integration becomes VALID).
    pub timezone: String,
    /// Also move every existing schedule of the org to this timezone (default false).
    #[serde(default)]
    pub apply_to_existing: bool,
}

/// Sets the org's schedule timezone (and optionally moves its existing schedules to it).
#[utoipa::path(put, path = "/api/v1/scheduler/org/{org_slug}/settings", tag = "scheduler",
    params(("org_slug" = String, Path)), request_body = SettingsBody, security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 422)))]
pub async fn put_settings(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    ApiJson(body): ApiJson<SettingsBody>,
) -> Result<Json<Value>, ApiError> {
    let timezone = body.timezone.trim().to_string();
    ScheduleRule::parse("daily", &timezone).map_err(rule_error)?;
    let now = ctx.clock.now();
    let mut moved = Vec::new();
    if body.apply_to_existing {
        for c in ctx.store.schedules(&org.org_slug, None).await? {
            let rule = ScheduleRule::parse(&c.schedule_cron, &timezone).map_err(rule_error)?;
            let next = if c.is_active {
                rule.next_after(now)
            } else {
                c.next_run_time
            };
            moved.push((c.config_id, next));
        }
    }
    ctx.store
        .set_org_timezone(&org.org_slug, &timezone, &moved, now)
        .await?;
    Ok(Json(
        json!({"org_slug": org.org_slug, "timezone": timezone, "schedules_moved": moved.len()}),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    pub config_id: Option<String>,
    /// 1..=500, default 50.
    pub limit: Option<i64>,
}

/// The org's scheduled occurrences (newest first) with their state and run id.
#[utoipa::path(get, path = "/api/v1/scheduler/org/{org_slug}/runs", tag = "scheduler",
    params(("org_slug" = String, Path), RunsQuery), security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403)))]
pub async fn org_runs(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let limit = query_range("limit", q.limit, 1, 500)?.unwrap_or(50);
    let rows = ctx
        .store
        .scheduled_runs(&org.org_slug, q.config_id.as_deref(), limit)
        .await?;
    Ok(Json(json!({"org_slug": org.org_slug, "total": rows.len(),
                   "runs": rows.iter().map(row_json).collect::<Vec<_>>()})))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TriggerQuery {
    /// Due schedules handled in this call at most (1..=100000, default 10000), read in
    /// batches of 1 000.
    pub limit: Option<i64>,
}

/// Enqueues every due occurrence once and advances each schedule (Cloud Scheduler, hourly).
#[utoipa::path(post, path = "/api/v1/scheduler/trigger", tag = "scheduler", params(TriggerQuery),
    security(("root_key" = [])), responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 503)))]
pub async fn trigger(
    State(ctx): State<Arc<AppContext>>,
    _root: RootAuth,
    q: Result<Query<TriggerQuery>, QueryRejection>,
) -> Result<Json<TriggerReport>, ApiError> {
    let q = query(q)?;
    let limit = query_range("limit", q.limit, 1, 100_000)?.unwrap_or(10_000);
    ctx.scheduler.trigger(limit).await.map(Json).map_err(scheduler_error)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ProcessQuery {
    /// Items handled in this call at most (1..=10000, default 1000).
    pub limit: Option<i64>,
    /// Time budget of this call (1..=300 s, default `SCHEDULER_PROCESS_SECONDS`).
    pub time_limit_seconds: Option<i64>,
}

/// Settles finished scheduled runs, then claims due queue items and admits each through
/// the same path as an API run (subscription, quota, dedup, run and step logs).
#[utoipa::path(post, path = "/api/v1/scheduler/queue/process", tag = "scheduler", params(ProcessQuery),
    security(("root_key" = [])), responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 503)))]
pub async fn process(
    State(ctx): State<Arc<AppContext>>,
    _root: RootAuth,
    q: Result<Query<ProcessQuery>, QueryRejection>,
) -> Result<Json<ProcessReport>, ApiError> {
    let q = query(q)?;
    let limit = query_range("limit", q.limit, 1, 10_000)?.unwrap_or(1000) as usize;
    let budget = query_range("time_limit_seconds", q.time_limit_seconds, 1, 300)?
        .map(|s| Duration::from_secs(s as u64))
        .unwrap_or(ctx.scheduler.settings().process_budget);
    ctx.scheduler
        .process(limit, budget)
        .await
        .map(Json)
        .map_err(scheduler_error)
}

/// The reference's path for [`process`].
#[utoipa::path(post, path = "/api/v1/scheduler/process-queue", tag = "scheduler", params(ProcessQuery),
    security(("root_key" = [])), responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 503)))]
pub async fn process_queue(
    state: State<Arc<AppContext>>,
    root: RootAuth,
    q: Result<Query<ProcessQuery>, QueryRejection>,
) -> Result<Json<ProcessReport>, ApiError> {
    process(state, root, q).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// Items listed (1..=500, default 100); counts are always complete.
    pub limit: Option<i64>,
}

/// The queue: depth by state and the first items in claim order.
#[utoipa::path(get, path = "/api/v1/scheduler/queue", tag = "scheduler", params(QueueQuery),
    security(("root_key" = [])), responses((status = 200), (status = 400), (status = 401), (status = 403)))]
pub async fn queue(
    State(ctx): State<Arc<AppContext>>,
    _root: RootAuth,
    q: Result<Query<QueueQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let limit = query_range("limit", q.limit, 1, 500)?.unwrap_or(100);
    let counts = ctx.scheduler.counts().await.map_err(scheduler_error)?;
    let items = ctx.store.queue_items(limit).await?;
    Ok(Json(json!({
        "queue_length": counts.queue_length,
        "processing": counts.queue_processing,
        "queued": counts.queue_length - counts.queue_processing,
        "due": counts.queue_due,
        "queue_backend": match ctx.scheduler.settings().queue {
            cloudact_core::settings::SchedulerQueue::Warehouse => "warehouse",
            cloudact_core::settings::SchedulerQueue::PubSub => "pubsub",
        },
        "items": items.iter().map(row_json).collect::<Vec<_>>(),
    })))
}

/// Scheduler totals across orgs.
#[utoipa::path(get, path = "/api/v1/scheduler/status", tag = "scheduler", security(("root_key" = [])),
    responses((status = 200), (status = 401), (status = 403)))]
pub async fn status(State(ctx): State<Arc<AppContext>>, _root: RootAuth) -> Result<Json<Value>, ApiError> {
    let c = ctx.scheduler.counts().await.map_err(scheduler_error)?;
    let s = ctx.scheduler.settings();
    Ok(Json(json!({
        "total_active_pipelines": c.total_active_pipelines,
        "pipelines_due_now": c.pipelines_due_now,
        "pipelines_queued": c.pipelines_queued,
        "pipelines_running": c.pipelines_running,
        "pipelines_completed_today": c.pipelines_completed_today,
        "pipelines_failed_today": c.pipelines_failed_today,
        "queue_length": c.queue_length,
        "queue_processing": c.queue_processing,
        "queue_due": c.queue_due,
        "avg_execution_time_seconds": c.avg_execution_time_seconds,
        "mode": match s.mode { cloudact_core::settings::SchedulerMode::Internal => "internal",
                               cloudact_core::settings::SchedulerMode::External => "external" },
        "queue_backend": match s.queue { cloudact_core::settings::SchedulerQueue::Warehouse => "warehouse",
                                         cloudact_core::settings::SchedulerQueue::PubSub => "pubsub" },
        "catchup_days": s.catchup_days,
        "jitter_seconds": s.jitter.as_secs(),
        "max_retries": s.max_retries,
    })))
}

/// Quota maintenance: recomputes every day row's running count from the runs actually open
/// on it and removes day rows older than 90 days (the current month is always kept).
#[utoipa::path(post, path = "/api/v1/scheduler/reset-daily-quotas", tag = "scheduler", security(("root_key" = [])),
    responses((status = 200), (status = 401), (status = 403)))]
pub async fn reset_daily_quotas(State(ctx): State<Arc<AppContext>>, _root: RootAuth) -> Result<Json<Value>, ApiError> {
    let now = ctx.clock.now();
    let today = now.date_naive();
    let cutoff = (today - chrono::Duration::days(90)).min(chrono::Datelike::with_day(&today, 1).unwrap_or(today));
    let (repaired, deleted) = ctx.store.repair_quotas(cutoff, now).await?;
    tracing::info!(repaired, deleted, "daily quota maintenance");
    Ok(Json(json!({
        "success": true,
        "date": today,
        "rows_repaired": repaired,
        "rows_deleted": deleted,
        "deleted_before": cutoff,
        "message": "running counts recomputed from open runs; day rows older than 90 days removed (daily counts are per day, so nothing else needs resetting)",
    })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CleanupQuery {
    /// Runs PENDING/RUNNING for longer than this are failed (10..=240, default 60).
    pub timeout_minutes: Option<i64>,
}

/// Fails PENDING/RUNNING runs older than the timeout (any org) and releases their slots.
#[utoipa::path(post, path = "/api/v1/scheduler/cleanup-orphaned-pipelines", tag = "scheduler", params(CleanupQuery),
    security(("root_key" = [])), responses((status = 200), (status = 400), (status = 401), (status = 403)))]
pub async fn cleanup_orphaned(
    State(ctx): State<Arc<AppContext>>,
    _root: RootAuth,
    q: Result<Query<CleanupQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let minutes = query_range("timeout_minutes", q.timeout_minutes, 10, 240)?.unwrap_or(60);
    let before = ctx.clock.now() - chrono::Duration::minutes(minutes);
    let open = ctx.store.open_runs_started_before(before).await?;
    let message = format!("FAILED: still open after {minutes} minutes; cleaned up as orphaned");
    let mut cleaned = Vec::new();
    for run in &open {
        if ctx
            .runs
            .end_open_run(&run.org_slug, &run.pipeline_logging_id, "FAILED", &message)
            .await?
        {
            cleaned.push(json!({"org_slug": run.org_slug, "pipeline_logging_id": run.pipeline_logging_id}));
        }
    }
    let orgs: std::collections::BTreeSet<&str> = open.iter().map(|r| r.org_slug.as_str()).collect();
    Ok(Json(json!({
        "success": true,
        "timeout_minutes": minutes,
        "cleaned_count": cleaned.len(),
        "orgs_processed": orgs.len(),
        "runs": cleaned,
    })))
}
