//! `anthropic.usage`: one day of the Messages usage report
//! (`GET /v1/organizations/usage_report/messages`, 1-day bucket, grouped by model, service tier
//! and context window), following `page` until `has_more` is false; the four disjoint input
//! buckets (uncached, 5-minute and 1-hour cache writes, cache reads) are kept apart, replacing
//! that day's rows.

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::warehouse::Row;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::{
    context::StepContext,
    processors::{day::ProviderDay, DayTableConfig},
    providers::http::get_all_pages,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

pub struct UsageProcessor(DayTableConfig);

impl ProcessorDef for UsageProcessor {
    const PS_TYPE: &'static str = "anthropic.usage";
    type Config = DayTableConfig;

    fn build(config: DayTableConfig) -> Result<Self, String> {
        config.checked().map(UsageProcessor)
    }
}

#[async_trait]
impl Processor for UsageProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let p = ProviderDay::open(ctx, "anthropic", c.day_table("usage_date", &["org_slug", "model"])).await?;
        let (org, day, next_day, key) = (&p.org, p.day, p.next_day(), &p.key);
        let url = p.url("/v1/organizations/usage_report/messages");
        let http = &ctx.services.http;
        let now = Utc::now();
        let buckets = get_all_pages("Anthropic", &ctx.cancel, |page| {
            let mut query = vec![
                ("starting_at", format!("{day}T00:00:00Z")),
                ("ending_at", format!("{next_day}T00:00:00Z")),
                ("bucket_width", "1d".to_string()),
                ("limit", "1".to_string()),
            ];
            for g in ["model", "service_tier", "context_window"] {
                query.push(("group_by[]", g.to_string()));
            }
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
                let n = |v: &Value| v.as_i64().unwrap_or(0);
                rows.push(
                    Row::new()
                        .with("org_slug", org.as_str())
                        .with("usage_date", day)
                        .with("model", r["model"].as_str())
                        .with("service_tier", r["service_tier"].as_str())
                        .with("context_window", r["context_window"].as_str())
                        .with("workspace_id", r["workspace_id"].as_str())
                        .with("api_key_id", r["api_key_id"].as_str())
                        .with("uncached_input_tokens", n(&r["uncached_input_tokens"]))
                        .with(
                            "cache_creation_5m_input_tokens",
                            n(&r["cache_creation"]["ephemeral_5m_input_tokens"]),
                        )
                        .with(
                            "cache_creation_1h_input_tokens",
                            n(&r["cache_creation"]["ephemeral_1h_input_tokens"]),
                        )
                        .with("cache_read_input_tokens", n(&r["cache_read_input_tokens"]))
                        .with("output_tokens", n(&r["output_tokens"]))
                        .with(
                            "web_search_requests",
                            r["server_tool_use"]["web_search_requests"].as_i64(),
                        )
                        .with("run_id", ctx.run_id.as_str())
                        .with("loaded_at", now),
                );
            }
        }
        let outcome = p.replace(ctx, &rows).await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({"table": c.table, "date": c.date, "inserted": outcome.inserted, "replaced": outcome.deleted}),
        })
    }
}
