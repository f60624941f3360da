//! Price lookup shared by the cost processors: the org's prices effective on a day, by
//! provider, model and tier.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use cloudact_core::warehouse::Params;
use rust_decimal::Decimal;

use crate::{context::StepContext, registry::ProcessorError};

/// Where a cost processor's month-to-date token volume of a model comes from (for prices
/// with a `volume_threshold_tokens`): its raw usage table, the org, and the SQL sum of a
/// usage row's tokens.
#[derive(Debug, Clone, Copy)]
pub struct MonthVolume<'a> {
    pub usage_table: &'a str,
    pub org: &'a str,
    /// A SQL expression over one usage row (e.g. `input_tokens + output_tokens`).
    pub tokens_sql: &'a str,
    /// The usage table's model column.
    pub model_column: &'a str,
}

/// The terms of a price row that change what it costs, as stored.
#[derive(Debug, Clone, Default)]
struct Terms {
    discount_percentage: Option<Decimal>,
    volume_threshold_tokens: Option<i64>,
    base_input: Option<Decimal>,
    base_output: Option<Decimal>,
}

/// Per-1M prices of one model and tier.
#[derive(Debug, Clone)]
pub struct Price {
    pub effective: NaiveDate,
    pub input: Decimal,
    pub cached: Option<Decimal>,
    pub write_5m: Option<Decimal>,
    pub write_1h: Option<Decimal>,
    pub output: Decimal,
    /// USD per 1 000 web-search requests.
    pub web_search_per_1k: Option<Decimal>,
}

impl Price {
    /// Applies the row's terms for the day: below its volume threshold (month-to-date tokens
    /// of the model, this day included) the base input and output prices apply, undiscounted
    /// (the row's own prices and discount are what the volume earns; cached, cache-write and
    /// web-search prices have no base form and keep the row's); otherwise the row's prices less
    /// its discount percentage, on every price of the row, rounded to 6 decimals per 1M.
    fn with_terms(mut self, terms: &Terms, month_tokens: Option<i64>) -> Price {
        if let (Some(threshold), Some(volume)) = (terms.volume_threshold_tokens, month_tokens) {
            if volume < threshold {
                self.input = terms.base_input.unwrap_or(self.input);
                self.output = terms.base_output.unwrap_or(self.output);
                return self;
            }
        }
        if let Some(d) = terms.discount_percentage.filter(|d| !d.is_zero()) {
            let keep = (Decimal::from(100) - d) / Decimal::from(100);
            // Rounded (half away from zero) to 6 decimals per 1M tokens — a millionth of a
            // dollar per million tokens — the scale every price of the cost path takes.
            let off = |p: Decimal| {
                (p * keep)
                    .round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
                    .normalize()
            };
            self.input = off(self.input);
            self.output = off(self.output);
            self.cached = self.cached.map(off);
            self.write_5m = self.write_5m.map(off);
            self.write_1h = self.write_1h.map(off);
            self.web_search_per_1k = self.web_search_per_1k.map(off);
        }
        self
    }
}

/// The prices of one provider effective on one day.
pub struct PriceBook {
    prices: HashMap<(String, String), Price>,
    ids: Vec<String>,
}

impl PriceBook {
    /// Loads the enabled prices of `provider` effective on `day` (latest effective date wins),
    /// with each row's terms applied ([`Price::with_terms`]); `volume` is where month-to-date
    /// volumes come from when a row has a threshold.
    pub async fn load(
        ctx: &StepContext,
        dataset: &str,
        table: &str,
        provider: &str,
        day: NaiveDate,
        volume: Option<MonthVolume<'_>>,
    ) -> Result<Self, ProcessorError> {
        let rows = ctx
            .warehouse()
            .query(
                dataset,
                &format!(
                    // `*`: a table made before the pricing terms existed has no term columns, and
                    // reads them as absent (no terms) instead of failing.
                    "SELECT * FROM {{{{{table}}}}} \
                     WHERE provider = @provider AND is_enabled = @enabled AND effective_date <= @day \
                     AND (end_date IS NULL OR end_date >= @day)"
                ),
                &Params::new()
                    .with("provider", provider)
                    .with("enabled", true)
                    .with("day", day),
            )
            .await?;
        let mut prices: HashMap<(String, String), (Price, Terms)> = HashMap::new();
        for r in rows {
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
                write_1h: r.numeric("cache_write_1h_price_per_1m"),
                output,
                web_search_per_1k: r.numeric("web_search_price_per_1k"),
            };
            let terms = Terms {
                discount_percentage: r.numeric("discount_percentage"),
                volume_threshold_tokens: r.int("volume_threshold_tokens"),
                base_input: r.numeric("base_input_price_per_1m"),
                base_output: r.numeric("base_output_price_per_1m"),
            };
            let k = (model, tier);
            if prices.get(&k).is_none_or(|(old, _)| old.effective < p.effective) {
                prices.insert(k, (p, terms));
            }
        }
        let mut ids: Vec<String> = prices.keys().map(|(m, _)| m.clone()).collect();
        ids.sort();
        ids.dedup();
        // Month-to-date volume per priced model, only when some row has a threshold.
        let mut month: HashMap<String, i64> = HashMap::new();
        if let Some(v) = volume.filter(|_| prices.values().any(|(_, t)| t.volume_threshold_tokens.is_some())) {
            let month_start = day.with_day(1).unwrap_or(day);
            let rows = ctx
                .warehouse()
                .query(
                    dataset,
                    &format!(
                        "SELECT {m} AS model, SUM({t}) AS n FROM {{{{{u}}}}} WHERE org_slug = @org \
                         AND usage_date >= @from AND usage_date <= @day GROUP BY {m}",
                        m = v.model_column,
                        t = v.tokens_sql,
                        u = v.usage_table
                    ),
                    &Params::new()
                        .with("org", v.org)
                        .with("from", month_start)
                        .with("day", day),
                )
                .await?;
            for r in rows {
                if let (Some(model), Some(n)) = (r.string("model"), r.int("n")) {
                    if let Some(id) = match_model(&model, &ids) {
                        *month.entry(id.clone()).or_default() += n;
                    }
                }
            }
        }
        let prices = prices
            .into_iter()
            .map(|((model, tier), (p, terms))| {
                let volume = terms
                    .volume_threshold_tokens
                    .map(|_| month.get(&model).copied().unwrap_or(0));
                ((model, tier), p.with_terms(&terms, volume))
            })
            .collect();
        Ok(PriceBook { prices, ids })
    }

    /// The priced model id a reported model maps to: exact, else the longest priced id the
    /// model starts with followed by `-` (dated snapshots).
    pub fn match_model(&self, model: &str) -> Option<&String> {
        match_model(model, &self.ids)
    }

    /// The price of a matched model in a tier, falling back to its standard price.
    pub fn price(&self, model_id: &str, tier: &str) -> Option<&Price> {
        self.prices
            .get(&(model_id.to_string(), tier.to_string()))
            .or_else(|| self.prices.get(&(model_id.to_string(), "standard".to_string())))
    }
}

pub fn match_model<'a>(model: &str, priced: &'a [String]) -> Option<&'a String> {
    priced.iter().find(|p| p.as_str() == model).or_else(|| {
        priced
            .iter()
            .filter(|p| model.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('-')))
            .max_by_key(|p| p.len())
    })
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
    }
}
