//! Organizations: dryrun, onboarding (all-or-nothing, `Idempotency-Key`), deletion.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    Json,
};
use chrono::{Duration, Utc};
use cloudact_core::{
    config::TableList,
    meta::{IdempotencyRecord, NewApiKey, NewOrg, Plan, SubscriptionChange, SubscriptionStatus, ORG_ACTIVE},
    validate::{validate_email, validate_org_slug},
};
use cloudact_pipeline::{CancellationToken, RunRequest, RunStatus};
use cloudact_web::{extract::path_org, ApiError, ApiJson, AppContext, RootAuth};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

const DRYRUN_SPEC: &str = "setup/organizations/dryrun/pipeline.yml";
const ONBOARDING_SPEC: &str = "setup/organizations/onboarding/pipeline.yml";
const BOOTSTRAP_TABLES: &str = "setup/bootstrap/tables.yml";
/// Central tables onboarding writes to; all must exist.
const REQUIRED_TABLES: [&str; 5] = [
    "org_profiles",
    "org_api_keys",
    "org_subscriptions",
    "org_usage_quotas",
    "org_idempotency_keys",
];
const TRIAL_DAYS: i64 = 14;

/// What identifies a new org (dryrun and onboarding share it).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgRequest {
    /// `^[a-z0-9_]{3,50}$`
    pub org_slug: String,
    /// 2 to 200 characters.
    pub company_name: String,
    pub admin_email: String,
    /// STARTER (default), PROFESSIONAL or SCALE; case-insensitive.
    #[serde(default)]
    pub subscription_plan: Option<String>,
    /// Onboarding only: dataset location (default `BIGQUERY_LOCATION`).
    #[serde(default)]
    pub dataset_location: Option<String>,
    /// Onboarding only: when the org exists and is ACTIVE, update its profile and plan and
    /// issue a new API key (the old one stops working).
    #[serde(default)]
    pub regenerate_api_key_if_exists: bool,
    /// Accepted for compatibility; only `false` is allowed (delete the org to start over).
    #[serde(default)]
    pub force_recreate_dataset: bool,
    /// Accepted for compatibility; only `false` is allowed.
    #[serde(default)]
    pub force_recreate_tables: bool,
    /// The subscription state the frontend already has from Stripe: `ACTIVE` (default, like
    /// the original) or `TRIAL`, or Stripe's own `active` / `trialing`.
    #[serde(default)]
    pub subscription_status: Option<String>,
    /// End of the trial: `YYYY-MM-DD`, an RFC 3339 time or unix seconds/milliseconds (Stripe's
    /// `trial_end`). Used with a TRIAL status (default: 14 days from today); with ACTIVE it is an
    /// ended trial and is ignored.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub trial_end_date: Option<serde_json::Value>,
}

/// The subscription an org starts with: ACTIVE unless the request asks for a trial (an org is
/// never put on a trial nobody asked for).
fn initial_subscription(
    req: &OrgRequest,
    today: chrono::NaiveDate,
) -> Result<(SubscriptionStatus, Option<chrono::NaiveDate>), ApiError> {
    let status = match req.subscription_status.as_deref() {
        None => SubscriptionStatus::Active,
        Some(s) => SubscriptionStatus::from_stripe(s)
            .or_else(|| SubscriptionStatus::parse(s))
            .filter(|st| matches!(st, SubscriptionStatus::Active | SubscriptionStatus::Trial))
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "INVALID_SUBSCRIPTION_STATUS",
                    format!("subscription_status {s:?} must be ACTIVE or TRIAL (or Stripe's active / trialing) at onboarding"),
                )
            })?,
    };
    let trial_end = match req.trial_end_date.as_ref().filter(|v| !v.is_null()) {
        Some(v) => Some(crate::routes::subscriptions::parse_date("trial_end_date", v)?),
        None => None,
    };
    match (status, trial_end) {
        (SubscriptionStatus::Trial, Some(end)) if end < today => Err(ApiError::unprocessable(
            "INVALID_DATE",
            format!("trial_end_date {end} is in the past"),
        )),
        (SubscriptionStatus::Trial, end) => Ok((status, Some(end.unwrap_or(today + Duration::days(TRIAL_DAYS))))),
        // Stripe keeps `trial_end` on a subscription after its trial: an ACTIVE org with one
        // simply is not on a trial.
        (_, _) => Ok((status, None)),
    }
}

/// Edge validation shared by dryrun and onboarding: 422 with what to fix.
fn validate_request(req: &OrgRequest) -> Result<Plan, ApiError> {
    validate_org_slug(&req.org_slug).map_err(|e| ApiError::unprocessable("INVALID_ORG_SLUG", e.to_string()))?;
    let name_len = req.company_name.trim().chars().count();
    if !(2..=200).contains(&name_len) {
        return Err(ApiError::unprocessable(
            "INVALID_COMPANY_NAME",
            "company_name must be 2 to 200 characters",
        ));
    }
    validate_email(&req.admin_email).map_err(|e| ApiError::unprocessable("INVALID_EMAIL", e))?;
    let plan_name = req.subscription_plan.as_deref().unwrap_or("STARTER");
    let plan = Plan::parse(plan_name).filter(|p| p.self_service()).ok_or_else(|| {
        ApiError::unprocessable(
            "INVALID_PLAN",
            format!("subscription_plan {plan_name:?} is not one of STARTER, PROFESSIONAL, SCALE"),
        )
    })?;
    if let Some(loc) = &req.dataset_location {
        let ok = !loc.is_empty() && loc.len() <= 64 && loc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(ApiError::unprocessable(
                "INVALID_LOCATION",
                "dataset_location must be a location such as US, EU or us-central1",
            ));
        }
    }
    if req.force_recreate_dataset || req.force_recreate_tables {
        return Err(ApiError::unprocessable(
            "UNSUPPORTED_OPTION",
            "force_recreate_dataset/force_recreate_tables are not supported at onboarding; delete the organization first",
        ));
    }
    Ok(plan)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationSummary {
    pub total_checks: usize,
    pub passed: usize,
    pub failed: usize,
    pub all_passed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DryrunResponse {
    pub status: String,
    pub org_slug: String,
    pub subscription_plan: String,
    pub company_name: String,
    pub admin_email: String,
    pub validation_summary: ValidationSummary,
    #[schema(value_type = Vec<Object>)]
    pub validation_results: Vec<serde_json::Value>,
    pub ready_for_onboarding: bool,
    pub message: String,
}

/// Checks that an org can be onboarded; creates nothing.
#[utoipa::path(post, path = "/api/v1/organizations/dryrun", tag = "organizations", request_body = OrgRequest,
    security(("root_key" = [])),
    responses((status = 200, body = DryrunResponse), (status = 401), (status = 403), (status = 422)))]
pub async fn dryrun(
    State(ctx): State<Arc<AppContext>>,
    _root: RootAuth,
    ApiJson(req): ApiJson<OrgRequest>,
) -> Result<Json<DryrunResponse>, ApiError> {
    let plan = validate_request(&req)?;
    initial_subscription(&req, Utc::now().date_naive())?;
    let spec = ctx.catalog.require(DRYRUN_SPEC).map_err(ApiError::internal)?;
    let mut params = serde_json::Map::new();
    params.insert("org_slug".into(), json!(req.org_slug));
    params.insert("admin_email".into(), json!(req.admin_email));
    params.insert("subscription_plan".into(), json!(plan.as_str()));
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
        return Err(ApiError::internal(format!(
            "dryrun failed: {}",
            report.error.unwrap_or_default()
        )));
    }
    let results: Vec<serde_json::Value> = report
        .steps
        .first()
        .and_then(|s| serde_json::from_value(s.output["validation_results"].clone()).ok())
        .unwrap_or_default();
    let passed = results.iter().filter(|r| r["passed"] == json!(true)).count();
    let all_passed = passed == results.len() && !results.is_empty();
    let failed_names: Vec<&str> = results
        .iter()
        .filter(|r| r["passed"] != json!(true))
        .filter_map(|r| r["check_name"].as_str())
        .collect();
    Ok(Json(DryrunResponse {
        status: if all_passed { "SUCCESS" } else { "FAILED" }.into(),
        org_slug: req.org_slug,
        subscription_plan: plan.as_str().into(),
        company_name: req.company_name,
        admin_email: req.admin_email,
        validation_summary: ValidationSummary {
            total_checks: results.len(),
            passed,
            failed: results.len() - passed,
            all_passed,
        },
        message: if all_passed {
            "all checks passed; ready for onboarding".to_string()
        } else {
            format!("checks failed: {}", failed_names.join(", "))
        },
        validation_results: results,
        ready_for_onboarding: all_passed,
    }))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OnboardResponse {
    pub org_slug: String,
    /// The API key, shown exactly once. Null in an idempotent replay.
    pub api_key: Option<String>,
    pub api_key_fingerprint: String,
    pub subscription_plan: String,
    pub subscription_status: String,
    pub dataset_id: String,
    pub dataset_location: String,
    pub dataset_created: bool,
    pub tables_created: Vec<String>,
    /// Table → columns added to bring an existing org table up to its schema file (re-sync).
    pub columns_added: std::collections::BTreeMap<String, Vec<String>>,
    pub dryrun_status: String,
    pub pipeline_logging_id: Option<String>,
    pub idempotent_replay: bool,
    pub message: String,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::bad_request("INVALID_IDEMPOTENCY_KEY", "Idempotency-Key must be ASCII"))?;
    if v.is_empty() || v.len() > 255 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "INVALID_IDEMPOTENCY_KEY",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    Ok(Some(v.to_string()))
}

fn request_fingerprint(req: &OrgRequest) -> String {
    let canonical = json!([
        req.org_slug,
        req.company_name,
        req.admin_email,
        req.subscription_plan,
        req.dataset_location,
        req.regenerate_api_key_if_exists,
        req.subscription_status,
        req.trial_end_date
    ]);
    hex_digest(canonical.to_string().as_bytes())
}

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Onboards an org: profile, key, subscription, today's quota row and its dataset, all or nothing.
#[utoipa::path(post, path = "/api/v1/organizations/onboard", tag = "organizations", request_body = OrgRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "replays within 24 h return the stored result (without the key)")),
    security(("root_key" = [])),
    responses((status = 200, body = OnboardResponse), (status = 401), (status = 403), (status = 409), (status = 422)))]
pub async fn onboard(
    State(ctx): State<Arc<AppContext>>,
    _root: RootAuth,
    headers: HeaderMap,
    ApiJson(req): ApiJson<OrgRequest>,
) -> Result<Json<OnboardResponse>, ApiError> {
    let plan = validate_request(&req)?;
    initial_subscription(&req, Utc::now().date_naive())?;
    let idem_key = idempotency_key(&headers)?;
    let fingerprint = request_fingerprint(&req);
    let missing = ctx.store.bootstrapped(&REQUIRED_TABLES).await?;
    if !missing.is_empty() {
        return Err(ApiError::conflict(
            "NOT_BOOTSTRAPPED",
            format!(
                "the platform is not bootstrapped (missing {}); run POST /api/v1/admin/bootstrap first",
                missing.join(", ")
            ),
        ));
    }
    let now = Utc::now();
    if let Some(key) = &idem_key {
        if let Some(record) = ctx.store.idempotency(key, now - Duration::hours(24)).await? {
            if record.request_fingerprint != fingerprint {
                return Err(ApiError::conflict(
                    "IDEMPOTENCY_KEY_REUSED",
                    "this Idempotency-Key was used with a different request in the last 24 hours; use a new key",
                ));
            }
            let mut replay: OnboardResponse = serde_json::from_value(record.response)
                .map_err(|e| ApiError::internal(format!("stored replay: {e}")))?;
            replay.api_key = None;
            replay.idempotent_replay = true;
            replay.message = "replay of an earlier successful onboarding: the API key was shown only once; \
                              rotate it with POST /api/v1/organizations/{org}/api-key/rotate if it was lost"
                .to_string();
            return Ok(Json(replay));
        }
    }
    let dataset_id = ctx.settings.org_dataset(&req.org_slug);
    let location = req
        .dataset_location
        .clone()
        .unwrap_or_else(|| ctx.settings.bigquery_location.clone());
    let response = match ctx.store.profile(&req.org_slug).await? {
        Some(existing) => {
            if !req.regenerate_api_key_if_exists {
                return Err(ApiError::conflict(
                    "ORG_EXISTS",
                    format!(
                        "organization '{}' already exists with status {}; set regenerate_api_key_if_exists=true to re-sync it and get a new key",
                        req.org_slug, existing.status
                    ),
                ));
            }
            if existing.status != ORG_ACTIVE {
                return Err(ApiError::conflict(
                    "ORG_NOT_ACTIVE",
                    format!(
                        "organization '{}' has status {}; only ACTIVE orgs can be re-synced",
                        req.org_slug, existing.status
                    ),
                ));
            }
            resync(&ctx, &req, plan, &existing.org_dataset_id, &location).await?
        }
        None => create(&ctx, &req, plan, &dataset_id, &location).await?,
    };
    if let Some(key) = idem_key {
        let mut stored = response.clone();
        stored.api_key = None;
        let record = IdempotencyRecord {
            key,
            org_slug: req.org_slug.clone(),
            request_fingerprint: fingerprint,
            response: serde_json::to_value(&stored).map_err(ApiError::internal)?,
            created_at: now,
        };
        if let Err(e) = ctx.store.put_idempotency(&record).await {
            tracing::warn!(error = %e, "could not store the idempotency record");
        }
    }
    Ok(Json(response))
}

async fn run_onboarding_pipeline(
    ctx: &AppContext,
    org_slug: &str,
    dataset_id: &str,
    location: &str,
) -> Result<OnboardingOutcome, String> {
    let spec = ctx.catalog.require(ONBOARDING_SPEC)?;
    let mut request = RunRequest {
        org_slug: Some(org_slug.to_string()),
        ..Default::default()
    };
    request.variables.insert("dataset".into(), dataset_id.to_string());
    request.params.insert("dataset_location".into(), json!(location));
    let report = ctx.executor.run(&spec, request, CancellationToken::new()).await;
    if report.status != RunStatus::Completed {
        return Err(report.error.unwrap_or_else(|| "onboarding pipeline failed".into()));
    }
    let out = report.steps.first().map(|s| s.output.clone()).unwrap_or_default();
    Ok(OnboardingOutcome {
        run_id: report.run_id,
        dataset_created: out["dataset_created"].as_bool().unwrap_or(false),
        tables_created: serde_json::from_value(out["tables_created"].clone()).unwrap_or_default(),
        columns_added: serde_json::from_value(out["columns_added"].clone()).unwrap_or_default(),
    })
}

/// What the onboarding pipeline did to an org's dataset.
struct OnboardingOutcome {
    run_id: String,
    dataset_created: bool,
    tables_created: Vec<String>,
    columns_added: std::collections::BTreeMap<String, Vec<String>>,
}

async fn create(
    ctx: &AppContext,
    req: &OrgRequest,
    plan: Plan,
    dataset_id: &str,
    location: &str,
) -> Result<OnboardResponse, ApiError> {
    let now = Utc::now();
    let (status, trial_end_date) = initial_subscription(req, now.date_naive())?;
    let (key, stored_key) = NewApiKey::mint(&*ctx.kms, &req.org_slug).await?;
    let new_org = NewOrg {
        org_slug: req.org_slug.clone(),
        company_name: req.company_name.trim().to_string(),
        admin_email: req.admin_email.clone(),
        org_dataset_id: dataset_id.to_string(),
        plan,
        status,
        trial_end_date,
        key: stored_key.clone(),
        idempotency: None,
    };
    ctx.store.create_org(&new_org, now).await.map_err(|e| match e {
        cloudact_core::meta::MetaError::Conflict(m) => ApiError::conflict("ORG_EXISTS", m),
        other => other.into(),
    })?;
    let outcome = match run_onboarding_pipeline(ctx, &req.org_slug, dataset_id, location).await {
        Ok(o) => ctx
            .store
            .activate_org(&req.org_slug, Utc::now())
            .await
            .map(|_| o)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let OnboardingOutcome {
        run_id,
        dataset_created,
        tables_created,
        columns_added,
    } = match outcome {
        Ok(o) => o,
        Err(cause) => {
            // All or nothing: remove what this attempt wrote.
            let cleanup = purge_org(ctx, &req.org_slug, true).await;
            tracing::error!(org_slug = %req.org_slug, cause = %cause, cleanup_ok = cleanup.is_ok(), "onboarding failed; rolled back");
            return Err(ApiError::internal(format!(
                "onboarding of {} failed: {cause}",
                req.org_slug
            )));
        }
    };
    audit(
        ctx,
        &req.org_slug,
        "ONBOARD",
        json!({"plan": plan.as_str(), "dataset": dataset_id}),
    )
    .await;
    tracing::info!(org_slug = %req.org_slug, dataset = dataset_id, "organization onboarded");
    Ok(OnboardResponse {
        org_slug: req.org_slug.clone(),
        api_key: Some(key.expose_secret().to_string()),
        api_key_fingerprint: stored_key.fingerprint,
        subscription_plan: plan.as_str().into(),
        subscription_status: status.as_str().into(),
        dataset_id: dataset_id.to_string(),
        dataset_location: location.to_string(),
        dataset_created,
        tables_created,
        columns_added,
        dryrun_status: "SKIPPED".into(),
        pipeline_logging_id: Some(run_id),
        idempotent_replay: false,
        message: match trial_end_date {
            Some(end) => format!(
                "organization {} onboarded on a trial until {end}; store the api_key now, it is not shown again",
                req.org_slug
            ),
            None => format!(
                "organization {} onboarded ({}); store the api_key now, it is not shown again",
                req.org_slug,
                status.as_str()
            ),
        },
    })
}

/// Existing ACTIVE org with `regenerate_api_key_if_exists`: new key, updated plan, dataset ensured.
async fn resync(
    ctx: &AppContext,
    req: &OrgRequest,
    plan: Plan,
    dataset_id: &str,
    location: &str,
) -> Result<OnboardResponse, ApiError> {
    let now = Utc::now();
    let current = ctx
        .store
        .subscription(&req.org_slug)
        .await?
        .ok_or_else(|| ApiError::internal(format!("org {} has no subscription row", req.org_slug)))?;
    let change = SubscriptionChange {
        plan: Some(plan),
        limits: plan.limits(),
        ..Default::default()
    };
    ctx.store
        .update_subscription(&req.org_slug, &current, &change, now)
        .await?;
    ctx.store
        .warehouse()
        .execute(
            cloudact_core::meta::CENTRAL_DATASET,
            "UPDATE {{org_profiles}} SET company_name = @company, admin_email = @email, updated_at = @now WHERE org_slug = @org",
            &cloudact_core::warehouse::Params::new()
                .with("company", req.company_name.trim())
                .with("email", &req.admin_email)
                .with("now", now)
                .with("org", &req.org_slug),
        )
        .await?;
    let (key, stored_key) = NewApiKey::mint(&*ctx.kms, &req.org_slug).await?;
    ctx.store.replace_key(&req.org_slug, &stored_key, now).await?;
    ctx.auth.invalidate_org(&req.org_slug);
    let OnboardingOutcome {
        run_id,
        dataset_created,
        tables_created,
        columns_added,
    } = run_onboarding_pipeline(ctx, &req.org_slug, dataset_id, location)
        .await
        .map_err(|e| match crate::routes::admin::schema_incompatibility(&e) {
            Some(problems) => ApiError::conflict(
                "SCHEMA_INCOMPATIBLE",
                format!(
                    "the tables of {} cannot be brought up to the schema files, so nothing was changed: {problems}",
                    req.org_slug
                ),
            ),
            None => ApiError::internal(format!("re-sync of {} could not ensure its dataset: {e}", req.org_slug)),
        })?;
    audit(ctx, &req.org_slug, "RESYNC", json!({"plan": plan.as_str()})).await;
    Ok(OnboardResponse {
        org_slug: req.org_slug.clone(),
        api_key: Some(key.expose_secret().to_string()),
        api_key_fingerprint: stored_key.fingerprint,
        subscription_plan: plan.as_str().into(),
        subscription_status: current.status,
        dataset_id: dataset_id.to_string(),
        dataset_location: location.to_string(),
        dataset_created,
        tables_created,
        columns_added,
        dryrun_status: "SKIPPED".into(),
        pipeline_logging_id: Some(run_id),
        idempotent_replay: false,
        message: format!(
            "organization {} re-synced; the previous API key no longer works",
            req.org_slug
        ),
    })
}

/// Removes an org's rows from every central table that has an org_slug column, and
/// optionally its dataset. Returns rows deleted per table and whether a dataset was deleted.
async fn purge_org(
    ctx: &AppContext,
    org_slug: &str,
    delete_dataset: bool,
) -> Result<(Vec<(String, u64)>, bool), ApiError> {
    let list = TableList::load(&ctx.settings.configs_dir, BOOTSTRAP_TABLES)
        .map_err(|e| ApiError::internal(format!("{e:?}")))?;
    let mut tables = Vec::new();
    for t in &list.tables {
        // The audit trail outlives the org: who did what to it stays answerable.
        if t.def.has_column("org_slug")
            && t.def.name != "org_audit_logs"
            && ctx
                .warehouse
                .table_exists(cloudact_core::meta::CENTRAL_DATASET, &t.def.name)
                .await?
        {
            tables.push(t.def.name.clone());
        }
    }
    let deleted = ctx.store.purge_org_rows(org_slug, &tables).await?;
    ctx.auth.invalidate_org(org_slug);
    let dataset_deleted = if delete_dataset {
        ctx.warehouse
            .delete_dataset(&ctx.settings.org_dataset(org_slug))
            .await?
    } else {
        false
    };
    Ok((deleted, dataset_deleted))
}

/// What the audit row of this request says about the change (the audit middleware writes
/// the row; see `cloudact_web::audit`).
async fn audit(_ctx: &AppContext, org_slug: &str, action: &str, details: serde_json::Value) {
    let org = org_slug.to_string();
    let mut details = details;
    if let Some(obj) = details.as_object_mut() {
        obj.insert("change".into(), json!(action));
    }
    cloudact_web::layers::note(|n| {
        n.audit_org = Some(org);
        n.audit_details = Some(details);
    });
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteOrgRequest {
    /// Must equal the org in the path.
    pub confirm_org_slug: String,
    /// Also delete the org's dataset (default true).
    #[serde(default = "default_true")]
    pub delete_dataset: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteOrgResponse {
    pub org_slug: String,
    #[schema(value_type = Object)]
    pub deleted_from_tables: serde_json::Map<String, serde_json::Value>,
    pub dataset_id: String,
    pub dataset_deleted: bool,
    pub message: String,
}

/// Deletes an org: its rows in every central table and (by default) its dataset.
#[utoipa::path(delete, path = "/api/v1/organizations/{org_slug}", tag = "organizations", request_body = DeleteOrgRequest,
    params(("org_slug" = String, Path)), security(("root_key" = [])),
    responses((status = 200, body = DeleteOrgResponse), (status = 400), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub async fn delete_org(
    State(ctx): State<Arc<AppContext>>,
    _root: RootAuth,
    Path(org_slug): Path<String>,
    ApiJson(req): ApiJson<DeleteOrgRequest>,
) -> Result<Json<DeleteOrgResponse>, ApiError> {
    path_org(&org_slug)?;
    if req.confirm_org_slug != org_slug {
        return Err(ApiError::bad_request(
            "CONFIRMATION_MISMATCH",
            "confirm_org_slug must equal the organization in the path",
        ));
    }
    if ctx.store.profile(&org_slug).await?.is_none() {
        return Err(ApiError::not_found(
            "ORG_NOT_FOUND",
            format!("organization '{org_slug}' does not exist"),
        ));
    }
    let (deleted, dataset_deleted) = purge_org(&ctx, &org_slug, req.delete_dataset).await?;
    audit(&ctx, &org_slug, "DELETE", json!({"dataset_deleted": dataset_deleted})).await;
    let total: u64 = deleted.iter().map(|(_, n)| n).sum();
    Ok(Json(DeleteOrgResponse {
        org_slug: org_slug.clone(),
        deleted_from_tables: deleted
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| (t, json!(n)))
            .collect(),
        dataset_id: ctx.settings.org_dataset(&org_slug),
        dataset_deleted,
        message: format!("deleted organization {org_slug}: {total} rows removed"),
    }))
}
