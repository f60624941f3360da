//! `gcp.api_extractor`: a snapshot of any Google Cloud REST list API (`GET
//! https://{service}.googleapis.com{path}`), called with the org's service account (OAuth2 JWT
//! grant for `scope`), every page (`pageToken` ← `nextPageToken`), each item of `list_field`
//! one row: the `columns` picked by dotted path plus the whole item as JSON, the day's
//! snapshot replaced atomically. 429 and 5xx are retried with backoff; an expired or revoked
//! token (401) is exchanged for a new one once per page. `GCP_API_BASE_URL` (tests and demos
//! only) replaces `https://{service}.googleapis.com`.

use std::{collections::BTreeMap, sync::RwLock, time::Duration};

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::warehouse::Row;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    context::StepContext,
    processors::day::{DayTable, LoadDay},
    providers::{
        http::{Paged, Pager},
        validate::{service_account_token, Validation},
    },
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpApiConfig {
    pub dataset: String,
    pub date: String,
    pub table: String,
    pub schema: String,
    /// The API's host name part: `cloudbilling`, `cloudresourcemanager`, `compute`, …
    pub service: String,
    /// The list method's path, e.g. `/v1/billingAccounts`.
    pub path: String,
    /// The response field holding the page's items, e.g. `billingAccounts`.
    pub list_field: String,
    /// OAuth2 scope the service account asks for.
    pub scope: String,
    /// Items per page (`pageSize`).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Extra query parameters (e.g. a `filter`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Column → dotted path of the item field it holds (`displayName`, `parent.id`).
    pub columns: BTreeMap<String, String>,
}

fn default_page_size() -> u32 {
    100
}

pub struct GcpApiExtractor(GcpApiConfig);

impl ProcessorDef for GcpApiExtractor {
    const PS_TYPE: &'static str = "gcp.api_extractor";
    type Config = GcpApiConfig;

    fn build(config: GcpApiConfig) -> Result<Self, String> {
        cloudact_core::warehouse::check_name(&config.table).map_err(|e| e.to_string())?;
        let host_ok = !config.service.is_empty()
            && config.service.len() <= 63
            && config
                .service
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !host_ok {
            return Err(format!(
                "service {:?} is not a googleapis.com service name",
                config.service
            ));
        }
        let path_ok = config.path.starts_with('/')
            && !config.path.contains("..")
            && config
                .path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.:".contains(&b));
        if !path_ok {
            return Err(format!("path {:?} must be an absolute API path", config.path));
        }
        if !config.scope.starts_with("https://www.googleapis.com/auth/") {
            return Err("scope must be a https://www.googleapis.com/auth/… scope".into());
        }
        if !(1..=1000).contains(&config.page_size) {
            return Err("page_size must be 1 to 1000".into());
        }
        for column in config.columns.keys() {
            cloudact_core::warehouse::check_name(column).map_err(|e| e.to_string())?;
        }
        Ok(GcpApiExtractor(config))
    }
}

/// One page of a Google list API: the whole body (the list field is named by the config).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct GooglePage(serde_json::Map<String, Value>);

impl Paged for GooglePage {
    fn next_cursor(&self) -> Result<Option<String>, String> {
        Ok(self
            .0
            .get("nextPageToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string))
    }
}

/// The value at a dotted path of an item (`parent.id`), as stored: strings as they are, other
/// scalars and objects as JSON text, absent as null.
pub fn pick(item: &Value, path: &str) -> Option<String> {
    let v = path.split('.').try_fold(item, |v, k| v.get(k))?;
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

async fn mint(ctx: &StepContext, sa: &str, scope: &str) -> Result<String, ProcessorError> {
    let (token, _) = service_account_token(
        &ctx.services.http,
        sa,
        scope,
        &ctx.services.settings.gcp_token_url,
        Duration::from_secs(30),
    )
    .await
    .map_err(|v| match v {
        Validation::Pending(m) => ProcessorError::Transient(m),
        Validation::Invalid(m) => ProcessorError::Failed(m),
        Validation::Valid => ProcessorError::Failed("no token".into()),
    })?;
    Ok(token)
}

#[async_trait]
impl Processor for GcpApiExtractor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let target = LoadDay::open(
            ctx,
            DayTable {
                dataset: &c.dataset,
                table: &c.table,
                schema: &c.schema,
                date: &c.date,
                partition: "snapshot_date",
                clustering: &["org_slug"],
            },
        )
        .await?;
        let sa = ctx.credential("gcp_sa").await?;
        let token = RwLock::new(mint(ctx, sa.expose_secret(), &c.scope).await?);
        let base = match ctx.services.settings.provider_base_urls.get("GCP_API_BASE_URL") {
            Some(b) => b.trim_end_matches('/').to_string(),
            None => format!("https://{}.googleapis.com", c.service),
        };
        let url = format!("{base}{}", c.path);
        let http = &ctx.services.http;
        let mut pager = Pager::new("GCP", &ctx.cancel, |page| {
            let mut query: Vec<(String, String)> = c.query.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            query.push(("pageSize".into(), c.page_size.to_string()));
            if let Some(p) = page {
                query.push(("pageToken".into(), p.to_string()));
            }
            let bearer = token.read().map(|t| t.clone()).unwrap_or_default();
            http.get(&url).query(&query).bearer_auth(bearer)
        });
        let now = Utc::now();
        let (mut rows, mut refreshed) = (Vec::new(), 0u32);
        let mut refreshed_this_page = false;
        loop {
            let page = match pager.next::<GooglePage>().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                // An expired or revoked token: a new one, once per page.
                Err(ProcessorError::Failed(m)) if m.contains("GCP returned 401") && !refreshed_this_page => {
                    let fresh = mint(ctx, sa.expose_secret(), &c.scope).await?;
                    if let Ok(mut t) = token.write() {
                        *t = fresh;
                    }
                    refreshed += 1;
                    refreshed_this_page = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            refreshed_this_page = false;
            let items = match page.0.get(&c.list_field) {
                None | Some(Value::Null) => &[][..],
                Some(Value::Array(items)) => items.as_slice(),
                Some(_) => {
                    return Err(ProcessorError::Failed(format!(
                        "GCP {}: {} is not a list [page {}]",
                        c.path,
                        c.list_field,
                        pager.pages()
                    )))
                }
            };
            for item in items {
                let mut row = Row::new()
                    .with("org_slug", target.org.as_str())
                    .with("snapshot_date", target.day);
                for (column, path) in &c.columns {
                    row.set(column, pick(item, path));
                }
                rows.push(
                    row.with("resource_json", item.to_string())
                        .with("run_id", ctx.run_id.as_str())
                        .with("loaded_at", now),
                );
            }
        }
        let outcome = target.replace(ctx, &rows).await?;
        Ok(StepOutput {
            rows_processed: outcome.inserted,
            output: serde_json::json!({"table": c.table, "date": c.date, "pages": pager.pages(),
                                       "inserted": outcome.inserted, "token_refreshes": refreshed}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_picked_by_dotted_path() {
        let item = serde_json::json!({"name": "billingAccounts/01", "open": true, "parent": {"id": "x"}, "n": null});
        assert_eq!(pick(&item, "name").as_deref(), Some("billingAccounts/01"));
        assert_eq!(pick(&item, "open").as_deref(), Some("true"));
        assert_eq!(pick(&item, "parent.id").as_deref(), Some("x"));
        assert_eq!(pick(&item, "n"), None);
        assert_eq!(pick(&item, "missing.deeper"), None);
    }
}
