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
