//! The credential-free EXAMPLE pipeline's processors: deterministic synthetic usage, and
//! pricing it with the org's pricing table. Clearly examples; production pipelines use real
//! provider data.

pub mod noop;
pub mod price_usage;
pub mod synthetic_usage;

use chrono::NaiveDate;
use cloudact_core::warehouse::{
    schema::{evolve_table, parse_schema_json, Evolution},
    TableDef, WarehouseError,
};

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
    // Created, or an older table brought up to the schema file (new columns added, so a load
    // never drops their values); an incompatible table fails the step with every problem.
    match evolve_table(ctx.warehouse().as_ref(), dataset, &def).await {
        Ok(Evolution::Added(cols)) if !cols.is_empty() => {
            tracing::info!(dataset, table, columns = ?cols, "table brought up to its schema file");
        }
        Ok(_) => {}
        Err(WarehouseError::Schema(problems)) => {
            return Err(ProcessorError::Failed(format!(
                "table {dataset}.{table} cannot be brought up to {schema_rel}: {problems}"
            )))
        }
        Err(e) => return Err(e.into()),
    }
    Ok(def)
}
