//! **Sandbox provider server — a test and demo tool.** It speaks the documented HTTP APIs of
//! OpenAI (models, every Admin Usage API endpoint, Costs API), Anthropic (models,
//! organizations/me, usage_report/messages, cost_report), DeepSeek (models, user/balance) and
//! Google (the OAuth2 JWT-grant token endpoint, Cloud Billing `v1/billingAccounts`) with
//! deterministic data derived from a seed, so tests and the README demo exercise real
//! HTTP without the real providers. Production never talks to it.
//!
//! Keys are checked like the real services check them, with each provider's error body:
//! OpenAI and DeepSeek want `Authorization: Bearer sk-…`; the OpenAI usage/costs endpoints want
//! an admin key `sk-admin-…`; Anthropic wants `x-api-key: sk-ant-…` plus `anthropic-version`,
//! and its organization endpoints an admin key `sk-ant-admin…`. A key containing `invalid` is
//! rejected (401); an admin key containing `noscope` lacks the model scope (403 on models).
//!
//! Fault knobs, by key substring or by the `x-sandbox-fault` header: `fault429` (429 with
//! `Retry-After: 1`), `fault500` (500), `slow` (answers after 3 s), `truncated` (a cut-off
//! JSON body), `malformed` (valid JSON of the wrong shape).
//!
//! Scripted faults for the usage, cost and balance endpoints of every provider, set with `PUT /_sandbox/faults`
//! (JSON [`Faults`]) and cleared with `DELETE /_sandbox/faults`: a storm of the next N requests
//! answered 429 (`Retry-After: 1`) or 500, the next N answered slowly, one day's usage split
//! over several pages, and one page of one day served malformed until cleared.

#![allow(clippy::result_large_err)] // handler helpers hand back a ready response as their error

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Scripted faults (see the module docs).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// The next N usage/cost requests answer 429 with `Retry-After: 1`.
    #[serde(default)]
    pub rate_limited: u32,
    /// The next N usage/cost requests answer 500.
    #[serde(default)]
    pub server_errors: u32,
    /// The next N usage/cost requests answer after `slow_ms`.
    #[serde(default)]
    pub slow: u32,
    #[serde(default)]
    pub slow_ms: u64,
    /// Each day's OpenAI usage results are split over this many pages.
    #[serde(default)]
    pub pages_per_day: Option<usize>,
    /// This day's page number `malformed_page` (0-based) of OpenAI usage is served as valid JSON
    /// of the wrong shape, until cleared.
    #[serde(default)]
    pub malformed_day: Option<NaiveDate>,
    #[serde(default)]
    pub malformed_page: usize,
    /// After this many pages of a Google list API, the access token that fetched them
    /// expires (the next request with it answers 401 UNAUTHENTICATED).
    #[serde(default)]
    pub expire_token_after_pages: Option<u32>,
    /// A Google list API serves at most this many items a page, whatever `pageSize` asks.
    #[serde(default)]
    pub max_page_size: Option<usize>,
}

#[derive(Clone)]
struct Sandbox {
    seed: u64,
    faults: std::sync::Arc<std::sync::Mutex<Faults>>,
    /// Service accounts the token endpoint knows: client_email → RSA public key (PEM).
    service_accounts: std::sync::Arc<Vec<(String, String)>>,
    /// Access tokens issued (each one distinct), and those since expired.
    tokens: std::sync::Arc<std::sync::Mutex<GoogleTokens>>,
}

#[derive(Default)]
struct GoogleTokens {
    issued: u64,
    expired: std::collections::HashSet<String>,
    /// Pages served since the last `expire_token_after_pages` fault was set.
    pages: u32,
}

/// The sandbox app (its token endpoint knows no service account).
pub fn router(seed: u64) -> Router {
    router_with_service_accounts(seed, Vec::new())
}

/// The sandbox app whose Google OAuth2 token endpoint (`POST /token`) accepts JWT grants
/// signed (RS256) by these service accounts: (client_email, public key PEM).
pub fn router_with_service_accounts(seed: u64, service_accounts: Vec<(String, String)>) -> Router {
    Router::new()
        .route("/token", axum::routing::post(google_token))
        .route("/v1/models", get(models))
        .route("/v1/organization/usage/{endpoint}", get(openai_usage))
        .route("/_sandbox/faults", axum::routing::put(set_faults).delete(clear_faults))
        .route("/v1/organization/costs", get(openai_costs))
        .route("/v1/organizations/me", get(anthropic_me))
        .route("/v1/organizations/usage_report/messages", get(anthropic_usage))
        .route("/v1/organizations/cost_report", get(anthropic_costs))
        .route("/models", get(deepseek_models))
        .route("/user/balance", get(deepseek_balance))
        .route("/v1/billingAccounts", get(google_billing_accounts))
        .route("/bigquery/v2/projects/{project}/datasets", get(bigquery_datasets))
        .with_state(Sandbox {
            seed,
            faults: Default::default(),
            service_accounts: std::sync::Arc::new(service_accounts),
            tokens: Default::default(),
        })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
    DeepSeek,
}

fn error(provider: Provider, status: StatusCode, message: &str) -> Response {
    let body = match provider {
        Provider::OpenAi | Provider::DeepSeek => {
            let kind = if status == StatusCode::UNAUTHORIZED {
                "invalid_request_error"
            } else {
                "api_error"
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": status.canonical_reason()}})
        }
        Provider::Anthropic => {
            let kind = match status {
                StatusCode::UNAUTHORIZED => "authentication_error",
                StatusCode::FORBIDDEN => "permission_error",
                StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
                StatusCode::BAD_REQUEST => "invalid_request_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    (status, Json(body)).into_response()
}

/// The presented key, checked for the provider's scheme; `Err` is the provider's error reply.
fn key(provider: Provider, headers: &HeaderMap) -> Result<String, Response> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let presented = match provider {
        Provider::Anthropic => {
            if h("anthropic-version").is_none() {
                return Err(error(
                    provider,
                    StatusCode::BAD_REQUEST,
                    "anthropic-version: header is required",
                ));
            }
            h("x-api-key")
        }
        _ => h("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string)),
    };
    let Some(k) = presented else {
        return Err(error(
            provider,
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key.",
        ));
    };
    let prefix = if provider == Provider::Anthropic {
        "sk-ant-"
    } else {
        "sk-"
    };
    if !k.starts_with(prefix) || k.contains("invalid") {
        return Err(error(provider, StatusCode::UNAUTHORIZED, "Incorrect API key provided."));
    }
    Ok(k)
}

/// Applies the fault knobs; `Some` is the faulty reply.
async fn fault(provider: Provider, key: &str, headers: &HeaderMap) -> Option<Response> {
    let knob = headers
        .get("x-sandbox-fault")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let has = |k: &str| key.contains(k) || knob == k.trim_start_matches("fault");
    if has("slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if has("fault429") {
        return Some(rate_limited(provider));
    }
    if has("fault500") {
        return Some(error(
            provider,
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error processing your request.",
        ));
    }
    if has("truncated") {
        return Some(
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    "{\"object\":\"page\",\"data\":[{\"object\":\"bucket\",\"start_ti",
                ))
                .unwrap_or_default(),
        );
    }
    if has("malformed") {
        return Some((StatusCode::OK, Json(json!({"object": "page", "data": "not-a-list"}))).into_response());
    }
    None
}

/// The provider's 429, asking for a retry after one second.
fn rate_limited(provider: Provider) -> Response {
    let mut r = error(
        provider,
        StatusCode::TOO_MANY_REQUESTS,
        "Rate limit reached; retry after 1 second.",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

/// A deterministic number in `0..below` from the seed and the given parts.
fn pick(seed: u64, parts: &[&str], below: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let out = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&out[..8]);
    u64::from_le_bytes(b) % below.max(1)
}

const OPENAI_MODELS: [&str; 3] = ["gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "o3-mini-2025-01-31"];
const OPENAI_EMBEDDING_MODELS: [&str; 1] = ["text-embedding-3-small"];
const OPENAI_PROJECTS: [&str; 2] = ["proj_sandbox_web", "proj_sandbox_batch"];
const ANTHROPIC_MODELS: [&str; 3] = [
    "claude-3-5-sonnet-20241022",
    "claude-3-5-haiku-20241022",
    "claude-sonnet-4-5-20250929",
];

/// The usage shapes the sandbox Anthropic reports each day: (model, service tier, context
/// window). Sonnet 4.5 also has long-context (above 200k) usage, priced at its long-context
/// rates.
const ANTHROPIC_USAGE: [(&str, &str, &str); 7] = [
    ("claude-3-5-sonnet-20241022", "standard", "0-200k"),
    ("claude-3-5-sonnet-20241022", "batch", "0-200k"),
    ("claude-3-5-haiku-20241022", "standard", "0-200k"),
    ("claude-3-5-haiku-20241022", "batch", "0-200k"),
    ("claude-sonnet-4-5-20250929", "standard", "0-200k"),
    ("claude-sonnet-4-5-20250929", "batch", "0-200k"),
    ("claude-sonnet-4-5-20250929", "standard", "200k-1M"),
];

/// The deterministic counters of one Anthropic usage shape on one day: (uncached, cache read,
/// 5-minute write, 1-hour write, output, web searches).
fn anthropic_counts(seed: u64, day: &str, m: &str, tier: &str, window: &str) -> [u64; 6] {
    // The short-context shapes keep the parts they always had (the same numbers as before).
    let tier_part = if window == "0-200k" {
        tier.to_string()
    } else {
        format!("{tier}/{window}")
    };
    let p = |k: &str, n: u64| pick(seed, &[day, m, tier_part.as_str(), k], n);
    [
        1_000 + p("u", 500_000),
        p("r", 200_000),
        p("f", 50_000),
        p("h", 20_000),
        500 + p("o", 100_000),
        p("s", 20),
    ]
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({"error": error, "error_description": description}))).into_response()
}

/// Google's OAuth2 JWT-bearer grant: the assertion must be an RS256 JWT signed by a known
/// service account, for this token endpoint (`aud`), unexpired, with a scope.
async fn google_token(State(s): State<Sandbox>, body: String) -> Response {
    let form: Vec<(String, String)> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3A", ":").replace("%3a", ":")))
        .collect();
    let grant = form.iter().find(|(k, _)| k == "grant_type").map(|(_, v)| v.as_str());
    if grant != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "Invalid grant_type");
    }
    let Some((_, assertion)) = form.iter().find(|(k, _)| k == "assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    #[derive(serde::Deserialize)]
    struct Claims {
        iss: String,
        scope: String,
    }
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT: malformed");
    };
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: alg must be RS256",
        );
    }
    for (email, pem) in s.service_accounts.iter() {
        let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()) else {
            continue;
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_issuer(&[email]);
        validation.validate_aud = false;
        if let Ok(data) = jsonwebtoken::decode::<Claims>(assertion, &key, &validation) {
            if data.claims.scope.is_empty() {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "Empty or missing scope not allowed.",
                );
            }
            let issued = s.tokens.lock().map(|mut t| {
                t.issued += 1;
                t.issued
            });
            let token = format!(
                "ya29.sandbox-{}-{}",
                pick(s.seed, &[&data.claims.iss, assertion.as_str()], u64::MAX),
                issued.unwrap_or(0)
            );
            return Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})).into_response();
        }
    }
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT Signature.")
}

/// A Google API error body.
fn google_error(status: StatusCode, google_status: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": google_status}})),
    )
        .into_response()
}

/// The sandbox organization's Cloud Billing accounts (`GET /v1/billingAccounts`, Cloud Billing
/// API v1): seven accounts, `pageSize` (default 50, at most 100) and `pageToken` paging, a
/// sandbox-issued bearer token required.
async fn google_billing_accounts(
    State(s): State<Sandbox>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| t.starts_with("ya29.sandbox-"));
    let Some(token) = token else {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request is missing required authentication credential. Expected OAuth 2 access token.",
        );
    };
    let limit = s.faults.lock().ok().and_then(|f| f.expire_token_after_pages);
    let expired = s.tokens.lock().map(|mut t| {
        if t.expired.contains(token) {
            return true;
        }
        t.pages += 1;
        if limit.is_some_and(|n| t.pages > n) {
            t.expired.insert(token.to_string());
            t.pages = 0;
            if let Ok(mut f) = s.faults.lock() {
                f.expire_token_after_pages = None;
            }
            return true;
        }
        false
    });
    if expired.unwrap_or(false) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    }
    let size: usize = match one(&query, "pageSize").map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        _ => return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "pageSize must be 1 to 100"),
    };
    let offset: usize = match one(&query, "pageToken") {
        None | Some("") => 0,
        Some(t) => match t.strip_prefix("acct_").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "Invalid page token"),
        },
    };
    let accounts: Vec<Value> = (0..7u64)
        .map(|i| {
            let id = format!(
                "{:06X}-{:06X}-{:06X}",
                pick(s.seed, &["ba", &i.to_string(), "a"], 0xFF_FFFF),
                pick(s.seed, &["ba", &i.to_string(), "b"], 0xFF_FFFF),
                i
            );
            json!({"name": format!("billingAccounts/{id}"), "open": i != 3,
                   "displayName": format!("Sandbox billing account {}", i + 1),
                   "masterBillingAccount": if i == 6 { json!(format!("billingAccounts/{}", "0A0A0A-0B0B0B-0C0C0C")) } else { json!("") },
                   "parent": "organizations/123456789", "currencyCode": if i == 5 { "EUR" } else { "USD" }})
        })
        .collect();
    let cap = s.faults.lock().ok().and_then(|f| f.max_page_size);
    let size = cap.map_or(size, |c| size.min(c.max(1)));
    let page: Vec<Value> = accounts.iter().skip(offset).take(size).cloned().collect();
    let next = offset + size;
    let mut body = json!({"billingAccounts": page});
    if next < accounts.len() {
        body["nextPageToken"] = json!(format!("acct_{next}"));
    }
    Json(body).into_response()
}

/// BigQuery `datasets.list` for the service account's project: the sandbox project holds no
/// datasets (so no billing export is found), a sandbox-issued bearer token required.
async fn bigquery_datasets(headers: HeaderMap, axum::extract::Path(project): axum::extract::Path<String>) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.starts_with("ya29.sandbox-"));
    if !authorized {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request is missing required authentication credential. Expected OAuth 2 access token.",
        );
    }
    Json(json!({"kind": "bigquery#datasetList", "etag": format!("sandbox-{project}")})).into_response()
}

async fn models(State(s): State<Sandbox>, headers: HeaderMap) -> Response {
    if headers.contains_key("x-api-key") || headers.contains_key("anthropic-version") {
        let k = match key(Provider::Anthropic, &headers) {
            Ok(k) => k,
            Err(r) => return r,
        };
        if let Some(r) = fault(Provider::Anthropic, &k, &headers).await {
            return r;
        }
        let data: Vec<Value> = ANTHROPIC_MODELS
            .iter()
            .map(|m| json!({"type": "model", "id": m, "display_name": m, "created_at": "2024-10-22T00:00:00Z"}))
            .collect();
        return Json(
            json!({"data": data, "has_more": false, "first_id": ANTHROPIC_MODELS[0], "last_id": ANTHROPIC_MODELS[2]}),
        )
        .into_response();
    }
    let k = match key(Provider::OpenAi, &headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    if let Some(r) = fault(Provider::OpenAi, &k, &headers).await {
        return r;
    }
    if k.starts_with("sk-admin-") && k.contains("noscope") {
        return error(
            Provider::OpenAi,
            StatusCode::FORBIDDEN,
            "Missing scopes: api.model.read",
        );
    }
    let _ = s.seed;
    let data: Vec<Value> = OPENAI_MODELS
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "system"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// Parses repeated query keys (`group_by=model&group_by=batch` and `group_by[]=model`).
fn multi(query: &[(String, String)], name: &str) -> Vec<String> {
    let bracket = format!("{name}[]");
    query
        .iter()
        .filter(|(k, _)| k == name || *k == bracket)
        .map(|(_, v)| v.clone())
        .collect()
}

fn one<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Day buckets for a window: (first day, number of days, page offset, page size).
fn window(start: NaiveDate, end: NaiveDate, limit: usize, page: usize) -> (Vec<NaiveDate>, bool, Option<String>) {
    let days: Vec<NaiveDate> = start.iter_days().take_while(|d| *d < end).collect();
    let page_days: Vec<NaiveDate> = days.iter().skip(page * limit).take(limit).copied().collect();
    let has_more = days.len() > (page + 1) * limit;
    (page_days, has_more, has_more.then(|| format!("page_{}", page + 1)))
}

fn parse_page(p: Option<&str>) -> usize {
    p.and_then(|p| p.strip_prefix("page_"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn unix_day(secs: i64) -> Option<NaiveDate> {
    DateTime::<Utc>::from_timestamp(secs, 0).map(|t| t.date_naive())
}

fn day_start(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()).unwrap_or(0)
}

async fn openai_admin(headers: &HeaderMap) -> Result<(), Response> {
    let k = key(Provider::OpenAi, headers)?;
    if !k.starts_with("sk-admin-") {
        return Err(error(
            Provider::OpenAi,
            StatusCode::UNAUTHORIZED,
            "This endpoint requires an admin API key (sk-admin-…).",
        ));
    }
    if let Some(r) = fault(Provider::OpenAi, &k, headers).await {
        return Err(r);
    }
    Ok(())
}

/// Common parsing of the OpenAI usage/costs window.
fn openai_window(
    query: &[(String, String)],
    max_limit: usize,
) -> Result<(Vec<NaiveDate>, bool, Option<String>), Response> {
    let bad = |m: &str| error(Provider::OpenAi, StatusCode::BAD_REQUEST, m);
    let start = one(query, "start_time")
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(unix_day)
        .ok_or_else(|| bad("start_time is required (Unix seconds)"))?;
    let end = match one(query, "end_time") {
        Some(e) => e
            .parse::<i64>()
            .ok()
            .and_then(unix_day)
            .ok_or_else(|| bad("end_time must be Unix seconds"))?,
        None => start + chrono::Duration::days(7),
    };
    if one(query, "bucket_width").is_some_and(|b| b != "1d") {
        return Err(bad("the sandbox serves bucket_width=1d only"));
    }
    let limit: usize = one(query, "limit").map(|l| l.parse().unwrap_or(0)).unwrap_or(7);
    if limit == 0 || limit > max_limit {
        return Err(bad(&format!("limit must be between 1 and {max_limit}")));
    }
    Ok(window(start, end, limit, parse_page(one(query, "page"))))
}

async fn set_faults(State(s): State<Sandbox>, Json(faults): Json<Faults>) -> Response {
    if let Ok(mut f) = s.faults.lock() {
        *f = faults.clone();
    }
    if let Ok(mut t) = s.tokens.lock() {
        t.pages = 0;
    }
    Json(faults).into_response()
}

async fn clear_faults(State(s): State<Sandbox>) -> Response {
    if let Ok(mut f) = s.faults.lock() {
        *f = Faults::default();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Applies (and counts down) the scripted storms: `Some` is the reply to send instead.
async fn scripted_fault(s: &Sandbox, provider: Provider) -> Option<Response> {
    let (limited, failed, delay) = {
        let mut f = s.faults.lock().ok()?;
        let limited = f.rate_limited > 0;
        let failed = !limited && f.server_errors > 0;
        let delay = (f.slow > 0).then_some(f.slow_ms);
        if limited {
            f.rate_limited -= 1;
        } else if failed {
            f.server_errors -= 1;
        }
        if delay.is_some() {
            f.slow -= 1;
        }
        (limited, failed, delay)
    };
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if limited {
        return Some(rate_limited(provider));
    }
    failed.then(|| {
        error(
            provider,
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error processing your request.",
        )
    })
}

/// The usage endpoints priced per unit the sandbox OpenAI serves.
pub const OPENAI_UNIT_ENDPOINTS: [&str; 8] = [
    "images",
    "audio_speeches",
    "audio_transcriptions",
    "moderations",
    "vector_stores",
    "code_interpreter_sessions",
    "file_search_calls",
    "web_search_calls",
];

/// One unit-priced usage row of the sandbox OpenAI: (project, model, variant, quantity,
/// requests), the quantity in the endpoint's own counter.
type UnitUsageRow = (&'static str, Option<&'static str>, Option<&'static str>, u64, u64);

/// The unit-priced usage rows of one endpoint and day. Vector storage lives in the first
/// project only (the free GiB is the organization's).
fn openai_unit_usage(seed: u64, endpoint: &str, d: NaiveDate) -> Vec<UnitUsageRow> {
    let day = d.to_string();
    let shapes: &[(Option<&str>, Option<&str>)] = match endpoint {
        "images" => &[
            (Some("dall-e-3"), Some("1024x1024")),
            (Some("gpt-image-1.5"), Some("1536x1024")),
        ],
        "audio_speeches" => &[(Some("tts-1"), None)],
        "audio_transcriptions" => &[(Some("whisper-1"), None)],
        "moderations" => &[(Some("omni-moderation-latest"), None)],
        "web_search_calls" => &[(Some("gpt-4o-mini-2024-07-18"), Some("medium"))],
        _ => &[(None, None)],
    };
    let mut out = Vec::new();
    for project in OPENAI_PROJECTS {
        if endpoint == "vector_stores" && project != OPENAI_PROJECTS[0] {
            continue;
        }
        for (model, variant) in shapes {
            let parts = [day.as_str(), endpoint, model.unwrap_or("-"), project];
            let n = |below: u64| pick(seed, &parts, below);
            let quantity = match endpoint {
                "images" => 1 + n(30),
                "audio_speeches" => 1_000 + n(200_000),
                "audio_transcriptions" => 60 + n(7_200),
                "moderations" => 100 + n(100_000),
                // Whole 16 MiB blocks, up to ~3.2 GB.
                "vector_stores" => (1 + n(200)) << 24,
                "code_interpreter_sessions" => 1 + n(40),
                "file_search_calls" => 1 + n(3_000),
                _ => 1 + n(500),
            };
            let requests = match endpoint {
                "vector_stores" | "code_interpreter_sessions" | "file_search_calls" => 0,
                "images" => quantity,
                _ => 1 + quantity % 97,
            };
            out.push((project, *model, *variant, quantity, requests));
        }
    }
    out
}

/// The sandbox OpenAI's unit-priced usage as Usage API results.
fn openai_unit_results(seed: u64, endpoint: &str, d: NaiveDate, g: &dyn Fn(&str) -> bool) -> Vec<Value> {
    let dim = |on: bool, v: Value| if on { v } else { Value::Null };
    let object = match endpoint {
        "file_search_calls" => "organization.usage.file_searches.result".to_string(),
        e => format!("organization.usage.{e}.result"),
    };
    openai_unit_usage(seed, endpoint, d)
        .into_iter()
        .map(|(project, model, variant, quantity, requests)| {
            let mut r = json!({"object": object, "project_id": dim(g("project_id"), json!(project))});
            let counter = match endpoint {
                "images" => "images",
                "audio_speeches" => "characters",
                "audio_transcriptions" => "seconds",
                "moderations" => "input_tokens",
                "vector_stores" => "usage_bytes",
                "code_interpreter_sessions" => "num_sessions",
                _ => "num_requests",
            };
            r[counter] = json!(quantity);
            if !matches!(endpoint, "vector_stores" | "code_interpreter_sessions") {
                r["user_id"] = Value::Null;
                r["api_key_id"] = Value::Null;
            }
            if !matches!(
                endpoint,
                "vector_stores" | "code_interpreter_sessions" | "file_search_calls"
            ) {
                r["num_model_requests"] = json!(requests);
                r["model"] = dim(g("model"), json!(model));
            }
            match endpoint {
                "images" => {
                    r["size"] = dim(g("size"), json!(variant));
                    r["source"] = dim(g("source"), json!("image.generation"));
                }
                "web_search_calls" => r["context_level"] = dim(g("context_level"), json!(variant)),
                "file_search_calls" => r["vector_store_id"] = Value::Null,
                _ => {}
            }
            r
        })
        .collect()
}

/// What the sandbox OpenAI bills for one unit-priced usage row, in picodollars, and the
/// Costs API line item it is billed under (its list prices: DALL·E 3 1024x1024 0.04 and GPT
/// Image 1.5 1536x1024 0.013 an image, TTS-1 15 per 1M characters, Whisper 0.006 a minute,
/// moderations free, vector storage 0.10 a GiB-day after the first GiB, 0.03 a code-interpreter
/// session, 2.50 per 1 000 file searches, 10 per 1 000 web searches).
fn openai_unit_bill(endpoint: &str, model: Option<&str>, quantity: u64) -> (String, u128) {
    let q = u128::from(quantity);
    let m = model.unwrap_or("");
    match endpoint {
        "images" => {
            let micro = if m == "dall-e-3" { 40_000 } else { 13_000 };
            (format!("{m}, images"), q * micro * 1_000_000)
        }
        "audio_speeches" => (format!("{m}, characters"), q * 15_000_000),
        "audio_transcriptions" => (format!("{m}, minutes"), q * 100_000_000),
        "moderations" => (format!("{m}, input"), 0),
        // 16 MiB blocks beyond the first GiB at 0.0015625 USD each.
        "vector_stores" => (
            "vector store storage".to_string(),
            (q >> 24).saturating_sub(64) * 1_562_500_000,
        ),
        "code_interpreter_sessions" => ("code interpreter sessions".to_string(), q * 30_000_000_000),
        "file_search_calls" => ("file search tool calls".to_string(), q * 2_500_000_000),
        _ => ("web search tool calls".to_string(), q * 10_000_000_000),
    }
}

/// Deterministic usage results of one endpoint on one day.
fn openai_results(seed: u64, endpoint: &str, d: NaiveDate, g: &dyn Fn(&str) -> bool) -> Vec<Value> {
    let day = d.to_string();
    let mut results = Vec::new();
    let dim = |on: bool, v: Value| if on { v } else { Value::Null };
    if OPENAI_UNIT_ENDPOINTS.contains(&endpoint) {
        return openai_unit_results(seed, endpoint, d, g);
    }
    if endpoint == "embeddings" {
        for model in OPENAI_EMBEDDING_MODELS {
            for project in OPENAI_PROJECTS {
                let parts = [day.as_str(), "embeddings", model, project];
                let requests = 5 + pick(seed, &parts, 200);
                let input = requests * (50 + pick(seed, &[&parts[..], &["i"]].concat(), 4000));
                results.push(json!({
                    "object": "organization.usage.embeddings.result",
                    "input_tokens": input, "num_model_requests": requests,
                    "project_id": dim(g("project_id"), json!(project)), "user_id": null, "api_key_id": null,
                    "model": dim(g("model"), json!(model)),
                }));
            }
        }
        return results;
    }
    for model in OPENAI_MODELS {
        for project in OPENAI_PROJECTS {
            for batch in [false, true] {
                let parts = [day.as_str(), model, project, if batch { "b" } else { "n" }];
                let requests = 10 + pick(seed, &parts, 500);
                let input = requests * (100 + pick(seed, &[&parts[..], &["i"]].concat(), 2000));
                let cached = input * pick(seed, &[&parts[..], &["c"]].concat(), 40) / 100;
                let write = input * pick(seed, &[&parts[..], &["w"]].concat(), 10) / 100;
                let output = requests * (20 + pick(seed, &[&parts[..], &["o"]].concat(), 600));
                results.push(json!({
                    "object": "organization.usage.completions.result",
                    "input_tokens": input, "output_tokens": output, "num_model_requests": requests,
                    "input_cached_tokens": cached, "input_cache_write_tokens": write,
                    "input_uncached_tokens": input - cached - write,
                    "input_audio_tokens": 0, "output_audio_tokens": 0,
                    "project_id": dim(g("project_id"), json!(project)),
                    "user_id": null, "api_key_id": null,
                    "model": dim(g("model"), json!(model)),
                    "batch": dim(g("batch"), json!(batch)),
                    "service_tier": dim(g("service_tier"), json!(if batch { "batch" } else { "default" })),
                }));
            }
        }
    }
    results
}

async fn openai_usage(
    State(s): State<Sandbox>,
    axum::extract::Path(endpoint): axum::extract::Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if !["completions", "embeddings"].contains(&endpoint.as_str())
        && !OPENAI_UNIT_ENDPOINTS.contains(&endpoint.as_str())
    {
        return error(
            Provider::OpenAi,
            StatusCode::NOT_FOUND,
            &format!("Invalid URL (GET /v1/organization/usage/{endpoint})"),
        );
    }
    if let Err(r) = openai_admin(&headers).await {
        return r;
    }
    if let Some(r) = scripted_fault(&s, Provider::OpenAi).await {
        return r;
    }
    let faults = s.faults.lock().map(|f| f.clone()).unwrap_or_default();
    let group = multi(&query, "group_by");
    let g = |f: &str| group.iter().any(|x| x == f);
    let bucket = |d: NaiveDate, results: Vec<Value>| json!({"object": "bucket", "start_time": day_start(d), "end_time": day_start(d) + 86_400, "results": results});
    // One day split over several pages (cursor `part_N`).
    if let Some(parts) = faults.pages_per_day.filter(|p| *p > 1) {
        let day = match openai_window(&query, 31) {
            Ok((days, _, _)) => days.first().copied(),
            Err(r) => return r,
        };
        let Some(day) = day else {
            return Json(json!({"object": "page", "data": [], "has_more": false, "next_page": null})).into_response();
        };
        let part: usize = one(&query, "page")
            .and_then(|p| p.strip_prefix("part_"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if faults.malformed_day == Some(day) && faults.malformed_page == part {
            return (StatusCode::OK, Json(json!({"object": "page", "data": "not-a-list"}))).into_response();
        }
        let results = openai_results(s.seed, &endpoint, day, &g);
        let size = results.len().div_ceil(parts);
        let chunk: Vec<Value> = results.into_iter().skip(part * size).take(size).collect();
        let has_more = part + 1 < parts;
        return Json(
            json!({"object": "page", "data": [bucket(day, chunk)], "has_more": has_more,
                           "next_page": has_more.then(|| format!("part_{}", part + 1))}),
        )
        .into_response();
    }
    let (days, has_more, next) = match openai_window(&query, 31) {
        Ok(w) => w,
        Err(r) => return r,
    };
    if days.iter().any(|d| faults.malformed_day == Some(*d)) {
        return (StatusCode::OK, Json(json!({"object": "page", "data": "not-a-list"}))).into_response();
    }
    let data: Vec<Value> = days
        .iter()
        .map(|d| bucket(*d, openai_results(s.seed, &endpoint, *d, &g)))
        .collect();
    Json(json!({"object": "page", "data": data, "has_more": has_more, "next_page": next})).into_response()
}

/// The sandbox's list prices in micro-dollars per 1M tokens: (input, cached input, output);
/// cache writes are billed as input. Batch usage: the batch prices.
fn openai_list_price(model: &str, batch: bool) -> (u64, u64, u64) {
    let (i, c, o) = match model {
        "gpt-4o-2024-08-06" => (2_500_000, 1_250_000, 10_000_000),
        "gpt-4o-mini-2024-07-18" => (150_000, 75_000, 600_000),
        "o3-mini-2025-01-31" => (1_100_000, 550_000, 4_400_000),
        "text-embedding-3-small" => (20_000, 20_000, 0),
        _ => (0, 0, 0),
    };
    if batch {
        (i / 2, i / 2, o / 2)
    } else {
        (i, c, o)
    }
}

/// Days on which the provider bills something its usage API does not show (a fine-tuning
/// job): about one day in five, so reconciliation has something to flag.
fn unexplained_charge(seed: u64, provider: &str, d: NaiveDate) -> Option<u64> {
    let day = d.to_string();
    (pick(seed, &[provider, day.as_str(), "extra"], 5) == 0)
        .then(|| 500 + pick(seed, &[provider, day.as_str(), "cents"], 5_000))
}

/// What the sandbox OpenAI bills for a day: its own usage priced at its list prices, per
/// project and line item (`{model}, input` — cache writes billed as input —, `{model}, cached
/// input`, `{model}, output`, and one line per unit-priced kind), as the Costs API reports it
/// (amounts in dollars).
fn openai_billed(seed: u64, d: NaiveDate) -> Vec<Value> {
    let all = |_: &str| true;
    // Picodollars per (project, line item).
    let mut totals: std::collections::BTreeMap<(String, String), u128> = Default::default();
    for endpoint in ["completions", "embeddings"] {
        for r in openai_results(seed, endpoint, d, &all) {
            let n = |k: &str| u128::from(r[k].as_u64().unwrap_or(0));
            let batch = r["batch"].as_bool().unwrap_or(false);
            let model = r["model"].as_str().unwrap_or("");
            let (i, c, o) = openai_list_price(model, batch);
            let uncached = n("input_tokens") - n("input_cached_tokens");
            let project = r["project_id"].as_str().unwrap_or("").to_string();
            let mut add = |line: &str, pico: u128| {
                if pico > 0 {
                    *totals.entry((project.clone(), format!("{model}, {line}"))).or_default() += pico;
                }
            };
            add("input", uncached * u128::from(i));
            add("cached input", n("input_cached_tokens") * u128::from(c));
            add("output", n("output_tokens") * u128::from(o));
        }
    }
    for endpoint in OPENAI_UNIT_ENDPOINTS {
        for (project, model, _, quantity, _) in openai_unit_usage(seed, endpoint, d) {
            let (line, pico) = openai_unit_bill(endpoint, model, quantity);
            if pico > 0 {
                *totals.entry((project.to_string(), line)).or_default() += pico;
            }
        }
    }
    let mut results: Vec<Value> = totals
        .into_iter()
        .map(|((project, line), pico)| {
            json!({"object": "organization.costs.result",
                   "amount": {"value": pico as f64 / 1e12, "currency": "usd"},
                   "line_item": line, "project_id": project, "quantity": null, "quantity_unit": null})
        })
        .collect();
    if let Some(cents) = unexplained_charge(seed, "openai", d) {
        results.push(json!({"object": "organization.costs.result", "amount": {"value": cents as f64 / 100.0, "currency": "usd"},
                            "line_item": "fine_tuning_training", "project_id": OPENAI_PROJECTS[0], "quantity": null, "quantity_unit": null}));
    }
    results
}

/// The sandbox's Anthropic list prices in micro-dollars per 1M tokens: (uncached input,
/// cache read, 5-minute write, 1-hour write, output); batch at half.
fn anthropic_list_price(model: &str, tier: &str, window: &str) -> [u64; 5] {
    let p = match (model, window) {
        ("claude-3-5-sonnet-20241022", "0-200k") | ("claude-sonnet-4-5-20250929", "0-200k") => {
            [3_000_000, 300_000, 3_750_000, 6_000_000, 15_000_000]
        }
        // Long context: input kinds ×2, output ×1.5.
        ("claude-sonnet-4-5-20250929", _) => [6_000_000, 600_000, 7_500_000, 12_000_000, 22_500_000],
        ("claude-3-5-haiku-20241022", "0-200k") => [800_000, 80_000, 1_000_000, 1_600_000, 4_000_000],
        _ => [0; 5],
    };
    if tier == "batch" {
        p.map(|x| x / 2)
    } else {
        p
    }
}

/// A non-negative amount of 10^-scale units as decimal text.
fn decimal_text(units: u128, scale: u32) -> String {
    let div = 10u128.pow(scale);
    format!("{}.{:0width$}", units / div, units % div, width = scale as usize)
}

/// What the sandbox Anthropic bills for a day: its own usage at its list prices, per model,
/// tier and token type, in cents as decimal strings (as the Cost API reports them).
fn anthropic_billed(seed: u64, d: NaiveDate) -> Vec<Value> {
    let day = d.to_string();
    let mut results = Vec::new();
    for (m, tier, window) in ANTHROPIC_USAGE {
        let [u, r, f, h, o, searches] = anthropic_counts(seed, &day, m, tier, window).map(u128::from);
        let tokens = [
            ("uncached_input_tokens", u),
            ("cache_read_input_tokens", r),
            ("cache_creation.ephemeral_5m_input_tokens", f),
            ("cache_creation.ephemeral_1h_input_tokens", h),
            ("output_tokens", o),
        ];
        // Web search: 10 USD per 1 000 requests = 1 cent a request.
        if searches > 0 {
            results.push(
                json!({"amount": decimal_text(searches * 10u128.pow(10), 10), "currency": "USD",
                "workspace_id": null, "description": format!("{m} Web search"), "cost_type": "web_search", "model": m,
                "service_tier": tier, "token_type": null, "context_window": window}),
            );
        }
        let prices = anthropic_list_price(m, tier, window);
        for ((token_type, n), price) in tokens.into_iter().zip(prices) {
            // tokens × µ$/1M = 10^-12 $ = 10^-10 cents.
            let amount = decimal_text(n * u128::from(price), 10);
            results.push(json!({"amount": amount, "currency": "USD", "workspace_id": null,
                "description": format!("{m} Usage - {token_type}"), "cost_type": "tokens", "model": m,
                "service_tier": tier, "token_type": token_type, "context_window": window}));
        }
    }
    if let Some(cents) = unexplained_charge(seed, "anthropic", d) {
        results.push(
            json!({"amount": format!("{cents}.00"), "currency": "USD", "workspace_id": null,
            "description": "Claude Code seats", "cost_type": "subscription", "model": null, "service_tier": null,
            "token_type": null, "context_window": null}),
        );
    }
    results
}

async fn openai_costs(
    State(s): State<Sandbox>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = openai_admin(&headers).await {
        return r;
    }
    if let Some(r) = scripted_fault(&s, Provider::OpenAi).await {
        return r;
    }
    let (days, has_more, next) = match openai_window(&query, 180) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let data: Vec<Value> = days
        .iter()
        .map(|d| {
            let results = openai_billed(s.seed, *d);
            json!({"object": "bucket", "start_time": day_start(*d), "end_time": day_start(*d) + 86_400, "results": results})
        })
        .collect();
    Json(json!({"object": "page", "data": data, "has_more": has_more, "next_page": next})).into_response()
}

async fn anthropic_admin(headers: &HeaderMap) -> Result<(), Response> {
    let k = key(Provider::Anthropic, headers)?;
    if !k.starts_with("sk-ant-admin") {
        return Err(error(
            Provider::Anthropic,
            StatusCode::FORBIDDEN,
            "This endpoint requires an Admin API key.",
        ));
    }
    if let Some(r) = fault(Provider::Anthropic, &k, headers).await {
        return Err(r);
    }
    Ok(())
}

async fn anthropic_me(headers: HeaderMap) -> Response {
    if let Err(r) = anthropic_admin(&headers).await {
        return r;
    }
    Json(json!({"id": "11111111-2222-4333-8444-555555555555", "type": "organization", "name": "Sandbox Org"}))
        .into_response()
}

fn anthropic_window(query: &[(String, String)]) -> Result<(Vec<NaiveDate>, bool, Option<String>), Response> {
    let bad = |m: &str| error(Provider::Anthropic, StatusCode::BAD_REQUEST, m);
    let parse = |v: &str| {
        DateTime::parse_from_rfc3339(v)
            .ok()
            .map(|t| t.with_timezone(&Utc).date_naive())
    };
    let start = one(query, "starting_at")
        .and_then(parse)
        .ok_or_else(|| bad("starting_at is required (RFC 3339)"))?;
    let end = match one(query, "ending_at") {
        Some(e) => parse(e).ok_or_else(|| bad("ending_at must be RFC 3339"))?,
        None => start + chrono::Duration::days(7),
    };
    let limit: usize = one(query, "limit").map(|l| l.parse().unwrap_or(0)).unwrap_or(7);
    if limit == 0 || limit > 31 {
        return Err(bad("limit must be between 1 and 31"));
    }
    Ok(window(start, end, limit, parse_page(one(query, "page"))))
}

async fn anthropic_usage(
    State(s): State<Sandbox>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = anthropic_admin(&headers).await {
        return r;
    }
    if let Some(r) = scripted_fault(&s, Provider::Anthropic).await {
        return r;
    }
    let (days, has_more, next) = match anthropic_window(&query) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let group = multi(&query, "group_by");
    let g = |f: &str| group.iter().any(|x| x == f);
    let data: Vec<Value> = days
        .iter()
        .map(|d| {
            let day = d.to_string();
            let results: Vec<Value> = ANTHROPIC_USAGE
                .iter()
                .map(|(m, tier, window)| {
                    let [u, r, f, h, o, searches] = anthropic_counts(s.seed, &day, m, tier, window);
                    json!({
                        "uncached_input_tokens": u,
                        "cache_creation": {"ephemeral_1h_input_tokens": h, "ephemeral_5m_input_tokens": f},
                        "cache_read_input_tokens": r,
                        "output_tokens": o,
                        "server_tool_use": {"web_search_requests": searches},
                        "api_key_id": null, "workspace_id": null,
                        "model": if g("model") { json!(m) } else { Value::Null },
                        "service_tier": if g("service_tier") { json!(tier) } else { Value::Null },
                        "context_window": if g("context_window") { json!(window) } else { Value::Null },
                    })
                })
                .collect();
            let start = format!("{day}T00:00:00Z");
            let end = format!("{}T00:00:00Z", *d + chrono::Duration::days(1));
            json!({"starting_at": start, "ending_at": end, "results": results})
        })
        .collect();
    Json(json!({"data": data, "has_more": has_more, "next_page": next})).into_response()
}

async fn anthropic_costs(
    State(s): State<Sandbox>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = anthropic_admin(&headers).await {
        return r;
    }
    if let Some(r) = scripted_fault(&s, Provider::Anthropic).await {
        return r;
    }
    let (days, has_more, next) = match anthropic_window(&query) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let data: Vec<Value> = days
        .iter()
        .map(|d| {
            let day = d.to_string();
            let results = anthropic_billed(s.seed, *d);
            json!({"starting_at": format!("{day}T00:00:00Z"), "ending_at": format!("{}T00:00:00Z", *d + chrono::Duration::days(1)), "results": results})
        })
        .collect();
    Json(json!({"data": data, "has_more": has_more, "next_page": next})).into_response()
}

async fn deepseek_models(headers: HeaderMap) -> Response {
    let k = match key(Provider::DeepSeek, &headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    if let Some(r) = fault(Provider::DeepSeek, &k, &headers).await {
        return r;
    }
    let data: Vec<Value> = ["deepseek-chat", "deepseek-reasoner"]
        .iter()
        .map(|m| json!({"id": m, "object": "model", "owned_by": "deepseek"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn deepseek_balance(State(s): State<Sandbox>, headers: HeaderMap) -> Response {
    let k = match key(Provider::DeepSeek, &headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    if let Some(r) = fault(Provider::DeepSeek, &k, &headers).await {
        return r;
    }
    if let Some(r) = scripted_fault(&s, Provider::DeepSeek).await {
        return r;
    }
    let today = Utc::now().date_naive().to_string();
    let cents = 10_000 + pick(s.seed, &[today.as_str(), "balance"], 90_000);
    let total = format!("{}.{:02}", cents / 100, cents % 100);
    Json(json!({"is_available": true, "balance_infos": [
        {"currency": "USD", "total_balance": total, "granted_balance": "0.00", "topped_up_balance": total}
    ]}))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(7)).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn openai_usage_pages_until_has_more_is_false_and_is_deterministic() {
        let base = serve().await;
        let c = reqwest::Client::new();
        let start = day_start(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
        let end = start + 10 * 86_400;
        let mut page: Option<String> = None;
        let mut buckets = 0;
        let mut pages = 0;
        loop {
            let mut q = vec![
                ("start_time", start.to_string()),
                ("end_time", end.to_string()),
                ("limit", "4".into()),
                ("group_by", "model".into()),
                ("group_by", "project_id".into()),
            ];
            if let Some(p) = &page {
                q.push(("page", p.clone()));
            }
            let v: Value = c
                .get(format!("{base}/v1/organization/usage/completions"))
                .query(&q)
                .bearer_auth("sk-admin-x")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            pages += 1;
            for b in v["data"].as_array().unwrap() {
                buckets += 1;
                let r = &b["results"][0];
                assert!(r["model"].is_string() && r["project_id"].is_string() && r["batch"].is_null());
                assert_eq!(
                    r["input_tokens"].as_u64().unwrap(),
                    r["input_cached_tokens"].as_u64().unwrap()
                        + r["input_cache_write_tokens"].as_u64().unwrap()
                        + r["input_uncached_tokens"].as_u64().unwrap()
                );
            }
            if v["has_more"] == false {
                assert!(v["next_page"].is_null());
                break;
            }
            page = v["next_page"].as_str().map(str::to_string);
        }
        assert_eq!((buckets, pages), (10, 3));
        let a: Value = c
            .get(format!("{base}/v1/organization/usage/completions?start_time={start}"))
            .bearer_auth("sk-admin-x")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let b: Value = c
            .get(format!("{base}/v1/organization/usage/completions?start_time={start}"))
            .bearer_auth("sk-admin-y")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(a, b, "same seed, same data");
    }

    #[tokio::test]
    async fn auth_is_checked_in_each_providers_error_format() {
        let base = serve().await;
        let c = reqwest::Client::new();
        let r = c
            .get(format!("{base}/v1/models"))
            .bearer_auth("sk-invalid-1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());
        let r = c
            .get(format!("{base}/v1/organization/usage/completions?start_time=0"))
            .bearer_auth("sk-proj-1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "usage needs an admin key");
        let r = c
            .get(format!("{base}/v1/organizations/me"))
            .header("x-api-key", "sk-ant-api03-x")
            .header("anthropic-version", "2023-06-01")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "permission_error");
        let r = c
            .get(format!("{base}/v1/organizations/me"))
            .header("x-api-key", "sk-ant-admin01-x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "anthropic-version is required");
        let r = c
            .get(format!("{base}/v1/models"))
            .bearer_auth("sk-fault429-x")
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap()),
            (429, "1")
        );
        let r = c
            .get(format!("{base}/user/balance"))
            .bearer_auth("sk-ds")
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["balance_infos"][0]["currency"], "USD");
        let v: Value = c
            .get(format!(
                "{base}/v1/organizations/cost_report?starting_at=2026-01-01T00:00:00Z&ending_at=2026-01-03T00:00:00Z"
            ))
            .header("x-api-key", "sk-ant-admin01-x")
            .header("anthropic-version", "2023-06-01")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert!(
            v["data"][0]["results"][0]["amount"].as_str().unwrap().contains('.'),
            "cents as a decimal string"
        );
    }
}
