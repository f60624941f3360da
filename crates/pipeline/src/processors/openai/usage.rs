//! `openai.usage`: one day of completions usage from the Admin Usage API
//! (`GET /v1/organization/usage/completions`, daily bucket, grouped by model, project, batch and
//! service tier), following `page` until `has_more` is false, stored raw (old and new counters)
//! with a safely derived uncached-input column, replacing that day's rows.
//! 429 and 5xx are retried with backoff, honouring `Retry-After`.

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::warehouse::Row;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    context::StepContext,
    processors::example::{ensure_day_table, parse_day},
    providers::http::get_all_pages,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    pub dataset: String,
    pub date: String,
    pub table: String,
    pub schema: String,
}

pub struct UsageProcessor(UsageConfig);

impl ProcessorDef for UsageProcessor {
    const PS_TYPE: &'static str = "openai.usage";
    type Config = UsageConfig;

    fn build(config: UsageConfig) -> Result<Self, String> {
        cloudact_core::warehouse::check_name(&config.table).map_err(|e| e.to_string())?;
        Ok(UsageProcessor(config))
    }
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64()
}

#[async_trait]
impl Processor for UsageProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let org = ctx.require_org()?;
        let day = parse_day(&c.date)?;
        ensure_day_table(
            ctx,
            &c.dataset,
            &c.table,
            &c.schema,
            "usage_date",
            &["org_slug", "model"],
        )
        .await?;
        let key = ctx.credential("openai").await?;
        let base = ctx.provider_base_url("openai")?;
        let start = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()).unwrap_or(0);
        let http = &ctx.services.http;
        let now = Utc::now();
        let url = format!("{base}/v1/organization/usage/completions");
        let buckets = get_all_pages("OpenAI", &ctx.cancel, |page| {
            let mut query = vec![
                ("start_time", start.to_string()),
                ("end_time", (start + 86_400).to_string()),
                ("bucket_width", "1d".to_string()),
                ("limit", "1".to_string()),
            ];
            for g in ["model", "project_id", "batch", "service_tier"] {
                query.push(("group_by", g.to_string()));
            }
            if let Some(p) = page {
                query.push(("page", p.to_string()));
            }
            http.get(&url).query(&query).bearer_auth(key.expose_secret())
        })
        .await?;
        let mut rows = Vec::new();
        for bucket in &buckets {
            for r in bucket["results"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let input = int(&r["input_tokens"]).unwrap_or(0);
                let cached = int(&r["input_cached_tokens"]);
                let writes = int(&r["input_cache_write_tokens"]);
                let uncached_reported = int(&r["input_uncached_tokens"]);
                let uncached = uncached_reported
                    .unwrap_or_else(|| input - cached.unwrap_or(0) - writes.unwrap_or(0))
                    .max(0);
                rows.push(
                    Row::new()
                        .with("org_slug", org.as_str())
                        .with("usage_date", day)
                        .with("model", r["model"].as_str())
                        .with("project_id", r["project_id"].as_str())
                        .with("batch", r["batch"].as_bool())
                        .with("service_tier", r["service_tier"].as_str())
                        .with("num_model_requests", int(&r["num_model_requests"]).unwrap_or(0))
                        .with("input_tokens", input)
                        .with("output_tokens", int(&r["output_tokens"]).unwrap_or(0))
                        .with("input_cached_tokens", cached)
                        .with("input_cache_write_tokens", writes)
                        .with("input_uncached_tokens", uncached_reported)
                        .with("uncached_input_tokens", uncached)
                        .with("input_audio_tokens", int(&r["input_audio_tokens"]))
                        .with("output_audio_tokens", int(&r["output_audio_tokens"]))
                        .with("run_id", ctx.run_id.as_str())
                        .with("loaded_at", now),
                );
            }
        }
        let outcome = ctx
            .load_day(&c.dataset, &c.table, org, "usage_date", day, &rows)
            .await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({"table": c.table, "date": c.date, "inserted": outcome.inserted, "replaced": outcome.deleted}),
        })
    }
}
