//! `GET /api/v1/costs/{org}?start_date&end_date&group_by=provider,model,day,project` (org key):
//! totals from the org's cost tables (OpenAI, Anthropic, GCP billing net of credits in USD, the
//! example), aggregated in the warehouse with exact decimal sums and combined here, with token
//! counts and how many rows had no price (`unknown_model`: their cost is unknown, not 0).

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{Query, State},
    Json,
};
use chrono::NaiveDate;
use cloudact_core::warehouse::Params;
use cloudact_web::{ApiError, AppContext, OrgPath};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

/// Where a provider's priced usage lives in the org's dataset.
struct CostSource {
    provider: &'static str,
    table: &'static str,
    model_col: &'static str,
    project_col: &'static str,
    input_cols: &'static [&'static str],
    /// The cost column, and the SQL for "no price" and output tokens.
    cost_col: &'static str,
    unknown_sql: &'static str,
    output_sql: &'static str,
    /// Currency and USD→currency rate columns when costs are not in USD (GCP billing).
    currency_cols: Option<(&'static str, &'static str)>,
}

/// The columns every LLM cost table shares. `model` groups by the priced model (dated snapshots
/// and the day's free-tier credit under the model they are priced as), the reported model when
/// it has no price.
const LLM: CostSource = CostSource {
    provider: "",
    table: "",
    model_col: "COALESCE(priced_model_id, model)",
    project_col: "project_id",
    input_cols: &[],
    cost_col: "total_cost",
    unknown_sql: "unknown_model",
    output_sql: "output_tokens",
    currency_cols: None,
};

const SOURCES: [CostSource; 4] = [
    CostSource {
        provider: "openai",
        table: "openai_cost_daily",
        input_cols: &["uncached_input_tokens", "cached_input_tokens", "cache_write_tokens"],
        ..LLM
    },
    CostSource {
        provider: "anthropic",
        table: "anthropic_cost_daily",
        project_col: "workspace_id",
        input_cols: &[
            "uncached_input_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "cache_read_tokens",
        ],
        ..LLM
    },
    // GCP billing: net cost (after credits) by service ("model") and project, converted to USD.
    CostSource {
        provider: "gcp",
        table: "gcp_billing_daily_raw",
        model_col: "service_description",
        project_col: "project_id",
        input_cols: &[],
        cost_col: "net_cost",
        unknown_sql: "FALSE",
        output_sql: "0",
        currency_cols: Some(("currency", "currency_conversion_rate")),
    },
    CostSource {
        provider: "example",
        table: "example_cost_daily",
        model_col: "model_id",
        input_cols: &["input_tokens", "cached_input_tokens"],
        ..LLM
    },
];

const DIMENSIONS: [&str; 4] = ["provider", "model", "day", "project"];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CostQuery {
    /// First day (YYYY-MM-DD).
    pub start_date: String,
    /// Last day (YYYY-MM-DD); at most 366 days after start_date.
    pub end_date: String,
    /// Comma-separated subset of provider, model, day, project (default provider).
    pub group_by: Option<String>,
}

/// Reconciliation window and the threshold above which a day is flagged.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationQuery {
    /// First day (YYYY-MM-DD).
    pub start_date: String,
    /// Last day (YYYY-MM-DD); at most 366 days after start_date.
    pub end_date: String,
    /// Flag a day when |billed − computed| exceeds this share of the billed amount (percent,
    /// default 1) …
    pub threshold_percent: Option<String>,
    /// … and this absolute amount (USD, default 0.01).
    pub threshold_usd: Option<String>,
}

#[derive(Default)]
struct Totals {
    cost: Decimal,
    input_tokens: i64,
    output_tokens: i64,
    rows: i64,
    unknown_model_rows: i64,
}

/// Cost totals for the org.
#[utoipa::path(get, path = "/api/v1/costs/{org_slug}", tag = "costs", params(("org_slug" = String, Path), CostQuery),
    security(("api_key" = [])), responses((status = 200), (status = 400), (status = 401), (status = 403)))]
pub async fn costs(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    query: Result<Query<CostQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    let parse = |f: &str, v: &str| {
        NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .ok()
            .filter(|_| v.len() == 10)
            .ok_or_else(|| ApiError::bad_request("INVALID_QUERY", format!("{f} must be YYYY-MM-DD")))
    };
    let (start, end) = (parse("start_date", &q.start_date)?, parse("end_date", &q.end_date)?);
    if start > end || (end - start).num_days() > 366 {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            "start_date must be ≤ end_date, at most 366 days apart",
        ));
    }
    // A dimension named twice is grouped by once (a duplicate output column is an error on
    // BigQuery).
    let mut group_by: Vec<String> = Vec::new();
    for g in q.group_by.as_deref().unwrap_or("provider").split(',').map(str::trim) {
        if !g.is_empty() && !group_by.iter().any(|x| x == g) {
            group_by.push(g.to_string());
        }
    }
    if let Some(bad) = group_by.iter().find(|g| !DIMENSIONS.contains(&g.as_str())) {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            format!("group_by {bad:?} is not one of {}", DIMENSIONS.join(", ")),
        ));
    }
    let mut groups: BTreeMap<Vec<String>, Totals> = BTreeMap::new();
    let mut all = Totals::default();
    for src in &SOURCES {
        let (provider, table) = (src.provider, src.table);
        if !ctx.warehouse.table_exists(&org.org_dataset_id, table).await? {
            continue;
        }
        let inputs: Vec<String> = src.input_cols.iter().map(|c| format!("COALESCE({c}, 0)")).collect();
        let inputs = if inputs.is_empty() {
            "0".to_string()
        } else {
            inputs.join(" + ")
        };
        // Summed in the warehouse, grouped by the requested dimensions (and, for non-USD
        // sources, by currency and rate so each group converts exactly once); money with the
        // backend's exact sum.
        let mut dims: Vec<(&str, &str)> = Vec::new();
        for g in &group_by {
            match g.as_str() {
                "model" => dims.push((src.model_col, "model")),
                "day" => dims.push(("usage_date", "usage_date")),
                "project" => dims.push((src.project_col, "project")),
                _ => {}
            }
        }
        if let Some((currency, rate)) = src.currency_cols {
            dims.push((currency, "currency"));
            dims.push((rate, "usd_rate"));
        }
        let select: Vec<String> = dims
            .iter()
            .map(|(expr, alias)| format!("{expr} AS {alias}, "))
            .collect();
        let group: Vec<&str> = dims.iter().map(|(expr, _)| *expr).collect();
        let cost = src.cost_col;
        let sql = format!(
            "SELECT {}{} AS total_cost, SUM(CASE WHEN {cost} IS NULL OR {} THEN 1 ELSE 0 END) AS unknown_rows, \
             COUNT(*) AS row_count, SUM({inputs}) AS input_tokens, SUM({}) AS output_tokens FROM {{{{{table}}}}} \
             WHERE org_slug = @org AND usage_date >= @start AND usage_date <= @end{}",
            select.concat(),
            ctx.warehouse.exact_sum(cost),
            src.unknown_sql,
            src.output_sql,
            if group.is_empty() {
                String::new()
            } else {
                format!(" GROUP BY {}", group.join(", "))
            },
        );
        let rows = ctx
            .warehouse
            .query(
                &org.org_dataset_id,
                &sql,
                &Params::new()
                    .with("org", org.org_slug.as_str())
                    .with("start", start)
                    .with("end", end),
            )
            .await?;
        for r in rows {
            let count = r.int("row_count").unwrap_or(0);
            if count == 0 {
                continue;
            }
            let key: Vec<String> = group_by
                .iter()
                .map(|g| match g.as_str() {
                    "provider" => provider.to_string(),
                    "model" => r.string("model").unwrap_or_default(),
                    "day" => r.date("usage_date").map(|d| d.to_string()).unwrap_or_default(),
                    _ => r.string("project").unwrap_or_default(),
                })
                .collect();
            let summed = r.numeric("total_cost");
            let cost = if src.currency_cols.is_some() {
                to_usd(summed, r.string("currency").as_deref(), r.float("usd_rate"))
            } else {
                summed
            };
            // A group whose cost cannot be converted counts all its rows as unknown.
            let unknown = if cost.is_none() && summed.is_some() {
                count
            } else {
                r.int("unknown_rows").unwrap_or(0)
            };
            for t in [groups.entry(key).or_default(), &mut all] {
                t.cost += cost.unwrap_or(Decimal::ZERO);
                t.input_tokens += r.int("input_tokens").unwrap_or(0);
                t.output_tokens += r.int("output_tokens").unwrap_or(0);
                t.rows += count;
                t.unknown_model_rows += unknown;
            }
        }
    }
    let rows: Vec<Value> = groups
        .into_iter()
        .map(|(key, t)| {
            let mut obj = serde_json::Map::new();
            for (g, v) in group_by.iter().zip(key) {
                obj.insert(g.clone(), json!(v));
            }
            obj.insert("total_cost".into(), json!(t.cost.round_dp(9).normalize().to_string()));
            obj.insert("input_tokens".into(), json!(t.input_tokens));
            obj.insert("output_tokens".into(), json!(t.output_tokens));
            obj.insert("rows".into(), json!(t.rows));
            obj.insert("unknown_model_rows".into(), json!(t.unknown_model_rows));
            Value::Object(obj)
        })
        .collect();
    Ok(Json(json!({
        "org_slug": org.org_slug, "start_date": start.to_string(), "end_date": end.to_string(), "currency": "USD",
        "group_by": group_by, "rows": rows,
        "total_cost": all.cost.round_dp(9).normalize().to_string(), "input_tokens": all.input_tokens,
        "output_tokens": all.output_tokens, "unknown_model_rows": all.unknown_model_rows,
    })))
}

/// A cost in USD: as is when in USD; otherwise divided by the USD→currency rate the row
/// carries (GCP's `currency_conversion_rate`); unknown without a usable rate.
fn to_usd(cost: Option<Decimal>, currency: Option<&str>, rate: Option<f64>) -> Option<Decimal> {
    let cost = cost?;
    if currency.is_none_or(|c| c.eq_ignore_ascii_case("USD")) {
        return Some(cost);
    }
    let rate = Decimal::try_from(rate?).ok().filter(|r| *r > Decimal::ZERO)?;
    cost.checked_div(rate).map(|usd| usd.round_dp(9))
}

/// Computed vs provider-billed cost per provider and day.
#[utoipa::path(get, path = "/api/v1/costs/{org_slug}/reconciliation", tag = "costs", params(("org_slug" = String, Path), ReconciliationQuery),
    security(("api_key" = [])), responses((status = 200), (status = 400), (status = 401), (status = 403)))]
pub async fn reconciliation(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    query: Result<Query<ReconciliationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    let parse = |f: &str, v: &str| {
        NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .ok()
            .filter(|_| v.len() == 10)
            .ok_or_else(|| ApiError::bad_request("INVALID_QUERY", format!("{f} must be YYYY-MM-DD")))
    };
    let (start, end) = (parse("start_date", &q.start_date)?, parse("end_date", &q.end_date)?);
    if start > end || (end - start).num_days() > 366 {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            "start_date ≤ end_date, at most 366 days apart",
        ));
    }
    let threshold = |name: &str, v: &Option<String>, default: &str, max: Decimal| {
        let text = v.as_deref().unwrap_or(default);
        text.parse::<Decimal>()
            .ok()
            .filter(|d| *d >= Decimal::ZERO && *d <= max)
            .ok_or_else(|| ApiError::bad_request("INVALID_QUERY", format!("{name} must be a number from 0 to {max}")))
    };
    let percent = threshold("threshold_percent", &q.threshold_percent, "1", Decimal::from(100))?;
    let absolute = threshold("threshold_usd", &q.threshold_usd, "0.01", Decimal::from(1_000_000))?;
    let params = Params::new()
        .with("org", org.org_slug.as_str())
        .with("start", start)
        .with("end", end);
    let mut out: BTreeMap<(String, String), (Decimal, Decimal, i64)> = BTreeMap::new();
    for (provider, computed, billed) in [
        ("openai", "openai_cost_daily", "openai_billed_cost_daily"),
        ("anthropic", "anthropic_cost_daily", "anthropic_billed_cost_daily"),
    ] {
        for (table, column, is_billed) in [(computed, "total_cost", false), (billed, "amount", true)] {
            if !ctx.warehouse.table_exists(&org.org_dataset_id, table).await? {
                continue;
            }
            let sql = format!(
                "SELECT usage_date, {column} AS v FROM {{{{{table}}}}} WHERE org_slug = @org AND usage_date >= @start AND usage_date <= @end"
            );
            for r in ctx.warehouse.query(&org.org_dataset_id, &sql, &params).await? {
                let day = r.date("usage_date").map(|d| d.to_string()).unwrap_or_default();
                let e = out
                    .entry((provider.to_string(), day))
                    .or_insert((Decimal::ZERO, Decimal::ZERO, 0));
                match (is_billed, r.numeric("v")) {
                    (true, Some(v)) => e.1 += v,
                    (false, Some(v)) => e.0 += v,
                    (false, None) => e.2 += 1,
                    (true, None) => {}
                }
            }
        }
    }
    let rows: Vec<Value> = out
        .into_iter()
        .map(|((provider, day), (computed, billed, unknown))| {
            let difference = (billed - computed).round_dp(9);
            let allowed = absolute.max(billed.abs() * percent / Decimal::from(100));
            let difference_percent = (billed != Decimal::ZERO).then(|| {
                (difference * Decimal::from(100) / billed)
                    .round_dp(4)
                    .normalize()
                    .to_string()
            });
            json!({"provider": provider, "day": day, "computed_cost": computed.round_dp(9).normalize().to_string(),
                   "billed_cost": billed.round_dp(9).normalize().to_string(),
                   "difference": difference.normalize().to_string(), "difference_percent": difference_percent,
                   "flagged": difference.abs() > allowed || unknown > 0, "unknown_model_rows": unknown})
        })
        .collect();
    let flagged = rows.iter().filter(|r| r["flagged"] == true).count();
    Ok(Json(
        json!({"org_slug": org.org_slug, "start_date": start.to_string(), "end_date": end.to_string(), "currency": "USD",
               "threshold_percent": percent.normalize().to_string(), "threshold_usd": absolute.normalize().to_string(),
               "flagged_days": flagged, "rows": rows}),
    ))
}
