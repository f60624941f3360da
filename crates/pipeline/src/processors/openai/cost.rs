//! `openai.cost`: prices one day of raw OpenAI usage with the org's prices effective that day.
//! Model match: exact `model_id`, else the longest priced id the reported model starts with
//! followed by `-` (dated snapshots: `gpt-4o-mini-2024-07-18` → `gpt-4o-mini`). Tier: batch
//! usage → `batch`, service tier `flex`/`priority` → that tier, otherwise `standard`; a tier
//! without its own price uses the standard price. Kinds: uncached input × input price; cached ×
//! cached price (else input); cache writes × 5-minute write price (else input); output × output.
//! No price → `unknown_model` with null costs, never 0, and a run warning.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{NaiveDate, Utc};
use cloudact_core::warehouse::{Params, PartitionKey, Row, Value};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::{
    context::StepContext,
    processors::example::{ensure_day_table, parse_day, price_usage::per_million},
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

#[derive(Clone)]
struct Price {
    effective: NaiveDate,
    input: Decimal,
    cached: Option<Decimal>,
    write_5m: Option<Decimal>,
    output: Decimal,
}

/// The priced model id a reported model maps to.
fn match_model<'a>(model: &str, priced: &'a [String]) -> Option<&'a String> {
    priced.iter().find(|p| p.as_str() == model).or_else(|| {
        priced
            .iter()
            .filter(|p| model.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('-')))
            .max_by_key(|p| p.len())
    })
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
        let org = ctx
            .org_slug
            .clone()
            .ok_or_else(|| ProcessorError::Invalid("this pipeline needs an org".into()))?;
        let day = parse_day(&c.date)?;
        let wh = ctx.warehouse();
        ensure_day_table(ctx, &c.dataset, &c.cost_table, &c.schema, &["org_slug", "model"]).await?;
        let price_rows = wh
            .query(
                &c.dataset,
                &format!(
                    "SELECT model_id, pricing_tier, input_price_per_1m, cached_input_price_per_1m, cache_write_5m_price_per_1m, \
                     output_price_per_1m, effective_date FROM {{{{{}}}}} WHERE provider = @provider AND is_enabled = @enabled \
                     AND effective_date <= @day AND (end_date IS NULL OR end_date >= @day)",
                    c.pricing_table
                ),
                &Params::new().with("provider", "openai").with("enabled", true).with("day", day),
            )
            .await?;
        let mut prices: HashMap<(String, String), Price> = HashMap::new();
        for r in price_rows {
            let (Some(model), Some(tier), Some(effective), Some(input), Some(output)) = (
                r.string("model_id"),
                r.string("pricing_tier"),
                r.date("effective_date"),
                r.numeric("input_price_per_1m"),
                r.numeric("output_price_per_1m"),
            ) else {
                continue;
            };
            let p = Price {
                effective,
                input,
                cached: r.numeric("cached_input_price_per_1m"),
                write_5m: r.numeric("cache_write_5m_price_per_1m"),
                output,
            };
            let k = (model, tier);
            if prices.get(&k).is_none_or(|old| old.effective < p.effective) {
                prices.insert(k, p);
            }
        }
        let mut priced_ids: Vec<String> = prices.keys().map(|(m, _)| m.clone()).collect();
        priced_ids.sort();
        priced_ids.dedup();
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
            let matched = model.as_deref().and_then(|m| match_model(m, &priced_ids)).cloned();
            let price = matched.as_ref().and_then(|m| {
                prices
                    .get(&(m.clone(), tier.to_string()))
                    .or_else(|| prices.get(&(m.clone(), "standard".to_string())))
            });
            let mut row = Row::new()
                .with("org_slug", org.as_str())
                .with("usage_date", day)
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
        let key = PartitionKey {
            org_column: "org_slug".into(),
            org_slug: org,
            date_column: "usage_date".into(),
            date: day,
        };
        let outcome = wh.replace_partition(&c.dataset, &c.cost_table, &key, &rows).await?;
        ctx.add_rows(outcome.inserted);
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
    fn dated_snapshots_match_the_longest_priced_id() {
        let priced = vec!["gpt-4o".to_string(), "gpt-4o-mini".to_string(), "o3-mini".to_string()];
        assert_eq!(
            match_model("gpt-4o-2024-08-06", &priced).map(String::as_str),
            Some("gpt-4o")
        );
        assert_eq!(
            match_model("gpt-4o-mini-2024-07-18", &priced).map(String::as_str),
            Some("gpt-4o-mini")
        );
        assert_eq!(match_model("gpt-4o", &priced).map(String::as_str), Some("gpt-4o"));
        assert_eq!(match_model("gpt-4oz", &priced), None);
        assert_eq!(tier_of(Some(true), Some("default")), "batch");
        assert_eq!(tier_of(Some(false), Some("flex")), "flex");
        assert_eq!(tier_of(None, None), "standard");
    }
}
