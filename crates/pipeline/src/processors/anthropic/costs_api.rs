//! `anthropic.costs_api`: what Anthropic itself billed for a day (`GET /v1/organizations/cost_report`,
//! grouped by workspace and description, every page). The API's amount is a decimal string in
//! cents: it is stored in dollars, exactly.

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::warehouse::Row;
use rust_decimal::Decimal;
use secrecy::ExposeSecret;

use crate::{
    context::StepContext,
    processors::{day::ProviderDay, DayTableConfig},
    providers::http::get_all_pages,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

pub struct CostsApiProcessor(DayTableConfig);

impl ProcessorDef for CostsApiProcessor {
    const PS_TYPE: &'static str = "anthropic.costs_api";
    type Config = DayTableConfig;

    fn build(config: DayTableConfig) -> Result<Self, String> {
        config.checked().map(CostsApiProcessor)
    }
}

#[async_trait]
impl Processor for CostsApiProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let p = ProviderDay::open(ctx, "anthropic", c.day_table("usage_date", &["org_slug", "model"])).await?;
        let (org, day, next_day, key) = (&p.org, p.day, p.next_day(), &p.key);
        let url = p.url("/v1/organizations/cost_report");
        let (http, now) = (&ctx.services.http, Utc::now());
        let buckets = get_all_pages("Anthropic", &ctx.cancel, |page| {
            let mut query = vec![
                ("starting_at", format!("{day}T00:00:00Z")),
                ("ending_at", format!("{next_day}T00:00:00Z")),
                ("limit", "1".to_string()),
                ("group_by[]", "workspace_id".to_string()),
                ("group_by[]", "description".to_string()),
            ];
            if let Some(p) = page {
                query.push(("page", p.to_string()));
            }
            http.get(&url)
                .query(&query)
                .header("x-api-key", key.expose_secret())
                .header("anthropic-version", "2023-06-01")
        })
        .await?;
        let mut rows = Vec::new();
        for bucket in &buckets {
            for r in bucket["results"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let cents: Decimal = r["amount"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| ProcessorError::Transient("cost row without a decimal amount".into()))?;
                rows.push(
                    Row::new()
                        .with("org_slug", org.as_str())
                        .with("usage_date", day)
                        .with("workspace_id", r["workspace_id"].as_str())
                        .with("description", r["description"].as_str())
                        .with("model", r["model"].as_str())
                        .with("cost_type", r["cost_type"].as_str())
                        .with("token_type", r["token_type"].as_str())
                        .with("service_tier", r["service_tier"].as_str())
                        .with("context_window", r["context_window"].as_str())
                        .with("amount", (cents / Decimal::from(100)).normalize())
                        .with("currency", r["currency"].as_str().unwrap_or("USD"))
                        .with("run_id", ctx.run_id.as_str())
                        .with("loaded_at", now),
                );
            }
        }
        let outcome = p.replace(ctx, &rows).await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({"table": c.table, "inserted": outcome.inserted}),
        })
    }
}
