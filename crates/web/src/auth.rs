//! Auth extractors and the org-key lookup cache.
//!
//! - [`RootAuth`]: `X-CA-Root-Key`, hashed and compared in constant time. Missing → 401,
//!   wrong → 403, not configured → 503.
//! - [`OrgAuth`]: `X-API-Key`, looked up by SHA-256 (cached for `AUTH_CACHE_TTL_SECONDS`,
//!   default 30 s). Missing or unknown → 401. A rotation or revocation clears the cache of
//!   the process that made it at once; other processes notice within the TTL.
//! - [`Caller`]: either of the two, for routes open to the org itself and to admins.
//!
//! There is no auth bypass: `DISABLE_AUTH` exists only so that production can refuse it.
//! The org always comes from the key; [`Caller::require_org`] checks a path org against it.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use axum::{extract::FromRequestParts, http::request::Parts};
use chrono::Utc;
use cloudact_core::{
    auth::{hash_key, RootCheck, RootKeyVerifier},
    meta::{KeyOwner, OrgStore, ORG_ACTIVE},
    settings::Settings,
};

use crate::{context::AppContext, error::ApiError, extract::path_org};

pub const ROOT_KEY_HEADER: &str = "x-ca-root-key";
pub const API_KEY_HEADER: &str = "x-api-key";
const CACHE_CAPACITY: usize = 50_000;

/// Resolves keys to orgs, with a short-lived cache.
pub struct AuthService {
    root: RootKeyVerifier,
    store: OrgStore,
    ttl: Duration,
    cache: RwLock<HashMap<String, (KeyOwner, Instant)>>,
}

impl AuthService {
    pub fn new(settings: &Settings, store: OrgStore) -> Self {
        AuthService {
            root: RootKeyVerifier::new(settings.root_api_key.as_ref()),
            store,
            ttl: settings.auth_cache_ttl,
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub fn check_root(&self, presented: Option<&str>) -> Result<(), ApiError> {
        match self.root.check(presented) {
            RootCheck::Valid => Ok(()),
            RootCheck::Missing => Err(ApiError::unauthorized(
                "ROOT_KEY_REQUIRED",
                "this route needs the platform root key: send it in the X-CA-Root-Key header",
            )),
            RootCheck::Wrong => Err(ApiError::forbidden(
                "INVALID_ROOT_KEY",
                "the X-CA-Root-Key header is not the root key",
            )),
            RootCheck::NotConfigured => Err(ApiError::unavailable(
                "ROOT_KEY_NOT_CONFIGURED",
                "admin routes are unavailable: the service was started without CA_ROOT_API_KEY",
            )),
        }
    }

    /// The org an API key belongs to, if the key is active and its org is ACTIVE.
    pub async fn resolve_key(&self, key: &str) -> Result<Option<KeyOwner>, ApiError> {
        let hash = hash_key(key);
        if let Ok(cache) = self.cache.read() {
            if let Some((owner, at)) = cache.get(&hash) {
                if at.elapsed() < self.ttl {
                    return Ok(Some(owner.clone()));
                }
            }
        }
        let owner = self.store.key_owner(&hash).await?;
        let usable = owner.filter(|o| o.org_status == ORG_ACTIVE && o.expires_at.is_none_or(|t| t > Utc::now()));
        if let (Some(o), Ok(mut cache)) = (&usable, self.cache.write()) {
            if cache.len() >= CACHE_CAPACITY {
                let ttl = self.ttl;
                cache.retain(|_, (_, at)| at.elapsed() < ttl);
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
            }
            if !self.ttl.is_zero() {
                cache.insert(hash, (o.clone(), Instant::now()));
            }
        }
        Ok(usable)
    }

    /// Forgets every cached key (after a bootstrap that may have recreated the tables).
    pub fn invalidate_all(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
    }

    /// Forgets every cached key of an org (after rotation, suspension or deletion).
    pub fn invalidate_org(&self, org_slug: &str) {
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|_, (owner, _)| owner.org_slug != org_slug);
        }
    }
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The platform root key was presented and is correct.
#[derive(Debug, Clone, Copy)]
pub struct RootAuth;

impl FromRequestParts<Arc<AppContext>> for RootAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<AppContext>) -> Result<Self, Self::Rejection> {
        ctx.auth.check_root(header(parts, ROOT_KEY_HEADER))?;
        ctx.limits.check_org("__root__")?;
        Ok(RootAuth)
    }
}

/// An authenticated org (from its API key), with its subscription as of the (cached) lookup.
#[derive(Debug, Clone)]
pub struct OrgAuth {
    pub org_slug: String,
    pub org_api_key_id: String,
    pub org_dataset_id: String,
    pub plan_name: Option<String>,
    pub subscription_status: Option<String>,
    pub trial_end_date: Option<chrono::NaiveDate>,
    pub subscription_end_date: Option<chrono::NaiveDate>,
}

impl OrgAuth {
    /// 403 unless the path org is the key's org.
    pub fn require_org(&self, path_slug: &str) -> Result<(), ApiError> {
        path_org(path_slug)?;
        if self.org_slug == path_slug {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "ORG_MISMATCH",
                format!(
                    "this API key belongs to organization '{}', not '{path_slug}'",
                    self.org_slug
                ),
            ))
        }
    }
}

async fn org_from_key(parts: &Parts, ctx: &AppContext) -> Result<OrgAuth, ApiError> {
    let Some(key) = header(parts, API_KEY_HEADER) else {
        return Err(ApiError::unauthorized(
            "API_KEY_REQUIRED",
            "send the organization API key in the X-API-Key header",
        ));
    };
    let owner = ctx
        .auth
        .resolve_key(key)
        .await?
        .ok_or_else(|| ApiError::unauthorized("INVALID_API_KEY", "the API key is unknown, revoked or expired"))?;
    ctx.limits.check_org(&owner.org_slug)?;
    Ok(OrgAuth {
        org_slug: owner.org_slug,
        org_api_key_id: owner.org_api_key_id,
        org_dataset_id: owner.org_dataset_id,
        plan_name: owner.plan_name,
        subscription_status: owner.subscription_status,
        trial_end_date: owner.trial_end_date,
        subscription_end_date: owner.subscription_end_date,
    })
}

impl FromRequestParts<Arc<AppContext>> for OrgAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<AppContext>) -> Result<Self, Self::Rejection> {
        org_from_key(parts, ctx).await
    }
}

/// Either the platform admin (root key) or an org (API key). When both headers are sent,
/// the root key decides.
#[derive(Debug, Clone)]
pub enum Caller {
    Root,
    Org(OrgAuth),
}

impl Caller {
    /// Root may act on any org; an org only on itself.
    pub fn require_org(&self, path_slug: &str) -> Result<(), ApiError> {
        match self {
            Caller::Root => path_org(path_slug).map(|_| ()),
            Caller::Org(org) => org.require_org(path_slug),
        }
    }

    pub fn api_key_id(&self) -> Option<&str> {
        match self {
            Caller::Root => None,
            Caller::Org(o) => Some(&o.org_api_key_id),
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Caller::Root => "root",
            Caller::Org(o) => &o.org_slug,
        }
    }
}

impl FromRequestParts<Arc<AppContext>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<AppContext>) -> Result<Self, Self::Rejection> {
        if header(parts, ROOT_KEY_HEADER).is_some() {
            RootAuth::from_request_parts(parts, ctx).await.map(|_| Caller::Root)
        } else if header(parts, API_KEY_HEADER).is_some() {
            org_from_key(parts, ctx).await.map(Caller::Org)
        } else {
            Err(ApiError::unauthorized(
                "API_KEY_REQUIRED",
                "send the organization API key in X-API-Key (or the root key in X-CA-Root-Key)",
            ))
        }
    }
}
