//! Per-org LLM pricing (org key; path org must match), in the org's `llm_model_pricing`
//! table: one row per provider + `model_id` + `pricing_tier` + `effective_date`, prices per 1M
//! tokens (per-1K inputs from the original frontend are converted, and list responses carry
//! per-1K values too). Absent cached / cache-write prices fall back to the input price when
//! usage is priced — never to 0.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    Json,
};
use chrono::{NaiveDate, Utc};
use cloudact_core::{
    config::TableList,
    warehouse::{Params, Row},
};
use cloudact_pipeline::processors::unit_pricing::UNIT_NAMES;
use cloudact_web::{ApiError, ApiJson, AppContext, OrgPath};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

const TABLE: &str = "llm_model_pricing";
const ONBOARDING_TABLES: &str = "setup/organizations/onboarding/tables.yml";
const TIERS: [&str; 9] = [
    "standard",
    "batch",
    "flex",
    "priority",
    "scale",
    "long_context",
    "batch_long_context",
    "priority_long_context",
    "flex_long_context",
];

/// The provider value stored in the pricing table for a path segment.
pub(crate) fn pricing_provider(alias: &str) -> Result<&'static str, ApiError> {
    match alias {
        "openai" => Ok("openai"),
        "anthropic" | "claude" => Ok("anthropic"),
        "deepseek" => Ok("deepseek"),
        "gemini" | "gcp" | "gcp_sa" => Ok("gemini"),
        "custom" => Ok("custom"),
        other => Err(ApiError::not_found(
            "UNKNOWN_PROVIDER",
            format!("no pricing for provider {other:?}; use openai, anthropic, deepseek, gemini or custom"),
        )),
    }
}

fn check_model_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty() && id.len() <= 100 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "INVALID_MODEL_ID",
            "model_id must match ^[a-zA-Z0-9._-]{1,100}$",
        ))
    }
}

pub(crate) fn price(field: &str, v: &Value) -> Result<Decimal, ApiError> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => {
            return Err(ApiError::unprocessable(
                "INVALID_PRICE",
                format!("{field} must be a number"),
            ))
        }
    };
    let d: Decimal = text
        .parse()
        .map_err(|_| ApiError::unprocessable("INVALID_PRICE", format!("{field} must be a number")))?;
    if d.is_sign_negative() {
        return Err(ApiError::unprocessable(
            "INVALID_PRICE",
            format!("{field} must not be negative"),
        ));
    }
    Ok(d.normalize())
}

pub(crate) fn date(field: &str, v: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .filter(|_| v.len() == 10)
        .ok_or_else(|| ApiError::unprocessable("INVALID_DATE", format!("{field} must be YYYY-MM-DD")))
}

/// A pricing row as sent: prices per 1M tokens (or per 1K, converted).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PricingBody {
    pub model_id: Option<String>,
    pub model_name: Option<String>,
    /// standard (default), batch, flex, priority, scale; `long_context`, `batch_long_context`,
    /// `priority_long_context`, `flex_long_context` price Anthropic usage with a context window
    /// above 200k tokens.
    pub pricing_tier: Option<String>,
    /// Only USD.
    pub currency: Option<String>,
    #[schema(value_type = Option<f64>)]
    pub input_price_per_1m: Option<Value>,
    #[schema(value_type = Option<f64>)]
    pub cached_input_price_per_1m: Option<Value>,
    #[schema(value_type = Option<f64>)]
    pub cache_write_5m_price_per_1m: Option<Value>,
    #[schema(value_type = Option<f64>)]
    pub cache_write_1h_price_per_1m: Option<Value>,
    #[schema(value_type = Option<f64>)]
    pub output_price_per_1m: Option<Value>,
    /// USD per 1 000 server-side web-search requests (Anthropic).
    #[schema(value_type = Option<f64>)]
    pub web_search_price_per_1k: Option<Value>,
    /// What the row prices per: `1m_tokens` (default: the per-1M token prices), `image`,
    /// `1m_characters`, `minute`, `gib_day`, `session` or `1k_calls` (then `unit_price` is
    /// required and the token prices default to 0).
    pub unit: Option<String>,
    /// USD per `unit`.
    #[schema(value_type = Option<f64>)]
    pub unit_price: Option<Value>,
    /// Units free each day (e.g. 1 GiB of vector storage).
    #[schema(value_type = Option<f64>)]
    pub free_units_per_day: Option<Value>,
    /// Original-frontend form: converted to per 1M.
    #[schema(value_type = Option<f64>)]
    pub input_price_per_1k: Option<Value>,
    #[schema(value_type = Option<f64>)]
    pub output_price_per_1k: Option<Value>,
    /// First day the price applies (YYYY-MM-DD).
    pub effective_date: Option<String>,
    /// Last day it applies.
    pub end_date: Option<String>,
    pub is_enabled: Option<bool>,
    pub notes: Option<String>,
    /// standard (default), free_tier, volume_discount, committed_use, promotional, negotiated.
    pub pricing_type: Option<String>,
    /// Input / output tokens free per `free_tier_reset_frequency` period.
    pub free_tier_input_tokens: Option<i64>,
    pub free_tier_output_tokens: Option<i64>,
    /// daily, monthly or never (one allowance from `effective_date`).
    pub free_tier_reset_frequency: Option<String>,
    /// Percentage (0–100) off every price of the row.
    #[schema(value_type = Option<f64>)]
    pub discount_percentage: Option<Value>,
    /// volume, commitment, promotion, negotiated or trial.
    pub discount_reason: Option<String>,
    /// Month-to-date tokens of the model needed for this row's prices; below it the base
    /// prices apply.
    pub volume_threshold_tokens: Option<i64>,
    #[schema(value_type = Option<f64>)]
    pub base_input_price_per_1m: Option<Value>,
    #[schema(value_type = Option<f64>)]
    pub base_output_price_per_1m: Option<Value>,
    /// Original-frontend form of the base prices: converted to per 1M.
    #[schema(value_type = Option<f64>)]
    pub base_input_price_per_1k: Option<Value>,
    #[schema(value_type = Option<f64>)]
    pub base_output_price_per_1k: Option<Value>,
    /// Accepted for the original frontend; the server decides (rows created here are custom).
    pub is_custom: Option<bool>,
    /// The original's provider extras, stored and returned as given.
    #[schema(value_type = Option<f64>)]
    pub x_openai_batch_input_price: Option<Value>,
    #[schema(value_type = Option<f64>)]
    pub x_openai_batch_output_price: Option<Value>,
    pub x_anthropic_tier: Option<String>,
    pub x_gemini_context_window: Option<String>,
    pub x_gemini_region: Option<String>,
}

/// A short free-text provider extra, checked.
pub(crate) fn extra_text(name: &'static str, v: &str) -> Result<Term, ApiError> {
    if v.chars().count() > 200 || v.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            format!("{name} must be at most 200 printable characters"),
        ));
    }
    Ok(Term::Text(v.to_string()))
}

/// A pricing term's typed value.
pub(crate) enum Term {
    Text(String),
    Int(i64),
    Dec(Decimal),
    Date(NaiveDate),
}

impl Term {
    pub(crate) fn set(self, row: &mut Row, name: &str) {
        match self {
            Term::Text(v) => row.set(name, v),
            Term::Int(v) => row.set(name, v),
            Term::Dec(v) => row.set(name, v),
            Term::Date(v) => row.set(name, v),
        }
    }

    pub(crate) fn bind(self, params: Params, name: &str) -> Params {
        match self {
            Term::Text(v) => params.with(name, v),
            Term::Int(v) => params.with(name, v),
            Term::Dec(v) => params.with(name, v),
            Term::Date(v) => params.with(name, v),
        }
    }
}

/// One of a fixed set of words, or a 422 naming them.
fn one_of(field: &str, v: &str, allowed: &[&str]) -> Result<Term, ApiError> {
    if allowed.contains(&v) {
        Ok(Term::Text(v.to_string()))
    } else {
        Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            format!("{field} must be one of {}", allowed.join(", ")),
        ))
    }
}

fn tokens(field: &str, v: i64) -> Result<Term, ApiError> {
    if (0..=1_000_000_000_000_000).contains(&v) {
        Ok(Term::Int(v))
    } else {
        Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            format!("{field} must be a token count from 0"),
        ))
    }
}

/// A per-1M price field, and its per-1K form when the original frontend may send one.
type PriceField<'a> = (&'static str, &'a Option<Value>, Option<&'a Option<Value>>);

impl PricingBody {
    /// Typed prices given in the body, per 1M tokens.
    fn prices(&self) -> Result<Vec<(&'static str, Decimal)>, ApiError> {
        let mut out = Vec::new();
        let thousand = Decimal::from(1000);
        let pairs: [PriceField<'_>; 8] = [
            (
                "input_price_per_1m",
                &self.input_price_per_1m,
                Some(&self.input_price_per_1k),
            ),
            ("cached_input_price_per_1m", &self.cached_input_price_per_1m, None),
            ("cache_write_5m_price_per_1m", &self.cache_write_5m_price_per_1m, None),
            ("cache_write_1h_price_per_1m", &self.cache_write_1h_price_per_1m, None),
            (
                "output_price_per_1m",
                &self.output_price_per_1m,
                Some(&self.output_price_per_1k),
            ),
            ("web_search_price_per_1k", &self.web_search_price_per_1k, None),
            ("unit_price", &self.unit_price, None),
            ("free_units_per_day", &self.free_units_per_day, None),
        ];
        for (name, per_1m, per_1k) in pairs {
            match (per_1m, per_1k.and_then(Option::as_ref)) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::unprocessable(
                        "INVALID_PRICE",
                        format!("give {name} or its per-1K form, not both"),
                    ))
                }
                (Some(v), None) => out.push((name, price(name, v)?)),
                (None, Some(v)) => out.push((name, (price(name, v)? * thousand).normalize())),
                (None, None) => {}
            }
        }
        Ok(out)
    }

    /// The terms given in the body that change what a price costs (discount, free tier,
    /// volume threshold with its base prices), checked.
    fn terms(&self) -> Result<Vec<(&'static str, Term)>, ApiError> {
        let mut out = Vec::new();
        if let Some(t) = &self.pricing_type {
            let allowed = [
                "standard",
                "free_tier",
                "volume_discount",
                "committed_use",
                "promotional",
                "negotiated",
            ];
            out.push(("pricing_type", one_of("pricing_type", t, &allowed)?));
        }
        if let Some(u) = &self.unit {
            out.push(("unit", one_of("unit", u, &UNIT_NAMES)?));
        }
        if let Some(n) = self.free_tier_input_tokens {
            out.push(("free_tier_input_tokens", tokens("free_tier_input_tokens", n)?));
        }
        if let Some(n) = self.free_tier_output_tokens {
            out.push(("free_tier_output_tokens", tokens("free_tier_output_tokens", n)?));
        }
        if let Some(f) = &self.free_tier_reset_frequency {
            out.push((
                "free_tier_reset_frequency",
                one_of("free_tier_reset_frequency", f, &["daily", "monthly", "never"])?,
            ));
        }
        if let Some(v) = &self.discount_percentage {
            let d = price("discount_percentage", v)?;
            if d > Decimal::from(100) {
                return Err(ApiError::unprocessable(
                    "VALIDATION_ERROR",
                    "discount_percentage must be 0 to 100",
                ));
            }
            out.push(("discount_percentage", Term::Dec(d)));
        }
        if let Some(r) = &self.discount_reason {
            let allowed = ["volume", "commitment", "promotion", "negotiated", "trial"];
            out.push(("discount_reason", one_of("discount_reason", r, &allowed)?));
        }
        if let Some(n) = self.volume_threshold_tokens {
            out.push(("volume_threshold_tokens", tokens("volume_threshold_tokens", n)?));
        }
        for (name, v) in [
            ("x_openai_batch_input_price", &self.x_openai_batch_input_price),
            ("x_openai_batch_output_price", &self.x_openai_batch_output_price),
        ] {
            if let Some(v) = v {
                out.push((name, Term::Dec(price(name, v)?)));
            }
        }
        for (name, v) in [
            ("x_anthropic_tier", &self.x_anthropic_tier),
            ("x_gemini_context_window", &self.x_gemini_context_window),
            ("x_gemini_region", &self.x_gemini_region),
        ] {
            if let Some(v) = v {
                out.push((name, extra_text(name, v)?));
            }
        }
        let thousand = Decimal::from(1000);
        for (name, per_1m, per_1k) in [
            (
                "base_input_price_per_1m",
                &self.base_input_price_per_1m,
                &self.base_input_price_per_1k,
            ),
            (
                "base_output_price_per_1m",
                &self.base_output_price_per_1m,
                &self.base_output_price_per_1k,
            ),
        ] {
            match (per_1m, per_1k) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::unprocessable(
                        "INVALID_PRICE",
                        format!("give {name} or its per-1K form, not both"),
                    ))
                }
                (Some(v), None) => out.push((name, Term::Dec(price(name, v)?))),
                (None, Some(v)) => out.push((name, Term::Dec((price(name, v)? * thousand).normalize()))),
                (None, None) => {}
            }
        }
        Ok(out)
    }
}

/// The tier of a plan stored without one (the seeded defaults): by its name.
fn default_tier_type(plan: &str) -> &'static str {
    let p = plan.to_ascii_uppercase();
    if p == "FREE" {
        "free"
    } else if p.starts_with("CUD") || p.contains("COMMIT") {
        "committed_use"
    } else if p.contains("ENTERPRISE") {
        "enterprise"
    } else if p.contains("TRIAL") {
        "trial"
    } else {
        "paid"
    }
}

pub(crate) fn row_json(r: &Row) -> Value {
    let mut obj = serde_json::Map::new();
    for (k, v) in &r.0 {
        obj.insert(k.clone(), v.to_json());
    }
    let thousand = Decimal::from(1000);
    for (m, k) in [
        ("input_price_per_1m", "input_price_per_1k"),
        ("output_price_per_1m", "output_price_per_1k"),
        ("base_input_price_per_1m", "base_input_price_per_1k"),
        ("base_output_price_per_1m", "base_output_price_per_1k"),
    ] {
        if let Some(d) = r.numeric(m) {
            obj.insert(k.into(), json!((d / thousand).normalize().to_string()));
        }
    }
    // The original's classifications, never missing (its list/get answered 500 without them):
    // `pricing_type` of a price row, `tier_type` of a plan (by its name when stored without).
    if obj.contains_key("model_id") && obj.get("pricing_type").is_none_or(Value::is_null) {
        obj.insert("pricing_type".into(), json!("standard"));
    }
    if obj.get("tier_type").is_none_or(Value::is_null) {
        if let Some(plan) = r.string("plan_name") {
            obj.insert("tier_type".into(), json!(default_tier_type(&plan)));
        }
    }
    Value::Object(obj)
}

async fn table_ready(ctx: &AppContext, dataset: &str) -> Result<bool, ApiError> {
    Ok(ctx.warehouse.table_exists(dataset, TABLE).await?)
}

async fn rows(ctx: &AppContext, dataset: &str, provider: &str, model: Option<&str>) -> Result<Vec<Row>, ApiError> {
    if !table_ready(ctx, dataset).await? {
        return Ok(Vec::new());
    }
    let (filter, params) = match model {
        Some(m) => (
            "AND model_id = @model",
            Params::new().with("provider", provider).with("model", m),
        ),
        None => ("", Params::new().with("provider", provider)),
    };
    Ok(ctx
        .warehouse
        .query(
            dataset,
            &format!("SELECT * FROM {{{{{TABLE}}}}} WHERE provider = @provider {filter} ORDER BY model_id, pricing_tier, effective_date"),
            &params,
        )
        .await?)
}

/// The provider's prices for the org.
#[utoipa::path(get, path = "/api/v1/integrations/{org_slug}/{provider}/pricing", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path), ListQuery), security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn list(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias)): Path<(String, String)>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let provider = pricing_provider(&alias)?;
    let q = ListQuery::checked(query)?;
    let found = q.apply(rows(&ctx, &org.org_dataset_id, provider, None).await?);
    Ok(Json(
        json!({"org_slug": org.org_slug, "provider": provider, "count": found.len(),
                   "pricing": found.iter().map(row_json).collect::<Vec<_>>()}),
    ))
}

/// The original's list parameters for prices and plans.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Include rows created or changed by the org (`is_custom`); default true.
    pub include_custom: Option<bool>,
    /// Only enabled (`true`) or disabled (`false`) rows.
    pub is_enabled: Option<bool>,
    /// 0..=10000 (default 1000).
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

impl ListQuery {
    pub(crate) fn checked(
        query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    ) -> Result<ListQuery, ApiError> {
        let Query(q) = query.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
        if q.limit.is_some_and(|l| l > 10_000) {
            return Err(ApiError::bad_request("INVALID_QUERY", "limit must be 0 to 10000"));
        }
        Ok(q)
    }

    pub(crate) fn apply(&self, rows: Vec<Row>) -> Vec<Row> {
        rows.into_iter()
            .filter(|r| self.include_custom != Some(false) || r.boolean("is_custom") != Some(true))
            .filter(|r| self.is_enabled.is_none_or(|e| r.boolean("is_enabled") == Some(e)))
            .skip(self.offset.unwrap_or(0))
            .take(self.limit.unwrap_or(1000))
            .collect()
    }
}

/// Which row of a model `GET …/pricing/{model_id}` answers with.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ModelQuery {
    /// Default standard.
    pub pricing_tier: Option<String>,
    /// Default: the row in effect today (else the latest).
    pub effective_date: Option<String>,
    /// `true`: every tier and effective date, as `{pricing: [...], count}`.
    pub all: Option<bool>,
}

/// One model's price row in the original's shape: the standard tier in effect today unless
/// `pricing_tier` / `effective_date` say otherwise; `all=true` lists every row.
#[utoipa::path(get, path = "/api/v1/integrations/{org_slug}/{provider}/pricing/{model_id}", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path), ("model_id" = String, Path), ModelQuery),
    security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn get_model(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias, model_id)): Path<(String, String, String)>,
    query: Result<Query<ModelQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    let provider = pricing_provider(&alias)?;
    check_model_id(&model_id)?;
    let found = rows(&ctx, &org.org_dataset_id, provider, Some(&model_id)).await?;
    let not_found =
        |what: String| ApiError::not_found("PRICING_NOT_FOUND", format!("Pricing not found for model: {what}"));
    if found.is_empty() {
        return Err(not_found(model_id));
    }
    if q.all == Some(true) {
        return Ok(Json(
            json!({"org_slug": org.org_slug, "provider": provider, "model_id": model_id, "count": found.len(),
                   "pricing": found.iter().map(row_json).collect::<Vec<_>>()}),
        ));
    }
    let tier = q.pricing_tier.as_deref().unwrap_or("standard");
    let in_tier: Vec<&Row> = found
        .iter()
        .filter(|r| r.string("pricing_tier").as_deref() == Some(tier))
        .collect();
    let today = Utc::now().date_naive();
    let row = match q.effective_date.as_deref() {
        Some(d) => {
            let d = date("effective_date", d)?;
            in_tier.into_iter().find(|r| r.date("effective_date") == Some(d))
        }
        None => {
            let current = in_tier
                .iter()
                .filter(|r| r.date("effective_date").is_some_and(|e| e <= today))
                .filter(|r| r.date("end_date").is_none_or(|e| e >= today))
                .max_by_key(|r| r.date("effective_date"))
                .copied();
            current.or_else(|| in_tier.into_iter().max_by_key(|r| r.date("effective_date")))
        }
    }
    .ok_or_else(|| not_found(format!("{model_id} ({tier})")))?;
    Ok(Json(row_json(row)))
}

/// Adds a price (a model, tier and effective date not priced yet).
#[utoipa::path(post, path = "/api/v1/integrations/{org_slug}/{provider}/pricing", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path)), request_body = PricingBody, security(("api_key" = [])),
    responses((status = 201), (status = 400), (status = 401), (status = 403), (status = 409), (status = 422)))]
pub async fn create(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias)): Path<(String, String)>,
    ApiJson(body): ApiJson<PricingBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let provider = pricing_provider(&alias)?;
    let model_id = body
        .model_id
        .clone()
        .ok_or_else(|| ApiError::unprocessable("VALIDATION_ERROR", "model_id is required"))?;
    check_model_id(&model_id)?;
    let tier = body.pricing_tier.clone().unwrap_or_else(|| "standard".into());
    if !TIERS.contains(&tier.as_str()) {
        return Err(ApiError::unprocessable(
            "INVALID_TIER",
            format!("pricing_tier must be one of {}", TIERS.join(", ")),
        ));
    }
    if body.currency.as_deref().is_some_and(|c| c != "USD") {
        return Err(ApiError::unprocessable("INVALID_CURRENCY", "prices are in USD"));
    }
    let effective = date("effective_date", body.effective_date.as_deref().unwrap_or(""))?;
    let end = body.end_date.as_deref().map(|d| date("end_date", d)).transpose()?;
    if end.is_some_and(|e| e < effective) {
        return Err(ApiError::unprocessable(
            "INVALID_DATE",
            "end_date is before effective_date",
        ));
    }
    if body.notes.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        return Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            "notes must be at most 1000 characters",
        ));
    }
    let mut prices = body.prices()?;
    let per_unit = body.unit.as_deref().is_some_and(|u| u != "1m_tokens");
    let given = |prices: &[(&str, Decimal)], k: &str| prices.iter().any(|(p, _)| *p == k);
    if per_unit {
        if !given(&prices, "unit_price") {
            return Err(ApiError::unprocessable(
                "INVALID_PRICE",
                "unit_price is required when unit is not 1m_tokens",
            ));
        }
        // A unit row's token prices are unused: 0 unless given.
        for k in ["input_price_per_1m", "output_price_per_1m"] {
            if !given(&prices, k) {
                prices.push((k, Decimal::ZERO));
            }
        }
    } else if given(&prices, "unit_price") || given(&prices, "free_units_per_day") {
        return Err(ApiError::unprocessable(
            "INVALID_PRICE",
            "unit_price and free_units_per_day need a unit other than 1m_tokens",
        ));
    }
    for required in ["input_price_per_1m", "output_price_per_1m"] {
        if !prices.iter().any(|(k, _)| *k == required) {
            return Err(ApiError::unprocessable(
                "INVALID_PRICE",
                format!("{required} (or its per-1K form) is required"),
            ));
        }
    }
    if !table_ready(&ctx, &org.org_dataset_id).await? {
        return Err(ApiError::conflict(
            "DATASET_NOT_READY",
            "the organization's dataset has no pricing table; re-run onboarding",
        ));
    }
    let exists = rows(&ctx, &org.org_dataset_id, provider, Some(&model_id))
        .await?
        .iter()
        .any(|r| {
            r.string("pricing_tier").as_deref() == Some(tier.as_str()) && r.date("effective_date") == Some(effective)
        });
    if exists {
        return Err(ApiError::conflict(
            "PRICING_EXISTS",
            format!("Pricing already exists for model: {model_id} ({tier}, effective {effective}); update it with PUT"),
        ));
    }
    let now = Utc::now();
    let id = pricing_id(provider, &model_id, tier.as_ref(), effective);
    let mut row = Row::new()
        .with("pricing_id", id)
        .with("provider", provider)
        .with("model_id", model_id.as_str())
        .with("model_name", body.model_name.clone())
        .with("pricing_tier", tier.as_str())
        .with("currency", "USD")
        .with("effective_date", effective)
        .with("end_date", end)
        .with("is_custom", true)
        .with("is_enabled", body.is_enabled.unwrap_or(true))
        .with("notes", body.notes.clone())
        .with("created_at", now)
        .with("updated_at", now);
    for (k, v) in prices {
        row.set(k, v);
    }
    for (k, t) in body.terms()? {
        t.set(&mut row, k);
    }
    ctx.warehouse
        .insert_rows(&org.org_dataset_id, TABLE, std::slice::from_ref(&row))
        .await?;
    Ok((StatusCode::CREATED, Json(row_json(&row))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RowSelector {
    /// Default standard.
    pub pricing_tier: Option<String>,
    /// Default: the most recent effective date of that tier.
    pub effective_date: Option<String>,
}

/// Changes one price row (selected by tier and effective date; default the latest standard).
#[utoipa::path(put, path = "/api/v1/integrations/{org_slug}/{provider}/pricing/{model_id}", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path), ("model_id" = String, Path)),
    request_body = PricingBody, security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub async fn update(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias, model_id)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<PricingBody>,
) -> Result<Json<Value>, ApiError> {
    let provider = pricing_provider(&alias)?;
    check_model_id(&model_id)?;
    if body.model_id.as_deref().is_some_and(|m| m != model_id) {
        return Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            "model_id in the body must match the path",
        ));
    }
    let tier = body.pricing_tier.clone().unwrap_or_else(|| "standard".into());
    let candidates: Vec<Row> = rows(&ctx, &org.org_dataset_id, provider, Some(&model_id))
        .await?
        .into_iter()
        .filter(|r| r.string("pricing_tier").as_deref() == Some(tier.as_str()))
        .collect();
    let target = match body.effective_date.as_deref() {
        Some(d) => {
            let d = date("effective_date", d)?;
            candidates.into_iter().find(|r| r.date("effective_date") == Some(d))
        }
        None => candidates.into_iter().max_by_key(|r| r.date("effective_date")),
    }
    .ok_or_else(|| {
        ApiError::not_found(
            "PRICING_NOT_FOUND",
            format!("Pricing not found for model: {model_id} ({tier})"),
        )
    })?;
    let mut sets = Vec::new();
    let mut params = Params::new()
        .with("provider", provider)
        .with("model", model_id.as_str())
        .with("tier", tier.as_str())
        .with("effective", target.date("effective_date"))
        .with("now", Utc::now());
    for (k, v) in body.prices()? {
        sets.push(format!("{k} = @{k}"));
        params = params.with(k, v);
    }
    for (k, t) in body.terms()? {
        sets.push(format!("{k} = @{k}"));
        params = t.bind(params, k);
    }
    if let Some(n) = &body.model_name {
        sets.push("model_name = @model_name".into());
        params = params.with("model_name", n.as_str());
    }
    if let Some(n) = &body.notes {
        sets.push("notes = @notes".into());
        params = params.with("notes", n.as_str());
    }
    if let Some(e) = &body.end_date {
        sets.push("end_date = @end_date".into());
        params = params.with("end_date", date("end_date", e)?);
    }
    if let Some(b) = body.is_enabled {
        sets.push("is_enabled = @is_enabled".into());
        params = params.with("is_enabled", b);
    }
    if sets.is_empty() {
        return Err(ApiError::bad_request("NO_FIELDS", "No fields to update"));
    }
    sets.push("is_custom = @custom".into());
    params = params.with("custom", true);
    ctx.warehouse
        .execute(
            &org.org_dataset_id,
            &format!(
                "UPDATE {{{{{TABLE}}}}} SET {}, updated_at = @now WHERE provider = @provider AND model_id = @model \
                 AND pricing_tier = @tier AND effective_date = @effective",
                sets.join(", ")
            ),
            &params,
        )
        .await?;
    let found = rows(&ctx, &org.org_dataset_id, provider, Some(&model_id)).await?;
    let updated = found
        .iter()
        .find(|r| {
            r.string("pricing_tier").as_deref() == Some(tier.as_str())
                && r.date("effective_date") == target.date("effective_date")
        })
        .map(row_json)
        .unwrap_or(Value::Null);
    Ok(Json(updated))
}

/// Deletes a model's prices (optionally one tier / effective date). 204 even if none matched.
#[utoipa::path(delete, path = "/api/v1/integrations/{org_slug}/{provider}/pricing/{model_id}", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path), ("model_id" = String, Path), RowSelector),
    security(("api_key" = [])), responses((status = 204), (status = 400), (status = 401), (status = 403)))]
pub async fn delete(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias, model_id)): Path<(String, String, String)>,
    query: Result<Query<RowSelector>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let provider = pricing_provider(&alias)?;
    check_model_id(&model_id)?;
    let Query(sel) = query.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    if !table_ready(&ctx, &org.org_dataset_id).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    let mut sql = format!("DELETE FROM {{{{{TABLE}}}}} WHERE provider = @provider AND model_id = @model");
    let mut params = Params::new()
        .with("provider", provider)
        .with("model", model_id.as_str());
    if let Some(t) = &sel.pricing_tier {
        sql.push_str(" AND pricing_tier = @tier");
        params = params.with("tier", t.as_str());
    }
    if let Some(d) = &sel.effective_date {
        sql.push_str(" AND effective_date = @effective");
        params = params.with("effective", date("effective_date", d)?);
    }
    ctx.warehouse.execute(&org.org_dataset_id, &sql, &params).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restores the provider's default prices (custom changes to that provider are dropped).
#[utoipa::path(post, path = "/api/v1/integrations/{org_slug}/{provider}/pricing/reset", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path)), security(("api_key" = [])),
    responses((status = 200), (status = 401), (status = 403)))]
pub async fn reset(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let provider = pricing_provider(&alias)?;
    reset_to_defaults(&ctx, &org.org_dataset_id, TABLE, provider).await?;
    let found = rows(&ctx, &org.org_dataset_id, provider, None).await?;
    Ok(Json(
        json!({"org_slug": org.org_slug, "provider": provider, "count": found.len(),
                   "pricing": found.iter().map(row_json).collect::<Vec<_>>()}),
    ))
}

/// Body of the original's bulk price update: each item a pricing body naming its `model_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkPricingUpdate {
    #[schema(value_type = Vec<Object>)]
    pub updates: Vec<Value>,
}

/// The most items one bulk update takes.
const MAX_BULK_UPDATES: usize = 500;

/// Updates several models' prices (the original api-service's `PATCH …/pricing`): each item is
/// applied as `PUT …/pricing/{model_id}` would apply it; the reply counts what was updated and
/// names each failure. Items are independent, as in the original.
#[utoipa::path(patch, path = "/api/v1/integrations/{org_slug}/{provider}/pricing", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path)), request_body = BulkPricingUpdate,
    security(("api_key" = [])), responses((status = 200), (status = 401), (status = 403), (status = 422)))]
pub async fn bulk_update(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((org_slug, alias)): Path<(String, String)>,
    ApiJson(body): ApiJson<BulkPricingUpdate>,
) -> Result<Json<Value>, ApiError> {
    let provider = pricing_provider(&alias)?;
    if body.updates.is_empty() || body.updates.len() > MAX_BULK_UPDATES {
        return Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            format!("updates must hold 1 to {MAX_BULK_UPDATES} items"),
        ));
    }
    let (mut updated, mut errors) = (0usize, Vec::new());
    for item in body.updates {
        let model_id = item["model_id"].as_str().map(str::to_string);
        let Some(model_id) = model_id else {
            errors
                .push(json!({"model_id": null, "error": "VALIDATION_ERROR", "detail": "each update needs a model_id"}));
            continue;
        };
        let parsed: PricingBody = match serde_json::from_value(item) {
            Ok(b) => b,
            Err(e) => {
                errors.push(json!({"model_id": model_id, "error": "VALIDATION_ERROR", "detail": e.to_string()}));
                continue;
            }
        };
        match update(
            State(ctx.clone()),
            OrgPath(org.clone()),
            Path((org_slug.clone(), alias.clone(), model_id.clone())),
            ApiJson(parsed),
        )
        .await
        {
            Ok(_) => updated += 1,
            Err(e) => errors.push(json!({"model_id": model_id, "error": e.code, "detail": e.detail})),
        }
    }
    let n = errors.len();
    cloudact_web::layers::note(|note| note.audit_details = Some(json!({"updated_count": updated, "failed_count": n})));
    Ok(Json(json!({
        "org_slug": org.org_slug, "provider": provider, "updated_count": updated, "failed_count": n, "errors": errors,
    })))
}

/// Restores the default prices of a provider in an org's dataset (the reset route's work, for
/// the ops CLI); how many price rows the provider has afterwards.
pub async fn reset_org_pricing(ctx: &AppContext, org_dataset: &str, provider_alias: &str) -> Result<usize, ApiError> {
    let provider = pricing_provider(provider_alias)?;
    reset_to_defaults(ctx, org_dataset, TABLE, provider).await?;
    Ok(rows(ctx, org_dataset, provider, None).await?.len())
}

/// Body of a LiteLLM price-map import: the map itself (`models`, the LiteLLM JSON format), or
/// a `path` to such a file inside `configs/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    #[schema(value_type = Option<Object>)]
    pub models: Option<serde_json::Map<String, Value>>,
    /// Relative to `configs/` (no `..`).
    pub path: Option<String>,
    /// The date the imported prices take effect.
    pub effective_date: String,
}

fn litellm_provider_matches(provider: &str, litellm: &str) -> bool {
    match provider {
        "gemini" => litellm == "gemini" || litellm == "vertex_ai-language-models",
        other => litellm == other,
    }
}

/// Per-1M price from a LiteLLM per-token cost (a JSON number, often in exponent form).
fn per_token_to_per_1m(v: &Value) -> Option<Decimal> {
    let text = v.as_f64().map(|_| v.to_string())?;
    let d = Decimal::from_scientific(&text)
        .or_else(|_| text.parse::<Decimal>())
        .ok()?;
    (!d.is_sign_negative()).then(|| (d * Decimal::from(1_000_000)).normalize())
}

/// The tiers a LiteLLM entry prices, as (tier, price columns).
fn litellm_tiers(entry: &Value) -> Vec<(&'static str, Vec<(&'static str, Decimal)>)> {
    let mut out = Vec::new();
    for (tier, suffix) in [
        ("standard", ""),
        ("batch", "_batches"),
        ("priority", "_priority"),
        ("flex", "_flex"),
    ] {
        let get = |base: &str| entry.get(format!("{base}{suffix}")).and_then(per_token_to_per_1m);
        let (Some(input), Some(output)) = (get("input_cost_per_token"), get("output_cost_per_token")) else {
            continue;
        };
        let mut prices = vec![("input_price_per_1m", input), ("output_price_per_1m", output)];
        if let Some(c) = get("cache_read_input_token_cost") {
            prices.push(("cached_input_price_per_1m", c));
        }
        if suffix.is_empty() {
            if let Some(w) = entry
                .get("cache_creation_input_token_cost")
                .and_then(per_token_to_per_1m)
            {
                prices.push(("cache_write_5m_price_per_1m", w));
            }
            if let Some(w) = entry
                .get("cache_creation_input_token_cost_above_1hr")
                .and_then(per_token_to_per_1m)
            {
                prices.push(("cache_write_1h_price_per_1m", w));
            }
        }
        out.push((tier, prices));
    }
    out
}

/// Upserts a provider's models from a LiteLLM price map: adds missing (model, tier) prices at
/// `effective_date`, updates changed ones, and reports what was added, changed and skipped.
#[utoipa::path(post, path = "/api/v1/integrations/{org_slug}/{provider}/pricing/import", tag = "pricing",
    params(("org_slug" = String, Path), ("provider" = String, Path)), request_body = ImportBody, security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 422)))]
pub async fn import_litellm(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias)): Path<(String, String)>,
    ApiJson(body): ApiJson<ImportBody>,
) -> Result<Json<Value>, ApiError> {
    let provider = pricing_provider(&alias)?;
    let effective = date("effective_date", &body.effective_date)?;
    let models = match (body.models, body.path) {
        (Some(m), None) => m,
        (None, Some(p)) => {
            if p.starts_with('/') || p.split('/').any(|s| s == ".." || s.is_empty()) || !p.ends_with(".json") {
                return Err(ApiError::bad_request(
                    "INVALID_PATH",
                    "path must be a relative .json path inside configs/",
                ));
            }
            let text = std::fs::read_to_string(ctx.settings.configs_dir.join(&p))
                .map_err(|_| ApiError::not_found("FILE_NOT_FOUND", format!("configs/{p} does not exist")))?;
            serde_json::from_str(&text)
                .map_err(|e| ApiError::unprocessable("INVALID_PRICE_MAP", format!("configs/{p}: {e}")))?
        }
        _ => {
            return Err(ApiError::unprocessable(
                "VALIDATION_ERROR",
                "give either models or path",
            ))
        }
    };
    if !table_ready(&ctx, &org.org_dataset_id).await? {
        return Err(ApiError::conflict(
            "DATASET_NOT_READY",
            "the organization's dataset has no pricing table; re-run onboarding",
        ));
    }
    let existing = rows(&ctx, &org.org_dataset_id, provider, None).await?;
    let (mut added, mut changed, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let now = Utc::now();
    let mut inserts = Vec::new();
    for (name, entry) in &models {
        if name == "sample_spec" {
            continue;
        }
        let litellm = entry.get("litellm_provider").and_then(Value::as_str).unwrap_or("");
        let mode = entry.get("mode").and_then(Value::as_str).unwrap_or("");
        if !litellm_provider_matches(provider, litellm) {
            continue;
        }
        let model_id = name.rsplit('/').next().unwrap_or(name).to_string();
        if check_model_id(&model_id).is_err() || !["chat", "completion", "responses", "embedding"].contains(&mode) {
            skipped.push(json!({"model": name, "reason": format!("unsupported model id or mode {mode:?}")}));
            continue;
        }
        let tiers = litellm_tiers(entry);
        if tiers.is_empty() {
            skipped.push(json!({"model": name, "reason": "no per-token input/output price"}));
            continue;
        }
        for (tier, prices) in tiers {
            let current = existing
                .iter()
                .filter(|r| {
                    r.string("model_id").as_deref() == Some(model_id.as_str())
                        && r.string("pricing_tier").as_deref() == Some(tier)
                })
                .filter(|r| r.date("effective_date").is_some_and(|d| d <= effective))
                .max_by_key(|r| r.date("effective_date"));
            let same = current.is_some_and(|r| prices.iter().all(|(k, v)| r.numeric(k) == Some(*v)));
            if same {
                skipped.push(json!({"model": model_id, "tier": tier, "reason": "unchanged"}));
                continue;
            }
            let at_date = current.is_some_and(|r| r.date("effective_date") == Some(effective));
            if at_date {
                let mut sets = Vec::new();
                let mut params = Params::new()
                    .with("provider", provider)
                    .with("model", model_id.as_str())
                    .with("tier", tier)
                    .with("effective", effective)
                    .with("now", now);
                for (k, v) in &prices {
                    sets.push(format!("{k} = @{k}"));
                    params = params.with(k, *v);
                }
                ctx.warehouse
                    .execute(
                        &org.org_dataset_id,
                        &format!(
                            "UPDATE {{{{{TABLE}}}}} SET {}, updated_at = @now WHERE provider = @provider AND model_id = @model \
                             AND pricing_tier = @tier AND effective_date = @effective",
                            sets.join(", ")
                        ),
                        &params,
                    )
                    .await?;
                changed.push(json!({"model": model_id, "tier": tier}));
            } else {
                let id = pricing_id(provider, &model_id, tier, effective);
                let mut row = Row::new()
                    .with("pricing_id", id)
                    .with("provider", provider)
                    .with("model_id", model_id.as_str())
                    .with("model_name", model_id.as_str())
                    .with("pricing_tier", tier)
                    .with("currency", "USD")
                    .with("effective_date", effective)
                    .with("is_custom", false)
                    .with("is_enabled", true)
                    .with(
                        "notes",
                        format!(
                            "imported from LiteLLM price map ({})",
                            entry.get("source").and_then(Value::as_str).unwrap_or("no source")
                        ),
                    )
                    .with("created_at", now)
                    .with("updated_at", now);
                for (k, v) in &prices {
                    row.set(k, *v);
                }
                inserts.push(row);
                if current.is_some() {
                    changed.push(json!({"model": model_id, "tier": tier, "effective_date": effective.to_string()}));
                } else {
                    added.push(json!({"model": model_id, "tier": tier}));
                }
            }
        }
    }
    ctx.warehouse.insert_rows(&org.org_dataset_id, TABLE, &inserts).await?;
    Ok(Json(json!({
        "org_slug": org.org_slug, "provider": provider, "effective_date": effective.to_string(),
        "added": added.len(), "changed": changed.len(), "skipped": skipped.len(),
        "added_models": added, "changed_models": changed, "skipped_models": skipped,
    })))
}

/// Seeds a provider's default prices into the org's pricing table when it has none for that
/// provider (first successful setup of the integration). Returns the rows added.
/// Seeds a provider's defaults into an org table (`llm_model_pricing` or `llm_subscriptions`)
/// when the org has no rows of that provider there (and `seed`). Returns
/// whether the org now has rows of the provider, and how many were seeded now. The org's own
/// rows are never touched.
pub(crate) async fn seed_provider_defaults(
    ctx: &AppContext,
    dataset: &str,
    table: &str,
    provider: &str,
    seed: bool,
) -> Result<(bool, u64), ApiError> {
    // Onboarding creates both tables; an org without them (never onboarded) gets no seeds.
    if !ctx.warehouse.table_exists(dataset, table).await? {
        return Ok((false, 0));
    }
    let list = TableList::load(&ctx.settings.configs_dir, ONBOARDING_TABLES)
        .map_err(|e| ApiError::internal(format!("{e:?}")))?;
    let existing = ctx
        .warehouse
        .query(
            dataset,
            &format!("SELECT COUNT(*) AS n FROM {{{{{table}}}}} WHERE provider = @provider"),
            &Params::new().with("provider", provider),
        )
        .await?
        .first()
        .and_then(|r| r.int("n"))
        .unwrap_or(0);
    if existing > 0 || !seed {
        return Ok((existing > 0, 0));
    }
    let defaults = list.seed_rows(table, Some(provider)).map_err(ApiError::internal)?;
    let seeded = ctx.warehouse.insert_rows(dataset, table, &defaults).await?;
    Ok((seeded > 0, seeded))
}

/// Replaces a provider's rows of an org table (`llm_model_pricing` or `llm_subscriptions`)
/// with the defaults from the table's seed files, creating the table if needed.
pub(crate) async fn reset_to_defaults(
    ctx: &AppContext,
    dataset: &str,
    table: &str,
    provider: &str,
) -> Result<(), ApiError> {
    let list = TableList::load(&ctx.settings.configs_dir, ONBOARDING_TABLES)
        .map_err(|e| ApiError::internal(format!("{e:?}")))?;
    let def = &list
        .table(table)
        .ok_or_else(|| ApiError::internal(format!("onboarding tables list has no {table}")))?
        .def;
    let defaults: Vec<Row> = list.seed_rows(table, Some(provider)).map_err(ApiError::internal)?;
    ctx.warehouse.create_table(dataset, def).await?;
    ctx.warehouse
        .execute(
            dataset,
            &format!("DELETE FROM {{{{{table}}}}} WHERE provider = @provider"),
            &Params::new().with("provider", provider),
        )
        .await?;
    ctx.warehouse.insert_rows(dataset, table, &defaults).await?;
    Ok(())
}

/// The stable id of a price row.
fn pricing_id(provider: &str, model_id: &str, tier: &str, effective: NaiveDate) -> String {
    format!("price_{provider}_{model_id}_{tier}_{effective}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
