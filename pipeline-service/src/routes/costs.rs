//! `GET /api/v1/costs/{org}?start_date&end_date&group_by=provider,model,day,project` (org key):
//! totals from the org's cost tables (OpenAI tokens and units, Anthropic, GCP billing net of
//! credits in USD, subscriptions, the example), aggregated in the warehouse with exact decimal sums and combined here, with token
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

/// A provider's plans, costed monthly (`{provider}.subscriptions`): by plan, no tokens.
const PLANS: CostSource = CostSource {
    model_col: "plan_name",
    input_cols: &[],
    output_sql: "0",
    ..LLM
};

const SOURCES: [CostSource; 10] = [
    CostSource {
        provider: "openai",
        table: "openai_subscriptions_monthly",
        ..PLANS
    },
    CostSource {
        provider: "anthropic",
        table: "anthropic_subscriptions_monthly",
        ..PLANS
    },
    CostSource {
        provider: "gemini",
        table: "gemini_subscriptions_monthly",
        ..PLANS
    },
    CostSource {
        provider: "deepseek",
        table: "deepseek_subscriptions_monthly",
        ..PLANS
    },
    CostSource {
        provider: "custom",
        table: "custom_subscriptions_monthly",
        ..PLANS
    },
    CostSource {
        provider: "openai",
        table: "openai_cost_daily",
        input_cols: &["uncached_input_tokens", "cached_input_tokens", "cache_write_tokens"],
        ..LLM
    },
    // OpenAI usage priced per image, character, minute, GiB-day, session or call: no tokens;
    // `model` is the reported model, or the usage kind where it has none (vector storage, …).
    CostSource {
        provider: "openai",
        table: "openai_unit_cost_daily",
        model_col: "COALESCE(model, usage_type)",
        input_cols: &[],
        output_sql: "0",
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
    let (start, end) = date_range(&q.start_date, &q.end_date)?;
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

/// The `start_date`..=`end_date` of a cost query: both `YYYY-MM-DD`, in order, at most 366
/// days apart.
pub(super) fn date_range(start: &str, end: &str) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let parse = |f: &str, v: &str| {
        NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .ok()
            .filter(|_| v.len() == 10)
            .ok_or_else(|| ApiError::bad_request("INVALID_QUERY", format!("{f} must be YYYY-MM-DD")))
    };
    let (start, end) = (parse("start_date", start)?, parse("end_date", end)?);
    if start > end || (end - start).num_days() > 366 {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            "start_date must be ≤ end_date, at most 366 days apart",
        ));
    }
    Ok((start, end))
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

/// A cost table reconciliation reads, and how its rows map to the provider's line items.
struct Reconciled {
    provider: &'static str,
    table: &'static str,
    /// A billed table (one `amount` per row under one line item) or a computed one.
    billed: bool,
    line_items: fn(&cloudact_core::warehouse::Row) -> Vec<(String, Decimal)>,
}

/// The tables reconciliation compares: computed (token and unit costs) against billed.
const RECONCILED: [Reconciled; 5] = [
    Reconciled {
        provider: "openai",
        table: "openai_cost_daily",
        billed: false,
        line_items: openai_token_lines,
    },
    Reconciled {
        provider: "openai",
        table: "openai_unit_cost_daily",
        billed: false,
        line_items: openai_unit_lines,
    },
    Reconciled {
        provider: "openai",
        table: "openai_billed_cost_daily",
        billed: true,
        line_items: openai_billed_line,
    },
    Reconciled {
        provider: "anthropic",
        table: "anthropic_cost_daily",
        billed: false,
        line_items: anthropic_token_lines,
    },
    Reconciled {
        provider: "anthropic",
        table: "anthropic_billed_cost_daily",
        billed: true,
        line_items: anthropic_billed_line,
    },
];

fn money(r: &cloudact_core::warehouse::Row, cols: &[&str]) -> Decimal {
    cols.iter().filter_map(|c| r.numeric(c)).sum()
}

/// An OpenAI token cost row under the Costs API's `line_item`s: `{model}, input` (uncached
/// input and cache writes), `{model}, cached input`, `{model}, output` (lower case).
fn openai_token_lines(r: &cloudact_core::warehouse::Row) -> Vec<(String, Decimal)> {
    let model = r.string("model").unwrap_or_default().to_lowercase();
    vec![
        (format!("{model}, input"), money(r, &["input_cost", "cache_write_cost"])),
        (format!("{model}, cached input"), money(r, &["cached_input_cost"])),
        (format!("{model}, output"), money(r, &["output_cost"])),
    ]
}

/// An OpenAI unit cost row under its line item (free units under the kind they come off).
fn openai_unit_lines(r: &cloudact_core::warehouse::Row) -> Vec<(String, Decimal)> {
    let model = r.string("model").unwrap_or_default().to_lowercase();
    let line = match r.string("usage_type").as_deref() {
        Some("images") => format!("{model}, images"),
        Some("audio_speeches") => format!("{model}, characters"),
        Some("audio_transcriptions") => format!("{model}, minutes"),
        Some("moderations") => format!("{model}, input"),
        Some("vector_stores") => "vector store storage".to_string(),
        Some("code_interpreter_sessions") => "code interpreter sessions".to_string(),
        Some("file_search_calls") => "file search tool calls".to_string(),
        Some("web_search_calls") => "web search tool calls".to_string(),
        other => other.unwrap_or("other").to_string(),
    };
    vec![(line, money(r, &["total_cost"]))]
}

fn openai_billed_line(r: &cloudact_core::warehouse::Row) -> Vec<(String, Decimal)> {
    let line = r.string("line_item").unwrap_or_else(|| "unnamed".into());
    vec![(line.trim().to_lowercase(), Decimal::ZERO)]
}

/// An Anthropic cost row under the cost report's line items: `{model}, {standard|batch}[,
/// 200k-1M], {token_type}` and `…, web_search`.
fn anthropic_token_lines(r: &cloudact_core::warehouse::Row) -> Vec<(String, Decimal)> {
    let model = r.string("model").unwrap_or_default().to_lowercase();
    let tier = r.string("pricing_tier").unwrap_or_default();
    let (service_tier, long) = match tier.strip_suffix("long_context") {
        Some(base) => (base.trim_end_matches('_').to_string(), true),
        None => (tier, false),
    };
    let service_tier = if service_tier.is_empty() {
        "standard".to_string()
    } else {
        service_tier
    };
    let prefix = anthropic_line_prefix(&model, &service_tier, long);
    [
        ("uncached_input_tokens", "input_cost"),
        ("cache_read_input_tokens", "cache_read_cost"),
        ("cache_creation.ephemeral_5m_input_tokens", "cache_write_5m_cost"),
        ("cache_creation.ephemeral_1h_input_tokens", "cache_write_1h_cost"),
        ("output_tokens", "output_cost"),
        ("web_search", "web_search_cost"),
    ]
    .into_iter()
    .map(|(kind, col)| (format!("{prefix}{kind}"), money(r, &[col])))
    .collect()
}

fn anthropic_line_prefix(model: &str, service_tier: &str, long: bool) -> String {
    format!("{model}, {service_tier}, {}", if long { "200k-1M, " } else { "" })
}

fn anthropic_billed_line(r: &cloudact_core::warehouse::Row) -> Vec<(String, Decimal)> {
    let model = r.string("model").map(|m| m.to_lowercase());
    let kind = match r.string("cost_type").as_deref() {
        Some("tokens") => r.string("token_type"),
        Some("web_search") => Some("web_search".to_string()),
        _ => None,
    };
    let line = match (model, kind) {
        (Some(model), Some(kind)) => {
            let tier = r.string("service_tier").unwrap_or_else(|| "standard".into());
            let long = r.string("context_window").is_some_and(|w| w != "0-200k");
            format!("{}{kind}", anthropic_line_prefix(&model, &tier, long))
        }
        _ => r
            .string("description")
            .or_else(|| r.string("cost_type"))
            .unwrap_or_else(|| "unnamed".into())
            .trim()
            .to_lowercase(),
    };
    vec![(line, Decimal::ZERO)]
}

/// Computed vs provider-billed cost per provider and day, and per the provider's line item
/// (OpenAI's `line_item`, Anthropic's model × tier × token type), so a gap names what it is.
#[utoipa::path(get, path = "/api/v1/costs/{org_slug}/reconciliation", tag = "costs", params(("org_slug" = String, Path), ReconciliationQuery),
    security(("api_key" = [])), responses((status = 200), (status = 400), (status = 401), (status = 403)))]
pub async fn reconciliation(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    query: Result<Query<ReconciliationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    let (start, end) = date_range(&q.start_date, &q.end_date)?;
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
    // (provider, day) → line item → (computed, billed); and unpriced rows per (provider, day).
    let mut lines: BTreeMap<(String, String), BTreeMap<String, (Decimal, Decimal)>> = BTreeMap::new();
    let mut unknown: BTreeMap<(String, String), i64> = BTreeMap::new();
    for src in RECONCILED {
        if !ctx.warehouse.table_exists(&org.org_dataset_id, src.table).await? {
            continue;
        }
        let sql = format!(
            "SELECT * FROM {{{{{}}}}} WHERE org_slug = @org AND usage_date >= @start AND usage_date <= @end",
            src.table
        );
        for r in ctx.warehouse.query(&org.org_dataset_id, &sql, &params).await? {
            let day = r.date("usage_date").map(|d| d.to_string()).unwrap_or_default();
            let key = (src.provider.to_string(), day);
            let day_lines = lines.entry(key.clone()).or_default();
            if src.billed {
                if let Some(v) = r.numeric("amount") {
                    day_lines.entry((src.line_items)(&r).remove(0).0).or_default().1 += v;
                }
                continue;
            }
            if r.boolean("unknown_model") == Some(true) {
                *unknown.entry(key).or_default() += 1;
            }
            for (line, v) in (src.line_items)(&r) {
                day_lines.entry(line).or_default().0 += v;
            }
        }
    }
    let hundred = Decimal::from(100);
    let flag = |difference: Decimal, billed: Decimal| difference.abs() > absolute.max(billed.abs() * percent / hundred);
    let text = |d: Decimal| d.round_dp(9).normalize().to_string();
    let rows: Vec<Value> = lines
        .into_iter()
        .map(|((provider, day), day_lines)| {
            let (computed, billed) = day_lines
                .values()
                .fold((Decimal::ZERO, Decimal::ZERO), |(c, b), (lc, lb)| (c + lc, b + lb));
            let unknown = unknown.get(&(provider.clone(), day.clone())).copied().unwrap_or(0);
            let difference = (billed - computed).round_dp(9);
            let difference_percent = (billed != Decimal::ZERO)
                .then(|| (difference * hundred / billed).round_dp(4).normalize().to_string());
            let line_items: Vec<Value> = day_lines
                .into_iter()
                .filter(|(_, (c, b))| !c.is_zero() || !b.is_zero())
                .map(|(line, (c, b))| {
                    let diff = (b - c).round_dp(9);
                    json!({"line_item": line, "computed_cost": text(c), "billed_cost": text(b),
                           "difference": text(diff), "flagged": flag(diff, b)})
                })
                .collect();
            json!({"provider": provider, "day": day, "computed_cost": text(computed),
                   "billed_cost": text(billed), "difference": text(difference), "difference_percent": difference_percent,
                   "flagged": flag(difference, billed) || unknown > 0, "unknown_model_rows": unknown,
                   "line_items": line_items})
        })
        .collect();
    let flagged = rows.iter().filter(|r| r["flagged"] == true).count();
    Ok(Json(
        json!({"org_slug": org.org_slug, "start_date": start.to_string(), "end_date": end.to_string(), "currency": "USD",
               "threshold_percent": percent.normalize().to_string(), "threshold_usd": absolute.normalize().to_string(),
               "flagged_days": flagged, "rows": rows}),
    ))
}
