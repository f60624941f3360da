//! Price lookup shared by the cost processors: the org's prices effective on a day, by
//! provider, model and tier.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use cloudact_core::warehouse::{Params, Row};
use rust_decimal::Decimal;

use crate::{context::StepContext, registry::ProcessorError};

/// Where a cost processor's raw usage lives, for the terms that depend on more than one day
/// (a `volume_threshold_tokens` counts the month to date; a monthly or one-time free tier
/// counts the period before the day): the usage table, the org, and SQL over one usage row.
#[derive(Debug, Clone, Copy)]
pub struct UsageSource<'a> {
    pub usage_table: &'a str,
    pub org: &'a str,
    /// The input tokens of a usage row, every kind (e.g. `uncached_input_tokens + …`).
    pub input_sql: &'a str,
    /// The output tokens of a usage row.
    pub output_sql: &'a str,
    /// The usage table's model column.
    pub model_column: &'a str,
    /// The columns besides the model that pick a row's pricing tier (e.g. `batch, service_tier`).
    pub tier_columns: &'a [&'a str],
}

/// When a free-tier allowance starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeTierReset {
    /// Every day.
    Daily,
    /// On the first of every calendar month.
    Monthly,
    /// Never: one allowance from the price row's effective date.
    Never,
}

/// Tokens a price row gives free per period (`free_tier_input_tokens`,
/// `free_tier_output_tokens`, `free_tier_reset_frequency`; a row with a count but no frequency
/// resets monthly, the usual provider free tier).
#[derive(Debug, Clone, Copy)]
pub struct FreeTier {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub reset: FreeTierReset,
}

impl FreeTier {
    /// The first day of the period `day` is in, for a row effective from `effective`.
    pub fn period_start(&self, day: NaiveDate, effective: NaiveDate) -> NaiveDate {
        match self.reset {
            FreeTierReset::Daily => day,
            FreeTierReset::Monthly => day.with_day(1).unwrap_or(day),
            FreeTierReset::Never => effective,
        }
    }
}

/// Cost of `tokens` at `price` per 1M tokens, exact, rounded half away from zero to 9 decimal
/// places (NUMERIC).
pub fn per_million(tokens: i64, price: Decimal) -> Decimal {
    (Decimal::from(tokens) * price / Decimal::from(1_000_000))
        .round_dp_with_strategy(9, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

/// The free part of one price row's usage on one day: the free tokens of each kind (input kinds
/// in the order given, then output) and what they would have cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeTierCredit {
    pub input_tokens: Vec<i64>,
    pub input_credit: Vec<Decimal>,
    pub output_tokens: i64,
    pub output_credit: Decimal,
}

impl FreeTierCredit {
    /// The whole credit (positive: what the free tokens would have cost).
    pub fn total(&self) -> Decimal {
        self.input_credit.iter().sum::<Decimal>() + self.output_credit
    }

    pub fn free_input_tokens(&self) -> i64 {
        self.input_tokens.iter().sum()
    }
}

/// What a free tier takes off one price row's usage of a day. The allowance left is the
/// period's allowance less the tokens of the period's earlier days (`used_before`: input,
/// output). Free input tokens go to the day's input kinds in the order given (each kind
/// `(tokens, price per 1M)`; callers give the full-price kinds first) and free output tokens
/// to the output; each kind's credit is `per_million(free tokens, its price)`. `None` when
/// nothing of the day is free.
pub fn free_tier_credit(
    free: &FreeTier,
    used_before: (i64, i64),
    input_kinds: &[(i64, Decimal)],
    output: (i64, Decimal),
) -> Option<FreeTierCredit> {
    let mut input_left = (free.input_tokens - used_before.0).max(0);
    let mut input_tokens = Vec::with_capacity(input_kinds.len());
    let mut input_credit = Vec::with_capacity(input_kinds.len());
    for &(tokens, price) in input_kinds {
        let take = tokens.max(0).min(input_left);
        input_left -= take;
        input_tokens.push(take);
        input_credit.push(per_million(take, price));
    }
    let output_tokens = output.0.max(0).min((free.output_tokens - used_before.1).max(0));
    let credit = FreeTierCredit {
        input_credit,
        output_credit: per_million(output_tokens, output.1),
        output_tokens,
        input_tokens,
    };
    (credit.free_input_tokens() > 0 || credit.output_tokens > 0).then_some(credit)
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
    /// The tier of the row (a usage tier without its own row is priced by `standard`).
    pub tier: String,
    pub effective: NaiveDate,
    pub input: Decimal,
    pub cached: Option<Decimal>,
    pub write_5m: Option<Decimal>,
    pub write_1h: Option<Decimal>,
    pub output: Decimal,
    /// USD per 1 000 web-search requests.
    pub web_search_per_1k: Option<Decimal>,
    pub free_tier: Option<FreeTier>,
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
        volume: Option<UsageSource<'_>>,
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
            // Rows priced per image, minute, call … are the unit price book's.
            if r.string("unit").is_some_and(|u| u != "1m_tokens") {
                continue;
            }
            let (Some(model), Some(tier), Some(effective), Some(input), Some(output)) = (
                r.string("model_id"),
                r.string("pricing_tier"),
                r.date("effective_date"),
                r.numeric("input_price_per_1m"),
                r.numeric("output_price_per_1m"),
            ) else {
                continue;
            };
            let free_count = |c: &str| r.int(c).filter(|n| *n > 0);
            let free_tier = match (
                free_count("free_tier_input_tokens"),
                free_count("free_tier_output_tokens"),
            ) {
                (None, None) => None,
                (input, output) => Some(FreeTier {
                    input_tokens: input.unwrap_or(0),
                    output_tokens: output.unwrap_or(0),
                    reset: match r.string("free_tier_reset_frequency").as_deref() {
                        Some("daily") => FreeTierReset::Daily,
                        Some("never") => FreeTierReset::Never,
                        _ => FreeTierReset::Monthly,
                    },
                }),
            };
            let p = Price {
                tier: tier.clone(),
                effective,
                input,
                cached: r.numeric("cached_input_price_per_1m"),
                write_5m: r.numeric("cache_write_5m_price_per_1m"),
                write_1h: r.numeric("cache_write_1h_price_per_1m"),
                output,
                web_search_per_1k: r.numeric("web_search_price_per_1k"),
                free_tier,
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
                        "SELECT {m} AS model, SUM(({i}) + ({o})) AS n FROM {{{{{u}}}}} WHERE org_slug = @org \
                         AND usage_date >= @from AND usage_date <= @day GROUP BY {m}",
                        m = v.model_column,
                        i = v.input_sql,
                        o = v.output_sql,
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

    /// The price row a usage row's model and tier resolve to: `(model id, row tier)` and its
    /// price.
    pub fn resolve(&self, model: Option<&str>, tier: &str) -> Option<((String, String), &Price)> {
        let id = self.match_model(model?)?;
        let p = self.price(id, tier)?;
        Some(((id.clone(), p.tier.clone()), p))
    }

    /// For each price row with a free tier that does not reset daily, the input and output
    /// tokens of its period before `day`: the usage of those earlier days that the same
    /// resolution (model match, `tier_of` the usage row's tier columns, tier fallback) prices
    /// with that row. One grouped query, only when such a row exists.
    pub async fn free_tier_used_before(
        &self,
        ctx: &StepContext,
        dataset: &str,
        src: &UsageSource<'_>,
        day: NaiveDate,
        tier_of: impl Fn(&Row) -> &'static str,
    ) -> Result<HashMap<(String, String), (i64, i64)>, ProcessorError> {
        let mut used = HashMap::new();
        let Some(from) = self
            .prices
            .values()
            .filter_map(|p| p.free_tier.map(|f| f.period_start(day, p.effective)))
            .filter(|start| *start < day)
            .min()
        else {
            return Ok(used);
        };
        let mut shape = vec![src.model_column];
        shape.extend_from_slice(src.tier_columns);
        let shape = shape.join(", ");
        let rows = ctx
            .warehouse()
            .query(
                dataset,
                &format!(
                    "SELECT usage_date, {shape}, SUM({i}) AS free_in, SUM({o}) AS free_out FROM {{{{{u}}}}} \
                     WHERE org_slug = @org AND usage_date >= @from AND usage_date < @day GROUP BY usage_date, {shape}",
                    i = src.input_sql,
                    o = src.output_sql,
                    u = src.usage_table
                ),
                &Params::new().with("org", src.org).with("from", from).with("day", day),
            )
            .await?;
        for r in rows {
            let Some((key, p)) = self.resolve(r.string(src.model_column).as_deref(), tier_of(&r)) else {
                continue;
            };
            let (Some(free), Some(date)) = (p.free_tier, r.date("usage_date")) else {
                continue;
            };
            if date >= free.period_start(day, p.effective) {
                let e: &mut (i64, i64) = used.entry(key).or_default();
                e.0 += r.int("free_in").unwrap_or(0);
                e.1 += r.int("free_out").unwrap_or(0);
            }
        }
        Ok(used)
    }

    /// The price of a matched model in a tier, falling back to its standard price; a
    /// long-context tier falls back to `long_context` only, never to a short-context price.
    pub fn price(&self, model_id: &str, tier: &str) -> Option<&Price> {
        let fallback = if tier.ends_with("long_context") {
            "long_context"
        } else {
            "standard"
        };
        self.prices
            .get(&(model_id.to_string(), tier.to_string()))
            .or_else(|| self.prices.get(&(model_id.to_string(), fallback.to_string())))
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
    fn free_tier_credit_fills_the_kinds_in_order_and_stops_when_used_up() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let free = FreeTier {
            input_tokens: 1_000,
            output_tokens: 10,
            reset: FreeTierReset::Monthly,
        };
        // 400 used before: 600 left → 500 of the first kind, 100 of the second, none of the third.
        let c = free_tier_credit(
            &free,
            (400, 4),
            &[(500, d("2")), (300, d("1")), (50, d("4"))],
            (20, d("8")),
        )
        .unwrap();
        assert_eq!(c.input_tokens, vec![500, 100, 0]);
        assert_eq!(c.output_tokens, 6);
        assert_eq!(c.total(), d("0.001") + d("0.0001") + d("0.000048"));
        assert_eq!(
            free_tier_credit(&free, (1_000, 10), &[(500, d("2"))], (20, d("8"))),
            None
        );
        assert_eq!(
            free_tier_credit(&free, (5_000, 50), &[(500, d("2"))], (20, d("8"))),
            None,
            "overused: no credit, never negative"
        );
        let start = |reset, day: &str| {
            FreeTier { reset, ..free }
                .period_start(day.parse().unwrap(), "2025-06-15".parse().unwrap())
                .to_string()
        };
        assert_eq!(start(FreeTierReset::Daily, "2026-02-20"), "2026-02-20");
        assert_eq!(start(FreeTierReset::Monthly, "2026-02-20"), "2026-02-01");
        assert_eq!(start(FreeTierReset::Never, "2026-02-20"), "2025-06-15");
    }

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
