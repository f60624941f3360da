//! Org API keys: rotate (new key shown once, old key dead at once) and describe.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    Json,
};
use chrono::{DateTime, Utc};
use cloudact_core::meta::{NewApiKey, DEFAULT_SCOPES, KNOWN_SCOPES, ORG_ACTIVE};
use cloudact_web::{ApiError, AppContext, Caller, CallerPath, OptionalJson};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Optional body of a rotation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// Scopes of the new key (default: all of `pipelines:read`, `pipelines:write`,
    /// `pipelines:execute`). An org key may only keep or narrow its own scopes.
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotateResponse {
    pub org_slug: String,
    /// The new key, shown exactly once.
    pub api_key: String,
    /// Last 4 characters of the key.
    pub api_key_fingerprint: String,
    pub previous_key_revoked: bool,
    pub scopes: Vec<String>,
    pub message: String,
}

/// The scopes a rotation asks for, checked: known, not empty, and (for an org key) within the
/// caller's own.
fn requested_scopes(caller: &Caller, asked: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let Some(mut scopes) = asked else {
        return Ok(match caller {
            Caller::Org(o) => o.scopes.clone(),
            Caller::Root => DEFAULT_SCOPES.map(String::from).to_vec(),
        });
    };
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            "scopes must name at least one scope",
        ));
    }
    if let Some(bad) = scopes.iter().find(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
        return Err(ApiError::unprocessable(
            "VALIDATION_ERROR",
            format!("unknown scope {bad:?}; known: {}", KNOWN_SCOPES.join(", ")),
        ));
    }
    if let Caller::Org(o) = caller {
        if let Some(extra) = scopes.iter().find(|s| !o.scopes.contains(s)) {
            return Err(ApiError::forbidden(
                "INSUFFICIENT_SCOPE",
                format!("this key cannot grant {extra}, which it does not have; ask a platform admin"),
            ));
        }
    }
    Ok(scopes)
}

/// Issues a new key and revokes the old one (org key or root).
#[utoipa::path(post, path = "/api/v1/organizations/{org_slug}/api-key/rotate", tag = "api-keys",
    params(("org_slug" = String, Path)), security(("api_key" = []), ("root_key" = [])),
    request_body(content = RotateRequest, description = "optional"),
    responses((status = 200, body = RotateResponse), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub async fn rotate(
    State(ctx): State<Arc<AppContext>>,
    CallerPath(caller): CallerPath,
    Path(org_slug): Path<String>,
    OptionalJson(req): OptionalJson<RotateRequest>,
) -> Result<Json<RotateResponse>, ApiError> {
    let scopes = requested_scopes(&caller, req.scopes)?;
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
    let revoked = ctx.store.replace_key_scoped(&org_slug, &stored, &scopes, now).await?;
    ctx.auth.invalidate_org(&org_slug);
    cloudact_web::layers::note(|n| {
        n.audit_details = Some(
            serde_json::json!({"by": caller.label(), "previous_keys_revoked": revoked,
                                                  "new_key_fingerprint": stored.fingerprint, "scopes": scopes}),
        )
    });
    tracing::info!(org_slug, revoked, "API key rotated");
    Ok(Json(RotateResponse {
        org_slug,
        api_key: key.expose_secret().to_string(),
        api_key_fingerprint: stored.fingerprint,
        previous_key_revoked: revoked > 0,
        scopes,
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

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeResponse {
    pub org_slug: String,
    pub revoked: u64,
    pub message: String,
}

/// Revokes the org's key without issuing a new one (org key or root). The org's key stops
/// working at once on this process and within `AUTH_REVALIDATE_SECONDS` on every other; root
/// can issue a new one with rotate.
#[utoipa::path(delete, path = "/api/v1/organizations/{org_slug}/api-key", tag = "api-keys",
    params(("org_slug" = String, Path)), security(("api_key" = []), ("root_key" = [])),
    responses((status = 200, body = RevokeResponse), (status = 401), (status = 403), (status = 404)))]
pub async fn revoke(
    State(ctx): State<Arc<AppContext>>,
    CallerPath(caller): CallerPath,
    Path(org_slug): Path<String>,
) -> Result<Json<RevokeResponse>, ApiError> {
    if ctx.store.profile(&org_slug).await?.is_none() {
        return Err(ApiError::not_found(
            "ORG_NOT_FOUND",
            format!("organization '{org_slug}' does not exist"),
        ));
    }
    let revoked = ctx.store.revoke_key(&org_slug, Utc::now()).await?;
    ctx.auth.invalidate_org(&org_slug);
    cloudact_web::layers::note(|n| {
        n.audit_details = Some(serde_json::json!({"by": caller.label(), "revoked": revoked}))
    });
    if revoked == 0 {
        return Err(ApiError::not_found(
            "API_KEY_NOT_FOUND",
            format!("organization '{org_slug}' has no active API key to revoke"),
        ));
    }
    tracing::info!(org_slug, revoked, "API key revoked");
    Ok(Json(RevokeResponse {
        org_slug: org_slug.clone(),
        revoked,
        message: format!(
            "the API key of {org_slug} is revoked; the platform admin can issue a new one with POST /api/v1/organizations/{org_slug}/api-key/rotate"
        ),
    }))
}
