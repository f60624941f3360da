//! Price lookup shared by the cost processors: the org's prices effective on a day, by
//! provider, model and tier.

use std::collections::HashMap;

use chrono::NaiveDate;
use cloudact_core::warehouse::Params;
use rust_decimal::Decimal;

use crate::{context::StepContext, registry::ProcessorError};

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

/// The prices of one provider effective on one day.
pub struct PriceBook {
    prices: HashMap<(String, String), Price>,
    ids: Vec<String>,
}

impl PriceBook {
    /// Loads the enabled prices of `provider` effective on `day` (latest effective date wins).
    pub async fn load(
        ctx: &StepContext,
        dataset: &str,
        table: &str,
        provider: &str,
        day: NaiveDate,
    ) -> Result<Self, ProcessorError> {
        let rows = ctx
            .warehouse()
            .query(
                dataset,
                &format!(
                    "SELECT model_id, pricing_tier, input_price_per_1m, cached_input_price_per_1m, cache_write_5m_price_per_1m, \
                     cache_write_1h_price_per_1m, output_price_per_1m, web_search_price_per_1k, effective_date FROM {{{{{table}}}}} \
                     WHERE provider = @provider AND is_enabled = @enabled AND effective_date <= @day \
                     AND (end_date IS NULL OR end_date >= @day)"
                ),
                &Params::new().with("provider", provider).with("enabled", true).with("day", day),
            )
            .await?;
        let mut prices: HashMap<(String, String), Price> = HashMap::new();
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
            let k = (model, tier);
            if prices.get(&k).is_none_or(|old| old.effective < p.effective) {
                prices.insert(k, p);
            }
        }
        let mut ids: Vec<String> = prices.keys().map(|(m, _)| m.clone()).collect();
        ids.sort();
        ids.dedup();
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
