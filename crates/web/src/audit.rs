//! The audit trail, by construction: every state-changing request (POST, PUT, PATCH, DELETE
//! under `/api/v1`, on both services) writes one `org_audit_logs` row, whatever the handler.
//!
//! - **Before** the handler runs, the row is written with status `PENDING`. If it cannot be
//!   written the request is **refused** (503 `AUDIT_UNAVAILABLE`) and nothing changes: an
//!   action that cannot be recorded does not happen. (Refusing beats rolling back: most
//!   actions touch a provider, KMS or several tables and cannot be undone as one.)
//! - **After** it, the row is completed: SUCCESS (2xx/3xx), DENIED (401/403, recorded for the
//!   org named in the path), FAILURE (anything else, with the error a person saw); the actor
//!   (`root`, or `key:{fingerprint}` of the org key), `X-User-ID` (as sent, unverified), the
//!   route template, and the handler's before/after summary (never a secret). If completing it
//!   fails, the row stays `PENDING` (attempted, outcome unknown) and the failure is logged.
//! - Platform actions without an org (bootstrap) are recorded for [`PLATFORM_ORG`]. A
//!   bootstrap whose audit row cannot be written first (no audit table yet, or one from an
//!   older schema) runs and is recorded once it has created or migrated the table. Before
//!   bootstrap, when the audit table does not exist, nothing can change (every handler needs
//!   the central tables) and requests pass to their handlers' own NOT_BOOTSTRAPPED answer.
//! - The read-only POST (dryrun) is not audited.

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State},
    http::Method,
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use cloudact_core::{
    meta::{AuditEntry, AuditOutcome, MetaError},
    warehouse::WarehouseError,
};
use serde_json::json;

use crate::{
    auth::ORG_PATH_PARAM,
    context::AppContext,
    error::ApiError,
    layers::{current_request_id, notes},
};

/// The `org_slug` of audit rows about the platform itself (not a valid org slug).
pub const PLATFORM_ORG: &str = "__platform__";

/// POST routes that change nothing.
const READ_ONLY_POSTS: [&str; 1] = ["/api/v1/organizations/dryrun"];

/// Last path segments that name the action themselves (`…/api-key/rotate` → `rotate`).
const VERBS: [&str; 16] = [
    "bootstrap",
    "onboard",
    "rotate",
    "revoke",
    "validate",
    "revalidate",
    "reset",
    "cancel",
    "retry",
    "run",
    "trigger",
    "setup",
    "import",
    "sync",
    "process",
    "reload-configs",
];

/// A stable action name from the route: its fixed segments after `/api/v1`, joined by `.`,
/// plus `create`/`update`/`delete` by method unless the last fixed segment is a verb.
/// `PUT /api/v1/organizations/{org_slug}/subscription` → `organizations.subscription.update`.
pub fn action_name(method: &Method, route: &str) -> String {
    let fixed: Vec<&str> = route
        .trim_start_matches("/api/v1/")
        .split('/')
        .filter(|s| !s.is_empty() && !s.starts_with('{'))
        .collect();
    let mut name = fixed.join(".");
    let last = route.rsplit('/').next().unwrap_or_default();
    if !VERBS.contains(&last) {
        let verb = match *method {
            Method::POST => "create",
            Method::DELETE => "delete",
            _ => "update",
        };
        name.push('.');
        name.push_str(verb);
    }
    name
}

fn clip(v: Option<&str>, n: usize) -> Option<String> {
    v.map(|s| s.chars().take(n).collect())
}

/// The audit middleware (see the module docs).
pub async fn audit_changes(State(ctx): State<Arc<AppContext>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    if !matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        return next.run(req).await;
    }
    let Some(route) = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()) else {
        return next.run(req).await;
    };
    if !route.starts_with("/api/v1/") || READ_ONLY_POSTS.contains(&route.as_str()) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let params: Vec<(String, String)> = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .map(|p| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (user_id, user_agent) = (
        clip(header("x-user-id").as_deref(), 200),
        clip(header("user-agent").as_deref(), 500),
    );
    let ip = clip(
        header("x-forwarded-for")
            .as_deref()
            .and_then(|v| v.split(',').next())
            .map(str::trim),
        64,
    );
    let req = Request::from_parts(parts, body);
    let path_org = params
        .iter()
        .find(|(k, _)| k == ORG_PATH_PARAM)
        .map(|(_, v)| v.clone())
        .filter(|v| crate::extract::path_org(v).is_ok());
    let resource_id: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k != ORG_PATH_PARAM)
        .map(|(_, v)| v.as_str())
        .collect();
    let resource_id = clip(Some(&resource_id.join("/")), 300).filter(|s| !s.is_empty());
    let action = action_name(&method, &route);
    let resource_type = route
        .trim_start_matches("/api/v1/")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let request_id = current_request_id();
    let org = path_org.clone().unwrap_or_else(|| PLATFORM_ORG.to_string());
    let entry = AuditEntry {
        org_slug: &org,
        action: &action,
        resource_type: &resource_type,
        resource_id: resource_id.as_deref(),
        status: "PENDING",
        api_key_id: None,
        user_id: user_id.as_deref(),
        ip_address: ip.as_deref(),
        user_agent: user_agent.as_deref(),
        request_id: Some(&request_id),
        details: json!({"method": method.as_str(), "route": route, "user_id_verified": false}),
    };
    let bootstrap = route == "/api/v1/admin/bootstrap";
    let audit_id = match ctx.store.audit_begin(&entry, Utc::now()).await {
        Ok(id) => Some(id),
        // Bootstrap is what creates (and migrates) the audit table: it runs, and is recorded
        // once it has done so.
        Err(e) if bootstrap => {
            tracing::warn!(error = %e, "audit table not usable before bootstrap; recording after it");
            None
        }
        // Not bootstrapped: no org exists and every handler needs the central tables, so
        // nothing can change; the handler answers with its own NOT_BOOTSTRAPPED.
        Err(MetaError::Warehouse(WarehouseError::TableNotFound { .. } | WarehouseError::DatasetNotFound(_))) => {
            return next.run(req).await;
        }
        Err(e) => {
            tracing::error!(error = %e, action, "audit row not written: request refused");
            metrics::counter!("audit_write_failures_total", "phase" => "begin").increment(1);
            return ApiError::unavailable(
                "AUDIT_UNAVAILABLE",
                "the audit log cannot be written right now, so this change was refused and nothing was changed; retry later",
            )
            .with_header(axum::http::header::RETRY_AFTER, "5")
            .into_response();
        }
    };
    let response = next.run(req).await;
    let status = response.status();
    let outcome = if status.is_success() || status.is_redirection() {
        "SUCCESS"
    } else if status.as_u16() == 401 || status.as_u16() == 403 {
        "DENIED"
    } else {
        "FAILURE"
    };
    let n = notes();
    let org_slug = n
        .audit_org
        .clone()
        .or(path_org)
        .unwrap_or_else(|| PLATFORM_ORG.to_string());
    let mut details = json!({"method": method.as_str(), "route": route, "status_code": status.as_u16(),
                             "user_id_verified": false});
    if let (Some(serde_json::Value::Object(extra)), Some(obj)) = (n.audit_details.clone(), details.as_object_mut()) {
        obj.extend(extra);
    }
    let done = AuditOutcome {
        status: outcome,
        org_slug: &org_slug,
        actor: n.actor.as_deref(),
        details,
        error_message: if outcome == "SUCCESS" {
            None
        } else {
            n.error_detail.as_deref()
        },
    };
    let written = match &audit_id {
        Some(id) => ctx.store.audit_finish(id, &done).await,
        // The first bootstrap: the table exists now (if it succeeded).
        None => match ctx.store.audit_begin(&entry, Utc::now()).await {
            Ok(id) => ctx.store.audit_finish(&id, &done).await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = written {
        metrics::counter!("audit_write_failures_total", "phase" => "finish").increment(1);
        tracing::error!(error = %e, action, audit_id = ?audit_id, outcome, "audit row not completed: it stays PENDING");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_come_from_the_route() {
        let cases = [
            (
                Method::PUT,
                "/api/v1/organizations/{org_slug}/subscription",
                "organizations.subscription.update",
            ),
            (
                Method::POST,
                "/api/v1/organizations/{org_slug}/api-key/rotate",
                "organizations.api-key.rotate",
            ),
            (
                Method::DELETE,
                "/api/v1/organizations/{org_slug}/api-key",
                "organizations.api-key.delete",
            ),
            (Method::POST, "/api/v1/admin/bootstrap", "admin.bootstrap"),
            (
                Method::POST,
                "/api/v1/integrations/{org_slug}/{provider}/setup",
                "integrations.setup",
            ),
            (
                Method::POST,
                "/api/v1/integrations/{org_slug}/{provider}/pricing",
                "integrations.pricing.create",
            ),
            (
                Method::POST,
                "/api/v1/pipelines/run/{org_slug}/{provider}/{domain}/{pipeline}",
                "pipelines.run.create",
            ),
        ];
        for (m, route, want) in cases {
            assert_eq!(action_name(&m, route), want, "{route}");
        }
    }
}
