//! `openai.cost`: prices one day of raw OpenAI usage with the org's prices effective that day.
//! Model match: exact `model_id`, else the longest priced id the reported model starts with
//! followed by `-` (dated snapshots: `gpt-4o-mini-2024-07-18` → `gpt-4o-mini`). Tier: batch
//! usage → `batch`, service tier `flex`/`priority` → that tier, otherwise `standard`; a tier
//! without its own price uses the standard price. Kinds: uncached input × input price; cached ×
//! cached price (else input); cache writes × 5-minute write price (else input); output × output.
//! No price → `unknown_model` with null costs, never 0, and a run warning.

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::warehouse::{Params, Row, Value};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::{
    context::StepContext,
    processors::{
        example::{ensure_day_table, parse_day, price_usage::per_million},
        pricing::PriceBook,
    },
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    pub dataset: String,
    pub date: String,
    pub usage_table: String,
    pub cost_table: String,
    pub schema: String,
    pub pricing_table: String,
}

pub struct CostProcessor(CostConfig);

impl ProcessorDef for CostProcessor {
    const PS_TYPE: &'static str = "openai.cost";
    type Config = CostConfig;

    fn build(config: CostConfig) -> Result<Self, String> {
        for t in [&config.usage_table, &config.cost_table, &config.pricing_table] {
            cloudact_core::warehouse::check_name(t).map_err(|e| e.to_string())?;
        }
        Ok(CostProcessor(config))
    }
}

fn tier_of(batch: Option<bool>, service_tier: Option<&str>) -> &'static str {
    match (batch, service_tier) {
        (Some(true), _) | (_, Some("batch")) => "batch",
        (_, Some("flex")) => "flex",
        (_, Some("priority")) => "priority",
        _ => "standard",
    }
}

#[async_trait]
impl Processor for CostProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let org = ctx.require_org()?;
        let day = parse_day(&c.date)?;
        let wh = ctx.warehouse();
        ensure_day_table(
            ctx,
            &c.dataset,
            &c.cost_table,
            &c.schema,
            "usage_date",
            &["org_slug", "model"],
        )
        .await?;
        let book = PriceBook::load(ctx, &c.dataset, &c.pricing_table, "openai", day).await?;
        let usage = wh
            .query(
                &c.dataset,
                &format!(
                    "SELECT * FROM {{{{{}}}}} WHERE org_slug = @org AND usage_date = @day",
                    c.usage_table
                ),
                &Params::new().with("org", org.as_str()).with("day", day),
            )
            .await?;
        let now = Utc::now();
        let (mut rows, mut unknown, mut total) = (Vec::with_capacity(usage.len()), 0u64, Decimal::ZERO);
        for u in usage {
            let model = u.string("model");
            let tier = tier_of(u.boolean("batch"), u.string("service_tier").as_deref());
            let uncached = u.int("uncached_input_tokens").unwrap_or(0);
            let cached = u.int("input_cached_tokens").unwrap_or(0);
            let writes = u.int("input_cache_write_tokens").unwrap_or(0);
            let output = u.int("output_tokens").unwrap_or(0);
            let matched = model.as_deref().and_then(|m| book.match_model(m)).cloned();
            let price = matched.as_ref().and_then(|m| book.price(m, tier));
            let mut row = Row::new()
                .with("org_slug", org.as_str())
                .with("usage_date", day)
                .with(
                    "usage_type",
                    u.string("usage_type").unwrap_or_else(|| "completions".into()),
                )
                .with("model", model.clone())
                .with("priced_model_id", matched.clone())
                .with("project_id", u.string("project_id"))
                .with("pricing_tier", tier)
                .with("num_model_requests", u.int("num_model_requests").unwrap_or(0))
                .with("uncached_input_tokens", uncached)
                .with("cached_input_tokens", cached)
                .with("cache_write_tokens", writes)
                .with("output_tokens", output)
                .with("currency", "USD")
                .with("run_id", ctx.run_id.as_str())
                .with("loaded_at", now);
            match price {
                Some(p) => {
                    let costs = [
                        per_million(uncached, p.input),
                        per_million(cached, p.cached.unwrap_or(p.input)),
                        per_million(writes, p.write_5m.unwrap_or(p.input)),
                        per_million(output, p.output),
                    ];
                    let sum: Decimal = costs.iter().sum();
                    total += sum;
                    row = row
                        .with("input_cost", costs[0])
                        .with("cached_input_cost", costs[1])
                        .with("cache_write_cost", costs[2])
                        .with("output_cost", costs[3])
                        .with("total_cost", sum)
                        .with("unknown_model", false);
                }
                None => {
                    unknown += 1;
                    row = row.with("total_cost", Value::Null).with("unknown_model", true);
                }
            }
            rows.push(row);
        }
        if unknown > 0 {
            tracing::warn!(unknown_models = unknown, date = %day, "OpenAI usage of models without a price: cost left null and flagged");
        }
        let outcome = ctx
            .load_day(&c.dataset, &c.cost_table, org, "usage_date", day, &rows)
            .await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({"table": c.cost_table, "date": c.date, "inserted": outcome.inserted,
                                       "unknown_models": unknown, "total_cost": total.to_string()}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_and_service_tiers_pick_the_pricing_tier() {
        assert_eq!(tier_of(Some(true), Some("default")), "batch");
        assert_eq!(tier_of(Some(false), Some("flex")), "flex");
        assert_eq!(tier_of(None, None), "standard");
    }
}
