//! One provider request with the retry policy every outgoing call shares: 429 and 5xx (and
//! transport errors, cut-off bodies) are retried with exponential backoff and jitter, honouring
//! `Retry-After`; other statuses fail with the provider's message.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::registry::ProcessorError;

/// How one attempt ended, when it did not succeed.
pub(crate) enum Fetch {
    Retry(String, Option<Duration>),
    Fail(String),
}

/// Sends the request `build` makes (again on each attempt) and returns its JSON body.
pub async fn get_json(provider: &str, build: impl Fn() -> reqwest::RequestBuilder) -> Result<Value, ProcessorError> {
    get_parsed(provider, build).await
}

/// As [`get_json`], parsed straight into `T` (a body of the wrong shape is retried like a
/// malformed one, then fails naming the problem).
pub async fn get_parsed<T: DeserializeOwned>(
    provider: &str,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<T, ProcessorError> {
    Ok(get_with_headers(provider, build).await?.0)
}

/// As [`get_parsed`], with the response headers (for `Link` paging).
pub async fn get_with_headers<T: DeserializeOwned>(
    provider: &str,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<(T, reqwest::header::HeaderMap), ProcessorError> {
    send_with_retry(provider, build, |body, headers| {
        // A cut-off or unparseable body may be a transient fault; valid JSON of the wrong
        // shape will not fix itself.
        serde_json::from_slice::<T>(body)
            .map(|v| (v, headers.clone()))
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => {
                    Fetch::Fail(format!("{provider} response of an unexpected shape: {e}"))
                }
                _ => Fetch::Retry(format!("malformed {provider} response: {e}"), None),
            })
    })
    .await
}

/// Sends the request `build` makes (again on each attempt) under the shared retry policy and
/// hands a 2xx body and its headers to `accept`.
pub(crate) async fn send_with_retry<T>(
    provider: &str,
    build: impl Fn() -> reqwest::RequestBuilder,
    accept: impl Fn(&[u8], &reqwest::header::HeaderMap) -> Result<T, Fetch>,
) -> Result<T, ProcessorError> {
    let attempt = || async {
        let resp = build()
            .send()
            .await
            // Never the URL: a query-string credential would end up in the step's error.
            .map_err(|e| Fetch::Retry(format!("{provider} unreachable: {}", e.without_url()), None))?;
        let status = resp.status().as_u16();
        metrics::counter!("provider_requests_total", "provider" => provider.to_string(), "status" => status.to_string())
            .increment(1);
        if status == 429 {
            metrics::counter!("provider_rate_limited_total", "provider" => provider.to_string()).increment(1);
        }
        let headers = resp.headers().clone();
        let retry_after = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(MAX_RETRY_AFTER_SECONDS)));
        let body = resp
            .bytes()
            .await
            .map_err(|e| Fetch::Retry(format!("{provider} response: {}", e.without_url()), None))?;
        match status {
            200..=299 => accept(&body, &headers),
            429 | 500..=599 => Err(Fetch::Retry(format!("{provider} returned {status}"), retry_after)),
            _ => Err(Fetch::Fail(format!(
                "{provider} returned {status}: {}",
                super::redact::redact_secrets(&String::from_utf8_lossy(&body).chars().take(300).collect::<String>())
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
        .notify(|_, _| metrics::counter!("provider_retries_total", "provider" => provider.to_string()).increment(1))
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

/// A `Retry-After` longer than this is capped (a provider asking for an hour must not park a
/// run for an hour; the step's own retries take over).
const MAX_RETRY_AFTER_SECONDS: u64 = 60;

/// A page of a cursor-paged provider listing.
pub trait Paged {
    /// The cursor of the next page, `Ok(None)` on the last page.
    fn next_cursor(&self) -> Result<Option<String>, String>;
}

/// OpenAI's and Anthropic's admin-API page envelope with untyped buckets.
#[derive(Debug, serde::Deserialize)]
pub struct ValuePage {
    pub data: Vec<Value>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub next_page: Option<String>,
}

impl Paged for ValuePage {
    fn next_cursor(&self) -> Result<Option<String>, String> {
        page_cursor(self.has_more, self.next_page.as_deref())
    }
}

/// `has_more` + `next_page` → the next cursor (`has_more` without a cursor is an error).
pub fn page_cursor(has_more: bool, next_page: Option<&str>) -> Result<Option<String>, String> {
    match (has_more, next_page) {
        (true, Some(next)) => Ok(Some(next.to_string())),
        (true, None) => Err("has_more without next_page".to_string()),
        (false, _) => Ok(None),
    }
}

/// Walks a paged listing one page at a time (memory holds one page): `build` makes the request
/// for a cursor (`None` first). Errors name the page number and its cursor.
pub struct Pager<'a, B> {
    provider: &'a str,
    cancel: &'a tokio_util::sync::CancellationToken,
    build: B,
    cursor: Option<String>,
    fetched: usize,
    done: bool,
}

/// Pages one day of a provider listing may have before the load stops (a runaway cursor).
pub const MAX_PAGES: usize = 100_000;

impl<'a, B: Fn(Option<&str>) -> reqwest::RequestBuilder> Pager<'a, B> {
    pub fn new(provider: &'a str, cancel: &'a tokio_util::sync::CancellationToken, build: B) -> Self {
        Pager {
            provider,
            cancel,
            build,
            cursor: None,
            fetched: 0,
            done: false,
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next<T: DeserializeOwned + Paged>(&mut self) -> Result<Option<T>, ProcessorError> {
        if self.done {
            return Ok(None);
        }
        if self.cancel.is_cancelled() {
            return Err(ProcessorError::Cancelled);
        }
        if self.fetched >= MAX_PAGES {
            return Err(ProcessorError::Failed(format!(
                "{}: more than {MAX_PAGES} pages for one load; stopping",
                self.provider
            )));
        }
        let number = self.fetched + 1;
        let where_ = match &self.cursor {
            Some(c) => format!("page {number} (cursor {c:?})"),
            None => format!("page {number}"),
        };
        let cursor = self.cursor.clone();
        let page: T = get_parsed(self.provider, || (self.build)(cursor.as_deref()))
            .await
            .map_err(|e| e.map_message(|m| format!("{m} [{where_}]")))?;
        let next = page
            .next_cursor()
            .map_err(|m| ProcessorError::Transient(format!("{}: {m} [{where_}]", self.provider)))?;
        self.fetched = number;
        self.done = next.is_none();
        self.cursor = next;
        Ok(Some(page))
    }

    /// Pages fetched so far.
    pub fn pages(&self) -> usize {
        self.fetched
    }
}

/// Every page of a paged provider listing (`data`, `has_more`, `next_page`), for listings that
/// are small by nature (cost reports): each page's `data` buckets, in order.
pub async fn get_all_pages(
    provider: &str,
    cancel: &tokio_util::sync::CancellationToken,
    build: impl Fn(Option<&str>) -> reqwest::RequestBuilder,
) -> Result<Vec<Value>, ProcessorError> {
    let mut pager = Pager::new(provider, cancel, build);
    let mut buckets = Vec::new();
    while let Some(page) = pager.next::<ValuePage>().await? {
        buckets.extend(page.data);
    }
    Ok(buckets)
}
