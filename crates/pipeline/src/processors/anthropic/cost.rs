//! `anthropic.cost`: prices one day of Anthropic usage with the org's prices effective that day.
//! Tier from `service_tier` (batch, priority, flex; else standard; a tier without its own price
//! uses the standard one). Kinds: uncached × input; 5-minute writes × 5-minute write price (else
//! input); 1-hour writes × 1-hour price (else 5-minute, else input); cache reads × cached price
//! (else input); output × output. No price → `unknown_model`, null cost, a run warning.

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::warehouse::{Params, Row, Value};
use rust_decimal::Decimal;

use crate::{
    context::StepContext,
    processors::CostConfig,
    processors::{
        day::LoadDay,
        example::price_usage::per_million,
        pricing::{MonthVolume, PriceBook},
    },
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

pub struct CostProcessor(CostConfig);

impl ProcessorDef for CostProcessor {
    const PS_TYPE: &'static str = "anthropic.cost";
    type Config = CostConfig;

    fn build(config: CostConfig) -> Result<Self, String> {
        config.checked().map(CostProcessor)
    }
}

#[async_trait]
impl Processor for CostProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let target = LoadDay::open(ctx, c.cost_day_table()).await?;
        let (org, day) = (&target.org, target.day);
        let wh = ctx.warehouse();
        let volume = MonthVolume {
            usage_table: &c.usage_table,
            org,
            tokens_sql: "uncached_input_tokens + cache_creation_5m_input_tokens + cache_creation_1h_input_tokens \
                         + cache_read_input_tokens + output_tokens",
            model_column: "model",
        };
        let book = PriceBook::load(ctx, &c.dataset, &c.pricing_table, "anthropic", day, Some(volume)).await?;
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
            let tier = match u.string("service_tier").as_deref() {
                Some("batch") => "batch",
                Some("priority") | Some("priority_on_demand") => "priority",
                Some("flex") | Some("flex_discount") => "flex",
                _ => "standard",
            };
            let tokens = |c: &str| u.int(c).unwrap_or(0);
            let (uncached, w5, w1, reads, output) = (
                tokens("uncached_input_tokens"),
                tokens("cache_creation_5m_input_tokens"),
                tokens("cache_creation_1h_input_tokens"),
                tokens("cache_read_input_tokens"),
                tokens("output_tokens"),
            );
            let searches = u.int("web_search_requests").unwrap_or(0);
            let matched = model.as_deref().and_then(|m| book.match_model(m)).cloned();
            let price = matched.as_ref().and_then(|m| book.price(m, tier));
            let mut row = Row::new()
                .with("org_slug", org.as_str())
                .with("usage_date", day)
                .with("model", model.clone())
                .with("priced_model_id", matched.clone())
                .with("pricing_tier", tier)
                .with("workspace_id", u.string("workspace_id"))
                .with("uncached_input_tokens", uncached)
                .with("cache_write_5m_tokens", w5)
                .with("cache_write_1h_tokens", w1)
                .with("cache_read_tokens", reads)
                .with("output_tokens", output)
                .with("web_search_requests", searches)
                .with("currency", "USD")
                .with("run_id", ctx.run_id.as_str())
                .with("loaded_at", now);
            match price {
                Some(p) => {
                    let write_5m = p.write_5m.unwrap_or(p.input);
                    let costs = [
                        per_million(uncached, p.input),
                        per_million(w5, write_5m),
                        per_million(w1, p.write_1h.unwrap_or(write_5m)),
                        per_million(reads, p.cached.unwrap_or(p.input)),
                        per_million(output, p.output),
                    ];
                    // Web search is priced per 1 000 requests; without a price its cost is
                    // unknown (null) rather than 0.
                    let search_cost = match p.web_search_per_1k {
                        Some(per_1k) => Some(
                            (Decimal::from(searches) * per_1k / Decimal::from(1000))
                                .round_dp_with_strategy(9, rust_decimal::RoundingStrategy::MidpointAwayFromZero),
                        ),
                        None if searches == 0 => Some(Decimal::ZERO),
                        None => {
                            tracing::warn!(model = ?model, searches, "web search without a price: its cost is left null");
                            None
                        }
                    };
                    let sum: Decimal = costs.iter().sum::<Decimal>() + search_cost.unwrap_or(Decimal::ZERO);
                    total += sum;
                    row = row
                        .with("web_search_cost", search_cost)
                        .with("input_cost", costs[0])
                        .with("cache_write_5m_cost", costs[1])
                        .with("cache_write_1h_cost", costs[2])
                        .with("cache_read_cost", costs[3])
                        .with("output_cost", costs[4])
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
            tracing::warn!(unknown_models = unknown, date = %day, "Anthropic usage of models without a price: cost left null and flagged");
        }
        let outcome = target.replace(ctx, &rows).await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({"table": c.cost_table, "date": c.date, "inserted": outcome.inserted,
                                       "unknown_models": unknown, "total_cost": total.to_string()}),
        })
    }
}
