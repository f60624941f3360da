//! The org's costs as FOCUS 1.3 rows (FinOps Open Cost and Usage Specification, Cost and
//! Usage dataset): one row per charge, from every priced table of the org's dataset.
//!
//! What becomes a row, per day (`usage_date`):
//! - `openai_cost_daily` / `anthropic_cost_daily`: one `Usage` row per model, project, tier and
//!   token kind (input, cached input, cache writes 5m/1h, cache reads, output; Anthropic web
//!   search requests), priced per 1M tokens (per 1000 searches); the day's free-tier credit
//!   as `Credit` rows, one per kind.
//! - `openai_unit_cost_daily`: one `Usage` row per usage kind, model/variant and project,
//!   priced in its own unit (images, 1M characters, minutes, GiB-days, sessions, 1000
//!   calls); the free vector-store GiB as a `Credit` row.
//! - `gcp_billing_daily_raw`: one row per exported line (`regular` → `Usage`, `tax` → `Tax`,
//!   `adjustment`/`rounding_error` → `Adjustment`) at the export's own cost, list cost and
//!   currency; its credits as a `Credit` row of their own.
//! - `{provider}_subscriptions_monthly`: one `Usage` row, `ChargeFrequency` `Recurring`, per
//!   plan and month, on the month's first day: seat-months (prorated) × the monthly seat
//!   price (not a `Purchase`: FOCUS gives a Purchase covering future charges EffectiveCost 0).
//!
//! A usage row without a price is not exported (FOCUS costs are never null, and an unknown
//! cost is not $0): it is counted in [`FocusDay::unpriced_rows`] instead.
//!
//! Column names are FOCUS 1.3's, ProviderName/PublisherName kept beside ServiceProviderName/
//! HostProviderName (deprecated in 1.3, as the migration guide asks generators to do); custom
//! columns are `x_`-prefixed and come last. The CloudAct org stands for the provider billing
//! account of the LLM providers (their usage APIs do not return the provider's account id).

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use cloudact_core::warehouse::{Params, Row, Value, Warehouse, WarehouseError};
use rust_decimal::Decimal;
use serde_json::{json, Map};

/// The FOCUS version the columns follow.
pub const FOCUS_VERSION: &str = "1.3";

/// Every column in output order with its warehouse type (JSON columns are STRING holding a
/// serialized object).
pub const COLUMNS: [(&str, &str); 57] = [
    ("AvailabilityZone", "STRING"),
    ("BilledCost", "NUMERIC"),
    ("BillingAccountId", "STRING"),
    ("BillingAccountName", "STRING"),
    ("BillingAccountType", "STRING"),
    ("BillingCurrency", "STRING"),
    ("BillingPeriodEnd", "TIMESTAMP"),
    ("BillingPeriodStart", "TIMESTAMP"),
    ("ChargeCategory", "STRING"),
    ("ChargeClass", "STRING"),
    ("ChargeDescription", "STRING"),
    ("ChargeFrequency", "STRING"),
    ("ChargePeriodEnd", "TIMESTAMP"),
    ("ChargePeriodStart", "TIMESTAMP"),
    // Always null (no commitment discounts are modelled); present because the validator's
    // ConsumedQuantity rules name it.
    ("CommitmentDiscountStatus", "STRING"),
    ("ConsumedQuantity", "NUMERIC"),
    ("ConsumedUnit", "STRING"),
    ("ContractedCost", "NUMERIC"),
    ("ContractedUnitPrice", "NUMERIC"),
    ("EffectiveCost", "NUMERIC"),
    ("HostProviderName", "STRING"),
    ("InvoiceId", "STRING"),
    ("InvoiceIssuerName", "STRING"),
    ("ListCost", "NUMERIC"),
    ("ListUnitPrice", "NUMERIC"),
    ("PricingCategory", "STRING"),
    ("PricingCurrency", "STRING"),
    ("PricingCurrencyContractedUnitPrice", "NUMERIC"),
    ("PricingCurrencyEffectiveCost", "NUMERIC"),
    ("PricingCurrencyListUnitPrice", "NUMERIC"),
    ("PricingQuantity", "NUMERIC"),
    ("PricingUnit", "STRING"),
    ("ProviderName", "STRING"),
    ("PublisherName", "STRING"),
    ("RegionId", "STRING"),
    ("RegionName", "STRING"),
    ("ServiceCategory", "STRING"),
    ("ServiceName", "STRING"),
    ("ServiceProviderName", "STRING"),
    ("ServiceSubcategory", "STRING"),
    ("SkuId", "STRING"),
    ("SkuMeter", "STRING"),
    ("SkuPriceDetails", "STRING"),
    ("SkuPriceId", "STRING"),
    ("SubAccountId", "STRING"),
    ("SubAccountName", "STRING"),
    ("SubAccountType", "STRING"),
    ("Tags", "STRING"),
    ("x_org_slug", "STRING"),
    ("x_usage_date", "DATE"),
    ("x_source_table", "STRING"),
    ("x_usage_type", "STRING"),
    ("x_model", "STRING"),
    ("x_token_type", "STRING"),
    ("x_service_tier", "STRING"),
    ("x_run_id", "STRING"),
    ("x_loaded_at", "TIMESTAMP"),
];

/// One day of the org's FOCUS rows.
#[derive(Debug, Default)]
pub struct FocusDay {
    pub rows: Vec<Row>,
    /// Usage rows left out because they have no price.
    pub unpriced_rows: u64,
}

/// The cost tables of `dataset` that exist (checked once per export, not once per day: on
/// BigQuery each check is an API call).
pub async fn present_tables(warehouse: &dyn Warehouse, dataset: &str) -> Result<Vec<&'static str>, WarehouseError> {
    let mut present = Vec::new();
    for source in &SOURCES {
        if warehouse.table_exists(dataset, source.table).await? {
            present.push(source.table);
        }
    }
    Ok(present)
}

/// Builds the org's FOCUS rows of one day from every cost table that exists in `dataset`.
pub async fn focus_day(
    warehouse: &dyn Warehouse,
    dataset: &str,
    org: &str,
    day: NaiveDate,
) -> Result<FocusDay, WarehouseError> {
    let present = present_tables(warehouse, dataset).await?;
    focus_day_of(warehouse, dataset, org, day, &present).await
}

/// Builds the org's FOCUS rows of one day from the cost tables in `present` (one query each).
pub async fn focus_day_of(
    warehouse: &dyn Warehouse,
    dataset: &str,
    org: &str,
    day: NaiveDate,
    present: &[&str],
) -> Result<FocusDay, WarehouseError> {
    let mut out = FocusDay::default();
    let params = Params::new().with("org", org).with("day", day);
    for source in SOURCES.iter().filter(|s| present.contains(&s.table)) {
        let sql = format!(
            "SELECT * FROM {{{{{}}}}} WHERE org_slug = @org AND usage_date = @day ORDER BY {}",
            source.table, source.order_by
        );
        for r in warehouse.query(dataset, &sql, &params).await? {
            match (source.map)(&r, source.table) {
                Some(rows) => out.rows.extend(rows.into_iter().map(|mut row| {
                    pricing_currency(&mut row);
                    row
                })),
                None => out.unpriced_rows += 1,
            }
        }
    }
    Ok(out)
}

/// A cost table and how one of its rows becomes FOCUS rows (`None`: unpriced).
struct Source {
    table: &'static str,
    order_by: &'static str,
    map: fn(&Row, &'static str) -> Option<Vec<Row>>,
}

const SUBSCRIPTIONS_ORDER: &str = "plan_name, subscription_id, period_start";

const SOURCES: [Source; 9] = [
    Source {
        table: "openai_cost_daily",
        order_by: "usage_type, model, project_id, pricing_tier",
        map: openai_tokens,
    },
    Source {
        table: "openai_unit_cost_daily",
        order_by: "usage_type, charge_type, model, variant, project_id",
        map: openai_units,
    },
    Source {
        table: "anthropic_cost_daily",
        order_by: "charge_type, model, workspace_id, pricing_tier",
        map: anthropic_tokens,
    },
    Source {
        table: "gcp_billing_daily_raw",
        order_by: "project_id, service_id, sku_id, usage_start_time, cost_type",
        map: gcp_billing,
    },
    Source {
        table: "openai_subscriptions_monthly",
        order_by: SUBSCRIPTIONS_ORDER,
        map: subscription,
    },
    Source {
        table: "anthropic_subscriptions_monthly",
        order_by: SUBSCRIPTIONS_ORDER,
        map: subscription,
    },
    Source {
        table: "gemini_subscriptions_monthly",
        order_by: SUBSCRIPTIONS_ORDER,
        map: subscription,
    },
    Source {
        table: "deepseek_subscriptions_monthly",
        order_by: SUBSCRIPTIONS_ORDER,
        map: subscription,
    },
    Source {
        table: "custom_subscriptions_monthly",
        order_by: SUBSCRIPTIONS_ORDER,
        map: subscription,
    },
];

/// Who sells, hosts and invoices a charge, and how its accounts are called.
struct Vendor {
    name: &'static str,
    service: &'static str,
    billing_account_type: &'static str,
    sub_account_type: &'static str,
}

const OPENAI: Vendor = Vendor {
    name: "OpenAI",
    service: "OpenAI API",
    billing_account_type: "Organization",
    sub_account_type: "Project",
};
const ANTHROPIC: Vendor = Vendor {
    name: "Anthropic",
    service: "Claude API",
    billing_account_type: "Organization",
    sub_account_type: "Workspace",
};
const GOOGLE_CLOUD: Vendor = Vendor {
    name: "Google Cloud",
    service: "",
    billing_account_type: "Billing Account",
    sub_account_type: "Project",
};

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_default()
}

fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

/// The columns every row has: billing and charge periods (the day), the vendor, lineage.
fn base(r: &Row, table: &'static str, vendor: &Vendor, day: NaiveDate) -> Row {
    let month = month_start(day);
    let next_month = month.checked_add_months(Months::new(1)).unwrap_or(month);
    let mut row = Row::new();
    for (column, _) in COLUMNS {
        row.set(column, Value::Null);
    }
    let org = r.string("org_slug").unwrap_or_default();
    row.set("BillingAccountId", org.as_str());
    row.set("BillingAccountName", org.as_str());
    row.set("BillingAccountType", vendor.billing_account_type);
    row.set("BillingCurrency", r.string("currency").unwrap_or_else(|| "USD".into()));
    row.set("BillingPeriodStart", midnight(month));
    row.set("BillingPeriodEnd", midnight(next_month));
    row.set("ChargePeriodStart", midnight(day));
    row.set("ChargePeriodEnd", midnight(day.succ_opt().unwrap_or(day)));
    row.set("InvoiceIssuerName", vendor.name);
    row.set("ProviderName", vendor.name);
    row.set("PublisherName", vendor.name);
    row.set("ServiceProviderName", vendor.name);
    row.set("HostProviderName", vendor.name);
    row.set("ServiceName", vendor.service);
    row.set("ServiceCategory", "AI and Machine Learning");
    row.set("ServiceSubcategory", "Generative AI");
    row.set("x_org_slug", org);
    row.set("x_usage_date", day);
    row.set("x_source_table", table);
    row.set("x_run_id", r.string("run_id"));
    row.set("x_loaded_at", r.timestamp("loaded_at"));
    row
}

/// Sets the four cost columns to one amount (a charge at list price with no discount, or a
/// credit/adjustment that MUST equal its billed cost).
fn set_costs(row: &mut Row, cost: Decimal) {
    for c in ["BilledCost", "EffectiveCost", "ListCost", "ContractedCost"] {
        row.set(c, cost.normalize());
    }
}

/// The unit price that makes `cost = price × quantity` (exact for the prices the pricing
/// step writes; 12 places otherwise).
fn unit_price(cost: Decimal, quantity: Decimal) -> Decimal {
    if quantity.is_zero() {
        return Decimal::ZERO;
    }
    cost.checked_div(quantity).unwrap_or_default().round_dp(12).normalize()
}

fn account(row: &mut Row, vendor: &Vendor, project: Option<String>) {
    if let Some(p) = project.filter(|p| !p.is_empty()) {
        let mut tags = Map::new();
        tags.insert(vendor.sub_account_type.to_lowercase(), json!(p));
        row.set("Tags", serde_json::Value::Object(tags).to_string());
        // The usage APIs report project/workspace ids only: the id is the name.
        row.set("SubAccountName", p.as_str());
        row.set("SubAccountId", p);
        row.set("SubAccountType", vendor.sub_account_type);
    }
}

/// One token (or request) meter of an LLM cost row.
struct Meter {
    quantity_col: &'static str,
    cost_col: &'static str,
    sku: &'static str,
    label: &'static str,
    token_type: &'static str,
    per: i64,
    consumed_unit: &'static str,
    pricing_unit: &'static str,
}

const fn token(quantity_col: &'static str, cost_col: &'static str, sku: &'static str, label: &'static str) -> Meter {
    Meter {
        quantity_col,
        cost_col,
        sku,
        label,
        token_type: sku,
        per: 1_000_000,
        consumed_unit: "Tokens",
        pricing_unit: "1000000 Tokens",
    }
}

const OPENAI_METERS: [Meter; 4] = [
    token("uncached_input_tokens", "input_cost", "input", "Input Tokens"),
    token(
        "cached_input_tokens",
        "cached_input_cost",
        "cached_input",
        "Cached Input Tokens",
    ),
    token(
        "cache_write_tokens",
        "cache_write_cost",
        "cache_write",
        "Cache Write Tokens",
    ),
    token("output_tokens", "output_cost", "output", "Output Tokens"),
];

const ANTHROPIC_METERS: [Meter; 6] = [
    token("uncached_input_tokens", "input_cost", "input", "Input Tokens"),
    token(
        "cache_write_5m_tokens",
        "cache_write_5m_cost",
        "cache_write_5m",
        "5m Cache Write Tokens",
    ),
    token(
        "cache_write_1h_tokens",
        "cache_write_1h_cost",
        "cache_write_1h",
        "1h Cache Write Tokens",
    ),
    token(
        "cache_read_tokens",
        "cache_read_cost",
        "cache_read",
        "Cache Read Tokens",
    ),
    token("output_tokens", "output_cost", "output", "Output Tokens"),
    Meter {
        quantity_col: "web_search_requests",
        cost_col: "web_search_cost",
        sku: "web_search",
        label: "Web Search Requests",
        token_type: "web_search",
        per: 1_000,
        consumed_unit: "Requests",
        pricing_unit: "1000 Requests",
    },
];

/// The rows of one token-priced cost row: a `Usage` row per meter with usage, or (the
/// day's free-tier row) a `Credit` row per meter with a credit.
fn llm_rows(
    r: &Row,
    table: &'static str,
    vendor: &Vendor,
    meters: &[Meter],
    project_col: &str,
    free_tier: bool,
) -> Option<Vec<Row>> {
    let day = r.date("usage_date")?;
    if r.boolean("unknown_model").unwrap_or(false) || r.numeric("total_cost").is_none() {
        return None;
    }
    let model = r.string("model").unwrap_or_default();
    let priced = r.string("priced_model_id").unwrap_or_else(|| model.clone());
    let tier = r.string("pricing_tier").unwrap_or_else(|| "standard".into());
    let mut rows = Vec::new();
    for m in meters {
        let quantity = r.int(m.quantity_col).unwrap_or(0);
        let cost = r.numeric(m.cost_col).unwrap_or_default();
        if (free_tier && cost.is_zero()) || (!free_tier && quantity == 0 && cost.is_zero()) {
            continue;
        }
        let mut row = base(r, table, vendor, day);
        account(&mut row, vendor, r.string(project_col));
        let sku = format!("{priced}-{}", m.sku);
        row.set("SkuId", sku.as_str());
        row.set("SkuPriceId", format!("{sku}-{tier}"));
        row.set("SkuMeter", m.label);
        row.set(
            "SkuPriceDetails",
            json!({"ModelDeveloper": vendor.name, "ModelId": priced, "TokenType": m.token_type, "ServiceTier": tier})
                .to_string(),
        );
        row.set("x_usage_type", r.string("usage_type"));
        row.set("x_model", model.as_str());
        row.set("x_token_type", m.token_type);
        row.set("x_service_tier", tier.as_str());
        set_costs(&mut row, cost);
        if free_tier {
            row.set("ChargeCategory", "Credit");
            row.set("ChargeFrequency", "Usage-Based");
            row.set(
                "ChargeDescription",
                format!("{} free tier: {priced}, {}", vendor.name, m.label.to_lowercase()),
            );
        } else {
            let pricing_quantity = Decimal::from(quantity) / Decimal::from(m.per);
            let price = unit_price(cost, pricing_quantity);
            row.set("ChargeCategory", "Usage");
            row.set("ChargeFrequency", "Usage-Based");
            row.set("PricingCategory", "Standard");
            row.set(
                "ChargeDescription",
                format!("{priced}, {}, {tier}", m.label.to_lowercase()),
            );
            row.set("ConsumedQuantity", Decimal::from(quantity));
            row.set("ConsumedUnit", m.consumed_unit);
            row.set("PricingQuantity", pricing_quantity.normalize());
            row.set("PricingUnit", m.pricing_unit);
            row.set("ListUnitPrice", price);
            row.set("ContractedUnitPrice", price);
        }
        rows.push(row);
    }
    Some(rows)
}

fn openai_tokens(r: &Row, table: &'static str) -> Option<Vec<Row>> {
    let free = r.string("usage_type").as_deref() == Some("free_tier");
    llm_rows(r, table, &OPENAI, &OPENAI_METERS, "project_id", free)
}

fn anthropic_tokens(r: &Row, table: &'static str) -> Option<Vec<Row>> {
    let free = r.string("charge_type").as_deref() == Some("free_tier");
    llm_rows(r, table, &ANTHROPIC, &ANTHROPIC_METERS, "workspace_id", free)
}

/// One unit-priced OpenAI row: images, characters, minutes, GiB-days, sessions or calls.
fn openai_units(r: &Row, table: &'static str) -> Option<Vec<Row>> {
    let day = r.date("usage_date")?;
    let cost = r.numeric("total_cost")?;
    if r.boolean("unknown_model").unwrap_or(false) {
        return None;
    }
    let unit = crate::processors::unit_pricing::Unit::parse(&r.string("unit").unwrap_or_default())?;
    let usage_type = r.string("usage_type").unwrap_or_default();
    let model = r.string("model");
    let priced = r
        .string("priced_model_id")
        .or_else(|| model.clone())
        .unwrap_or_else(|| usage_type.clone());
    let variant = r.string("variant");
    let sku = match &variant {
        Some(v) => format!("{priced}-{v}"),
        None => priced.clone(),
    };
    let label = match unit.consumed_unit() {
        "Seconds" => "Audio Minutes",
        "Bytes" => "Storage GiB-Days",
        "Requests" => "Tool Calls",
        other => other,
    };
    let mut row = base(r, table, &OPENAI, day);
    account(&mut row, &OPENAI, r.string("project_id"));
    row.set("SkuId", sku.as_str());
    row.set("SkuPriceId", format!("{sku}-{}", unit.name()));
    row.set("SkuMeter", label);
    let mut details = Map::new();
    details.insert("ModelDeveloper".into(), json!("OpenAI"));
    if let Some(m) = &model {
        details.insert("ModelId".into(), json!(m));
    }
    if let Some(v) = &variant {
        details.insert("Variant".into(), json!(v));
    }
    details.insert("UsageType".into(), json!(usage_type));
    row.set("SkuPriceDetails", serde_json::Value::Object(details).to_string());
    row.set("x_usage_type", usage_type.as_str());
    row.set("x_model", model);
    row.set("x_service_tier", variant);
    set_costs(&mut row, cost);
    if r.string("charge_type").as_deref() == Some("free_tier") {
        row.set("ChargeCategory", "Credit");
        row.set("ChargeFrequency", "Usage-Based");
        row.set("ChargeDescription", format!("OpenAI free allowance: {usage_type}"));
    } else {
        let quantity = r.numeric("pricing_quantity").unwrap_or_default();
        let price = r
            .numeric("unit_price")
            .map(|p| p.normalize())
            .unwrap_or_else(|| unit_price(cost, quantity));
        row.set("ChargeCategory", "Usage");
        row.set("ChargeFrequency", "Usage-Based");
        row.set("PricingCategory", "Standard");
        row.set("ChargeDescription", format!("{sku}, {}", label.to_lowercase()));
        row.set(
            "ConsumedQuantity",
            Decimal::from(r.int("consumed_quantity").unwrap_or(0)),
        );
        row.set("ConsumedUnit", unit.consumed_unit());
        row.set("PricingQuantity", quantity.normalize());
        row.set("PricingUnit", unit.pricing_unit());
        row.set("ListUnitPrice", price);
        row.set("ContractedUnitPrice", price);
    }
    Some(vec![row])
}

/// A FOCUS ServiceCategory (and its "Other" subcategory) for a GCP service.
fn gcp_category(service: &str) -> (&'static str, &'static str) {
    let s = service.to_ascii_lowercase();
    let table: [(&[&str], &str, &str); 7] = [
        (
            &[
                "vertex",
                "gemini",
                "ai platform",
                "vision",
                "speech",
                "translat",
                "dialogflow",
            ],
            "AI and Machine Learning",
            "Other (AI and Machine Learning)",
        ),
        (
            &["bigquery", "dataflow", "dataproc", "pub/sub", "looker"],
            "Analytics",
            "Other (Analytics)",
        ),
        (
            &["compute engine", "kubernetes", "cloud run", "functions", "app engine"],
            "Compute",
            "Other (Compute)",
        ),
        (
            &[
                "cloud sql",
                "spanner",
                "firestore",
                "bigtable",
                "memorystore",
                "alloydb",
            ],
            "Databases",
            "Other (Databases)",
        ),
        (&["storage", "filestore", "backup"], "Storage", "Other (Storage)"),
        (
            &["network", "cdn", "dns", "load balanc", "vpc", "interconnect"],
            "Networking",
            "Other (Networking)",
        ),
        (
            &[
                "logging",
                "monitoring",
                "cloud build",
                "artifact",
                "source repositories",
            ],
            "Management and Governance",
            "Other (Management and Governance)",
        ),
    ];
    for (needles, category, sub) in table {
        if needles.iter().any(|n| s.contains(n)) {
            return (category, sub);
        }
    }
    ("Other", "Other (Other)")
}

/// One exported GCP billing line, and its credits as a `Credit` row of their own.
fn gcp_billing(r: &Row, table: &'static str) -> Option<Vec<Row>> {
    let day = r.date("usage_date")?;
    let cost = r.numeric("cost")?;
    let service = r.string("service_description").unwrap_or_default();
    let (category, subcategory) = gcp_category(&service);
    let sku = r.string("sku_id").unwrap_or_default();
    let sku_description = r.string("sku_description").unwrap_or_default();
    let mut row = base(r, table, &GOOGLE_CLOUD, day);
    if let Some(month) = r
        .string("invoice_month")
        .and_then(|m| NaiveDate::parse_from_str(&format!("{m}01"), "%Y%m%d").ok())
    {
        row.set("BillingPeriodStart", midnight(month));
        row.set(
            "BillingPeriodEnd",
            midnight(month.checked_add_months(Months::new(1)).unwrap_or(month)),
        );
    }
    if let (Some(s), Some(e)) = (r.timestamp("usage_start_time"), r.timestamp("usage_end_time")) {
        row.set("ChargePeriodStart", s);
        row.set("ChargePeriodEnd", e);
    }
    row.set("BillingAccountId", r.string("billing_account_id"));
    row.set("BillingAccountName", r.string("billing_account_id"));
    row.set("ServiceName", service.as_str());
    row.set("ServiceCategory", category);
    row.set("ServiceSubcategory", subcategory);
    row.set("RegionId", r.string("location_region"));
    row.set("RegionName", r.string("location_region"));
    row.set("AvailabilityZone", r.string("location_zone"));
    if let Some(p) = r.string("project_id").filter(|p| !p.is_empty()) {
        row.set("SubAccountId", p);
        row.set("SubAccountName", r.string("project_name"));
        row.set("SubAccountType", "Project");
    }
    let labels: Map<String, serde_json::Value> = r
        .string("labels_json")
        .and_then(|l| serde_json::from_str::<Vec<serde_json::Value>>(&l).ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| Some((kv["key"].as_str()?.to_string(), kv["value"].clone())))
        .collect();
    if !labels.is_empty() {
        row.set("Tags", serde_json::Value::Object(labels).to_string());
    }
    row.set("SkuId", sku.as_str());
    row.set("SkuMeter", sku_description.as_str());
    row.set("x_usage_type", r.string("cost_type"));
    row.set("x_model", service.as_str());
    let credits = r.numeric("credits_total").unwrap_or_default();
    let mut credit_row = (!credits.is_zero()).then(|| {
        let mut c = row.clone();
        set_costs(&mut c, credits);
        c.set("ChargeCategory", "Credit");
        c.set("ChargeFrequency", "Usage-Based");
        c.set("ChargeDescription", format!("Credits on {service}: {sku_description}"));
        c
    });
    match r.string("cost_type").as_deref().unwrap_or("regular") {
        "regular" => {
            let list = r.numeric("cost_at_list").unwrap_or(cost);
            let quantity = r
                .float("usage_amount_in_pricing_units")
                .and_then(Decimal::from_f64_retain)
                .map(|q| q.round_dp(12).normalize())
                .unwrap_or_default();
            row.set("ChargeCategory", "Usage");
            row.set("ChargeFrequency", "Usage-Based");
            row.set("PricingCategory", "Standard");
            row.set("BilledCost", cost.normalize());
            row.set("EffectiveCost", cost.normalize());
            row.set("ContractedCost", cost.normalize());
            row.set("ListCost", list.normalize());
            row.set("PricingQuantity", quantity);
            row.set("PricingUnit", r.string("usage_pricing_unit"));
            row.set("ListUnitPrice", unit_price(list, quantity));
            row.set("ContractedUnitPrice", unit_price(cost, quantity));
            row.set("SkuPriceId", format!("{sku}-standard"));
            row.set(
                "SkuPriceDetails",
                json!({"SkuDescription": sku_description}).to_string(),
            );
            if let Some(q) = r.float("usage_amount").and_then(Decimal::from_f64_retain) {
                row.set("ConsumedQuantity", q.round_dp(12).normalize());
                row.set("ConsumedUnit", r.string("usage_unit"));
            }
            row.set("ChargeDescription", format!("{service}: {sku_description}"));
        }
        other => {
            set_costs(&mut row, cost);
            row.set("ChargeCategory", if other == "tax" { "Tax" } else { "Adjustment" });
            if other == "tax" {
                row.set("SkuId", Value::Null);
                row.set("SkuMeter", Value::Null);
            }
            row.set("ChargeFrequency", "One-Time");
            row.set("ChargeDescription", format!("{service}: {other}"));
            if let Some(c) = credit_row.as_mut() {
                c.set("ChargeFrequency", "One-Time");
            }
        }
    }
    Some(std::iter::once(row).chain(credit_row).collect())
}

/// The vendor a subscriptions provider name stands for.
fn plan_vendor(provider: &str) -> (&'static str, &'static str, &'static str) {
    match provider {
        "openai" => ("OpenAI", "ChatGPT", "Project"),
        "anthropic" => ("Anthropic", "Claude", "Workspace"),
        "gemini" => ("Google", "Gemini", "Project"),
        "deepseek" => ("DeepSeek", "DeepSeek", "Project"),
        _ => ("Other", "", "Project"),
    }
}

/// One plan's month: a recurring charge for seat-months (prorated by paid days) at the monthly
/// seat price, discounted in the contracted price.
fn subscription(r: &Row, table: &'static str) -> Option<Vec<Row>> {
    let month = r.date("usage_date")?;
    let cost = r.numeric("total_cost")?;
    if r.boolean("unknown_model").unwrap_or(false) {
        return None;
    }
    let provider = r.string("provider").unwrap_or_default();
    let plan = r.string("plan_name").unwrap_or_default();
    let (name, service, sub_account_type) = plan_vendor(&provider);
    let service = if service.is_empty() { plan.as_str() } else { service };
    let vendor = Vendor {
        name,
        service: "",
        billing_account_type: "Organization",
        sub_account_type,
    };
    let mut row = base(r, table, &vendor, month);
    row.set("ServiceName", service);
    account(&mut row, &vendor, r.string("project_id"));
    let (start, end) = (r.date("period_start")?, r.date("period_end")?);
    row.set("ChargePeriodStart", midnight(start));
    row.set("ChargePeriodEnd", midnight(end.succ_opt().unwrap_or(end)));
    let seats = r.int("quantity").unwrap_or(0);
    let paid = r.int("paid_days").unwrap_or(0);
    let days = r.int("days_in_month").unwrap_or(30).max(1);
    let seat_months = (Decimal::from(seats) * Decimal::from(paid) / Decimal::from(days)).round_dp(12);
    let price = r.numeric("unit_price_usd").unwrap_or_default();
    let discount = r.numeric("discount_percentage").unwrap_or_default();
    let contracted_price = price * (Decimal::ONE_HUNDRED - discount) / Decimal::ONE_HUNDRED;
    let list = r.numeric("list_cost").unwrap_or(cost);
    let sku = format!("{provider}-{plan}");
    // Seats are a recurring usage charge, not a Purchase: a FOCUS Purchase that covers
    // future charges has EffectiveCost 0 (amortized onto them), and a plan's fee covers no
    // other charge.
    row.set("ChargeCategory", "Usage");
    row.set("ChargeFrequency", "Recurring");
    row.set("ConsumedQuantity", seat_months.normalize());
    row.set("ConsumedUnit", "Seat-Months");
    row.set("PricingCategory", "Standard");
    row.set(
        "ChargeDescription",
        format!(
            "{plan}: {seats} seats, {paid} paid of {days} days (trial days {})",
            r.int("trial_days").unwrap_or(0)
        ),
    );
    row.set("BilledCost", cost.normalize());
    row.set("EffectiveCost", cost.normalize());
    row.set("ContractedCost", cost.normalize());
    row.set("ListCost", list.normalize());
    row.set("PricingQuantity", seat_months.normalize());
    row.set("PricingUnit", "Seat-Months");
    row.set("ListUnitPrice", price.normalize());
    row.set("ContractedUnitPrice", contracted_price.round_dp(12).normalize());
    row.set("SkuId", sku.as_str());
    row.set("SkuPriceId", format!("{sku}-{}", price.normalize()));
    row.set("SkuMeter", "Seats");
    row.set(
        "SkuPriceDetails",
        json!({"PlanName": plan, "TierType": r.string("tier_type"), "SeatPricePerMonth": price.normalize().to_string()})
            .to_string(),
    );
    row.set("x_usage_type", "subscription");
    row.set("x_model", plan.as_str());
    row.set("x_service_tier", r.string("tier_type"));
    Some(vec![row])
}

/// A cell as FOCUS text: decimals in plain notation, times as `YYYY-MM-DDTHH:MM:SSZ`.
fn text(v: Option<&Value>) -> Option<String> {
    Some(match v? {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Numeric(d) => d.normalize().to_string(),
        Value::String(s) => s.clone(),
        Value::Bytes(_) => return None,
        Value::Date(d) => d.to_string(),
        Value::Timestamp(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Value::Json(j) => j.to_string(),
    })
}

/// A cell of a column of `column_type` as FOCUS text. Decimal columns always carry a fractional part
/// (`6844.0`), so a reader that infers types from the text (the validator's CSV loader) sees
/// a decimal, not an integer.
fn cell(column_type: &str, v: Option<&Value>) -> Option<String> {
    let t = text(v)?;
    Some(if column_type == "NUMERIC" && !t.contains('.') {
        format!("{t}.0")
    } else {
        t
    })
}

/// Sets the pricing-currency columns: prices are in the billing currency.
fn pricing_currency(row: &mut Row) {
    let get = |c: &str| row.get(c).cloned().unwrap_or(Value::Null);
    let (currency, contracted, effective, list) = (
        get("BillingCurrency"),
        get("ContractedUnitPrice"),
        get("EffectiveCost"),
        get("ListUnitPrice"),
    );
    row.set("PricingCurrency", currency);
    row.set("PricingCurrencyContractedUnitPrice", contracted);
    row.set("PricingCurrencyEffectiveCost", effective);
    row.set("PricingCurrencyListUnitPrice", list);
}

/// The CSV header line.
pub fn csv_header() -> Vec<u8> {
    csv_line(COLUMNS.iter().map(|(c, _)| Some(c.to_string())))
}

/// One row as a CSV line (RFC 4180 quoting; a null is an empty field).
pub fn csv_row(row: &Row) -> Vec<u8> {
    csv_line(COLUMNS.iter().map(|(c, ty)| cell(ty, row.get(c))))
}

fn csv_line(fields: impl Iterator<Item = Option<String>>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let fields: Vec<String> = fields.map(Option::unwrap_or_default).collect();
    // Writing to a Vec cannot fail.
    let _ = w.write_record(&fields);
    w.into_inner().unwrap_or_default()
}

/// One row as a JSON object, columns in FOCUS order, decimals as strings (exact).
pub fn json_row(row: &Row) -> String {
    let mut out = String::from("{");
    for (i, (c, ty)) in COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(c.to_string()).to_string());
        out.push(':');
        out.push_str(&match cell(ty, row.get(c)) {
            None => "null".to_string(),
            Some(t) if matches!(*c, "Tags" | "SkuPriceDetails") => t,
            Some(t) => serde_json::Value::String(t).to_string(),
        });
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_schema_has_every_column_in_order() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/system/schemas/cost_data_focus_1_3.json"
        );
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let fields: Vec<(String, String)> = schema
            .as_array()
            .map(|f| {
                f.iter()
                    .map(|x| {
                        (
                            x["name"].as_str().unwrap_or("").into(),
                            x["type"].as_str().unwrap_or("").into(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<(String, String)> = COLUMNS.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        assert_eq!(fields, want);
        let x_first = COLUMNS.iter().position(|(c, _)| c.starts_with("x_")).unwrap_or(0);
        assert!(
            COLUMNS[x_first..].iter().all(|(c, _)| c.starts_with("x_")),
            "x_ columns come last"
        );
    }

    #[test]
    fn openai_token_rows_carry_unit_prices_that_multiply_back_to_the_cost() {
        let r = Row::new()
            .with("org_slug", "acme")
            .with("usage_date", NaiveDate::from_ymd_opt(2026, 3, 5).unwrap())
            .with("usage_type", "completions")
            .with("model", "gpt-4o-mini-2024-07-18")
            .with("priced_model_id", "gpt-4o-mini")
            .with("project_id", "proj_a")
            .with("pricing_tier", "batch")
            .with("uncached_input_tokens", 1_234_567i64)
            .with("cached_input_tokens", 0i64)
            .with("cache_write_tokens", 0i64)
            .with("output_tokens", 89_000i64)
            .with("input_cost", Decimal::new(92592525, 9)) // 1 234 567 × 0.075 / 1e6
            .with("cached_input_cost", Decimal::ZERO)
            .with("cache_write_cost", Decimal::ZERO)
            .with("output_cost", Decimal::new(26700, 6)) // 89 000 × 0.3 / 1e6
            .with("total_cost", Decimal::new(119292525, 9))
            .with("currency", "USD")
            .with("unknown_model", false);
        let rows = openai_tokens(&r, "openai_cost_daily").unwrap();
        assert_eq!(rows.len(), 2, "no row for the kinds with no tokens");
        let input = &rows[0];
        assert_eq!(input.numeric("ListUnitPrice"), Some(Decimal::new(75, 3)));
        assert_eq!(input.numeric("PricingQuantity"), Some(Decimal::new(1_234_567, 6)));
        assert_eq!(
            input.numeric("ListUnitPrice").unwrap() * input.numeric("PricingQuantity").unwrap(),
            input.numeric("ListCost").unwrap()
        );
        assert_eq!(input.string("SkuPriceId").as_deref(), Some("gpt-4o-mini-input-batch"));
        assert_eq!(input.string("Tags").as_deref(), Some(r#"{"project":"proj_a"}"#));
        assert_eq!(rows[1].numeric("BilledCost"), Some(Decimal::new(267, 4)));
        let line = String::from_utf8(csv_row(input)).unwrap();
        assert!(
            line.contains(",2026-03-05T00:00:00Z,") && line.contains(r#""{""project"":""proj_a""}""#),
            "{line}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&json_row(input)).unwrap();
        assert_eq!(parsed["Tags"]["project"], "proj_a");
        assert_eq!(parsed["BilledCost"], "0.092592525");
    }

    #[test]
    fn an_unpriced_row_is_left_out_not_zero() {
        let r = Row::new()
            .with("org_slug", "acme")
            .with("usage_date", NaiveDate::from_ymd_opt(2026, 3, 5).unwrap())
            .with("model", "mystery")
            .with("uncached_input_tokens", 10i64)
            .with("total_cost", Value::Null)
            .with("unknown_model", true);
        assert!(openai_tokens(&r, "openai_cost_daily").is_none());
    }
}
