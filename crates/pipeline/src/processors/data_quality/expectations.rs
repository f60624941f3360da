//! `data_quality.expectations`: checks declared in the spec, run as aggregate queries inside
//! the warehouse over the org's rows of a table (of one day when `date_column` and `date` are
//! given) — no data leaves the warehouse:
//!
//! - `row_count` {min, max}; `not_null` {column}; `value_range` {column, min, max};
//!   `unique` {columns}; `freshness` {column (TIMESTAMP), max_age_hours}.
//!
//! Each has a `severity`, `fail` (default) or `warn`. One result row per run of the step goes to
//! `organizations.org_meta_dq_results` (passed / failed counts, the failed expectations with
//! what was observed, PASS / WARNING / FAIL). A failed `fail` expectation fails the step
//! (after the result is recorded); `warn` failures are recorded and logged only.

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::{
    meta::CENTRAL_DATASET,
    warehouse::{check_name, Params, Row},
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    context::StepContext,
    processors::example::parse_day,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectationsConfig {
    pub dataset: String,
    pub table: String,
    /// Name of this suite in the results (default: the table).
    pub suite: Option<String>,
    pub date_column: Option<String>,
    pub date: Option<String>,
    pub expectations: Vec<Expectation>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Fail,
    Warn,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Expectation {
    RowCount {
        min: Option<i64>,
        max: Option<i64>,
        #[serde(default)]
        severity: Severity,
    },
    NotNull {
        column: String,
        #[serde(default)]
        severity: Severity,
    },
    ValueRange {
        column: String,
        min: Option<f64>,
        max: Option<f64>,
        #[serde(default)]
        severity: Severity,
    },
    Unique {
        columns: Vec<String>,
        #[serde(default)]
        severity: Severity,
    },
    Freshness {
        column: String,
        max_age_hours: f64,
        #[serde(default)]
        severity: Severity,
    },
}

impl Expectation {
    fn severity(&self) -> Severity {
        match self {
            Expectation::RowCount { severity, .. }
            | Expectation::NotNull { severity, .. }
            | Expectation::ValueRange { severity, .. }
            | Expectation::Unique { severity, .. }
            | Expectation::Freshness { severity, .. } => *severity,
        }
    }

    fn columns(&self) -> Vec<&String> {
        match self {
            Expectation::RowCount { .. } => Vec::new(),
            Expectation::NotNull { column, .. }
            | Expectation::ValueRange { column, .. }
            | Expectation::Freshness { column, .. } => vec![column],
            Expectation::Unique { columns, .. } => columns.iter().collect(),
        }
    }

    fn name(&self) -> String {
        match self {
            Expectation::RowCount { .. } => "row_count".into(),
            Expectation::NotNull { column, .. } => format!("not_null({column})"),
            Expectation::ValueRange { column, .. } => format!("value_range({column})"),
            Expectation::Unique { columns, .. } => format!("unique({})", columns.join(", ")),
            Expectation::Freshness { column, .. } => format!("freshness({column})"),
        }
    }
}

pub struct ExpectationsProcessor(ExpectationsConfig);

impl ProcessorDef for ExpectationsProcessor {
    const PS_TYPE: &'static str = "data_quality.expectations";
    type Config = ExpectationsConfig;

    fn build(c: ExpectationsConfig) -> Result<Self, String> {
        check_name(&c.table).map_err(|e| e.to_string())?;
        if c.expectations.is_empty() {
            return Err("expectations must list at least one check".into());
        }
        if c.date.is_some() != c.date_column.is_some() {
            return Err("date and date_column go together".into());
        }
        for e in &c.expectations {
            for col in e.columns().into_iter().chain(&c.date_column) {
                check_name(col).map_err(|e| e.to_string())?;
            }
            match e {
                Expectation::Unique { columns, .. } if columns.is_empty() => return Err("unique needs columns".into()),
                Expectation::RowCount {
                    min: None, max: None, ..
                }
                | Expectation::ValueRange {
                    min: None, max: None, ..
                } => return Err(format!("{} needs min or max", e.name())),
                Expectation::Freshness { max_age_hours, .. } if *max_age_hours <= 0.0 => {
                    return Err("freshness needs max_age_hours > 0".into())
                }
                _ => {}
            }
        }
        Ok(ExpectationsProcessor(c))
    }
}

#[async_trait]
impl Processor for ExpectationsProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let org = ctx.require_org()?;
        // As a transform: an org's checks read its own dataset, never the central one or
        // another org's.
        if c.dataset != ctx.services.settings.org_dataset(&org) {
            return Err(ProcessorError::Invalid(format!(
                "data-quality checks run in their org's dataset only, not {}",
                c.dataset
            )));
        }
        let wh = ctx.warehouse();
        let mut params = Params::new().with("org", org.as_str());
        let mut filter = "org_slug = @org".to_string();
        if let (Some(col), Some(date)) = (&c.date_column, &c.date) {
            params = params.with("day", parse_day(date)?);
            // DATE() reads a DATE or a TIMESTAMP column alike on both backends.
            filter.push_str(&format!(" AND DATE({col}) = @day"));
        }
        let t = &c.table;
        let scalar = |sql: String, params: Params| async move {
            let rows = wh.query(&c.dataset, &sql, &params).await?;
            Ok::<_, ProcessorError>(rows.into_iter().next().unwrap_or_default())
        };
        let (mut passed, mut failed) = (0i64, Vec::new());
        let mut fail_severity = false;
        for e in &c.expectations {
            let (ok, observed) = match e {
                Expectation::RowCount { min, max, .. } => {
                    let n = scalar(
                        format!("SELECT COUNT(*) AS n FROM {{{{{t}}}}} WHERE {filter}"),
                        params.clone(),
                    )
                    .await?
                    .int("n")
                    .unwrap_or(0);
                    (
                        min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m),
                        json!({"rows": n}),
                    )
                }
                Expectation::NotNull { column, .. } => {
                    let n = scalar(
                        format!("SELECT COUNT(*) AS n FROM {{{{{t}}}}} WHERE {filter} AND {column} IS NULL"),
                        params.clone(),
                    )
                    .await?
                    .int("n")
                    .unwrap_or(0);
                    (n == 0, json!({"null_rows": n}))
                }
                Expectation::ValueRange { column, min, max, .. } => {
                    let mut outside = Vec::new();
                    let mut p = params.clone();
                    if let Some(m) = min {
                        outside.push(format!("CAST({column} AS FLOAT64) < @min"));
                        p = p.with("min", *m);
                    }
                    if let Some(m) = max {
                        outside.push(format!("CAST({column} AS FLOAT64) > @max"));
                        p = p.with("max", *m);
                    }
                    let n = scalar(
                        format!(
                            "SELECT COUNT(*) AS n FROM {{{{{t}}}}} WHERE {filter} AND ({})",
                            outside.join(" OR ")
                        ),
                        p,
                    )
                    .await?
                    .int("n")
                    .unwrap_or(0);
                    (n == 0, json!({"rows_outside": n, "min": min, "max": max}))
                }
                Expectation::Unique { columns, .. } => {
                    let cols = columns.join(", ");
                    let n = scalar(
                        format!(
                            "SELECT COUNT(*) AS n FROM (SELECT {cols}, COUNT(*) AS c FROM {{{{{t}}}}} WHERE {filter} \
                             GROUP BY {cols} HAVING COUNT(*) > 1) AS dupes"
                        ),
                        params.clone(),
                    )
                    .await?
                    .int("n")
                    .unwrap_or(0);
                    (n == 0, json!({"duplicated_keys": n}))
                }
                Expectation::Freshness {
                    column, max_age_hours, ..
                } => {
                    let latest = scalar(
                        format!("SELECT MAX({column}) AS latest FROM {{{{{t}}}}} WHERE {filter}"),
                        params.clone(),
                    )
                    .await?
                    .timestamp("latest");
                    let age = latest.map(|l| (Utc::now() - l).num_seconds() as f64 / 3600.0);
                    (
                        age.is_some_and(|a| a <= *max_age_hours),
                        json!({"latest": latest.map(|l| l.to_rfc3339()), "age_hours": age}),
                    )
                }
            };
            if ok {
                passed += 1;
            } else {
                fail_severity |= e.severity() == Severity::Fail;
                failed.push(json!({"expectation": e.name(), "severity": e.severity_name(), "observed": observed}));
            }
        }
        let status = match (failed.is_empty(), fail_severity) {
            (true, _) => "PASS",
            (false, false) => "WARNING",
            (false, true) => "FAIL",
        };
        let now = Utc::now();
        let suite = c.suite.clone().unwrap_or_else(|| c.table.clone());
        let result_id = uuid::Uuid::new_v4().to_string();
        wh.insert_rows(
            CENTRAL_DATASET,
            "org_meta_dq_results",
            &[Row::new()
                .with("dq_result_id", result_id.as_str())
                .with("pipeline_logging_id", ctx.run_id.as_str())
                .with("org_slug", org.as_str())
                .with("target_table", format!("{}.{}", c.dataset, c.table))
                .with("dq_config_id", suite.as_str())
                .with("executed_at", now)
                .with("expectations_passed", passed)
                .with("expectations_failed", failed.len() as i64)
                .with(
                    "failed_expectations",
                    (!failed.is_empty()).then(|| serde_json::Value::Array(failed.clone())),
                )
                .with("overall_status", status)
                .with("ingestion_date", now.date_naive())],
        )
        .await?;
        if !failed.is_empty() {
            tracing::warn!(suite = %suite, status, failed = failed.len(), "data quality expectations failed");
        }
        if fail_severity {
            return Err(ProcessorError::Failed(format!(
                "data quality {status} on {}: {}",
                c.table,
                failed
                    .iter()
                    .filter(|f| f["severity"] == "fail")
                    .map(|f| format!(
                        "{} (observed {})",
                        f["expectation"].as_str().unwrap_or(""),
                        f["observed"]
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        Ok(StepOutput {
            rows_processed: 0,
            output: json!({"suite": suite, "status": status, "passed": passed, "failed": failed, "dq_result_id": result_id}),
        })
    }
}

impl Expectation {
    fn severity_name(&self) -> &'static str {
        match self.severity() {
            Severity::Fail => "fail",
            Severity::Warn => "warn",
        }
    }
}
