//! The credential-free EXAMPLE pipeline's processors: deterministic synthetic usage, and
//! pricing it with the org's pricing table. Clearly examples; production pipelines use real
//! provider data.

pub mod noop;
pub mod price_usage;
pub mod synthetic_usage;

use chrono::NaiveDate;
use cloudact_core::warehouse::{schema::parse_schema_json, TableDef};

use super::setup::check_config_path;
use crate::{context::StepContext, registry::ProcessorError};

/// Parses a `{date}`-substituted config value.
pub(crate) fn parse_day(value: &str) -> Result<NaiveDate, ProcessorError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| ProcessorError::Invalid(format!("date {value:?} is not YYYY-MM-DD")))
}

/// Creates `table` in `dataset` from a schema file under `configs/` if it does not exist
/// (DAY-partitioned on `usage_date`, clustered by org and model), and returns its definition.
pub(crate) async fn ensure_table(
    ctx: &StepContext,
    dataset: &str,
    table: &str,
    schema_rel: &str,
) -> Result<TableDef, ProcessorError> {
    ensure_day_table(ctx, dataset, table, schema_rel, "usage_date", &["org_slug", "model_id"]).await
}

/// As [`ensure_table`], with the DAY partition column and the clustering columns given.
pub(crate) async fn ensure_day_table(
    ctx: &StepContext,
    dataset: &str,
    table: &str,
    schema_rel: &str,
    partition: &str,
    clustering: &[&str],
) -> Result<TableDef, ProcessorError> {
    check_config_path(&schema_rel.replace(".json", ".yml")).map_err(ProcessorError::Invalid)?;
    let path = ctx.services.configs_dir().join(schema_rel);
    let text =
        std::fs::read_to_string(&path).map_err(|e| ProcessorError::Failed(format!("{}: {e}", path.display())))?;
    let fields = parse_schema_json(&text).map_err(|e| ProcessorError::Failed(e.to_string()))?;
    let def = TableDef {
        name: table.to_string(),
        description: Some(format!("example table from {schema_rel}")),
        fields,
        partition_field: (!partition.is_empty()).then(|| partition.to_string()),
        clustering: clustering.iter().map(|c| c.to_string()).collect(),
        lookup_keys: Vec::new(),
    };
    let created = ctx.warehouse().create_table(dataset, &def).await?;
    if !created {
        // An older table must have every column the schema file now declares: a load would
        // otherwise drop the new columns' values without a word.
        let existing = ctx.warehouse().table_schema(dataset, table).await?;
        let missing: Vec<&str> = def
            .fields
            .iter()
            .filter(|f| !existing.iter().any(|e| e.name == f.name))
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(ProcessorError::Failed(format!(
                "table {dataset}.{table} predates {schema_rel}: it lacks {}; add the columns (NULLABLE) or drop the table",
                missing.join(", ")
            )));
        }
    }
    Ok(def)
}
