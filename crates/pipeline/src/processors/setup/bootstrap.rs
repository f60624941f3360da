//! `setup.initial.onetime_bootstrap`: creates the central dataset and every table in its
//! table list. Idempotent: existing tables are left alone and reported as existing, unless
//! the request asks for `force_recreate_tables` (or `force_recreate_dataset`).

use async_trait::async_trait;
use cloudact_core::warehouse::{schema::migrate_tables, TableDef};
use serde::Deserialize;
use serde_json::json;

use super::{check_config_path, load_tables};
use crate::{
    context::StepContext,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Table list, relative to `configs/`.
    pub tables: String,
}

pub struct BootstrapProcessor {
    tables: String,
}

impl ProcessorDef for BootstrapProcessor {
    const PS_TYPE: &'static str = "setup.initial.onetime_bootstrap";
    type Config = BootstrapConfig;

    fn build(config: BootstrapConfig) -> Result<Self, String> {
        check_config_path(&config.tables)?;
        Ok(BootstrapProcessor { tables: config.tables })
    }
}

#[async_trait]
impl Processor for BootstrapProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let list = load_tables(ctx, &self.tables)?;
        let dataset = list
            .dataset
            .name
            .clone()
            .ok_or_else(|| ProcessorError::Invalid(format!("{} names no dataset", self.tables)))?;
        let location = list
            .dataset
            .location
            .clone()
            .unwrap_or_else(|| ctx.services.settings.bigquery_location.clone());
        let wh = ctx.warehouse();
        if ctx.param_bool("force_recreate_dataset") {
            wh.delete_dataset(&dataset).await?;
        }
        let dataset_created = wh.create_dataset(&dataset, &location).await?;
        let force_tables = ctx.param_bool("force_recreate_tables");
        let mut recreated = Vec::new();
        if force_tables {
            for table in &list.tables {
                if ctx.cancel.is_cancelled() {
                    return Err(ProcessorError::Cancelled);
                }
                if wh.drop_table(&dataset, &table.def.name).await? {
                    recreated.push(table.def.name.clone());
                }
            }
        }
        // Missing tables created, existing ones brought up to their schema files (new columns
        // added); an incompatible table changes nothing and fails the bootstrap with every problem.
        let defs: Vec<&TableDef> = list.tables.iter().map(|t| &t.def).collect();
        let report = migrate_tables(wh.as_ref(), &dataset, &defs).await?;
        let (created, existed) = (&report.created, &report.existed);
        tracing::info!(
            dataset,
            created = created.len(),
            existed = existed.len(),
            "bootstrap tables ensured"
        );
        Ok(StepOutput {
            rows_processed: 0,
            output: json!({
                "dataset": dataset,
                "dataset_created": dataset_created,
                "tables_created": created,
                "tables_existed": existed,
                "tables_recreated": recreated,
                "columns_added": report.columns_added,
                "total_tables": list.tables.len(),
            }),
        })
    }
}
