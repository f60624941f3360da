//! `generic.api_extractor`: any JSON REST API by spec, into a raw table of the org's dataset.
//!
//! - Pagination: `cursor` (next cursor at `response_path` in the body, sent as `param`),
//!   `offset` / `page` (sent as `param`; stop on a page shorter than `limit`), `link` (the
//!   `Link: <…>; rel="next"` header, or a full URL at `response_path`; never to another host),
//!   or `none`.
//! - Auth from the org's vault (its stored credential for `auth.provider`): `bearer`,
//!   `header` (`header_name`), `query` (`param_name`), `basic` (`user:password`), or `none`.
//! - A request rate limit (`rate_limit.requests_per_second`, governor); 429/5xx/timeouts retried
//!   with backoff honouring `Retry-After`.
//! - Pages are read one at a time and rows written in batches of 1 000: memory is bounded by a
//!   page and a batch whatever the total.
//! - `write_mode: replace_day` (default) stages the rows and swaps the day in atomically at the
//!   end (a failure leaves the previous day); `merge` upserts each batch by a key built from
//!   `key_fields` as it goes, so progress before a failure is kept and a rerun never duplicates.
//!   Either way the output (or the error) reports pages and rows done.
//!
//! Row shape: `org_slug`, `extract_date`, `row_key` (merge), `record` (the record as JSON),
//! `extracted_at`, `run_id`.

use std::{num::NonZeroU32, sync::Arc};

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::warehouse::{FieldMode, FieldSchema, FieldType, Row, TableDef};
use governor::{Quota, RateLimiter};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    context::StepContext,
    load::{DayLoad, MergeLoad},
    processors::example::parse_day,
    providers::http::get_with_headers,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractorConfig {
    pub dataset: String,
    /// The day the extracted rows belong to (`extract_date`).
    pub date: String,
    pub url: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// Dot path to the record array in each page (`""`: the body is the array).
    #[serde(default = "default_data_path")]
    pub data_path: String,
    #[serde(default)]
    pub pagination: Pagination,
    #[serde(default)]
    pub rate_limit: RateLimit,
    #[serde(default)]
    pub auth: Auth,
    pub destination: Destination,
}

fn default_data_path() -> String {
    "data".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaginationType {
    #[default]
    None,
    Cursor,
    Offset,
    Page,
    Link,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pagination {
    #[serde(rename = "type", default)]
    pub kind: PaginationType,
    /// Request parameter carrying the cursor / offset / page number.
    pub param: Option<String>,
    /// Dot path of the next cursor (cursor) or next URL (link) in the body.
    pub response_path: Option<String>,
    /// Page size sent as `limit_param` (offset and page paging stop on a shorter page).
    pub limit: Option<u32>,
    pub limit_param: Option<String>,
    /// First page number (page paging; default 1).
    pub start: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            requests_per_second: default_rps(),
        }
    }
}

fn default_rps() -> u32 {
    10
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    #[default]
    None,
    Bearer,
    Header,
    Query,
    Basic,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(rename = "type", default)]
    pub kind: AuthType,
    /// The integration whose stored credential is used (`openai`, `anthropic`, …).
    pub provider: Option<String>,
    pub header_name: Option<String>,
    pub param_name: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    #[default]
    ReplaceDay,
    Merge,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub table: String,
    #[serde(default)]
    pub write_mode: WriteMode,
    /// Record fields (dot paths) whose values identify a record (merge).
    #[serde(default)]
    pub key_fields: Vec<String>,
}

pub struct ApiExtractor(ExtractorConfig);

impl ProcessorDef for ApiExtractor {
    const PS_TYPE: &'static str = "generic.api_extractor";
    type Config = ExtractorConfig;

    fn build(c: ExtractorConfig) -> Result<Self, String> {
        cloudact_core::warehouse::check_name(&c.destination.table).map_err(|e| e.to_string())?;
        let url = reqwest::Url::parse(&c.url).map_err(|e| format!("url {:?}: {e}", c.url))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("url {:?} must be an http(s) URL with a host", c.url));
        }
        if c.rate_limit.requests_per_second == 0 || c.rate_limit.requests_per_second > 1000 {
            return Err("rate_limit.requests_per_second must be 1..=1000".into());
        }
        let p = &c.pagination;
        match p.kind {
            PaginationType::Cursor if p.param.is_none() || p.response_path.is_none() => {
                return Err("cursor pagination needs param and response_path".into())
            }
            PaginationType::Offset | PaginationType::Page if p.limit.is_none() => {
                return Err("offset and page pagination need limit (a shorter page ends the listing)".into())
            }
            _ => {}
        }
        if c.auth.kind != AuthType::None && c.auth.provider.is_none() {
            return Err("auth needs provider: the integration whose credential is sent".into());
        }
        if c.auth.kind == AuthType::Header && c.auth.header_name.is_none() {
            return Err("header auth needs header_name".into());
        }
        if c.auth.kind == AuthType::Query && c.auth.param_name.is_none() {
            return Err("query auth needs param_name".into());
        }
        if c.destination.write_mode == WriteMode::Merge && c.destination.key_fields.is_empty() {
            return Err("merge needs key_fields".into());
        }
        Ok(ApiExtractor(c))
    }
}

/// The value at a dot path (`a.b.0.c`).
fn at_path<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.').try_fold(v, |cur, part| match cur {
        Value::Object(m) => m.get(part),
        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "").eq_ignore_ascii_case("rel=\"next\"") || p.trim() == "rel=next");
        is_next.then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

/// What the next request is, after a page.
enum Next {
    Done,
    Param(String),
    Url(reqwest::Url),
}

/// SHA-256 of the record's key fields; `None` when one is missing or null (such a record has
/// no identity to merge by).
fn row_key(record: &Value, fields: &[String]) -> Option<String> {
    let mut h = Sha256::new();
    for f in fields {
        let v = at_path(record, f).filter(|v| !v.is_null())?;
        h.update(v.to_string().as_bytes());
        h.update([0]);
    }
    Some(hex::encode(h.finalize()))
}

/// The raw-table definition every extractor destination uses.
pub fn raw_table(name: &str) -> TableDef {
    let f = |name: &str, t: FieldType, mode: FieldMode, d: &str| FieldSchema {
        name: name.into(),
        field_type: t,
        mode,
        description: Some(d.into()),
        fields: Vec::new(),
    };
    TableDef {
        name: name.into(),
        description: Some("records extracted by generic.api_extractor".into()),
        fields: vec![
            f("org_slug", FieldType::String, FieldMode::Required, "Org"),
            f(
                "extract_date",
                FieldType::Date,
                FieldMode::Required,
                "Day the extraction was for",
            ),
            f(
                "row_key",
                FieldType::String,
                FieldMode::Nullable,
                "SHA-256 of key_fields (merge)",
            ),
            f(
                "record",
                FieldType::Json,
                FieldMode::Required,
                "The record as the API returned it",
            ),
            f(
                "extracted_at",
                FieldType::Timestamp,
                FieldMode::Required,
                "Extraction time",
            ),
            f("run_id", FieldType::String, FieldMode::Required, "pipeline_logging_id"),
        ],
        partition_field: Some("extract_date".into()),
        clustering: vec!["org_slug".into()],
        lookup_keys: Vec::new(),
    }
}

enum Sink<'a> {
    Day(DayLoad<'a>),
    Merge(MergeLoad<'a>),
}

#[async_trait]
impl Processor for ApiExtractor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let org = ctx.require_org()?;
        let day = parse_day(&c.date)?;
        let def = raw_table(&c.destination.table);
        ctx.warehouse().create_table(&c.dataset, &def).await?;
        let base = reqwest::Url::parse(&c.url).map_err(|e| ProcessorError::Invalid(e.to_string()))?;
        // A stored credential is only ever sent to its own provider's API.
        let secret: Option<SecretString> = match (&c.auth.kind, &c.auth.provider) {
            (AuthType::None, _) | (_, None) => None,
            (_, Some(p)) => {
                let provider_base = ctx.provider_base_url(p)?;
                let provider_origin = reqwest::Url::parse(&provider_base)
                    .map_err(|e| ProcessorError::Failed(format!("provider {p} base URL: {e}")))?
                    .origin();
                if base.origin() != provider_origin {
                    return Err(ProcessorError::Invalid(format!(
                        "the {p} credential is only sent to {provider_base}, not to {}",
                        base.origin().ascii_serialization()
                    )));
                }
                Some(ctx.credential(p).await?)
            }
        };
        // Redirects are followed within the API's origin only (a header or query credential
        // would otherwise travel with them).
        let origin = base.origin();
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(ctx.services.settings.provider_http_timeout)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.url().origin() == origin && attempt.previous().len() < 5 {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()
            .map_err(|e| ProcessorError::Failed(format!("HTTP client: {e}")))?;
        let rps = NonZeroU32::new(c.rate_limit.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let limiter = Arc::new(RateLimiter::direct(Quota::per_second(rps)));
        let mut sink = match c.destination.write_mode {
            WriteMode::ReplaceDay => Sink::Day(DayLoad::begin(ctx, &c.dataset, &def, "extract_date", day).await?),
            WriteMode::Merge => Sink::Merge(MergeLoad::begin(ctx, &c.dataset, &def, "row_key").await?),
        };
        let now = Utc::now();
        let (mut pages, mut rows) = (0u64, 0u64);
        let mut next: Option<Next> = None;
        let mut offset: u64 = 0;
        let mut page_no: u64 = c.pagination.start.unwrap_or(1);
        let outcome: Result<(), ProcessorError> = async {
            loop {
                if ctx.cancel.is_cancelled() {
                    return Err(ProcessorError::Cancelled);
                }
                if pages >= crate::providers::http::MAX_PAGES as u64 {
                    return Err(ProcessorError::Failed(format!(
                        "more than {} pages; stopping",
                        crate::providers::http::MAX_PAGES
                    )));
                }
                let mut url = match &next {
                    Some(Next::Url(u)) => u.clone(),
                    _ => base.clone(),
                };
                if !matches!(next, Some(Next::Url(_))) {
                    {
                        let mut q = url.query_pairs_mut();
                        for (k, v) in &c.params {
                            q.append_pair(k, v);
                        }
                        let p = &c.pagination;
                        if let (Some(limit), Some(lp)) = (p.limit, &p.limit_param) {
                            q.append_pair(lp, &limit.to_string());
                        }
                        let param = p.param.as_deref();
                        match (p.kind, &next, param) {
                            (PaginationType::Cursor, Some(Next::Param(cur)), Some(name)) => {
                                q.append_pair(name, cur);
                            }
                            (PaginationType::Offset, _, _) => {
                                q.append_pair(param.unwrap_or("offset"), &offset.to_string());
                            }
                            (PaginationType::Page, _, _) => {
                                q.append_pair(param.unwrap_or("page"), &page_no.to_string());
                            }
                            _ => {}
                        }
                    }
                    if url.query() == Some("") {
                        url.set_query(None);
                    }
                }
                limiter.until_ready().await;
                let where_ = format!("page {} ({})", pages + 1, url.path());
                let http = &http;
                let (body, headers): (Value, _) = get_with_headers("API", || {
                    let mut req = http.get(url.clone());
                    for (k, v) in &c.headers {
                        req = req.header(k, v);
                    }
                    if let Some(s) = &secret {
                        let s = s.expose_secret();
                        req = match c.auth.kind {
                            AuthType::Bearer => req.bearer_auth(s),
                            AuthType::Header => req.header(c.auth.header_name.as_deref().unwrap_or("X-API-Key"), s),
                            AuthType::Query => req.query(&[(c.auth.param_name.as_deref().unwrap_or("api_key"), s)]),
                            AuthType::Basic => {
                                let (user, pass) = s.split_once(':').unwrap_or((s, ""));
                                req.basic_auth(user, Some(pass))
                            }
                            AuthType::None => req,
                        };
                    }
                    req
                })
                .await
                .map_err(|e| e.map_message(|m| format!("{m} [{where_}]")))?;
                let records = at_path(&body, &c.data_path).and_then(Value::as_array).ok_or_else(|| {
                    ProcessorError::Failed(format!("no record array at {:?} [{where_}]", c.data_path))
                })?;
                let count = records.len() as u64;
                for record in records {
                    let mut row = Row::new()
                        .with("org_slug", org.as_str())
                        .with("extract_date", day)
                        .with("record", record.clone())
                        .with("extracted_at", now)
                        .with("run_id", ctx.run_id.as_str());
                    if !c.destination.key_fields.is_empty() {
                        let key = row_key(record, &c.destination.key_fields).ok_or_else(|| {
                            ProcessorError::Failed(format!(
                                "a record lacks a key field ({}) [{where_}]",
                                c.destination.key_fields.join(", ")
                            ))
                        })?;
                        row.set("row_key", key);
                    }
                    match &mut sink {
                        Sink::Day(l) => l.push(row).await?,
                        Sink::Merge(l) => l.push(row).await?,
                    }
                }
                pages += 1;
                rows += count;
                let p = &c.pagination;
                let short = p.limit.is_some_and(|l| count < u64::from(l)) || count == 0;
                next = Some(match p.kind {
                    PaginationType::None => Next::Done,
                    PaginationType::Cursor => match p.response_path.as_deref().and_then(|rp| at_path(&body, rp)) {
                        Some(Value::String(s)) if !s.is_empty() => Next::Param(s.clone()),
                        Some(Value::Number(n)) => Next::Param(n.to_string()),
                        _ => Next::Done,
                    },
                    PaginationType::Offset | PaginationType::Page if short => Next::Done,
                    PaginationType::Offset => {
                        offset += count;
                        Next::Param(offset.to_string())
                    }
                    PaginationType::Page => {
                        page_no += 1;
                        Next::Param(page_no.to_string())
                    }
                    PaginationType::Link => {
                        let target = match p.response_path.as_deref() {
                            Some(rp) => at_path(&body, rp).and_then(Value::as_str).map(str::to_string),
                            None => next_link(&headers),
                        };
                        match target.filter(|t| !t.is_empty()) {
                            None => Next::Done,
                            Some(t) => {
                                let u = url
                                    .join(&t)
                                    .map_err(|e| ProcessorError::Failed(format!("next link: {e} [{where_}]")))?;
                                if u.origin() != base.origin() {
                                    return Err(ProcessorError::Failed(format!(
                                        "next link to {}{} leaves {} (credentials are never sent elsewhere) [{where_}]",
                                        u.origin().ascii_serialization(),
                                        u.path(),
                                        base.origin().ascii_serialization()
                                    )));
                                }
                                Next::Url(u)
                            }
                        }
                    }
                });
                if matches!(next, Some(Next::Done)) {
                    return Ok(());
                }
            }
        }
        .await;
        let progress = format!("{rows} records from {pages} pages");
        match (outcome, sink) {
            (Ok(()), Sink::Day(load)) => {
                let done = load.commit().await?;
                Ok(StepOutput {
                    rows_processed: done.inserted,
                    output: serde_json::json!({"table": c.destination.table, "write_mode": "replace_day", "pages": pages,
                                               "records": rows, "inserted": done.inserted, "replaced": done.deleted}),
                })
            }
            (Ok(()), Sink::Merge(load)) => {
                let merged = load.finish().await?;
                Ok(StepOutput {
                    rows_processed: merged,
                    output: serde_json::json!({"table": c.destination.table, "write_mode": "merge", "pages": pages,
                                               "records": rows, "merged": merged}),
                })
            }
            (Err(e), Sink::Day(_)) => Err(e.map_message(|m| {
                format!("{m}; {progress} were read before the failure; the day keeps its previous rows")
            })),
            (Err(e), Sink::Merge(load)) => {
                let merged_before = load.merged();
                let kept = load.finish().await.unwrap_or(merged_before);
                Err(e.map_message(|m| {
                    format!("{m}; {progress} were read before the failure and {kept} are kept (merged by key)")
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_paths_and_link_headers() {
        let v = serde_json::json!({"meta": {"next": "abc"}, "items": [{"id": 1}]});
        assert_eq!(at_path(&v, "meta.next"), Some(&Value::String("abc".into())));
        assert_eq!(at_path(&v, "items.0.id"), Some(&Value::from(1)));
        assert_eq!(at_path(&v, "nope.x"), None);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            "<https://a.example/x?page=1>; rel=\"prev\", <https://a.example/x?page=3>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://a.example/x?page=3"));
    }

    #[test]
    fn row_keys_depend_on_the_key_fields_only() {
        let a = serde_json::json!({"id": 7, "name": "x"});
        let b = serde_json::json!({"id": 7, "name": "y"});
        let keys = vec!["id".to_string()];
        assert_eq!(row_key(&a, &keys), row_key(&b, &keys));
        assert_ne!(row_key(&a, &keys), row_key(&a, &["name".to_string()]));
        assert_eq!(
            row_key(&serde_json::json!({"name": "x"}), &keys),
            None,
            "no id, no identity"
        );
        assert_eq!(row_key(&serde_json::json!({"id": null}), &keys), None);
    }

    #[test]
    fn configs_are_checked_when_built() {
        let base = |extra: Value| -> Result<ApiExtractor, String> {
            let mut v = serde_json::json!({"dataset": "d", "date": "2026-01-01", "url": "https://api.example.com/x",
                                           "destination": {"table": "t"}});
            if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
                m.extend(e);
            }
            ApiExtractor::build(serde_json::from_value(v).map_err(|e| e.to_string())?)
        };
        assert!(base(serde_json::json!({})).is_ok());
        assert!(base(serde_json::json!({"url": "file:///etc/passwd"})).is_err());
        assert!(base(serde_json::json!({"pagination": {"type": "cursor"}})).is_err());
        assert!(base(serde_json::json!({"pagination": {"type": "page"}})).is_err());
        assert!(base(serde_json::json!({"auth": {"type": "bearer"}})).is_err());
        assert!(base(serde_json::json!({"destination": {"table": "t", "write_mode": "merge"}})).is_err());
        assert!(base(serde_json::json!({"rate_limit": {"requests_per_second": 0}})).is_err());
    }
}
