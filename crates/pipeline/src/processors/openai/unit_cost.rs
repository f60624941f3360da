//! `openai.unit_cost`: prices one day of the OpenAI usage that is not counted in tokens
//! (images, speech characters, transcription seconds, moderation tokens, vector-store bytes,
//! code-interpreter sessions, file and web search calls) with the org's unit prices effective
//! that day ([`crate::processors::unit_pricing`]), into one cost table: one row per usage row
//! with its consumed quantity, its quantity in the priced unit, the unit price and the cost
//! (exact, 9 decimals). No price → `unknown_model` with a null cost, never 0, and a warning.
//! A row's `free_units_per_day` comes off the day as one `charge_type = 'free_tier'` row per
//! price row with a negative cost.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::warehouse::{Params, Row};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::{
    context::StepContext,
    processors::{
        day::{DayTable, LoadDay},
        unit_pricing::{openai_unit_kind, pricing_quantity, UnitPrice, UnitPriceBook},
    },
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitCostConfig {
    pub dataset: String,
    pub date: String,
    /// Usage endpoint → its raw table (as `openai.unit_usage` loaded them).
    pub usage_tables: BTreeMap<String, String>,
    pub cost_table: String,
    pub schema: String,
    pub pricing_table: String,
}

pub struct UnitCostProcessor(UnitCostConfig);

impl ProcessorDef for UnitCostProcessor {
    const PS_TYPE: &'static str = "openai.unit_cost";
    type Config = UnitCostConfig;

    fn build(config: UnitCostConfig) -> Result<Self, String> {
        for (endpoint, table) in &config.usage_tables {
            if openai_unit_kind(endpoint).is_none() {
                return Err(format!("usage endpoint {endpoint:?} is not priced per unit"));
            }
            cloudact_core::warehouse::check_name(table).map_err(|e| e.to_string())?;
        }
        for t in [&config.cost_table, &config.pricing_table] {
            cloudact_core::warehouse::check_name(t).map_err(|e| e.to_string())?;
        }
        Ok(UnitCostProcessor(config))
    }
}

#[async_trait]
impl Processor for UnitCostProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let target = LoadDay::open(
            ctx,
            DayTable {
                dataset: &c.dataset,
                table: &c.cost_table,
                schema: &c.schema,
                date: &c.date,
                partition: "usage_date",
                clustering: &["org_slug", "usage_type"],
            },
        )
        .await?;
        let (org, day) = (target.org.as_str(), target.day);
        let wh = ctx.warehouse();
        let book = UnitPriceBook::load(ctx, &c.dataset, &c.pricing_table, "openai", day).await?;
        let now = Utc::now();
        let base = |usage_type: &str| {
            Row::new()
                .with("org_slug", org)
                .with("usage_date", day)
                .with("usage_type", usage_type)
                .with("currency", "USD")
                .with("run_id", ctx.run_id.as_str())
                .with("loaded_at", now)
        };
        let (mut rows, mut unknown, mut total) = (Vec::new(), 0u64, Decimal::ZERO);
        // The day's reported quantity per price row with a free allowance.
        let mut free_day: BTreeMap<(String, &'static str), (i64, UnitPrice)> = BTreeMap::new();
        for (endpoint, table) in &c.usage_tables {
            let Some(kind) = openai_unit_kind(endpoint) else {
                continue;
            };
            if !wh.table_exists(&c.dataset, table).await? {
                continue;
            }
            let usage = wh
                .query(
                    &c.dataset,
                    &format!("SELECT * FROM {{{{{table}}}}} WHERE org_slug = @org AND usage_date = @day"),
                    &Params::new().with("org", org).with("day", day),
                )
                .await?;
            for u in usage {
                let model = u.string("model");
                let variant = kind.variant.and_then(|v| u.string(v));
                let quantity = u.int(kind.counter).unwrap_or(0);
                let price = book.resolve(kind, model.as_deref(), variant.as_deref());
                let cost = price.map(|p| p.cost(quantity));
                let mut row = base(kind.usage_type)
                    .with("charge_type", "usage")
                    .with("model", model.clone())
                    .with("priced_model_id", price.map(|p| p.model_id.clone()))
                    .with("project_id", u.string("project_id"))
                    .with("variant", variant)
                    .with("unit", kind.unit.name())
                    .with("consumed_quantity", quantity)
                    .with("consumed_unit", kind.unit.consumed_unit())
                    .with("pricing_quantity", pricing_quantity(quantity, kind.unit))
                    .with("unit_price", price.map(|p| p.price))
                    .with("total_cost", cost)
                    .with("unknown_model", price.is_none())
                    .with("num_model_requests", u.int("num_model_requests").unwrap_or(0));
                match (price, cost) {
                    (Some(p), Some(cost)) => {
                        total += cost;
                        if p.free_per_day.is_some() {
                            free_day
                                .entry((p.model_id.clone(), kind.usage_type))
                                .or_insert((0, p.clone()))
                                .0 += quantity;
                        }
                    }
                    _ => {
                        unknown += 1;
                        row.set("unit_price", None::<Decimal>);
                    }
                }
                rows.push(row);
            }
        }
        let mut free_credit = Decimal::ZERO;
        for ((model_id, usage_type), (quantity, price)) in &free_day {
            if let Some((free, credit)) = price.free_credit(*quantity) {
                free_credit += credit;
                total -= credit;
                rows.push(
                    base(usage_type)
                        .with("charge_type", "free_tier")
                        .with("model", model_id.as_str())
                        .with("priced_model_id", model_id.as_str())
                        .with("unit", price.unit.name())
                        .with("consumed_quantity", free)
                        .with("consumed_unit", price.unit.consumed_unit())
                        .with("pricing_quantity", pricing_quantity(free, price.unit))
                        .with("unit_price", price.price)
                        .with("total_cost", -credit)
                        .with("unknown_model", false)
                        .with("num_model_requests", 0i64),
                );
            }
        }
        if unknown > 0 {
            tracing::warn!(unknown_prices = unknown, date = %day,
                "OpenAI unit usage without a price: cost left null and flagged");
        }
        let outcome = target.replace(ctx, &rows).await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({"table": c.cost_table, "date": c.date, "inserted": outcome.inserted,
                                       "unknown_prices": unknown, "total_cost": total.round_dp(9).to_string(),
                                       "free_units_credit": free_credit.round_dp(9).to_string()}),
        })
    }
}
