//! `deepseek.balance`: `GET /user/balance` → one row per currency for `{date}` in
//! `deepseek_balance_daily`, with spend estimated as the drop since the previous snapshot of
//! that currency (null, and `topup_detected`, when the balance rose). Replaces that day's rows.

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::warehouse::{Params, Row};
use rust_decimal::Decimal;
use secrecy::ExposeSecret;

use crate::{
    context::StepContext,
    processors::{day::ProviderDay, DayTableConfig},
    providers::http::get_json,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

pub struct BalanceProcessor(DayTableConfig);

impl ProcessorDef for BalanceProcessor {
    const PS_TYPE: &'static str = "deepseek.balance";
    type Config = DayTableConfig;

    fn build(config: DayTableConfig) -> Result<Self, String> {
        config.checked().map(BalanceProcessor)
    }
}

fn decimal(v: &serde_json::Value) -> Option<Decimal> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_f64().and_then(|f| Decimal::try_from(f).ok()))
}

#[async_trait]
impl Processor for BalanceProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let p = ProviderDay::open(ctx, "deepseek", c.day_table("balance_date", &["org_slug", "currency"])).await?;
        let (org, day, key) = (&p.org, p.day, &p.key);
        let url = p.url("/user/balance");
        let http = &ctx.services.http;
        let body = get_json("DeepSeek", || http.get(&url).bearer_auth(key.expose_secret())).await?;
        let infos = body["balance_infos"]
            .as_array()
            .ok_or_else(|| ProcessorError::Transient("balance response without balance_infos[]".into()))?;
        let now = Utc::now();
        let mut rows = Vec::new();
        for info in infos {
            let currency = info["currency"].as_str().unwrap_or("").to_string();
            let total = decimal(&info["total_balance"])
                .ok_or_else(|| ProcessorError::Transient(format!("balance for {currency} is not a number")))?;
            let previous = ctx
                .warehouse()
                .query(
                    &c.dataset,
                    &format!(
                        "SELECT total_balance FROM {{{{{}}}}} WHERE org_slug = @org AND currency = @currency AND balance_date < @day \
                         ORDER BY balance_date DESC LIMIT 1",
                        c.table
                    ),
                    &Params::new().with("org", org.as_str()).with("currency", currency.as_str()).with("day", day),
                )
                .await?
                .first()
                .and_then(|r| r.numeric("total_balance"));
            let (spend, topup) = match previous {
                Some(p) if total > p => (None, true),
                Some(p) => (Some(p - total), false),
                None => (None, false),
            };
            rows.push(
                Row::new()
                    .with("org_slug", org.as_str())
                    .with("balance_date", day)
                    .with("currency", currency.as_str())
                    .with("total_balance", total)
                    .with("granted_balance", decimal(&info["granted_balance"]))
                    .with("topped_up_balance", decimal(&info["topped_up_balance"]))
                    .with("is_available", body["is_available"].as_bool())
                    .with("previous_total_balance", previous)
                    .with("spend_estimate", spend)
                    .with("topup_detected", topup)
                    .with("snapshot_at", now)
                    .with("run_id", ctx.run_id.as_str())
                    .with("loaded_at", now),
            );
        }
        let outcome = p.replace(ctx, &rows).await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({"table": c.table, "date": c.date, "currencies": outcome.inserted}),
        })
    }
}
