//! Org API keys: rotate (new key shown once, old key dead at once) and describe.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    Json,
};
use chrono::{DateTime, Utc};
use cloudact_core::meta::{AuditEntry, NewApiKey, ORG_ACTIVE};
use cloudact_web::{layers::current_request_id, ApiError, AppContext, CallerPath};
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct RotateResponse {
    pub org_slug: String,
    /// The new key, shown exactly once.
    pub api_key: String,
    /// Last 4 characters of the key.
    pub api_key_fingerprint: String,
    pub previous_key_revoked: bool,
    pub message: String,
}

/// Issues a new key and revokes the old one (org key or root).
#[utoipa::path(post, path = "/api/v1/organizations/{org_slug}/api-key/rotate", tag = "api-keys",
    params(("org_slug" = String, Path)), security(("api_key" = []), ("root_key" = [])),
    responses((status = 200, body = RotateResponse), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn rotate(
    State(ctx): State<Arc<AppContext>>,
    CallerPath(caller): CallerPath,
    Path(org_slug): Path<String>,
) -> Result<Json<RotateResponse>, ApiError> {
    let profile = ctx
        .store
        .profile(&org_slug)
        .await?
        .ok_or_else(|| ApiError::not_found("ORG_NOT_FOUND", format!("organization '{org_slug}' does not exist")))?;
    if profile.status != ORG_ACTIVE {
        return Err(ApiError::conflict(
            "ORG_NOT_ACTIVE",
            format!(
                "organization '{org_slug}' has status {}; keys can be rotated only for ACTIVE orgs",
                profile.status
            ),
        ));
    }
    let (key, stored) = NewApiKey::mint(&*ctx.kms, &org_slug).await?;
    let now = Utc::now();
    let revoked = ctx.store.replace_key(&org_slug, &stored, now).await?;
    ctx.auth.invalidate_org(&org_slug);
    let request_id = current_request_id();
    let entry = AuditEntry {
        org_slug: &org_slug,
        action: "ROTATE_API_KEY",
        resource_type: "api_key",
        resource_id: Some(&stored.org_api_key_id),
        status: "SUCCESS",
        api_key_id: caller.api_key_id(),
        request_id: Some(&request_id),
        details: serde_json::json!({"by": caller.label(), "revoked": revoked}),
    };
    if let Err(e) = ctx.store.audit(entry, now).await {
        tracing::warn!(error = %e, "could not write the audit log");
    }
    tracing::info!(org_slug, revoked, "API key rotated");
    Ok(Json(RotateResponse {
        org_slug,
        api_key: key.expose_secret().to_string(),
        api_key_fingerprint: stored.fingerprint,
        previous_key_revoked: revoked > 0,
        message: "new API key issued; store it now, it is not shown again. The previous key no longer works.".into(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    pub org_slug: String,
    pub org_api_key_id: String,
    /// Last 4 characters of the key.
    pub api_key_fingerprint: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub scopes: Vec<String>,
}

/// Describes the org's active key (never the key itself).
#[utoipa::path(get, path = "/api/v1/organizations/{org_slug}/api-key", tag = "api-keys",
    params(("org_slug" = String, Path)), security(("api_key" = []), ("root_key" = [])),
    responses((status = 200, body = ApiKeyResponse), (status = 401), (status = 403), (status = 404)))]
pub async fn get_key(
    State(ctx): State<Arc<AppContext>>,
    _caller: CallerPath,
    Path(org_slug): Path<String>,
) -> Result<Json<ApiKeyResponse>, ApiError> {
    let info = ctx.store.active_key(&org_slug).await?.ok_or_else(|| {
        ApiError::not_found(
            "API_KEY_NOT_FOUND",
            format!("organization '{org_slug}' has no active API key"),
        )
    })?;
    Ok(Json(ApiKeyResponse {
        org_slug,
        org_api_key_id: info.org_api_key_id,
        api_key_fingerprint: info.fingerprint,
        is_active: info.is_active,
        created_at: info.created_at,
        scopes: info.scopes,
    }))
}
