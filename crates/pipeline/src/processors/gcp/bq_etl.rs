//! `gcp.bq_etl`: one usage day of the org's own Cloud Billing export into
//! `gcp_billing_daily_raw`.
//!
//! The source table is the one named in the org's GCP integration (`billing_export_table`,
//! `project.dataset.table`) and it is read with the org's own service account (an OAuth2 token
//! from its key; BigQuery `jobs.query` in the account's project) — never a shared table, never
//! the platform's identity. Rows are selected by `usage_start_time` within the day and by an
//! `export_time` window from the day's start to `late_window_days` after its end (bounding the
//! bytes scanned and taking in the late corrections exported after the day; rerunning a recent
//! day picks up newer ones). Every value is a bound parameter. Net cost = cost + the credits'
//! amounts (credits are negative). Results are read page by page and streamed into a staged day
//! load that replaces the org's day atomically.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use cloudact_core::warehouse::{Row, Value};
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use crate::{
    context::StepContext,
    load::DayLoad,
    processors::example::{ensure_day_table, parse_day},
    providers::{
        http::get_parsed,
        validate::{is_billing_table, service_account_token, Validation, BIGQUERY_READONLY_SCOPE},
    },
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    pub dataset: String,
    pub date: String,
    pub table: String,
    pub schema: String,
    /// Days after the usage day whose exports are read (late corrections); default 3.
    #[serde(default = "default_late_window")]
    pub late_window_days: u32,
    /// Rows per result page; default 10 000.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

fn default_late_window() -> u32 {
    3
}

fn default_page_size() -> u32 {
    10_000
}

pub struct BillingEtl(BillingConfig);

impl ProcessorDef for BillingEtl {
    const PS_TYPE: &'static str = "gcp.bq_etl";
    type Config = BillingConfig;

    fn build(c: BillingConfig) -> Result<Self, String> {
        cloudact_core::warehouse::check_name(&c.table).map_err(|e| e.to_string())?;
        if c.late_window_days > 35 {
            return Err("late_window_days must be at most 35".into());
        }
        if !(100..=50_000).contains(&c.page_size) {
            return Err("page_size must be 100..=50000".into());
        }
        Ok(BillingEtl(c))
    }
}

/// `project.dataset.table` with BigQuery's name rules (checked again here: it is spliced into
/// the SQL as an identifier, the only non-parameter part of the query).
fn check_source(name: &str) -> Result<(), ProcessorError> {
    let ok = is_billing_table(name);
    if ok {
        Ok(())
    } else {
        Err(ProcessorError::Invalid(format!(
            "billing_export_table {name:?} is not project.dataset.table"
        )))
    }
}

/// The SELECT over the standard export; column order matches [`COLUMNS`].
fn query(source: &str) -> String {
    format!(
        "SELECT billing_account_id, service.id, service.description, sku.id, sku.description, \
         UNIX_MICROS(usage_start_time), UNIX_MICROS(usage_end_time), project.id, project.name, project.number, \
         location.location, location.region, location.zone, CAST(cost AS STRING), currency, currency_conversion_rate, \
         usage.amount, usage.unit, usage.amount_in_pricing_units, usage.pricing_unit, cost_type, \
         CAST(IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) AS c), 0) AS STRING), CAST(cost_at_list AS STRING), \
         invoice.month, TO_JSON_STRING(labels), TO_JSON_STRING(system_labels), UNIX_MICROS(export_time) \
         FROM `{source}` \
         WHERE usage_start_time >= @day_start AND usage_start_time < @day_end \
         AND export_time >= @day_start AND export_time < @export_end"
    )
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Micros,
    Float,
    Decimal,
}

/// Destination columns, in the SELECT's order.
const COLUMNS: [(&str, Kind); 27] = [
    ("billing_account_id", Kind::Text),
    ("service_id", Kind::Text),
    ("service_description", Kind::Text),
    ("sku_id", Kind::Text),
    ("sku_description", Kind::Text),
    ("usage_start_time", Kind::Micros),
    ("usage_end_time", Kind::Micros),
    ("project_id", Kind::Text),
    ("project_name", Kind::Text),
    ("project_number", Kind::Text),
    ("location_location", Kind::Text),
    ("location_region", Kind::Text),
    ("location_zone", Kind::Text),
    ("cost", Kind::Decimal),
    ("currency", Kind::Text),
    ("currency_conversion_rate", Kind::Float),
    ("usage_amount", Kind::Float),
    ("usage_unit", Kind::Text),
    ("usage_amount_in_pricing_units", Kind::Float),
    ("usage_pricing_unit", Kind::Text),
    ("cost_type", Kind::Text),
    ("credits_total", Kind::Decimal),
    ("cost_at_list", Kind::Decimal),
    ("invoice_month", Kind::Text),
    ("labels_json", Kind::Text),
    ("system_labels_json", Kind::Text),
    ("export_time", Kind::Micros),
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryPage {
    #[serde(default)]
    job_complete: bool,
    job_reference: Option<JobReference>,
    page_token: Option<String>,
    #[serde(default)]
    rows: Vec<ResultRow>,
    errors: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobReference {
    job_id: String,
    location: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResultRow {
    f: Vec<Cell>,
}

#[derive(Debug, Deserialize)]
struct Cell {
    v: serde_json::Value,
}

fn cell(kind: Kind, v: &serde_json::Value, column: &str) -> Result<Value, ProcessorError> {
    let text = match v {
        serde_json::Value::Null => return Ok(Value::Null),
        serde_json::Value::String(s) => s.as_str(),
        other => return Err(ProcessorError::Failed(format!("{column}: unexpected value {other}"))),
    };
    let bad = || ProcessorError::Failed(format!("{column}: cannot read {text:?}"));
    Ok(match kind {
        Kind::Text => Value::String(text.to_string()),
        Kind::Float => Value::Float(text.parse().map_err(|_| bad())?),
        Kind::Decimal => Value::Numeric(
            Decimal::from_scientific(text)
                .or_else(|_| text.parse::<Decimal>())
                .map_err(|_| bad())?
                .round_dp(9),
        ),
        Kind::Micros => Value::Timestamp(
            text.parse::<i64>()
                .ok()
                .and_then(DateTime::<Utc>::from_timestamp_micros)
                .ok_or_else(bad)?,
        ),
    })
}

fn ts_param(name: &str, t: DateTime<Utc>) -> serde_json::Value {
    json!({"name": name, "parameterType": {"type": "TIMESTAMP"},
           "parameterValue": {"value": t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()}})
}

#[async_trait]
impl Processor for BillingEtl {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let org = ctx.require_org()?;
        let day: NaiveDate = parse_day(&c.date)?;
        let def = ensure_day_table(
            ctx,
            &c.dataset,
            &c.table,
            &c.schema,
            "usage_date",
            &["org_slug", "service_id", "project_id"],
        )
        .await?;
        let (sa, metadata) = ctx.credential_with_metadata("gcp_sa").await?;
        let source = metadata["billing_export_table"]
            .as_str()
            .ok_or_else(|| {
                ProcessorError::Invalid(crate::providers::validate::no_billing_table_message(
                    metadata["project_id"].as_str().unwrap_or("(unknown)"),
                ))
            })?
            .to_string();
        check_source(&source)?;
        let http = &ctx.services.http;
        let (token, project) = service_account_token(
            http,
            sa.expose_secret(),
            BIGQUERY_READONLY_SCOPE,
            &ctx.services.settings.gcp_token_url,
            Duration::from_secs(30),
        )
        .await
        .map_err(|v| match v {
            Validation::Pending(m) => ProcessorError::Transient(m),
            Validation::Invalid(m) => ProcessorError::Failed(m),
            Validation::Valid => ProcessorError::Failed("no token".into()),
        })?;
        let base = format!(
            "{}/bigquery/v2/projects/{project}/queries",
            ctx.provider_base_url("gcp")?
        );
        let start = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_default();
        let end = start + chrono::Duration::days(1);
        let export_end = (end + chrono::Duration::days(i64::from(c.late_window_days))).min(Utc::now().max(end));
        let request = json!({
            "query": query(&source), "useLegacySql": false, "parameterMode": "NAMED",
            "queryParameters": [ts_param("day_start", start), ts_param("day_end", end), ts_param("export_end", export_end)],
            "maxResults": c.page_size, "timeoutMs": 60_000,
            "labels": {"cloudact_org": org.as_str(), "cloudact_pipeline": "gcp_billing"},
        });
        let mut load = DayLoad::begin(ctx, &c.dataset, &def, "usage_date", day).await?;
        let now = Utc::now();
        let (mut pages, mut rows, mut net_total) = (0u64, 0u64, Decimal::ZERO);
        let mut page: QueryPage = get_parsed("BigQuery", || http.post(&base).bearer_auth(&token).json(&request))
            .await
            .map_err(|e| e.map_message(|m| format!("{m} [reading {source}]")))?;
        loop {
            if let Some(errors) = &page.errors {
                return Err(ProcessorError::Failed(format!(
                    "BigQuery reported errors reading {source}: {errors}"
                )));
            }
            let job = page
                .job_reference
                .as_ref()
                .map(|j| (j.job_id.clone(), j.location.clone()));
            if page.job_complete {
                pages += 1;
                for r in &page.rows {
                    if r.f.len() != COLUMNS.len() {
                        return Err(ProcessorError::Failed(format!(
                            "BigQuery returned {} columns, expected {}",
                            r.f.len(),
                            COLUMNS.len()
                        )));
                    }
                    let mut row = Row::new()
                        .with("org_slug", org.as_str())
                        .with("usage_date", day)
                        .with("ingestion_date", now.date_naive())
                        .with("run_id", ctx.run_id.as_str())
                        .with("loaded_at", now);
                    for ((name, kind), cell_value) in COLUMNS.iter().zip(&r.f) {
                        row.set(name, cell(*kind, &cell_value.v, name)?);
                    }
                    let cost = row.numeric("cost").unwrap_or(Decimal::ZERO);
                    let credits = row.numeric("credits_total").unwrap_or(Decimal::ZERO);
                    let net = cost
                        .checked_add(credits)
                        .ok_or_else(|| ProcessorError::Failed(format!("cost {cost} + credits {credits} overflows")))?;
                    row.set("net_cost", net);
                    net_total = net_total.checked_add(net).unwrap_or(net_total);
                    load.push(row).await?;
                    rows += 1;
                }
            }
            let next = match (page.job_complete, &page.page_token, job) {
                (true, None, _) => break,
                (_, token_opt, Some((job_id, location))) => {
                    let mut q = vec![
                        ("maxResults", c.page_size.to_string()),
                        ("timeoutMs", "60000".to_string()),
                    ];
                    if let Some(t) = token_opt.as_ref().filter(|_| page.job_complete) {
                        q.push(("pageToken", t.clone()));
                    }
                    if let Some(l) = location {
                        q.push(("location", l));
                    }
                    (format!("{base}/{job_id}"), q)
                }
                (_, _, None) => {
                    return Err(ProcessorError::Failed(
                        "BigQuery answered without a job reference".into(),
                    ))
                }
            };
            if ctx.cancel.is_cancelled() {
                return Err(ProcessorError::Cancelled);
            }
            page = get_parsed("BigQuery", || http.get(&next.0).query(&next.1).bearer_auth(&token))
                .await
                .map_err(|e| e.map_message(|m| format!("{m} [reading {source}, page {}]", pages + 1)))?;
        }
        let outcome = load.commit().await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: json!({"table": c.table, "date": c.date, "source": source, "pages": pages, "rows": rows,
                           "net_cost": net_total.to_string(), "inserted": outcome.inserted, "replaced": outcome.deleted,
                           "export_window_end": export_end.to_rfc3339()}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_tables_are_checked_before_they_reach_sql() {
        assert!(check_source("my-proj.billing.gcp_billing_export_v1_0123AB").is_ok());
        for bad in [
            "billing.gcp_billing_export_v1",
            "my-proj.billing.t` WHERE 1=1 --",
            "My_Proj.billing.t",
            "my-proj.billing.t.u",
        ] {
            assert!(check_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cells_keep_every_digit_of_money() {
        assert_eq!(
            cell(Kind::Decimal, &json!("0.1234567894"), "cost").unwrap(),
            Value::Numeric("0.123456789".parse().unwrap())
        );
        assert_eq!(
            cell(Kind::Decimal, &json!("1.5E-4"), "cost").unwrap(),
            Value::Numeric("0.00015".parse().unwrap())
        );
        assert!(matches!(
            cell(Kind::Micros, &json!("1768003200000000"), "t").unwrap(),
            Value::Timestamp(_)
        ));
        assert_eq!(cell(Kind::Text, &json!(null), "t").unwrap(), Value::Null);
    }
}
