//! `setup.organizations.onboarding`: creates the org's own dataset (`{dataset}`), the tables
//! of its table list, and loads their seed rows. Safe to re-run: existing tables are kept and
//! a seed is loaded only into an empty table.

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::{
    config::load_seed_rows,
    warehouse::{schema::migrate_tables, Params, TableDef},
};
use serde::Deserialize;
use serde_json::json;

use super::{check_config_path, load_tables};
use crate::{
    context::StepContext,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnboardingConfig {
    /// Table list, relative to `configs/`.
    pub tables: String,
    /// Dataset to create (normally `{dataset}`).
    pub dataset: String,
    /// Table that gets one smoke-test row proving the dataset takes writes.
    #[serde(default)]
    pub smoke_test_table: Option<String>,
}

pub struct OnboardingProcessor {
    config: OnboardingConfig,
}

impl ProcessorDef for OnboardingProcessor {
    const PS_TYPE: &'static str = "setup.organizations.onboarding";
    type Config = OnboardingConfig;

    fn build(config: OnboardingConfig) -> Result<Self, String> {
        check_config_path(&config.tables)?;
        Ok(OnboardingProcessor { config })
    }
}

#[async_trait]
impl Processor for OnboardingProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let list = load_tables(ctx, &self.config.tables)?;
        let dataset = &self.config.dataset;
        let wh = ctx.warehouse();
        let location = ctx
            .param_str("dataset_location")
            .map(str::to_string)
            .unwrap_or_else(|| ctx.services.settings.bigquery_location.clone());
        let dataset_created = wh.create_dataset(dataset, &location).await?;
        let now = Utc::now();
        // Missing tables created, existing ones brought up to their schema files (a re-run of
        // onboarding is the org's migration); an incompatible table changes nothing.
        let defs: Vec<&TableDef> = list.tables.iter().map(|t| &t.def).collect();
        let report = migrate_tables(wh.as_ref(), dataset, &defs).await?;
        let mut seeded = serde_json::Map::new();
        for table in &list.tables {
            let name = &table.def.name;
            if !table.seeds.is_empty() {
                let rows = wh
                    .query(
                        dataset,
                        &format!("SELECT COUNT(*) AS n FROM {{{{{name}}}}}"),
                        &Params::new(),
                    )
                    .await?;
                if rows.first().and_then(|r| r.int("n")).unwrap_or(0) == 0 {
                    let mut rows = Vec::new();
                    for seed in &table.seeds {
                        rows.extend(
                            load_seed_rows(seed, &table.def, now).map_err(|e| ProcessorError::Failed(e.to_string()))?,
                        );
                    }
                    let n = wh.insert_rows(dataset, name, &rows).await?;
                    ctx.add_rows(n);
                    seeded.insert(name.clone(), json!(n));
                }
            }
        }
        if let Some(table) = &self.config.smoke_test_table {
            let row = cloudact_core::warehouse::Row::new()
                .with("id", ctx.run_id.clone())
                .with(
                    "test_message",
                    format!("onboarding of {} succeeded", ctx.org_slug.as_deref().unwrap_or("-")),
                )
                .with("created_at", now);
            wh.insert_rows(dataset, table, &[row]).await?;
        }
        Ok(StepOutput {
            rows_processed: ctx.rows(),
            output: json!({
                "dataset": dataset,
                "dataset_created": dataset_created,
                "tables_created": report.created,
                "tables_existed": report.existed,
                "columns_added": report.columns_added,
                "rows_seeded": seeded,
            }),
        })
    }
}
