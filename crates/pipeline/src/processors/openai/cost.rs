//! `openai.cost`: prices one day of raw OpenAI usage with the org's prices effective that day.
//! Model match: exact `model_id`, else the longest priced id the reported model starts with
//! followed by `-` (dated snapshots: `gpt-4o-mini-2024-07-18` → `gpt-4o-mini`). Tier: batch
//! usage → `batch`, service tier `flex`/`priority`/`scale` → that tier, otherwise `standard`; a tier
//! without its own price uses the standard price. Kinds: uncached input × input price; cached ×
//! cached price (else input); cache writes × 5-minute write price (else input); output × output.
//! No price → `unknown_model` with null costs, never 0, and a run warning. Costs are exact
//! (NUMERIC on BigQuery, integer picodollars on SQLite), rounded half away from zero to 9
//! decimals per token kind; the total is the sum of the kinds.
//! Free tier (a price row's `free_tier_input_tokens` / `free_tier_output_tokens` per day, month
//! or once): the allowance left after the period's earlier days is taken off the day as one
//! `usage_type = 'free_tier'` row per price row with negative costs: free input tokens go to
//! uncached input first, then cache writes, then cached input, each at its own price.

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::warehouse::{FieldMode, FieldSchema, FieldType, Params, Row, Statement, TableDef};
use rust_decimal::Decimal;

use crate::{
    context::StepContext,
    processors::CostConfig,
    processors::{
        day::LoadDay,
        pricing::{free_tier_credit, FreeTierCredit, PriceBook, UsageSource},
    },
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

pub struct CostProcessor(CostConfig);

impl ProcessorDef for CostProcessor {
    const PS_TYPE: &'static str = "openai.cost";
    type Config = CostConfig;

    fn build(config: CostConfig) -> Result<Self, String> {
        config.checked().map(CostProcessor)
    }
}

fn tier_of(batch: Option<bool>, service_tier: Option<&str>) -> &'static str {
    match (batch, service_tier) {
        (Some(true), _) | (_, Some("batch")) => "batch",
        (_, Some("flex")) => "flex",
        (_, Some("priority")) => "priority",
        (_, Some("scale")) => "scale",
        _ => "standard",
    }
}

/// The tier of a usage row with `batch` and `service_tier` columns.
fn tier_of_row(r: &Row) -> &'static str {
    tier_of(r.boolean("batch"), r.string("service_tier").as_deref())
}

/// One usage shape of the day (model, batch, service tier) and the price it resolves to.
struct Resolved {
    model: Option<String>,
    batch: Option<bool>,
    service_tier: Option<String>,
    priced_model_id: Option<String>,
    tier: &'static str,
    prices: Option<[Decimal; 4]>,
}

/// Every input token of a usage row, as priced (uncached + cached + cache writes).
const INPUT_SQL: &str =
    "uncached_input_tokens + COALESCE(input_cached_tokens, 0) + COALESCE(input_cache_write_tokens, 0)";

/// The day's free-tier credit of one price row: a cost row of usage type `free_tier` with no
/// project and no tokens (the tokens stay on the usage rows) whose costs are the negated
/// credit per kind, so the day's sum is what is owed.
fn free_tier_statement(
    key: &(String, String),
    credit: &FreeTierCredit,
    cost_table: &str,
    params: &Params,
) -> Statement {
    // Input kinds in the order the credit was allocated: uncached, cache writes, cached.
    // 9 decimals, like every cost the pricing statement writes.
    let neg = |d: Decimal| {
        let mut n = -d.round_dp(9);
        n.rescale(9);
        n
    };
    let c = &credit.input_credit;
    let (uncached, write, cached) = (
        c.first().copied().unwrap_or_default(),
        c.get(1).copied().unwrap_or_default(),
        c.get(2).copied().unwrap_or_default(),
    );
    Statement::new(
        format!(
            "INSERT INTO {{{{{cost_table}}}}} (org_slug, usage_date, usage_type, model, priced_model_id, project_id, \
             pricing_tier, num_model_requests, uncached_input_tokens, cached_input_tokens, cache_write_tokens, \
             output_tokens, input_cost, cached_input_cost, cache_write_cost, output_cost, total_cost, currency, \
             unknown_model, run_id, loaded_at) VALUES (@org, @day, 'free_tier', @model, @model, NULL, @tier, 0, 0, 0, 0, \
             0, @input_cost, @cached_cost, @write_cost, @output_cost, @total_cost, 'USD', @unknown, @run_id, @loaded_at)"
        ),
        params
            .clone()
            .with("model", key.0.as_str())
            .with("tier", key.1.as_str())
            .with("input_cost", neg(uncached))
            .with("cached_cost", neg(cached))
            .with("write_cost", neg(write))
            .with("output_cost", neg(credit.output_credit))
            .with("total_cost", neg(credit.total()))
            .with("unknown", false),
    )
}

/// Whether the embedded warehouse's integer arithmetic holds for a day: the four kinds'
/// `tokens × price in micro-dollars per 1M`, summed, must stay within i64 (SQLite would turn an
/// overflow into an inexact float).
fn fits_integer_pricing(max_tokens: i64, max_price_micro: i64) -> bool {
    max_tokens
        .checked_mul(max_price_micro)
        .and_then(|x| x.checked_mul(4))
        .and_then(|x| x.checked_add(4 * 500))
        .is_some()
}

/// The pricing `INSERT … SELECT`. An inner query joins the day's usage to the price map; the
/// outer one computes `tokens × price / 1M` per token kind, exact and rounded half away from
/// zero to 9 decimals, and the total as their sum: on BigQuery in NUMERIC; on SQLite in integer
/// nano-dollars (computed once per kind in the inner query, which `OFFSET 0` keeps from being
/// flattened into the outer one) rendered as decimal text.
fn pricing_sql(bigquery: bool, cost: &str, usage: &str, map: &str, join: &str) -> String {
    const KINDS: [(&str, &str); 4] = [
        ("u.uncached_input_tokens", "input_price"),
        ("COALESCE(u.input_cached_tokens, 0)", "cached_price"),
        ("COALESCE(u.input_cache_write_tokens, 0)", "write_price"),
        ("u.output_tokens", "output_price"),
    ];
    let (prices, costs, no_flatten) = if bigquery {
        let prices: Vec<String> = KINDS
            .iter()
            .enumerate()
            .map(|(i, (_, price))| format!("p.{price} AS p{i}"))
            .collect();
        let terms: Vec<String> = (0..4)
            .map(|i| format!("ROUND(CAST(t{i} AS NUMERIC) * p{i} / 1000000, 9)"))
            .collect();
        let mut costs = terms.clone();
        costs.push(terms.join(" + "));
        (prices, costs, "")
    } else {
        let prices: Vec<String> = KINDS
            .iter()
            .enumerate()
            .map(|(i, (tokens, price))| format!("({tokens} * p.{price}_micro + 500) / 1000 AS n{i}"))
            .collect();
        let text = |n: &str| {
            format!("CASE WHEN {n} IS NULL THEN NULL ELSE printf('%d.%09d', {n} / 1000000000, {n} % 1000000000) END")
        };
        let mut costs: Vec<String> = (0..4).map(|i| text(&format!("n{i}"))).collect();
        costs.push(text("(n0 + n1 + n2 + n3)"));
        (prices, costs, " LIMIT -1 OFFSET 0")
    };
    let tokens: Vec<String> = KINDS
        .iter()
        .enumerate()
        .map(|(i, (tokens, _))| format!("{tokens} AS t{i}"))
        .collect();
    format!(
        "INSERT INTO {{{{{cost}}}}} (org_slug, usage_date, usage_type, model, priced_model_id, project_id, pricing_tier, \
         num_model_requests, uncached_input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, \
         input_cost, cached_input_cost, cache_write_cost, output_cost, total_cost, currency, unknown_model, run_id, loaded_at) \
         SELECT org_slug, usage_date, usage_type, model, priced_model_id, project_id, pricing_tier, num_model_requests, \
         t0, t1, t2, t3, {costs}, 'USD', priced_model_id IS NULL, @run_id, @loaded_at FROM (\
         SELECT u.org_slug, u.usage_date, COALESCE(u.usage_type, 'completions') AS usage_type, u.model, p.priced_model_id, \
         u.project_id, p.pricing_tier, u.num_model_requests, {tokens}, {prices} \
         FROM {{{{{usage}}}}} u JOIN {{{{{map}}}}} p ON {join} \
         WHERE u.org_slug = @org AND u.usage_date = @day{no_flatten}) AS priced",
        costs = costs.join(", "),
        tokens = tokens.join(", "),
        prices = prices.join(", "),
    )
}

/// A per-1M price in micro-dollars (exact when the price has at most 6 decimals).
fn micro(price: Decimal) -> Result<i64, ProcessorError> {
    let m = price * Decimal::from(1_000_000);
    if m.fract() != Decimal::ZERO || m < Decimal::ZERO {
        return Err(ProcessorError::Invalid(format!(
            "price {price} per 1M has more than 6 decimals or is negative"
        )));
    }
    i64::try_from(m).map_err(|_| ProcessorError::Invalid(format!("price {price} per 1M is too large")))
}

#[async_trait]
impl Processor for CostProcessor {
    /// Prices the day inside the warehouse: the day's distinct usage shapes are resolved to
    /// prices here (model matching, tier fallback), written to a small price map, and one
    /// `INSERT … SELECT` joining usage to it replaces the day's cost rows atomically. No usage
    /// row passes through this process, so memory does not grow with the day.
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let target = LoadDay::open(ctx, c.cost_day_table()).await?;
        let (org, day) = (&target.org, target.day);
        let wh = ctx.warehouse();
        let bigquery = wh.backend_name() == "bigquery";
        let source = UsageSource {
            usage_table: &c.usage_table,
            org,
            input_sql: INPUT_SQL,
            output_sql: "output_tokens",
            model_column: "model",
            tier_columns: &["batch", "service_tier"],
        };
        let book = PriceBook::load(ctx, &c.dataset, &c.pricing_table, "openai", day, Some(source)).await?;
        let day_params = Params::new().with("org", org.as_str()).with("day", day);
        let shapes = wh
            .query(
                &c.dataset,
                &format!(
                    "SELECT model, batch, service_tier, MAX(uncached_input_tokens) AS a, MAX(input_cached_tokens) AS b, \
                     MAX(input_cache_write_tokens) AS c, MAX(output_tokens) AS d, SUM(uncached_input_tokens) AS su, \
                     SUM(COALESCE(input_cached_tokens, 0)) AS sc, SUM(COALESCE(input_cache_write_tokens, 0)) AS sw, \
                     SUM(output_tokens) AS so FROM {{{{{}}}}} \
                     WHERE org_slug = @org AND usage_date = @day GROUP BY model, batch, service_tier",
                    c.usage_table
                ),
                &day_params,
            )
            .await?;
        let mut resolved = Vec::with_capacity(shapes.len());
        let mut max_tokens = 0i64;
        // The day's tokens per free-tier price row: [uncached, cache writes, cached, output],
        // and that row's prices of those kinds.
        let mut free_day: std::collections::BTreeMap<(String, String), ([i64; 4], [Decimal; 4])> =
            std::collections::BTreeMap::new();
        for s in &shapes {
            let model = s.string("model");
            let (batch, service_tier) = (s.boolean("batch"), s.string("service_tier"));
            for col in ["a", "b", "c", "d"] {
                max_tokens = max_tokens.max(s.int(col).unwrap_or(0));
            }
            let tier = tier_of(batch, service_tier.as_deref());
            if let Some((key, p)) = book
                .resolve(model.as_deref(), tier)
                .filter(|(_, p)| p.free_tier.is_some())
            {
                let prices = [
                    p.input,
                    p.write_5m.unwrap_or(p.input),
                    p.cached.unwrap_or(p.input),
                    p.output,
                ];
                let e = free_day.entry(key).or_insert(([0; 4], prices));
                for (i, col) in ["su", "sw", "sc", "so"].iter().enumerate() {
                    e.0[i] += s.int(col).unwrap_or(0);
                }
            }
            let matched = model.as_deref().and_then(|m| book.match_model(m)).cloned();
            let prices = matched.as_ref().and_then(|m| book.price(m, tier)).map(|p| {
                [
                    p.input,
                    p.cached.unwrap_or(p.input),
                    p.write_5m.unwrap_or(p.input),
                    p.output,
                ]
            });
            resolved.push(Resolved {
                model: model.clone(),
                batch,
                service_tier: service_tier.clone(),
                priced_model_id: matched.filter(|_| prices.is_some()),
                tier,
                prices,
            });
        }
        // SQLite prices in integers: each price in micro-dollars per 1M (exact), and the day's
        // largest counts must not overflow. BigQuery prices in NUMERIC as given.
        let mut max_price_micro = 0i64;
        if !bigquery {
            for p in resolved.iter().filter_map(|r| r.prices) {
                for price in p {
                    max_price_micro = max_price_micro.max(micro(price)?);
                }
            }
        }
        if !bigquery && !fits_integer_pricing(max_tokens, max_price_micro) {
            return Err(ProcessorError::Invalid(format!(
                "a usage row has {max_tokens} tokens in a day, beyond what the embedded warehouse prices exactly \
                 at these prices; use BigQuery"
            )));
        }
        // The price map: one row per usage shape of the day.
        let map_name = format!("{}__prices_{}", c.cost_table, day.format("%Y%m%d"));
        let field = |name: &str, t: FieldType| FieldSchema {
            name: name.into(),
            field_type: t,
            mode: FieldMode::Nullable,
            description: None,
            fields: Vec::new(),
        };
        let mut fields = vec![
            field("model", FieldType::String),
            field("batch", FieldType::Boolean),
            field("service_tier", FieldType::String),
            field("priced_model_id", FieldType::String),
            field("pricing_tier", FieldType::String),
        ];
        for k in PRICE_COLUMNS {
            fields.push(field(k, FieldType::Numeric));
            fields.push(field(&format!("{k}_micro"), FieldType::Integer));
        }
        let map_def = TableDef {
            name: map_name.clone(),
            description: Some("resolved prices of one day's usage shapes (dropped after use)".into()),
            fields,
            partition_field: None,
            // An index on the join key: each usage row finds its price in one lookup.
            clustering: vec!["model".to_string(), "batch".to_string(), "service_tier".to_string()],
            lookup_keys: Vec::new(),
        };
        wh.drop_table(&c.dataset, &map_name).await?;
        wh.create_table(&c.dataset, &map_def).await?;
        let mut map_rows = Vec::with_capacity(resolved.len());
        let mut unknown_shapes = 0;
        for r in &resolved {
            let mut row = Row::new()
                .with("model", r.model.clone())
                .with("batch", r.batch)
                .with("service_tier", r.service_tier.clone())
                .with("priced_model_id", r.priced_model_id.clone())
                .with("pricing_tier", r.tier);
            match r.prices {
                Some(prices) => {
                    for (k, p) in PRICE_COLUMNS.iter().zip(prices) {
                        row.set(k, p);
                        if !bigquery {
                            row.set(&format!("{k}_micro"), micro(p)?);
                        }
                    }
                }
                None => unknown_shapes += 1,
            }
            map_rows.push(row);
        }
        wh.insert_batch(&c.dataset, &map_name, map_rows).await?;
        // NULL-safe equality on the usage shape (SQLite's IS uses the index).
        let same = if bigquery { "IS NOT DISTINCT FROM" } else { "IS" };
        let join =
            format!("p.model {same} u.model AND p.batch {same} u.batch AND p.service_tier {same} u.service_tier");
        let insert = pricing_sql(bigquery, &c.cost_table, &c.usage_table, &map_name, &join);
        let params = day_params
            .clone()
            .with("run_id", ctx.run_id.as_str())
            .with("loaded_at", Utc::now());
        let mut statements = vec![
            Statement::new(
                format!(
                    "DELETE FROM {{{{{}}}}} WHERE org_slug = @org AND usage_date = @day",
                    c.cost_table
                ),
                day_params.clone(),
            ),
            Statement::new(insert, params.clone()),
        ];
        // Free tiers: one credit row per price row with free tokens left for the day, in the
        // same transaction as the day's cost rows.
        let (mut free_input, mut free_output, mut free_credit) = (0i64, 0i64, Decimal::ZERO);
        if !free_day.is_empty() {
            let used = book
                .free_tier_used_before(ctx, &c.dataset, &source, day, tier_of_row)
                .await?;
            for (key, (tokens, prices)) in &free_day {
                let Some(free) = book.price(&key.0, &key.1).and_then(|p| p.free_tier) else {
                    continue;
                };
                let inputs = [(tokens[0], prices[0]), (tokens[1], prices[1]), (tokens[2], prices[2])];
                let before = used.get(key).copied().unwrap_or((0, 0));
                if let Some(credit) = free_tier_credit(&free, before, &inputs, (tokens[3], prices[3])) {
                    free_input += credit.free_input_tokens();
                    free_output += credit.output_tokens;
                    free_credit += credit.total();
                    statements.push(free_tier_statement(key, &credit, &c.cost_table, &params));
                }
            }
        }
        let counts = wh.execute_atomic(&c.dataset, &statements).await?;
        let inserted = counts.iter().skip(1).sum::<u64>();
        ctx.add_rows(inserted);
        metrics::counter!("pipeline_rows_loaded_total", "table" => c.cost_table.clone()).increment(inserted);
        if let Err(e) = wh.drop_table(&c.dataset, &map_name).await {
            tracing::warn!(table = %map_name, error = %e, "price map not dropped; the next pricing of the day drops it");
        }
        let summary = wh
            .query(
                &c.dataset,
                &format!(
                    "SELECT {total} AS total, SUM(CASE WHEN unknown_model THEN 1 ELSE 0 END) AS unknown \
                     FROM {{{{{}}}}} WHERE org_slug = @org AND usage_date = @day",
                    c.cost_table,
                    total = wh.exact_sum("total_cost"),
                ),
                &day_params,
            )
            .await?;
        let unknown = summary.first().and_then(|r| r.int("unknown")).unwrap_or(0);
        if unknown > 0 {
            tracing::warn!(unknown_models = unknown, shapes = unknown_shapes, date = %day,
                "OpenAI usage of models without a price: cost left null and flagged");
        }
        let total = summary
            .first()
            .and_then(|r| r.numeric("total"))
            .unwrap_or(Decimal::ZERO);
        Ok(StepOutput {
            rows_processed: inserted,
            output: serde_json::json!({"table": c.cost_table, "date": c.date, "inserted": inserted,
                                       "unknown_models": unknown, "total_cost": total.round_dp(9).to_string(),
                                       "free_tier_input_tokens": free_input, "free_tier_output_tokens": free_output,
                                       "free_tier_credit": free_credit.round_dp(9).to_string()}),
        })
    }
}

const PRICE_COLUMNS: [&str; 4] = ["input_price", "cached_price", "write_price", "output_price"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_pricing_refuses_what_would_overflow() {
        assert!(fits_integer_pricing(10_000_000_000, 60_000_000));
        assert!(!fits_integer_pricing(50_000_000_000, 600_000_000), "o1-pro-like prices");
        assert!(fits_integer_pricing(i64::MAX, 0));
    }

    #[test]
    fn prices_convert_to_exact_micro_dollars() {
        assert_eq!(micro("2.5".parse().unwrap()).unwrap(), 2_500_000);
        assert_eq!(micro("0.075".parse().unwrap()).unwrap(), 75_000);
        assert!(micro("0.0000001".parse().unwrap()).is_err());
    }

    #[test]
    fn batch_and_service_tiers_pick_the_pricing_tier() {
        assert_eq!(tier_of(Some(true), Some("default")), "batch");
        assert_eq!(tier_of(Some(false), Some("flex")), "flex");
        assert_eq!(tier_of(Some(false), Some("scale")), "scale");
        assert_eq!(tier_of(None, None), "standard");
    }
}
