//! `openai.usage`: one day of token usage from the Admin Usage API
//! (`GET /v1/organization/usage/{endpoint}`, daily bucket, grouped by model, project, batch and
//! service tier), for the token-priced endpoints (`completions`, `embeddings`), following
//! `page` until `has_more` is false. Pages are parsed one at a time straight into typed
//! results and streamed to the warehouse in batches ([`crate::load::DayLoad`]), so memory is
//! bounded by one page whatever the day's size; the day is swapped in atomically at the end.
//! Raw counters are stored as given (old and new meanings) with a safely derived uncached-input
//! column. 429 and 5xx are retried with backoff, honouring `Retry-After`; an error names the
//! page it happened on.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use cloudact_core::warehouse::Row;
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::{
    context::StepContext,
    load::DayLoad,
    processors::day::{DayTable, ProviderDay},
    processors::unit_pricing::{openai_unit_kind, OPENAI_UNIT_KINDS},
    providers::http::{page_cursor, Paged, Pager},
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

/// Usage endpoints whose results are priced per token (images, audio and the tool calls are
/// priced per image, character, second or call, which the token price table does not model).
pub const TOKEN_ENDPOINTS: [&str; 2] = ["completions", "embeddings"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    pub dataset: String,
    pub date: String,
    pub table: String,
    pub schema: String,
    /// Usage endpoints to pull (default: completions and embeddings).
    #[serde(default = "default_endpoints")]
    pub endpoints: Vec<String>,
}

fn default_endpoints() -> Vec<String> {
    TOKEN_ENDPOINTS.iter().map(|e| e.to_string()).collect()
}

pub struct UsageProcessor(UsageConfig);

impl ProcessorDef for UsageProcessor {
    const PS_TYPE: &'static str = "openai.usage";
    type Config = UsageConfig;

    fn build(config: UsageConfig) -> Result<Self, String> {
        cloudact_core::warehouse::check_name(&config.table).map_err(|e| e.to_string())?;
        if config.endpoints.is_empty() {
            return Err("endpoints must name at least one usage endpoint".into());
        }
        for e in &config.endpoints {
            if !TOKEN_ENDPOINTS.contains(&e.as_str()) {
                return Err(format!(
                    "usage endpoint {e:?} is not supported; use {}",
                    TOKEN_ENDPOINTS.join(", ")
                ));
            }
        }
        Ok(UsageProcessor(config))
    }
}

/// One page of the Admin Usage API.
#[derive(Debug, Deserialize)]
pub struct UsagePage {
    pub data: Vec<UsageBucket>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub next_page: Option<String>,
}

impl Paged for UsagePage {
    fn next_cursor(&self) -> Result<Option<String>, String> {
        page_cursor(self.has_more, self.next_page.as_deref())
    }
}

#[derive(Debug, Deserialize)]
pub struct UsageBucket {
    pub start_time: i64,
    #[serde(default)]
    pub results: Vec<UsageResult>,
}

/// One result row; fields the endpoint does not have are absent (`None`).
#[derive(Debug, Default, Deserialize)]
pub struct UsageResult {
    pub model: Option<String>,
    pub project_id: Option<String>,
    pub batch: Option<bool>,
    pub service_tier: Option<String>,
    pub num_model_requests: Option<i64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub input_cached_tokens: Option<i64>,
    pub input_cache_write_tokens: Option<i64>,
    pub input_uncached_tokens: Option<i64>,
    pub input_audio_tokens: Option<i64>,
    pub output_audio_tokens: Option<i64>,
    // The unit-priced endpoints' counters and dimensions.
    pub images: Option<i64>,
    pub characters: Option<i64>,
    pub seconds: Option<i64>,
    pub usage_bytes: Option<i64>,
    pub num_sessions: Option<i64>,
    pub num_requests: Option<i64>,
    pub size: Option<String>,
    pub source: Option<String>,
    pub context_level: Option<String>,
}

impl UsageResult {
    /// Uncached input: as reported when the API says so (2026 semantics), otherwise all input
    /// less cached and cache writes; never negative.
    pub fn uncached_input(&self) -> i64 {
        self.input_uncached_tokens
            .unwrap_or_else(|| {
                self.input_tokens
                    .unwrap_or(0)
                    .saturating_sub(self.input_cached_tokens.unwrap_or(0))
                    .saturating_sub(self.input_cache_write_tokens.unwrap_or(0))
            })
            .max(0)
    }

    /// The stored row.
    pub fn into_row(self, org: &str, day: NaiveDate, endpoint: &str, run_id: &str, now: DateTime<Utc>) -> Row {
        let uncached = self.uncached_input();
        Row::new()
            .with("org_slug", org)
            .with("usage_date", day)
            .with("usage_type", endpoint)
            .with("model", self.model)
            .with("project_id", self.project_id)
            .with("batch", self.batch)
            .with("service_tier", self.service_tier)
            .with("num_model_requests", self.num_model_requests.unwrap_or(0))
            .with("input_tokens", self.input_tokens.unwrap_or(0))
            .with("output_tokens", self.output_tokens.unwrap_or(0))
            .with("input_cached_tokens", self.input_cached_tokens)
            .with("input_cache_write_tokens", self.input_cache_write_tokens)
            .with("input_uncached_tokens", self.input_uncached_tokens)
            .with("uncached_input_tokens", uncached)
            .with("input_audio_tokens", self.input_audio_tokens)
            .with("output_audio_tokens", self.output_audio_tokens)
            .with("run_id", run_id)
            .with("loaded_at", now)
    }
}

impl UsageResult {
    /// The stored row of a unit-priced endpoint: every counter and dimension such endpoints
    /// report (absent ones null), as given.
    pub fn into_unit_row(self, org: &str, day: NaiveDate, endpoint: &str, run_id: &str, now: DateTime<Utc>) -> Row {
        Row::new()
            .with("org_slug", org)
            .with("usage_date", day)
            .with("usage_type", endpoint)
            .with("model", self.model)
            .with("project_id", self.project_id)
            .with("size", self.size)
            .with("source", self.source)
            .with("context_level", self.context_level)
            .with("num_model_requests", self.num_model_requests)
            .with("input_tokens", self.input_tokens)
            .with("images", self.images)
            .with("characters", self.characters)
            .with("seconds", self.seconds)
            .with("usage_bytes", self.usage_bytes)
            .with("num_sessions", self.num_sessions)
            .with("num_requests", self.num_requests)
            .with("run_id", run_id)
            .with("loaded_at", now)
    }
}

/// The `group_by` of one usage endpoint: every dimension it can group by that prices or
/// attributes its usage.
pub fn group_by_of(endpoint: &str) -> &'static [&'static str] {
    match endpoint {
        "completions" => &["model", "project_id", "batch", "service_tier"],
        "images" => &["model", "project_id", "size", "source"],
        "web_search_calls" => &["model", "project_id", "context_level"],
        "vector_stores" | "code_interpreter_sessions" | "file_search_calls" => &["project_id"],
        _ => &["model", "project_id"],
    }
}

/// Every result of one endpoint for the step's day, page by page, as rows into `load`.
async fn pull_endpoint(
    ctx: &StepContext,
    p: &ProviderDay,
    endpoint: &str,
    load: &mut DayLoad<'_>,
    to_row: impl Fn(UsageResult) -> Row + Send + Sync,
) -> Result<usize, ProcessorError> {
    let (day, key, start) = (p.day, &p.key, p.start_unix());
    let http = &ctx.services.http;
    let url = p.url(&format!("/v1/organization/usage/{endpoint}"));
    let mut pager = Pager::new("OpenAI", &ctx.cancel, |page| {
        let mut query = vec![
            ("start_time", start.to_string()),
            ("end_time", (start + 86_400).to_string()),
            ("bucket_width", "1d".to_string()),
            ("limit", "1".to_string()),
        ];
        for g in group_by_of(endpoint) {
            query.push(("group_by", g.to_string()));
        }
        if let Some(p) = page {
            query.push(("page", p.to_string()));
        }
        http.get(&url).query(&query).bearer_auth(key.expose_secret())
    });
    while let Some(page) = pager.next::<UsagePage>().await? {
        for bucket in page.data {
            let bucket_day = DateTime::<Utc>::from_timestamp(bucket.start_time, 0).map(|t| t.date_naive());
            if bucket_day != Some(day) {
                return Err(ProcessorError::Failed(format!(
                    "OpenAI {endpoint} page {} holds a bucket starting at {} outside {day}",
                    pager.pages(),
                    bucket.start_time
                )));
            }
            for r in bucket.results {
                load.push(to_row(r)).await?;
            }
        }
    }
    Ok(pager.pages())
}

#[async_trait]
impl Processor for UsageProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let target = DayTable {
            dataset: &c.dataset,
            table: &c.table,
            schema: &c.schema,
            date: &c.date,
            partition: "usage_date",
            clustering: &["org_slug", "model"],
        };
        let p = ProviderDay::open(ctx, "openai", target).await?;
        let (org, day) = (&p.org, p.day);
        let now = Utc::now();
        let mut load = p.stream(ctx).await?;
        let mut pages = 0;
        for endpoint in &c.endpoints {
            pages += pull_endpoint(ctx, &p, endpoint, &mut load, |r| {
                r.into_row(org, day, endpoint, &ctx.run_id, now)
            })
            .await?;
        }
        let outcome = load.commit().await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({"table": c.table, "date": c.date, "pages": pages,
                                       "inserted": outcome.inserted, "replaced": outcome.deleted}),
        })
    }
}

/// `openai.unit_usage`: one day of every usage endpoint priced per unit (images, speech,
/// transcription, moderations, vector storage, code-interpreter sessions, file and web search
/// calls), each endpoint into its own table (`tables`: endpoint → table, one shared schema),
/// each replaced atomically. An endpoint not named is not pulled.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitUsageConfig {
    pub dataset: String,
    pub date: String,
    pub schema: String,
    pub tables: std::collections::BTreeMap<String, String>,
}

pub struct UnitUsageProcessor(UnitUsageConfig);

impl ProcessorDef for UnitUsageProcessor {
    const PS_TYPE: &'static str = "openai.unit_usage";
    type Config = UnitUsageConfig;

    fn build(config: UnitUsageConfig) -> Result<Self, String> {
        if config.tables.is_empty() {
            return Err("tables must name at least one usage endpoint".into());
        }
        for (endpoint, table) in &config.tables {
            if openai_unit_kind(endpoint).is_none() {
                let known: Vec<&str> = OPENAI_UNIT_KINDS.iter().map(|k| k.usage_type).collect();
                return Err(format!(
                    "usage endpoint {endpoint:?} is not priced per unit; use {}",
                    known.join(", ")
                ));
            }
            cloudact_core::warehouse::check_name(table).map_err(|e| e.to_string())?;
        }
        Ok(UnitUsageProcessor(config))
    }
}

#[async_trait]
impl Processor for UnitUsageProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let now = Utc::now();
        let (mut pages, mut inserted, mut per_table) = (0, 0, serde_json::Map::new());
        for (endpoint, table) in &c.tables {
            let target = DayTable {
                dataset: &c.dataset,
                table,
                schema: &c.schema,
                date: &c.date,
                partition: "usage_date",
                clustering: &["org_slug", "model"],
            };
            let p = ProviderDay::open(ctx, "openai", target).await?;
            let (org, day) = (&p.org, p.day);
            let mut load = p.stream(ctx).await?;
            pages += pull_endpoint(ctx, &p, endpoint, &mut load, |r| {
                r.into_unit_row(org, day, endpoint, &ctx.run_id, now)
            })
            .await?;
            let outcome = load.commit().await?;
            inserted += outcome.inserted;
            per_table.insert(table.clone(), serde_json::json!(outcome.inserted));
        }
        Ok(StepOutput {
            rows_processed: inserted,
            output: serde_json::json!({"date": c.date, "pages": pages, "inserted": inserted, "tables": per_table}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncached_input_uses_the_reported_counter_or_derives_it_safely() {
        let new = UsageResult {
            input_tokens: Some(100),
            input_cached_tokens: Some(30),
            input_cache_write_tokens: Some(10),
            input_uncached_tokens: Some(60),
            ..Default::default()
        };
        assert_eq!(new.uncached_input(), 60);
        let old = UsageResult {
            input_tokens: Some(100),
            input_cached_tokens: Some(30),
            ..Default::default()
        };
        assert_eq!(old.uncached_input(), 70, "before 2026: input less cached");
        let odd = UsageResult {
            input_tokens: Some(10),
            input_cached_tokens: Some(30),
            ..Default::default()
        };
        assert_eq!(odd.uncached_input(), 0, "never negative");
    }
}
