//! `focus.export`: rebuilds one day of the org's FOCUS 1.3 table (`cost_data_focus_1_3`)
//! from every cost table of its dataset ([`crate::focus`]): the same rows
//! `GET /api/v1/costs/{org}/focus` streams, replaced whole on every run (partition
//! `x_usage_date`), so a rerun after any cost load is safe.

use async_trait::async_trait;
use cloudact_core::warehouse::PartitionKey;
use rust_decimal::Decimal;

use crate::{
    context::StepContext,
    focus,
    processors::{day::LoadDay, DayTableConfig},
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

pub struct FocusExport(DayTableConfig);

impl ProcessorDef for FocusExport {
    const PS_TYPE: &'static str = "focus.export";
    type Config = DayTableConfig;

    fn build(config: DayTableConfig) -> Result<Self, String> {
        config.checked().map(FocusExport)
    }
}

#[async_trait]
impl Processor for FocusExport {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let target = LoadDay::open(ctx, c.day_table("x_usage_date", &["x_org_slug", "ProviderName"])).await?;
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
