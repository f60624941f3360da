//! Per-org LLM provider plans (org key; path org must match), in the org's
//! `llm_subscriptions` table, keyed by provider + `plan_name`.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use chrono::Utc;
use cloudact_core::warehouse::{Params, Row};
use cloudact_web::{ApiError, ApiJson, AppContext, OrgPath};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::pricing::{date, price, pricing_provider, row_json, Term};

const TABLE: &str = "llm_subscriptions";

fn check_plan(plan: &str) -> Result<(), ApiError> {
    let ok = !plan.is_empty() && plan.len() <= 50 && plan.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "INVALID_PLAN_NAME",
            "plan_name must match ^[a-zA-Z0-9_]{1,50}$",
        ))
    }
}

/// A provider plan.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    pub subscription_id: Option<String>,
    pub plan_name: Option<String>,
    /// Seats or units, ≥ 0.
    pub quantity: Option<i64>,
    /// Price per unit per month in USD, ≥ 0.
    #[schema(value_type = Option<f64>)]
    pub unit_price_usd: Option<Value>,
    pub effective_date: Option<String>,
    pub end_date: Option<String>,
    pub is_enabled: Option<bool>,
    /// api_key, service_account or oauth.
    pub auth_type: Option<String>,
    pub notes: Option<String>,
    /// free, trial, paid (default), enterprise or committed_use.
    pub tier_type: Option<String>,
    pub trial_end_date: Option<String>,
    #[schema(value_type = Option<f64>)]
    pub trial_credit_usd: Option<Value>,
    pub monthly_token_limit: Option<i64>,
    pub daily_token_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub rpd_limit: Option<i64>,
    pub tpd_limit: Option<i64>,
    pub concurrent_limit: Option<i64>,
    #[schema(value_type = Option<f64>)]
    pub committed_spend_usd: Option<Value>,
    pub commitment_term_months: Option<i64>,
    /// 0–100.
    #[schema(value_type = Option<f64>)]
    pub discount_percentage: Option<Value>,
    /// Accepted for the original frontend; the server decides (plans created here are custom).
    #[allow(dead_code)] // accepted so the original's bodies are not refused; never read
    pub is_custom: Option<bool>,
    /// The original's provider extras, stored and returned as given.
    pub x_gemini_project_id: Option<String>,
    pub x_gemini_region: Option<String>,
    pub x_anthropic_workspace_id: Option<String>,
    pub x_openai_org_id: Option<String>,
}

impl PlanBody {
    /// The original's plan terms given in the body, checked.
    fn terms(&self) -> Result<Vec<(&'static str, Term)>, ApiError> {
        let mut out = Vec::new();
        if let Some(t) = &self.tier_type {
            let allowed = ["free", "trial", "paid", "enterprise", "committed_use"];
            if !allowed.contains(&t.as_str()) {
                return Err(ApiError::unprocessable(
                    "VALIDATION_ERROR",
                    format!("tier_type must be one of {}", allowed.join(", ")),
                ));
            }
            out.push(("tier_type", Term::Text(t.clone())));
        }
        for (name, v) in [
            ("x_gemini_project_id", &self.x_gemini_project_id),
            ("x_gemini_region", &self.x_gemini_region),
            ("x_anthropic_workspace_id", &self.x_anthropic_workspace_id),
            ("x_openai_org_id", &self.x_openai_org_id),
        ] {
            if let Some(v) = v {
                out.push((name, crate::routes::pricing::extra_text(name, v)?));
            }
        }
        if let Some(d) = &self.trial_end_date {
            out.push(("trial_end_date", Term::Date(date("trial_end_date", d)?)));
        }
        for (name, v) in [
            ("trial_credit_usd", &self.trial_credit_usd),
            ("committed_spend_usd", &self.committed_spend_usd),
            ("discount_percentage", &self.discount_percentage),
        ] {
            if let Some(v) = v {
                let d = price(name, v)?;
                if name == "discount_percentage" && d > rust_decimal::Decimal::from(100) {
                    return Err(ApiError::unprocessable(
                        "VALIDATION_ERROR",
                        "discount_percentage must be 0 to 100",
                    ));
                }
                out.push((name, Term::Dec(d)));
            }
        }
        for (name, v) in [
            ("monthly_token_limit", self.monthly_token_limit),
            ("daily_token_limit", self.daily_token_limit),
            ("rpm_limit", self.rpm_limit),
            ("tpm_limit", self.tpm_limit),
            ("rpd_limit", self.rpd_limit),
            ("tpd_limit", self.tpd_limit),
            ("concurrent_limit", self.concurrent_limit),
            ("commitment_term_months", self.commitment_term_months),
        ] {
            if let Some(n) = v {
                if n < 0 {
                    return Err(ApiError::unprocessable(
                        "VALIDATION_ERROR",
                        format!("{name} must be 0 or more"),
                    ));
                }
                out.push((name, Term::Int(n)));
            }
        }
        Ok(out)
    }
}

async fn plans(ctx: &AppContext, dataset: &str, provider: &str, plan: Option<&str>) -> Result<Vec<Row>, ApiError> {
    if !ctx.warehouse.table_exists(dataset, TABLE).await? {
        return Ok(Vec::new());
    }
    let (filter, params) = match plan {
        Some(p) => (
            "AND plan_name = @plan",
            Params::new().with("provider", provider).with("plan", p),
        ),
        None => ("", Params::new().with("provider", provider)),
    };
    Ok(ctx
        .warehouse
        .query(
            dataset,
            &format!("SELECT * FROM {{{{{TABLE}}}}} WHERE provider = @provider {filter} ORDER BY plan_name"),
            &params,
        )
        .await?)
}

fn listing(org: &str, provider: &str, rows: &[Row]) -> Value {
    json!({"org_slug": org, "provider": provider, "count": rows.len(), "subscriptions": rows.iter().map(row_json).collect::<Vec<_>>()})
}

/// The provider's plans for the org.
#[utoipa::path(get, path = "/api/v1/integrations/{org_slug}/{provider}/subscriptions", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path), super::pricing::ListQuery), security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn list(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias)): Path<(String, String)>,
    query: Result<axum::extract::Query<super::pricing::ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let provider = pricing_provider(&alias)?;
    let q = super::pricing::ListQuery::checked(query)?;
    Ok(Json(listing(
        &org.org_slug,
        provider,
        &q.apply(plans(&ctx, &org.org_dataset_id, provider, None).await?),
    )))
}

/// One plan.
#[utoipa::path(get, path = "/api/v1/integrations/{org_slug}/{provider}/subscriptions/{plan_name}", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path), ("plan_name" = String, Path)), security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn get_plan(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias, plan)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let provider = pricing_provider(&alias)?;
    check_plan(&plan)?;
    let found = plans(&ctx, &org.org_dataset_id, provider, Some(&plan)).await?;
    found.first().map(|r| Json(row_json(r))).ok_or_else(|| {
        ApiError::not_found(
            "SUBSCRIPTION_NOT_FOUND",
            format!("Subscription not found for plan: {plan}"),
        )
    })
}

/// Adds a plan (201; 409 when the plan name exists for the provider).
#[utoipa::path(post, path = "/api/v1/integrations/{org_slug}/{provider}/subscriptions", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path)), request_body = PlanBody, security(("api_key" = [])),
    responses((status = 201), (status = 400), (status = 401), (status = 403), (status = 409), (status = 422)))]
pub async fn create(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias)): Path<(String, String)>,
    ApiJson(body): ApiJson<PlanBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let provider = pricing_provider(&alias)?;
    let plan = body
        .plan_name
        .clone()
        .ok_or_else(|| ApiError::unprocessable("VALIDATION_ERROR", "plan_name is required"))?;
    check_plan(&plan)?;
    let quantity = body.quantity.unwrap_or(1);
    if quantity < 0 {
        return Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            "quantity must not be negative",
        ));
    }
    let unit = price("unit_price_usd", body.unit_price_usd.as_ref().unwrap_or(&json!(null)))?;
    let effective = date("effective_date", body.effective_date.as_deref().unwrap_or(""))?;
    let end = body.end_date.as_deref().map(|d| date("end_date", d)).transpose()?;
    if body
        .auth_type
        .as_deref()
        .is_some_and(|a| !["api_key", "service_account", "oauth"].contains(&a))
    {
        return Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            "auth_type must be api_key, service_account or oauth",
        ));
    }
    if body.notes.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        return Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            "notes must be at most 1000 characters",
        ));
    }
    if !ctx.warehouse.table_exists(&org.org_dataset_id, TABLE).await? {
        return Err(ApiError::conflict(
            "DATASET_NOT_READY",
            "the organization's dataset has no plans table; re-run onboarding",
        ));
    }
    if !plans(&ctx, &org.org_dataset_id, provider, Some(&plan))
        .await?
        .is_empty()
    {
        return Err(ApiError::conflict(
            "SUBSCRIPTION_EXISTS",
            format!("Subscription already exists: {plan}"),
        ));
    }
    let id = body
        .subscription_id
        .clone()
        .unwrap_or_else(|| format!("sub_{provider}_{}", plan.to_ascii_lowercase()));
    if id.is_empty() || id.len() > 100 {
        return Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            "subscription_id must be 1 to 100 characters",
        ));
    }
    let now = Utc::now();
    let mut row = Row::new()
        .with("subscription_id", id)
        .with("provider", provider)
        .with("plan_name", plan.as_str())
        .with("is_custom", true)
        .with("quantity", quantity)
        .with("unit_price_usd", unit)
        .with("effective_date", effective)
        .with("end_date", end)
        .with("is_enabled", body.is_enabled.unwrap_or(true))
        .with("auth_type", body.auth_type.clone())
        .with("notes", body.notes.clone())
        .with("created_at", now)
        .with("updated_at", now);
    for (k, t) in body.terms()? {
        t.set(&mut row, k);
    }
    ctx.warehouse
        .insert_rows(&org.org_dataset_id, TABLE, std::slice::from_ref(&row))
        .await?;
    Ok((StatusCode::CREATED, Json(row_json(&row))))
}

/// Changes a plan.
#[utoipa::path(put, path = "/api/v1/integrations/{org_slug}/{provider}/subscriptions/{plan_name}", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path), ("plan_name" = String, Path)),
    request_body = PlanBody, security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub async fn update(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias, plan)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<PlanBody>,
) -> Result<Json<Value>, ApiError> {
    let provider = pricing_provider(&alias)?;
    check_plan(&plan)?;
    if plans(&ctx, &org.org_dataset_id, provider, Some(&plan))
        .await?
        .is_empty()
    {
        return Err(ApiError::not_found(
            "SUBSCRIPTION_NOT_FOUND",
            format!("Subscription not found for plan: {plan}"),
        ));
    }
    if body.plan_name.as_deref().is_some_and(|p| p != plan) || body.subscription_id.is_some() {
        return Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            "plan_name and subscription_id cannot change",
        ));
    }
    let mut sets = Vec::new();
    let mut params = Params::new()
        .with("provider", provider)
        .with("plan", plan.as_str())
        .with("now", Utc::now());
    if let Some(q) = body.quantity {
        if q < 0 {
            return Err(ApiError::unprocessable(
                "VALIDATION_ERROR",
                "quantity must not be negative",
            ));
        }
        sets.push("quantity = @quantity");
        params = params.with("quantity", q);
    }
    if let Some(v) = &body.unit_price_usd {
        sets.push("unit_price_usd = @unit");
        params = params.with("unit", price("unit_price_usd", v)?);
    }
    if let Some(d) = &body.effective_date {
        sets.push("effective_date = @effective");
        params = params.with("effective", date("effective_date", d)?);
    }
    if let Some(d) = &body.end_date {
        sets.push("end_date = @end");
        params = params.with("end", date("end_date", d)?);
    }
    if let Some(b) = body.is_enabled {
        sets.push("is_enabled = @enabled");
        params = params.with("enabled", b);
    }
    if let Some(n) = &body.notes {
        sets.push("notes = @notes");
        params = params.with("notes", n.as_str());
    }
    let mut sets: Vec<String> = sets.into_iter().map(str::to_string).collect();
    for (k, t) in body.terms()? {
        sets.push(format!("{k} = @{k}"));
        params = t.bind(params, k);
    }
    if sets.is_empty() {
        return Err(ApiError::bad_request("NO_FIELDS", "No fields to update"));
    }
    ctx.warehouse
        .execute(
            &org.org_dataset_id,
            &format!(
                "UPDATE {{{{{TABLE}}}}} SET {}, is_custom = @custom, updated_at = @now WHERE provider = @provider AND plan_name = @plan",
                sets.join(", ")
            ),
            &params.with("custom", true),
        )
        .await?;
    let found = plans(&ctx, &org.org_dataset_id, provider, Some(&plan)).await?;
    Ok(Json(found.first().map(row_json).unwrap_or(Value::Null)))
}

/// Deletes a plan (204 even when none matched).
#[utoipa::path(delete, path = "/api/v1/integrations/{org_slug}/{provider}/subscriptions/{plan_name}", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path), ("plan_name" = String, Path)), security(("api_key" = [])),
    responses((status = 204), (status = 400), (status = 401), (status = 403)))]
pub async fn delete(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias, plan)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let provider = pricing_provider(&alias)?;
    check_plan(&plan)?;
    if ctx.warehouse.table_exists(&org.org_dataset_id, TABLE).await? {
        ctx.warehouse
            .execute(
                &org.org_dataset_id,
                &format!("DELETE FROM {{{{{TABLE}}}}} WHERE provider = @provider AND plan_name = @plan"),
                &Params::new().with("provider", provider).with("plan", plan.as_str()),
            )
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Restores the provider's default plans.
#[utoipa::path(post, path = "/api/v1/integrations/{org_slug}/{provider}/subscriptions/reset", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path)), security(("api_key" = [])),
    responses((status = 200), (status = 401), (status = 403)))]
pub async fn reset(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let provider = pricing_provider(&alias)?;
    super::pricing::reset_to_defaults(&ctx, &org.org_dataset_id, TABLE, provider).await?;
    Ok(Json(listing(
        &org.org_slug,
        provider,
        &plans(&ctx, &org.org_dataset_id, provider, None).await?,
    )))
}
