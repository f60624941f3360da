//! `notify_systems.slack_notification`: a message to the Slack incoming webhook in the settings
//! (`SLACK_WEBHOOK_URL`, a secret: never in a spec), as Block Kit blocks (header, the message,
//! the run's facts) with a plain-text fallback, sent under the shared retry policy
//! ([`send_with_retry`]: 429 and 5xx retried, honouring `Retry-After`).

use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use super::run_facts;
use crate::{
    context::StepContext,
    providers::http::send_with_retry,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Header line (e.g. "Pipeline {pipeline_id}: {run_status}").
    pub title: String,
    #[serde(default)]
    pub message: String,
    /// Users or groups to mention (`U0123…`, `S0123…`), e.g. on failure.
    #[serde(default)]
    pub mentions: Vec<String>,
}

pub struct SlackNotification(SlackConfig);

impl ProcessorDef for SlackNotification {
    const PS_TYPE: &'static str = "notify_systems.slack_notification";
    type Config = SlackConfig;

    fn build(config: SlackConfig) -> Result<Self, String> {
        if config.title.trim().is_empty() || config.title.len() > 150 {
            return Err("title must be 1 to 150 characters (Slack's header limit)".into());
        }
        if config.message.len() > 2900 {
            return Err("message must be at most 2 900 characters".into());
        }
        for m in &config.mentions {
            if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("mention {m:?} must be a Slack user or group id"));
            }
        }
        Ok(SlackNotification(config))
    }
}

const SECTION_LIMIT: usize = 3000;

#[async_trait]
impl Processor for SlackNotification {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let url = ctx
            .services
            .settings
            .slack_webhook_url
            .clone()
            .ok_or_else(|| ProcessorError::Invalid("Slack notifications need SLACK_WEBHOOK_URL set".into()))?;
        let facts = run_facts(ctx);
        let mut text = c.message.clone();
        if let Some(e) = ctx.variable("run_error").filter(|e| !e.is_empty()) {
            text.push_str(&format!("\n*Error:* {e}"));
        }
        let mentions: Vec<String> = c
            .mentions
            .iter()
            .map(|m| {
                if m.starts_with('S') {
                    format!("<!subteam^{m}>")
                } else {
                    format!("<@{m}>")
                }
            })
            .collect();
        if !mentions.is_empty() {
            text.push_str(&format!("\n{}", mentions.join(" ")));
        }
        // Slack refuses a section over 3 000 characters (the run error can be long).
        if text.chars().count() > SECTION_LIMIT {
            text = text.chars().take(SECTION_LIMIT - 1).collect::<String>() + "…";
        }
        let fields: Vec<serde_json::Value> = facts
            .iter()
            .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}:*\n{v}")}))
            .collect();
        let mut blocks = vec![json!({"type": "header", "text": {"type": "plain_text", "text": c.title}})];
        if !text.trim().is_empty() {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
        }
        blocks.push(json!({"type": "section", "fields": fields}));
        let body = json!({"text": format!("{}\n{}", c.title, text.trim()), "blocks": blocks});
        let http = &ctx.services.http;
        send_with_retry(
            "Slack",
            || {
                http.post(url.expose_secret())
                    .timeout(Duration::from_secs(10))
                    .json(&body)
            },
            |_, _| Ok(()),
        )
        .await?;
        Ok(StepOutput {
            rows_processed: 0,
            output: json!({"delivered": true}),
        })
    }
}
