//! `{provider}.subscriptions` (`openai`, `anthropic`, `gemini`, `deepseek`, `custom`): the
//! month's cost of the org's provider plans (`llm_subscriptions`: seats × monthly unit price)
//! into `{provider}_subscriptions_monthly`, one row per plan active in the month of `{date}`,
//! replaced whole on every run (a monthly schedule runs it for each day of the previous month;
//! each run computes the same month).
//!
//! How a plan is charged for a month (documented, tested):
//! - it is active from `effective_date` to `end_date` (inclusive; open-ended without one);
//! - the days up to and including `trial_end_date` are a free trial;
//! - a plan active for part of the month (started, ended or left its trial mid-month) is
//!   prorated by day: `quantity × unit_price_usd × paid days ÷ days in the month`; a mid-month
//!   change of seats or price is the old plan ending and the new one starting;
//! - `discount_percentage` comes off; disabled plans and plans costing nothing are skipped.
//!
//! Amounts are exact decimals rounded half away from zero to 9 places (list cost before the
//! discount, cost after it).

use std::marker::PhantomData;

use async_trait::async_trait;
use chrono::{Datelike, NaiveDate, Utc};
use cloudact_core::warehouse::{Params, Row};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;

use crate::{
    context::StepContext,
    processors::{
        day::{DayTable, LoadDay},
        example::parse_day,
    },
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsConfig {
    pub dataset: String,
    /// Any day of the month to cost.
    pub date: String,
    /// The org's plans table.
    pub plans_table: String,
    pub table: String,
    pub schema: String,
}

/// The provider a subscriptions processor costs.
pub trait PlanProvider: Send + Sync + 'static {
    const PROVIDER: &'static str;
    const PS_TYPE: &'static str;
}

macro_rules! plan_provider {
    ($name:ident, $provider:literal) => {
        pub struct $name;
        impl PlanProvider for $name {
            const PROVIDER: &'static str = $provider;
            const PS_TYPE: &'static str = concat!($provider, ".subscriptions");
        }
    };
}
plan_provider!(OpenAi, "openai");
plan_provider!(Anthropic, "anthropic");
plan_provider!(Gemini, "gemini");
plan_provider!(DeepSeek, "deepseek");
plan_provider!(Custom, "custom");

pub struct SubscriptionsProcessor<P>(SubscriptionsConfig, PhantomData<P>);

impl<P: PlanProvider> ProcessorDef for SubscriptionsProcessor<P> {
    const PS_TYPE: &'static str = P::PS_TYPE;
    type Config = SubscriptionsConfig;

    fn build(config: SubscriptionsConfig) -> Result<Self, String> {
        for t in [&config.plans_table, &config.table] {
            cloudact_core::warehouse::check_name(t).map_err(|e| e.to_string())?;
        }
        Ok(SubscriptionsProcessor(config, PhantomData))
    }
}

/// One plan's charge for one month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthCharge {
    /// First and last paid day.
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub paid_days: i64,
    pub trial_days: i64,
    pub days_in_month: i64,
    pub list_cost: Decimal,
    pub cost: Decimal,
}

/// The first and last day of the month of `day`.
pub fn month_of(day: NaiveDate) -> (NaiveDate, NaiveDate) {
    let first = day.with_day(1).unwrap_or(day);
    let next = first.checked_add_months(chrono::Months::new(1)).unwrap_or(first);
    (first, next.pred_opt().unwrap_or(first))
}

fn round9(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(9, RoundingStrategy::MidpointAwayFromZero)
}

/// What a plan costs in the month of `day` (see the module docs), `None` when it is not
/// charged that month.
pub fn month_charge(
    day: NaiveDate,
    quantity: i64,
    unit_price: Decimal,
    effective: NaiveDate,
    end: Option<NaiveDate>,
    trial_end: Option<NaiveDate>,
    discount_percentage: Option<Decimal>,
) -> Option<MonthCharge> {
    let (first, last) = month_of(day);
    let active_from = effective.max(first);
    let active_to = end.map_or(last, |e| e.min(last));
    if active_from > active_to {
        return None;
    }
    let paid_from = match trial_end {
        Some(t) if t >= active_from => t.succ_opt()?,
        _ => active_from,
    };
    let trial_days = (paid_from.min(active_to + chrono::Duration::days(1)) - active_from).num_days();
    let days_in_month = (last - first).num_days() + 1;
    let paid_days = if paid_from > active_to {
        0
    } else {
        (active_to - paid_from).num_days() + 1
    };
    let monthly = Decimal::from(quantity.max(0)) * unit_price;
    let list_cost = round9(monthly * Decimal::from(paid_days) / Decimal::from(days_in_month));
    let keep = discount_percentage
        .filter(|d| !d.is_zero())
        .map_or(Decimal::ONE, |d| (Decimal::from(100) - d) / Decimal::from(100));
    Some(MonthCharge {
        period_start: paid_from.min(active_to),
        period_end: active_to,
        paid_days,
        trial_days,
        days_in_month,
        list_cost,
        cost: round9(monthly * Decimal::from(paid_days) * keep / Decimal::from(days_in_month)),
    })
}

#[async_trait]
impl<P: PlanProvider> Processor for SubscriptionsProcessor<P> {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let (first, last) = month_of(parse_day(&c.date)?);
        let month = first.to_string();
        let target = LoadDay::open(
            ctx,
            DayTable {
                dataset: &c.dataset,
                table: &c.table,
                schema: &c.schema,
                date: &month,
                partition: "usage_date",
                clustering: &["org_slug", "plan_name"],
            },
        )
        .await?;
        let wh = ctx.warehouse();
        let plans = if wh.table_exists(&c.dataset, &c.plans_table).await? {
            wh.query(
                &c.dataset,
                &format!(
                    "SELECT * FROM {{{{{}}}}} WHERE provider = @provider AND is_enabled = @enabled \
                     AND effective_date <= @last AND (end_date IS NULL OR end_date >= @first)",
                    c.plans_table
                ),
                &Params::new()
                    .with("provider", P::PROVIDER)
                    .with("enabled", true)
                    .with("first", first)
                    .with("last", last),
            )
            .await?
        } else {
            Vec::new()
        };
        let now = Utc::now();
        let (mut rows, mut total) = (Vec::new(), Decimal::ZERO);
        for p in plans {
            let (Some(plan), Some(effective), Some(unit_price)) = (
                p.string("plan_name"),
                p.date("effective_date"),
                p.numeric("unit_price_usd"),
            ) else {
                continue;
            };
            let quantity = p.int("quantity").unwrap_or(0);
            let discount = p.numeric("discount_percentage");
            let Some(charge) = month_charge(
                first,
                quantity,
                unit_price,
                effective,
                p.date("end_date"),
                p.date("trial_end_date"),
                discount,
            ) else {
                continue;
            };
            if charge.list_cost.is_zero() && charge.trial_days == 0 {
                continue;
            }
            total += charge.cost;
            rows.push(
                Row::new()
                    .with("org_slug", target.org.as_str())
                    .with("usage_date", first)
                    .with("provider", P::PROVIDER)
                    .with("subscription_id", p.string("subscription_id"))
                    .with("plan_name", plan)
                    .with(
                        "project_id",
                        p.string("x_gemini_project_id")
                            .or_else(|| p.string("x_anthropic_workspace_id")),
                    )
                    .with("tier_type", p.string("tier_type"))
                    .with("quantity", quantity)
                    .with("unit_price_usd", unit_price)
                    .with("discount_percentage", discount)
                    .with("period_start", charge.period_start)
                    .with("period_end", charge.period_end)
                    .with("paid_days", charge.paid_days)
                    .with("trial_days", charge.trial_days)
                    .with("days_in_month", charge.days_in_month)
                    .with("list_cost", charge.list_cost)
                    .with("total_cost", charge.cost)
                    .with("currency", "USD")
                    .with("unknown_model", false)
                    .with("run_id", ctx.run_id.as_str())
                    .with("loaded_at", now),
            );
        }
        let outcome = target.replace(ctx, &rows).await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({"table": c.table, "month": month, "inserted": outcome.inserted,
                                       "total_cost": total.round_dp(9).normalize().to_string()}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn a_whole_month_is_seats_times_price() {
        let c = month_charge(day("2026-02-10"), 5, d("30"), day("2025-01-01"), None, None, None).unwrap();
        assert_eq!((c.paid_days, c.days_in_month, c.trial_days), (28, 28, 0));
        assert_eq!(c.cost, d("150"));
        assert_eq!((c.period_start, c.period_end), (day("2026-02-01"), day("2026-02-28")));
    }

    #[test]
    fn mid_month_starts_ends_and_trials_are_prorated_by_day() {
        // Starts 2026-01-15: 17 of 31 days of 3 × 20.
        let c = month_charge(day("2026-01-01"), 3, d("20"), day("2026-01-15"), None, None, None).unwrap();
        assert_eq!(c.paid_days, 17);
        assert_eq!(c.cost, d("32.903225806"), "60 × 17 / 31");
        // Ends 2026-01-14 (the change's other half): 14 days.
        let c = month_charge(
            day("2026-01-20"),
            2,
            d("20"),
            day("2025-06-01"),
            Some(day("2026-01-14")),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.cost, d("18.064516129"), "40 × 14 / 31");
        // A trial to 2026-01-10: 21 paid days; 10% off.
        let c = month_charge(
            day("2026-01-20"),
            1,
            d("31"),
            day("2026-01-01"),
            None,
            Some(day("2026-01-10")),
            Some(d("10")),
        )
        .unwrap();
        assert_eq!((c.trial_days, c.paid_days), (10, 21));
        assert_eq!((c.list_cost, c.cost), (d("21"), d("18.9")));
        // A trial covering the whole month: nothing paid.
        let c = month_charge(
            day("2026-01-20"),
            1,
            d("31"),
            day("2026-01-01"),
            None,
            Some(day("2026-03-01")),
            None,
        )
        .unwrap();
        assert_eq!((c.trial_days, c.paid_days, c.cost), (31, 0, d("0")));
        // Not active in the month.
        assert_eq!(
            month_charge(day("2026-01-20"), 1, d("31"), day("2026-02-01"), None, None, None),
            None
        );
    }
}
