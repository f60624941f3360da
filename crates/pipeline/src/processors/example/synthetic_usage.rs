//! `example.synthetic_usage`: writes one day of synthetic LLM usage for the org, generated
//! deterministically from (org, date, seed), replacing that day's rows.

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::warehouse::Row;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{ensure_table, parse_day};
use crate::{
    context::StepContext,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

/// Models the example generates usage for (the last one has no price on purpose: it shows
/// the unknown-model flag).
const MODELS: [(&str, &str, &str); 6] = [
    ("openai", "gpt-4o", "standard"),
    ("openai", "gpt-4o-mini", "standard"),
    ("openai", "gpt-4o", "batch"),
    ("anthropic", "claude-3-5-sonnet-20241022", "standard"),
    ("anthropic", "claude-3-5-haiku-20241022", "standard"),
    ("openai", "example-unpriced-model", "standard"),
];
const PROJECTS: [&str; 2] = ["proj_web", "proj_batch"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticUsageConfig {
    pub dataset: String,
    pub date: String,
    pub seed: String,
    pub table: String,
    pub schema: String,
}

pub struct SyntheticUsageProcessor(SyntheticUsageConfig);

impl ProcessorDef for SyntheticUsageProcessor {
    const PS_TYPE: &'static str = "example.synthetic_usage";
    type Config = SyntheticUsageConfig;

    fn build(config: SyntheticUsageConfig) -> Result<Self, String> {
        cloudact_core::warehouse::check_name(&config.table).map_err(|e| e.to_string())?;
        Ok(SyntheticUsageProcessor(config))
    }
}

/// A small deterministic number stream from a SHA-256 of the inputs.
struct Stream {
    state: [u8; 32],
    counter: u64,
}

impl Stream {
    fn new(parts: &[&str]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p.as_bytes());
            h.update([0]);
        }
        Stream {
            state: h.finalize().into(),
            counter: 0,
        }
    }

    fn next(&mut self, below: u64) -> u64 {
        let mut h = Sha256::new();
        h.update(self.state);
        h.update(self.counter.to_le_bytes());
        self.counter += 1;
        let out = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&out[..8]);
        u64::from_le_bytes(b) % below.max(1)
    }
}

#[async_trait]
impl Processor for SyntheticUsageProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let org = ctx.require_org()?;
        let day = parse_day(&c.date)?;
        // Demo knob: `parameters.pause_ms` (≤ 5000) slows each day down, to watch progress,
        // cancellation and crash recovery.
        if let Some(ms) = ctx.params.get("pause_ms").and_then(serde_json::Value::as_u64) {
            tokio::time::sleep(std::time::Duration::from_millis(ms.min(5_000))).await;
        }
        ensure_table(ctx, &c.dataset, &c.table, &c.schema).await?;
        let mut stream = Stream::new(&[&org, &c.date, &c.seed]);
        let now = Utc::now();
        let mut rows = Vec::new();
        for (provider, model, tier) in MODELS {
            for project in PROJECTS {
                let requests = 50 + stream.next(950) as i64;
                let input = requests * (200 + stream.next(1800) as i64);
                let cached = input * stream.next(40) as i64 / 100;
                rows.push(
                    Row::new()
                        .with("org_slug", org.as_str())
                        .with("usage_date", day)
                        .with("provider", provider)
                        .with("model_id", model)
                        .with("project_id", project)
                        .with("pricing_tier", tier)
                        .with("requests", requests)
                        .with("input_tokens", input - cached)
                        .with("cached_input_tokens", cached)
                        .with("output_tokens", requests * (50 + stream.next(700) as i64))
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
