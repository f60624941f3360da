//! One provider GET with the retry policy every provider client shares: 429 and 5xx (and
//! transport errors, malformed JSON) are retried with exponential backoff and jitter, honouring
//! `Retry-After`; other statuses fail with the provider's message.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde_json::Value;

use crate::registry::ProcessorError;

enum Fetch {
    Retry(String, Option<Duration>),
    Fail(String),
}

/// Sends the request `build` makes (again on each attempt) and returns its JSON body.
pub async fn get_json(provider: &str, build: impl Fn() -> reqwest::RequestBuilder) -> Result<Value, ProcessorError> {
    let attempt = || async {
        let resp = build()
            .send()
            .await
            .map_err(|e| Fetch::Retry(format!("{provider} unreachable: {e}"), None))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp
            .text()
            .await
            .map_err(|e| Fetch::Retry(format!("{provider} response: {e}"), None))?;
        match status {
            200..=299 => serde_json::from_str::<Value>(&text)
                .map_err(|e| Fetch::Retry(format!("malformed {provider} response: {e}"), None)),
            429 | 500..=599 => Err(Fetch::Retry(format!("{provider} returned {status}"), retry_after)),
            _ => Err(Fetch::Fail(format!(
                "{provider} returned {status}: {}",
                text.chars().take(300).collect::<String>()
            ))),
        }
    };
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_times(4)
                .with_jitter(),
        )
        .when(|e| matches!(e, Fetch::Retry(..)))
        .adjust(|e, d| match e {
            Fetch::Retry(_, Some(after)) => Some(*after),
            _ => d,
        })
        .await
        .map_err(|e| match e {
            Fetch::Retry(m, _) => ProcessorError::Transient(m),
            Fetch::Fail(m) => ProcessorError::Failed(m),
        })
}

/// Every page of a paged provider listing (`data`, `has_more`, `next_page`, as OpenAI's and
/// Anthropic's admin APIs page): `build` makes the request for a page cursor (`None` first).
/// Returns each page's `data` buckets, in order.
pub async fn get_all_pages(
    provider: &str,
    cancel: &tokio_util::sync::CancellationToken,
    build: impl Fn(Option<&str>) -> reqwest::RequestBuilder,
) -> Result<Vec<Value>, ProcessorError> {
    const MAX_PAGES: usize = 1000;
    let mut buckets = Vec::new();
    let mut page: Option<String> = None;
    for _ in 0..MAX_PAGES {
        if cancel.is_cancelled() {
            return Err(ProcessorError::Cancelled);
        }
        let body = get_json(provider, || build(page.as_deref())).await?;
        let data = body["data"]
            .as_array()
            .ok_or_else(|| ProcessorError::Transient(format!("{provider} page without data[]")))?;
        buckets.extend(data.iter().cloned());
        match (body["has_more"] == Value::Bool(true), body["next_page"].as_str()) {
            (true, Some(next)) => page = Some(next.to_string()),
            (true, None) => {
                return Err(ProcessorError::Transient(format!(
                    "{provider}: has_more without next_page"
                )))
            }
            _ => return Ok(buckets),
        }
    }
    Err(ProcessorError::Failed(format!(
        "{provider}: more than {MAX_PAGES} pages for one day; stopping"
    )))
}
