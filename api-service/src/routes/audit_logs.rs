//! `GET /api/v1/organizations/{org_slug}/audit-logs?action=&since=&limit=&offset=`: the org's
//! audit trail, newest first (org key for its own org; root for any).

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    Json,
};
use chrono::{DateTime, NaiveDate, Utc};
use cloudact_core::meta::AuditQuery;
use cloudact_web::{ApiError, AppContext, CallerPath};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditLogQuery {
    /// Only this action (e.g. `organizations.subscription.update`).
    pub action: Option<String>,
    /// Only rows at or after this time (RFC 3339, or a date meaning its midnight UTC).
    pub since: Option<String>,
    /// 1..=1000 (default 100).
    pub limit: Option<u32>,
    /// Rows to skip (default 0).
    pub offset: Option<u32>,
}

/// The org's audit rows (who did what, when, with what outcome), newest first.
#[utoipa::path(get, path = "/api/v1/organizations/{org_slug}/audit-logs", tag = "audit",
    params(("org_slug" = String, Path), AuditLogQuery), security(("api_key" = []), ("root_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403)))]
pub async fn list(
    State(ctx): State<Arc<AppContext>>,
    _caller: CallerPath,
    Path(org_slug): Path<String>,
    query: Result<Query<AuditLogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("INVALID_QUERY", "limit must be 1 to 1000"));
    }
    let offset = q.offset.unwrap_or(0);
    if offset > 1_000_000 {
        return Err(ApiError::bad_request("INVALID_QUERY", "offset must be at most 1000000"));
    }
    if let Some(a) = &q.action {
        if a.is_empty() || a.len() > 200 || !a.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(ApiError::bad_request(
                "INVALID_QUERY",
                "action must be 1-200 letters, digits, '.', '_' or '-'",
            ));
        }
    }
    let since = match q.since.as_deref() {
        None => None,
        Some(s) => Some(
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .or_else(|_| {
                    NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
                })
                .map_err(|_| ApiError::bad_request("INVALID_QUERY", "since must be RFC 3339 or YYYY-MM-DD"))?,
        ),
    };
    let (rows, total) = ctx
        .store
        .audit_list(&AuditQuery {
            org_slug: &org_slug,
            action: q.action.as_deref(),
            since,
            limit,
            offset,
        })
        .await?;
    let logs: Vec<Value> = rows
        .iter()
        .map(|r| {
            let pick = |c: &str| r.get(c).map(|v| v.to_json()).unwrap_or(Value::Null);
            json!({
                "audit_id": pick("audit_id"), "org_slug": pick("org_slug"), "action": pick("action"),
                "resource_type": pick("resource_type"), "resource_id": pick("resource_id"), "status": pick("status"),
                "actor": pick("api_key_id"), "user_id": pick("user_id"), "user_id_verified": false,
                "request_id": pick("request_id"), "details": pick("details"), "error_message": pick("error_message"),
                "ip_address": pick("ip_address"), "user_agent": pick("user_agent"), "created_at": pick("created_at"),
            })
        })
        .collect();
    Ok(Json(json!({
        "org_slug": org_slug, "audit_logs": logs, "count": logs.len(), "total": total, "limit": limit, "offset": offset,
    })))
}
