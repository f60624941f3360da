//! `setup.initial.onetime_bootstrap`: creates the central dataset and every table in its
//! table list. Idempotent: existing tables are left alone and reported as existing, unless
//! the request asks for `force_recreate_tables` (or `force_recreate_dataset`).

use async_trait::async_trait;
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
        let (mut created, mut existed, mut recreated) = (Vec::new(), Vec::new(), Vec::new());
        for table in &list.tables {
            if ctx.cancel.is_cancelled() {
                return Err(ProcessorError::Cancelled);
            }
            let name = table.def.name.clone();
            if force_tables && wh.drop_table(&dataset, &name).await? {
                recreated.push(name.clone());
            }
            if wh.create_table(&dataset, &table.def).await? {
                created.push(name);
            } else {
                existed.push(name);
            }
        }
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
                "total_tables": list.tables.len(),
            }),
        })
    }
}
