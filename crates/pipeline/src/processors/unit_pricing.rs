//! Prices of usage that is not counted in tokens: images, characters of speech, seconds of
//! transcription, storage, sessions and tool calls. A price row of the org's `llm_model_pricing`
//! table with a `unit` other than `1m_tokens` carries its price per unit in `unit_price` (its
//! token prices are 0 and unused) and, optionally, `free_units_per_day` (e.g. OpenAI's first
//! GiB of vector storage). Which row prices a usage row, in this order, among the rows of the
//! usage kind's unit:
//!
//! 1. `{model}-{variant}` exactly (an image model at one size: `dall-e-3-1024x1024`);
//! 2. the model itself, exact or as the longest priced prefix of a dated snapshot (`tts-1`);
//! 3. `{usage_type}-{variant}` (`web_search_calls-high`);
//! 4. the usage kind itself (`vector_stores`, `code_interpreter_sessions`, `file_search_calls`).
//!
//! Moderations are token usage priced by the model's ordinary per-1M input price. No row →
//! no price: the cost is left null and flagged, never 0.

use std::collections::HashMap;

use chrono::NaiveDate;
use cloudact_core::warehouse::Params;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::{context::StepContext, processors::pricing::match_model, registry::ProcessorError};

/// What a unit price is per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Per 1M tokens (token rows; moderations).
    MillionTokens,
    /// Per image generated.
    Image,
    /// Per 1M characters of speech.
    MillionCharacters,
    /// Per minute of audio (usage reports seconds).
    Minute,
    /// Per GiB stored for a day (usage reports bytes).
    GibDay,
    /// Per session.
    Session,
    /// Per 1 000 calls.
    ThousandCalls,
}

/// Every unit a price row may name, as stored.
pub const UNIT_NAMES: [&str; 7] = [
    "1m_tokens",
    "image",
    "1m_characters",
    "minute",
    "gib_day",
    "session",
    "1k_calls",
];

impl Unit {
    pub fn parse(name: &str) -> Option<Unit> {
        Some(match name {
            "1m_tokens" => Unit::MillionTokens,
            "image" => Unit::Image,
            "1m_characters" => Unit::MillionCharacters,
            "minute" => Unit::Minute,
            "gib_day" => Unit::GibDay,
            "session" => Unit::Session,
            "1k_calls" => Unit::ThousandCalls,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::MillionTokens => "1m_tokens",
            Unit::Image => "image",
            Unit::MillionCharacters => "1m_characters",
            Unit::Minute => "minute",
            Unit::GibDay => "gib_day",
            Unit::Session => "session",
            Unit::ThousandCalls => "1k_calls",
        }
    }

    /// Reported units per priced unit (tokens per 1M tokens, seconds per minute, bytes per GiB).
    pub fn per(self) -> Decimal {
        Decimal::from(match self {
            Unit::MillionTokens | Unit::MillionCharacters => 1_000_000i64,
            Unit::Minute => 60,
            Unit::GibDay => 1i64 << 30,
            Unit::ThousandCalls => 1_000,
            Unit::Image | Unit::Session => 1,
        })
    }

    /// The reported (consumed) unit, in FOCUS form.
    pub fn consumed_unit(self) -> &'static str {
        match self {
            Unit::MillionTokens => "Tokens",
            Unit::Image => "Images",
            Unit::MillionCharacters => "Characters",
            Unit::Minute => "Seconds",
            Unit::GibDay => "Bytes",
            Unit::Session => "Sessions",
            Unit::ThousandCalls => "Requests",
        }
    }

    /// The priced unit, in FOCUS form (`<quantity> <plural units>`).
    pub fn pricing_unit(self) -> &'static str {
        match self {
            Unit::MillionTokens => "1000000 Tokens",
            Unit::Image => "Images",
            Unit::MillionCharacters => "1000000 Characters",
            Unit::Minute => "Minutes",
            Unit::GibDay => "GiB-Days",
            Unit::Session => "Sessions",
            Unit::ThousandCalls => "1000 Requests",
        }
    }
}

/// One OpenAI usage endpoint that is priced per unit: its unit, the result counter that
/// measures it, and the dimension (besides model and project) that picks its price.
#[derive(Debug, Clone, Copy)]
pub struct UnitKind {
    pub usage_type: &'static str,
    pub unit: Unit,
    pub counter: &'static str,
    pub variant: Option<&'static str>,
}

/// The OpenAI usage endpoints priced per unit (every Admin Usage endpoint but completions and
/// embeddings).
pub const OPENAI_UNIT_KINDS: [UnitKind; 8] = [
    UnitKind {
        usage_type: "images",
        unit: Unit::Image,
        counter: "images",
        variant: Some("size"),
    },
    UnitKind {
        usage_type: "audio_speeches",
        unit: Unit::MillionCharacters,
        counter: "characters",
        variant: None,
    },
    UnitKind {
        usage_type: "audio_transcriptions",
        unit: Unit::Minute,
        counter: "seconds",
        variant: None,
    },
    UnitKind {
        usage_type: "moderations",
        unit: Unit::MillionTokens,
        counter: "input_tokens",
        variant: None,
    },
    UnitKind {
        usage_type: "vector_stores",
        unit: Unit::GibDay,
        counter: "usage_bytes",
        variant: None,
    },
    UnitKind {
        usage_type: "code_interpreter_sessions",
        unit: Unit::Session,
        counter: "num_sessions",
        variant: None,
    },
    UnitKind {
        usage_type: "file_search_calls",
        unit: Unit::ThousandCalls,
        counter: "num_requests",
        variant: None,
    },
    UnitKind {
        usage_type: "web_search_calls",
        unit: Unit::ThousandCalls,
        counter: "num_requests",
        variant: Some("context_level"),
    },
];

pub fn openai_unit_kind(usage_type: &str) -> Option<&'static UnitKind> {
    OPENAI_UNIT_KINDS.iter().find(|k| k.usage_type == usage_type)
}

/// One unit price effective on a day.
#[derive(Debug, Clone)]
pub struct UnitPrice {
    pub model_id: String,
    pub unit: Unit,
    /// USD per unit.
    pub price: Decimal,
    /// Units free each day, shared by all the usage this row prices.
    pub free_per_day: Option<Decimal>,
    effective: NaiveDate,
}

impl UnitPrice {
    /// What `quantity` reported units cost: `quantity × price / per`, exact, rounded half away
    /// from zero to 9 decimals.
    pub fn cost(&self, quantity: i64) -> Decimal {
        cost_of(quantity, self.price, self.unit)
    }

    /// The day's free part of `day_quantity` reported units: (free reported units, credit).
    pub fn free_credit(&self, day_quantity: i64) -> Option<(i64, Decimal)> {
        let free = self.free_per_day.filter(|f| *f > Decimal::ZERO)?;
        let free_raw = (free * self.unit.per()).floor();
        let take = Decimal::from(day_quantity.max(0)).min(free_raw);
        let take = i64::try_from(take).ok().filter(|t| *t > 0)?;
        Some((take, self.cost(take)))
    }
}

/// `quantity` reported units at `price` per `unit`, exact, rounded half away from zero to 9
/// decimals.
pub fn cost_of(quantity: i64, price: Decimal, unit: Unit) -> Decimal {
    (Decimal::from(quantity) * price / unit.per()).round_dp_with_strategy(9, RoundingStrategy::MidpointAwayFromZero)
}

/// The reported quantity in priced units (9 decimals).
pub fn pricing_quantity(quantity: i64, unit: Unit) -> Decimal {
    (Decimal::from(quantity) / unit.per()).round_dp_with_strategy(9, RoundingStrategy::MidpointAwayFromZero)
}

/// The unit prices of one provider effective on one day (latest effective date wins).
#[derive(Debug, Default)]
pub struct UnitPriceBook {
    prices: HashMap<(String, Unit), UnitPrice>,
}

impl UnitPriceBook {
    /// Loads the enabled `standard` rows of `provider` effective on `day`: unit rows by their
    /// `unit_price`, token rows as per-1M-token prices of their input.
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
                    // `*`: a table made before units existed reads them as absent (token rows).
                    "SELECT * FROM {{{{{table}}}}} WHERE provider = @provider AND is_enabled = @enabled \
                     AND pricing_tier = 'standard' AND effective_date <= @day AND (end_date IS NULL OR end_date >= @day)"
                ),
                &Params::new()
                    .with("provider", provider)
                    .with("enabled", true)
                    .with("day", day),
            )
            .await?;
        let mut book = UnitPriceBook::default();
        for r in rows {
            let (Some(model_id), Some(effective)) = (r.string("model_id"), r.date("effective_date")) else {
                continue;
            };
            let unit = match r.string("unit") {
                None => Unit::MillionTokens,
                Some(u) => match Unit::parse(&u) {
                    Some(u) => u,
                    None => continue,
                },
            };
            let price = if unit == Unit::MillionTokens {
                r.numeric("input_price_per_1m")
            } else {
                r.numeric("unit_price")
            };
            let Some(price) = price else { continue };
            let p = UnitPrice {
                model_id: model_id.clone(),
                unit,
                price,
                free_per_day: r.numeric("free_units_per_day"),
                effective,
            };
            let k = (model_id, unit);
            if book.prices.get(&k).is_none_or(|old| old.effective < p.effective) {
                book.prices.insert(k, p);
            }
        }
        Ok(book)
    }

    /// The row that prices one usage row (see the module docs for the order).
    pub fn resolve(&self, kind: &UnitKind, model: Option<&str>, variant: Option<&str>) -> Option<&UnitPrice> {
        let get = |id: &str| self.prices.get(&(id.to_string(), kind.unit));
        let ids: Vec<String> = self
            .prices
            .keys()
            .filter(|(_, u)| *u == kind.unit)
            .map(|(m, _)| m.clone())
            .collect();
        let by_variant = |base: &str| variant.and_then(|v| get(&format!("{base}-{v}")));
        model
            .and_then(by_variant)
            .or_else(|| model.and_then(|m| match_model(m, &ids)).and_then(|id| get(id)))
            .or_else(|| by_variant(kind.usage_type))
            .or_else(|| get(kind.usage_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn book(rows: &[(&str, Unit, &str)]) -> UnitPriceBook {
        let mut b = UnitPriceBook::default();
        for (id, unit, price) in rows {
            b.prices.insert(
                (id.to_string(), *unit),
                UnitPrice {
                    model_id: id.to_string(),
                    unit: *unit,
                    price: d(price),
                    free_per_day: None,
                    effective: NaiveDate::MIN,
                },
            );
        }
        b
    }

    #[test]
    fn each_unit_is_priced_exactly_by_its_own_measure() {
        // 90 seconds at 0.006 USD a minute.
        assert_eq!(cost_of(90, d("0.006"), Unit::Minute), d("0.009"));
        // 7 seconds: 0.0007 exactly.
        assert_eq!(cost_of(7, d("0.006"), Unit::Minute), d("0.0007"));
        // 1 second of a 0.001-a-minute price: 0.0000166…7 → 9 decimals, half away from zero.
        assert_eq!(cost_of(1, d("0.001"), Unit::Minute), d("0.000016667"));
        // 2.5 GiB for a day at 0.10.
        assert_eq!(cost_of(5 << 29, d("0.10"), Unit::GibDay), d("0.25"));
        assert_eq!(cost_of(123_456, d("15"), Unit::MillionCharacters), d("1.85184"));
        assert_eq!(cost_of(3, d("0.04"), Unit::Image), d("0.12"));
        assert_eq!(cost_of(1_234, d("2.5"), Unit::ThousandCalls), d("3.085"));
        assert_eq!(pricing_quantity(90, Unit::Minute), d("1.5"));
        assert_eq!(pricing_quantity(1 << 30, Unit::GibDay), d("1"));
    }

    #[test]
    fn the_free_allowance_covers_at_most_the_day() {
        let p = UnitPrice {
            model_id: "vector_stores".into(),
            unit: Unit::GibDay,
            price: d("0.10"),
            free_per_day: Some(d("1")),
            effective: NaiveDate::MIN,
        };
        assert_eq!(p.free_credit(3 << 30), Some((1 << 30, d("0.1"))));
        assert_eq!(p.free_credit(1 << 29), Some((1 << 29, d("0.05"))));
        assert_eq!(p.free_credit(0), None);
    }

    #[test]
    fn a_usage_row_finds_its_row_by_model_and_variant_then_by_kind() {
        let b = book(&[
            ("dall-e-3-1024x1024", Unit::Image, "0.04"),
            ("dall-e-3", Unit::Image, "0.08"),
            ("tts-1", Unit::MillionCharacters, "15"),
            ("web_search_calls", Unit::ThousandCalls, "10"),
            ("web_search_calls-high", Unit::ThousandCalls, "30"),
            ("file_search_calls", Unit::ThousandCalls, "2.5"),
        ]);
        let kind = |t| openai_unit_kind(t).unwrap();
        let price = |t, m: Option<&str>, v: Option<&str>| b.resolve(kind(t), m, v).map(|p| p.price.to_string());
        assert_eq!(
            price("images", Some("dall-e-3"), Some("1024x1024")).as_deref(),
            Some("0.04")
        );
        assert_eq!(
            price("images", Some("dall-e-3"), Some("1792x1024")).as_deref(),
            Some("0.08")
        );
        assert_eq!(
            price("images", Some("gpt-image-9"), Some("1024x1024")),
            None,
            "no price: flagged"
        );
        assert_eq!(
            price("audio_speeches", Some("tts-1-2025-01-01"), None).as_deref(),
            Some("15")
        );
        assert_eq!(
            price("web_search_calls", Some("gpt-4o"), Some("high")).as_deref(),
            Some("30")
        );
        assert_eq!(
            price("web_search_calls", Some("gpt-4o"), Some("low")).as_deref(),
            Some("10")
        );
        assert_eq!(price("file_search_calls", None, None).as_deref(), Some("2.5"));
        assert_eq!(price("code_interpreter_sessions", None, None), None);
    }
}
