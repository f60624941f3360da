//! `anthropic.cost`: prices one day of Anthropic usage with the org's prices effective that day.
//! Tier from `service_tier` (batch, priority, flex; else standard; a tier without its own price
//! uses the standard one) and `context_window`: a window above 200k is priced at the tier's
//! long-context rates (`{tier}_long_context`, else `long_context`; never the short-context
//! price, so a model without long-context rates is flagged unknown). Kinds: uncached × input; 5-minute writes × 5-minute write price (else
//! input); 1-hour writes × 1-hour price (else 5-minute, else input); cache reads × cached price
//! (else input); output × output. No price → `unknown_model`, null cost, a run warning.
//! Free tier: the allowance left after the period's earlier days is taken off the day as one
//! `charge_type = 'free_tier'` row per price row with negative costs; free input tokens go to
//! uncached input first, then 5-minute and 1-hour cache writes, then cache reads.

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::warehouse::{Params, Row, Value};
use rust_decimal::Decimal;

use std::collections::BTreeMap;

use crate::{
    context::StepContext,
    processors::CostConfig,
    processors::{
        day::LoadDay,
        pricing::{free_tier_credit, per_million, PriceBook, UsageSource},
    },
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

pub struct CostProcessor(CostConfig);

/// The pricing tier of a usage row's `service_tier` and `context_window`: usage with a context
/// window above 200k tokens is priced at the tier's long-context rates.
fn tier_of_row(u: &Row) -> &'static str {
    let long = u
        .string("context_window")
        .is_some_and(|w| w != "0-200k" && !w.is_empty());
    match (u.string("service_tier").as_deref(), long) {
        (Some("batch"), false) => "batch",
        (Some("batch"), true) => "batch_long_context",
        (Some("priority") | Some("priority_on_demand"), false) => "priority",
        (Some("priority") | Some("priority_on_demand"), true) => "priority_long_context",
        (Some("flex") | Some("flex_discount"), false) => "flex",
        (Some("flex") | Some("flex_discount"), true) => "flex_long_context",
        (_, false) => "standard",
        (_, true) => "long_context",
    }
}

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
        let source = UsageSource {
            usage_table: &c.usage_table,
            org,
            input_sql: "uncached_input_tokens + cache_creation_5m_input_tokens + cache_creation_1h_input_tokens \
                        + cache_read_input_tokens",
            output_sql: "output_tokens",
            model_column: "model",
            tier_columns: &["service_tier"],
        };
        let book = PriceBook::load(ctx, &c.dataset, &c.pricing_table, "anthropic", day, Some(source)).await?;
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
        // The day's tokens per free-tier price row ([uncached, 5m writes, 1h writes, reads,
        // output]) and that row's prices of those kinds.
        let mut free_day: BTreeMap<(String, String), ([i64; 5], [Decimal; 5])> = BTreeMap::new();
        for u in usage {
            let model = u.string("model");
            let tier = tier_of_row(&u);
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
                .with("charge_type", "usage")
                .with("uncached_input_tokens", uncached)
                .with("cache_write_5m_tokens", w5)
                .with("cache_write_1h_tokens", w1)
                .with("cache_read_tokens", reads)
                .with("output_tokens", output)
                .with("web_search_requests", searches)
                .with("currency", "USD")
                .with("run_id", ctx.run_id.as_str())
                .with("loaded_at", now);
            if let Some((key, p)) = book
                .resolve(model.as_deref(), tier)
                .filter(|(_, p)| p.free_tier.is_some())
            {
                let write_5m = p.write_5m.unwrap_or(p.input);
                let prices = [
                    p.input,
                    write_5m,
                    p.write_1h.unwrap_or(write_5m),
                    p.cached.unwrap_or(p.input),
                    p.output,
                ];
                let e = free_day.entry(key).or_insert(([0; 5], prices));
                for (sum, n) in e.0.iter_mut().zip([uncached, w5, w1, reads, output]) {
                    *sum += n;
                }
            }
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
        // Free tiers: one credit row per price row with free tokens left for the day.
        let (mut free_input, mut free_output, mut free_credit) = (0i64, 0i64, Decimal::ZERO);
        if !free_day.is_empty() {
            let used = book
                .free_tier_used_before(ctx, &c.dataset, &source, day, tier_of_row)
                .await?;
            for (key, (tokens, prices)) in &free_day {
                let Some(free) = book.price(&key.0, &key.1).and_then(|p| p.free_tier) else {
                    continue;
                };
                let inputs: Vec<(i64, Decimal)> =
                    tokens[..4].iter().copied().zip(prices[..4].iter().copied()).collect();
                let before = used.get(key).copied().unwrap_or((0, 0));
                let Some(credit) = free_tier_credit(&free, before, &inputs, (tokens[4], prices[4])) else {
                    continue;
                };
                free_input += credit.free_input_tokens();
                free_output += credit.output_tokens;
                free_credit += credit.total();
                total -= credit.total();
                let kind = |i: usize| -credit.input_credit.get(i).copied().unwrap_or_default();
                rows.push(
                    Row::new()
                        .with("org_slug", org.as_str())
                        .with("usage_date", day)
                        .with("model", key.0.as_str())
                        .with("priced_model_id", key.0.as_str())
                        .with("pricing_tier", key.1.as_str())
                        .with("charge_type", "free_tier")
                        .with("uncached_input_tokens", 0i64)
                        .with("cache_write_5m_tokens", 0i64)
                        .with("cache_write_1h_tokens", 0i64)
                        .with("cache_read_tokens", 0i64)
                        .with("output_tokens", 0i64)
                        .with("web_search_requests", 0i64)
                        .with("input_cost", kind(0))
                        .with("cache_write_5m_cost", kind(1))
                        .with("cache_write_1h_cost", kind(2))
                        .with("cache_read_cost", kind(3))
                        .with("output_cost", -credit.output_credit)
                        .with("web_search_cost", Decimal::ZERO)
                        .with("total_cost", -credit.total())
                        .with("currency", "USD")
                        .with("unknown_model", false)
                        .with("run_id", ctx.run_id.as_str())
                        .with("loaded_at", now),
                );
            }
        }
        if unknown > 0 {
            tracing::warn!(unknown_models = unknown, date = %day, "Anthropic usage of models without a price: cost left null and flagged");
        }
        let outcome = target.replace(ctx, &rows).await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({"table": c.cost_table, "date": c.date, "inserted": outcome.inserted,
                                       "unknown_models": unknown, "total_cost": total.to_string(),
                                       "free_tier_input_tokens": free_input, "free_tier_output_tokens": free_output,
                                       "free_tier_credit": free_credit.to_string()}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_context_usage_picks_the_long_context_tier() {
        let row = |tier: Option<&str>, window: Option<&str>| {
            Row::new().with("service_tier", tier).with("context_window", window)
        };
        assert_eq!(tier_of_row(&row(Some("standard"), Some("0-200k"))), "standard");
        assert_eq!(tier_of_row(&row(Some("standard"), Some("200k-1M"))), "long_context");
        assert_eq!(tier_of_row(&row(Some("batch"), Some("200k-1M"))), "batch_long_context");
        assert_eq!(tier_of_row(&row(Some("priority"), None)), "priority");
        assert_eq!(tier_of_row(&row(None, None)), "standard");
    }
}
