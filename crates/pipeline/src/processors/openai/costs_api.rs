//! `openai.costs_api`: what OpenAI itself billed for a day (`GET /v1/organization/costs`,
//! grouped by project and line item, every page), for reconciliation with the computed cost.

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
    const PS_TYPE: &'static str = "openai.costs_api";
    type Config = DayTableConfig;

    fn build(config: DayTableConfig) -> Result<Self, String> {
        config.checked().map(CostsApiProcessor)
    }
}

#[async_trait]
impl Processor for CostsApiProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let p = ProviderDay::open(ctx, "openai", c.day_table("usage_date", &["org_slug", "project_id"])).await?;
        let (org, day, key) = (&p.org, p.day, &p.key);
        let url = p.url("/v1/organization/costs");
        let start = p.start_unix();
        let (http, now) = (&ctx.services.http, Utc::now());
        let buckets = get_all_pages("OpenAI", &ctx.cancel, |page| {
            let mut query = vec![
                ("start_time", start.to_string()),
                ("end_time", (start + 86_400).to_string()),
                ("bucket_width", "1d".to_string()),
                ("limit", "1".to_string()),
                ("group_by", "project_id".to_string()),
                ("group_by", "line_item".to_string()),
            ];
            if let Some(p) = page {
                query.push(("page", p.to_string()));
            }
            http.get(&url).query(&query).bearer_auth(key.expose_secret())
        })
        .await?;
        let mut rows = Vec::new();
        for bucket in &buckets {
            for r in bucket["results"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let amount: Decimal = r["amount"]["value"]
                    .as_f64()
                    .map(|_| r["amount"]["value"].to_string())
                    .and_then(|t| Decimal::from_scientific(&t).or_else(|_| t.parse()).ok())
                    .ok_or_else(|| ProcessorError::Transient("cost row without amount.value".into()))?;
                rows.push(
                    Row::new()
                        .with("org_slug", org.as_str())
                        .with("usage_date", day)
                        .with("project_id", r["project_id"].as_str())
                        .with("line_item", r["line_item"].as_str())
                        .with("amount", amount.normalize())
                        .with(
                            "currency",
                            r["amount"]["currency"].as_str().unwrap_or("usd").to_ascii_uppercase(),
                        )
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
