//! `focus.export`: rebuilds one day of the org's FOCUS 1.3 table (`cost_data_focus_1_3`)
//! from every cost table of its dataset ([`crate::focus`]): the same rows
//! `GET /api/v1/costs/{org}/focus` streams, replaced whole on every run (partition
//! `x_usage_date`), so a rerun after any cost load is safe.

use async_trait::async_trait;
use cloudact_core::warehouse::PartitionKey;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::{
    context::StepContext,
    focus,
    processors::day::{DayTable, LoadDay},
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FocusExportConfig {
    pub dataset: String,
    pub date: String,
    pub table: String,
    pub schema: String,
}

pub struct FocusExport(FocusExportConfig);

impl ProcessorDef for FocusExport {
    const PS_TYPE: &'static str = "focus.export";
    type Config = FocusExportConfig;

    fn build(config: FocusExportConfig) -> Result<Self, String> {
        cloudact_core::warehouse::check_name(&config.table).map_err(|e| e.to_string())?;
        Ok(FocusExport(config))
    }
}

#[async_trait]
impl Processor for FocusExport {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let target = LoadDay::open(
            ctx,
            DayTable {
                dataset: &c.dataset,
                table: &c.table,
                schema: &c.schema,
                date: &c.date,
                partition: "x_usage_date",
                clustering: &["x_org_slug", "ProviderName"],
            },
        )
        .await?;
        let day = focus::focus_day(ctx.warehouse().as_ref(), &c.dataset, &target.org, target.day).await?;
        let billed: Decimal = day.rows.iter().filter_map(|r| r.numeric("BilledCost")).sum();
        // FOCUS custom columns are `x_`-prefixed, the org column too.
        let key = PartitionKey {
            org_column: "x_org_slug".into(),
            org_slug: target.org.clone(),
            date_column: "x_usage_date".into(),
            date: target.day,
        };
        let outcome = ctx
            .warehouse()
            .replace_partition(&c.dataset, &c.table, &key, &day.rows)
            .await?;
        ctx.add_rows(outcome.inserted);
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({"table": c.table, "focus_version": focus::FOCUS_VERSION,
                                       "inserted": outcome.inserted, "replaced": outcome.deleted,
                                       "unpriced_rows": day.unpriced_rows,
                                       "billed_cost": billed.round_dp(9).normalize().to_string()}),
        })
    }
}
