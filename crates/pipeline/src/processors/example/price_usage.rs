//! `example.price_usage`: prices one day of the example usage with the org's pricing table
//! (the price effective on that day per model and tier; cached input falls back to the input
//! price when no cached price exists; a model without a price is flagged and its cost left
//! null — never 0), exact decimal arithmetic, replacing that day's cost rows.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{NaiveDate, Utc};
use cloudact_core::warehouse::{Params, Row, Value};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{ensure_table, parse_day};
use crate::{
    context::StepContext,
    processors::pricing::per_million,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceUsageConfig {
    pub dataset: String,
    pub date: String,
    pub usage_table: String,
    pub cost_table: String,
    pub schema: String,
    pub pricing_table: String,
}

pub struct PriceUsageProcessor(PriceUsageConfig);

impl ProcessorDef for PriceUsageProcessor {
    const PS_TYPE: &'static str = "example.price_usage";
    type Config = PriceUsageConfig;

    fn build(config: PriceUsageConfig) -> Result<Self, String> {
        for t in [&config.usage_table, &config.cost_table, &config.pricing_table] {
            cloudact_core::warehouse::check_name(t).map_err(|e| e.to_string())?;
        }
        Ok(PriceUsageProcessor(config))
    }
}

struct Price {
    effective: NaiveDate,
    input: Decimal,
    cached: Option<Decimal>,
    output: Decimal,
    currency: String,
}

#[async_trait]
impl Processor for PriceUsageProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let org = ctx.require_org()?;
        let day = parse_day(&c.date)?;
        let wh = ctx.warehouse();
        ensure_table(ctx, &c.dataset, &c.cost_table, &c.schema).await?;
        let price_rows = wh
            .query(
                &c.dataset,
                &format!(
                    "SELECT provider, model_id, pricing_tier, currency, input_price_per_1m, cached_input_price_per_1m, \
                     output_price_per_1m, effective_date FROM {{{{{}}}}} WHERE is_enabled = @enabled \
                     AND effective_date <= @day AND (end_date IS NULL OR end_date >= @day)",
                    c.pricing_table
                ),
                &Params::new().with("enabled", true).with("day", day),
            )
            .await?;
        let mut prices: HashMap<(String, String, String), Price> = HashMap::new();
        for r in price_rows {
            let (Some(provider), Some(model), Some(tier), Some(effective), Some(input), Some(output)) = (
                r.string("provider"),
                r.string("model_id"),
                r.string("pricing_tier"),
                r.date("effective_date"),
                r.numeric("input_price_per_1m"),
                r.numeric("output_price_per_1m"),
            ) else {
                continue;
            };
            let candidate = Price {
                effective,
                input,
                cached: r.numeric("cached_input_price_per_1m"),
                output,
                currency: r.string("currency").unwrap_or_else(|| "USD".into()),
            };
            let key = (provider, model, tier);
            if prices.get(&key).is_none_or(|p| p.effective < candidate.effective) {
                prices.insert(key, candidate);
            }
        }
        let usage = wh
            .query(
                &c.dataset,
                &format!(
                    "SELECT provider, model_id, project_id, pricing_tier, input_tokens, cached_input_tokens, output_tokens \
                     FROM {{{{{}}}}} WHERE org_slug = @org AND usage_date = @day ORDER BY provider, model_id, project_id, pricing_tier",
                    c.usage_table
                ),
                &Params::new().with("org", org.as_str()).with("day", day),
            )
            .await?;
        let now = Utc::now();
        let mut rows = Vec::with_capacity(usage.len());
        let mut unknown = 0u64;
        let mut total = Decimal::ZERO;
        for u in usage {
            let provider = u.string("provider").unwrap_or_default();
            let model = u.string("model_id").unwrap_or_default();
            let tier = u.string("pricing_tier").unwrap_or_else(|| "standard".into());
            let (input, cached, output) = (
                u.int("input_tokens").unwrap_or(0),
                u.int("cached_input_tokens").unwrap_or(0),
                u.int("output_tokens").unwrap_or(0),
            );
            let price = prices.get(&(provider.clone(), model.clone(), tier.clone()));
            let mut row = Row::new()
                .with("org_slug", org.as_str())
                .with("usage_date", day)
                .with("provider", provider.as_str())
                .with("model_id", model.as_str())
                .with("project_id", u.string("project_id"))
                .with("pricing_tier", tier.as_str())
                .with("input_tokens", input)
                .with("cached_input_tokens", cached)
                .with("output_tokens", output)
                .with("run_id", ctx.run_id.as_str())
                .with("loaded_at", now);
            match price {
                Some(p) => {
                    let (ic, cc, oc) = (
                        per_million(input, p.input),
                        per_million(cached, p.cached.unwrap_or(p.input)),
                        per_million(output, p.output),
                    );
                    total += ic + cc + oc;
                    row = row
                        .with("input_cost", ic)
                        .with("cached_input_cost", cc)
                        .with("output_cost", oc)
                        .with("total_cost", ic + cc + oc)
                        .with("currency", p.currency.as_str())
                        .with("unknown_model", false);
                }
                None => {
                    unknown += 1;
                    row = row
                        .with("input_cost", Value::Null)
                        .with("currency", "USD")
                        .with("unknown_model", true);
                }
            }
            rows.push(row);
        }
        if unknown > 0 {
            tracing::warn!(unknown_models = unknown, date = %day, "usage of models without a price: cost left null and flagged; add their prices");
        }
        let outcome = ctx
            .load_day(&c.dataset, &c.cost_table, org, "usage_date", day, &rows)
            .await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({
                "table": c.cost_table, "date": c.date, "inserted": outcome.inserted,
                "unknown_models": unknown, "total_cost": total.to_string(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Pricing is linear in tokens and never negative.
        #[test]
        fn pricing_is_linear_and_never_negative(a in 0i64..2_000_000_000, b in 0i64..2_000_000_000, cents in 0u32..100_000_000) {
            let price = Decimal::new(i64::from(cents), 4);
            let (ca, cb, cab) = (per_million(a, price), per_million(b, price), per_million(a + b, price));
            prop_assert!(ca >= Decimal::ZERO && cb >= Decimal::ZERO);
            // Linear up to the 9-decimal rounding of each term.
            prop_assert!((ca + cb - cab).abs() <= Decimal::new(2, 9));
            prop_assert_eq!(per_million(0, price), Decimal::ZERO);
        }
    }
}
