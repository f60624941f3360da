//! Auth extractors and the org-key lookup cache.
//!
//! - [`RootAuth`]: `X-CA-Root-Key`, hashed and compared in constant time. Missing → 401,
//!   wrong → 403, not configured → 503.
//! - [`OrgAuth`]: `X-API-Key`, looked up by SHA-256 (cached for `AUTH_CACHE_TTL_SECONDS`,
//!   default 30 s, at most 30 s in production). Missing or unknown → 401. A rotation or
//!   revocation clears the cache of the process that made it at once; every process also
//!   re-checks all its cached keys in one query every `AUTH_REVALIDATE_SECONDS` (default
//!   5 s), so a key rotated, revoked, suspended or deleted through the other service stops
//!   working within that time, and an expiring key stops at its expiry (checked on hits).
//! - [`Caller`]: either of the two, for routes open to the org itself and to admins.
//! - [`OrgPath`] / [`CallerPath`]: the same, for routes with an `{org_slug}` segment.
//!
//! **Tenant check by construction.** Every org extractor compares the route's `{org_slug}`
//! path segment (when the route has one) with the key's org before the handler runs: a
//! handler cannot get an org without the check, so it cannot forget it. An org key on a
//! root-only route is 403. There is no auth bypass: `DISABLE_AUTH` exists only so that
//! production can refuse it.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequestParts, RawPathParams},
    http::request::Parts,
};
use chrono::Utc;
use cloudact_core::{
    auth::{hash_key, RootCheck, RootKeyVerifier},
    meta::{KeyOwner, OrgStore, ORG_ACTIVE},
    settings::Settings,
};

use crate::{context::AppContext, error::ApiError, extract::path_org};

/// The path parameter that names the org on org-scoped routes.
pub const ORG_PATH_PARAM: &str = "org_slug";

pub const ROOT_KEY_HEADER: &str = "x-ca-root-key";
pub const API_KEY_HEADER: &str = "x-api-key";
const CACHE_CAPACITY: usize = 50_000;

/// Resolves keys to orgs, with a short-lived cache.
pub struct AuthService {
    root: RootKeyVerifier,
    store: OrgStore,
    ttl: Duration,
    cache: RwLock<HashMap<String, (KeyOwner, Instant)>>,
    /// Keys used since the last flush (key id → when), written at most once a minute per key.
    uses: std::sync::Mutex<KeyUses>,
}

/// `last_used_at` bookkeeping: pending uses and when each key was last written.
#[derive(Default)]
struct KeyUses {
    pending: HashMap<String, chrono::DateTime<Utc>>,
    written: HashMap<String, Instant>,
}

/// A key's `last_used_at` is written at most this often.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);

impl AuthService {
    pub fn new(settings: &Settings, store: OrgStore) -> Self {
        AuthService {
            root: RootKeyVerifier::new(settings.root_api_key.as_ref()),
            store,
            ttl: settings.auth_cache_ttl,
            cache: RwLock::new(HashMap::new()),
            uses: std::sync::Mutex::new(KeyUses::default()),
        }
    }

    /// Notes that a key was used (no warehouse write here: [`AuthService::flush_uses`] writes
    /// them in one batch, at most once a minute per key).
    pub fn record_use(&self, org_api_key_id: &str) {
        if let Ok(mut u) = self.uses.lock() {
            let recent = u
                .written
                .get(org_api_key_id)
                .is_some_and(|at| at.elapsed() < LAST_USED_EVERY);
            if !recent {
                u.pending.insert(org_api_key_id.to_string(), Utc::now());
            }
        }
    }

    /// Writes the pending `last_used_at` values in one statement; how many keys.
    pub async fn flush_uses(&self) -> Result<usize, ApiError> {
        let batch: Vec<(String, chrono::DateTime<Utc>)> = match self.uses.lock() {
            Ok(mut u) => {
                let batch: Vec<_> = u.pending.drain().collect();
                let now = Instant::now();
                for (id, _) in &batch {
                    u.written.insert(id.clone(), now);
                }
                u.written.retain(|_, at| at.elapsed() < LAST_USED_EVERY);
                batch
            }
            Err(_) => return Ok(0),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.store.touch_keys(&batch).await {
            // Kept for the next flush.
            if let Ok(mut u) = self.uses.lock() {
                for (id, at) in batch {
                    u.written.remove(&id);
                    u.pending.entry(id).or_insert(at);
                }
            }
            return Err(e.into());
        }
        Ok(batch.len())
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
                    metrics::counter!("auth_cache_hits_total").increment(1);
                    return Ok(usable(owner.clone()));
                }
            }
        }
        metrics::counter!("auth_cache_misses_total").increment(1);
        let owner = self.store.key_owner(&hash).await?;
        let usable = owner.and_then(usable);
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

    /// Re-checks every cached key in one batched lookup: keys no longer usable (rotated,
    /// revoked, expired, org suspended or deleted, by any process) are dropped; the others
    /// are refreshed (subscription changes included). Returns how many were dropped.
    pub async fn revalidate(&self) -> Result<usize, ApiError> {
        let hashes: Vec<String> = match self.cache.read() {
            Ok(cache) => cache.keys().cloned().collect(),
            Err(_) => return Ok(0),
        };
        if hashes.is_empty() {
            return Ok(0);
        }
        let fresh = self.store.key_owners(&hashes).await?;
        let mut dropped = 0;
        if let Ok(mut cache) = self.cache.write() {
            for hash in &hashes {
                match fresh.get(hash).cloned().and_then(usable) {
                    Some(owner) => {
                        if let Some(entry) = cache.get_mut(hash) {
                            entry.0 = owner;
                        }
                    }
                    None => {
                        if cache.remove(hash).is_some() {
                            dropped += 1;
                        }
                    }
                }
            }
        }
        Ok(dropped)
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

/// The owner, if the key may be used now (org ACTIVE, not expired).
fn usable(owner: KeyOwner) -> Option<KeyOwner> {
    (owner.org_status == ORG_ACTIVE && owner.expires_at.is_none_or(|t| t > Utc::now())).then_some(owner)
}

/// Starts the loop that revalidates the key cache every `AUTH_REVALIDATE_SECONDS`; it stops
/// at shutdown. Both services call this.
pub fn start_revalidation(ctx: &Arc<AppContext>) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ctx.settings.auth_revalidate_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = ctx.shutdown.cancelled() => {
                    // Flushed on shutdown: the last minute of use is not lost.
                    if let Err(e) = ctx.auth.flush_uses().await {
                        tracing::warn!(error = %e.detail, "could not record keys' last use at shutdown");
                    }
                    return;
                }
            }
            match ctx.auth.flush_uses().await {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e.detail, "could not record keys' last use; retried next tick"),
            }
            match ctx.auth.revalidate().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(dropped = n, "auth cache: keys no longer valid were dropped"),
                Err(e) => tracing::warn!(error = %e.detail, "auth cache revalidation failed; entries expire by TTL"),
            }
        }
    });
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
        let presented = header(parts, ROOT_KEY_HEADER);
        if presented.is_none() && header(parts, API_KEY_HEADER).is_some() {
            return Err(ApiError::forbidden(
                "ROOT_KEY_REQUIRED",
                "this is a platform admin route: organization API keys cannot call it; send the root key in X-CA-Root-Key",
            ));
        }
        ctx.auth.check_root(presented)?;
        crate::layers::note(|n| n.actor = Some("root".into()));
        ctx.limits.check_org("__root__")?;
        if let Some(slug) = path_org_param(parts).await? {
            path_org(&slug)?;
        }
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
    pub key_fingerprint: Option<String>,
    pub scopes: Vec<String>,
}

/// The scope a request needs: `pipelines:execute` to submit, cancel or retry runs,
/// `pipelines:read` to read, `pipelines:write` for every other change.
pub fn required_scope(method: &axum::http::Method, path: &str) -> &'static str {
    use axum::http::Method;
    let submit = path.contains("/pipelines/run/") || path.ends_with("/retry");
    let cancel = path.contains("/pipelines/runs/") || path.ends_with("/cancel");
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => "pipelines:read",
        Method::POST if submit || cancel => "pipelines:execute",
        Method::DELETE if cancel => "pipelines:execute",
        _ => "pipelines:write",
    }
}

impl OrgAuth {
    /// 403 unless the key carries the scope the request needs.
    fn check_scope(&self, parts: &Parts) -> Result<(), ApiError> {
        let needed = required_scope(&parts.method, parts.uri.path());
        if self.scopes.iter().any(|s| s == needed) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "INSUFFICIENT_SCOPE",
                format!(
                    "this API key lacks the scope {needed} (it has: {}); rotate the key with the scopes it needs",
                    if self.scopes.is_empty() {
                        "none".to_string()
                    } else {
                        self.scopes.join(", ")
                    }
                ),
            )
            .with_extra(serde_json::json!({"required_scope": needed})))
        }
    }

    /// 403 unless the path org is the key's org.
    fn check_path_org(&self, path_slug: &str) -> Result<(), ApiError> {
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

/// The route's `{org_slug}` path segment, if it has one.
async fn path_org_param(parts: &mut Parts) -> Result<Option<String>, ApiError> {
    let params = RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(|e| ApiError::bad_request("INVALID_PATH", format!("the URL path is not valid: {e}")))?;
    Ok(params
        .iter()
        .find(|(name, _)| *name == ORG_PATH_PARAM)
        .map(|(_, value)| value.to_string()))
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
    let actor = match &owner.key_fingerprint {
        Some(fp) => format!("key:{fp}"),
        None => format!("key_id:{}", owner.org_api_key_id),
    };
    crate::layers::note(|n| n.actor = Some(actor));
    ctx.auth.record_use(&owner.org_api_key_id);
    ctx.limits.check_org(&owner.org_slug)?;
    Ok(OrgAuth {
        org_slug: owner.org_slug,
        org_api_key_id: owner.org_api_key_id,
        org_dataset_id: owner.org_dataset_id,
        plan_name: owner.plan_name,
        subscription_status: owner.subscription_status,
        trial_end_date: owner.trial_end_date,
        subscription_end_date: owner.subscription_end_date,
        key_fingerprint: owner.key_fingerprint,
        scopes: owner.scopes,
    })
}

impl FromRequestParts<Arc<AppContext>> for OrgAuth {
    type Rejection = ApiError;

    /// The key's org; on a route with `{org_slug}`, only if the path names that org.
    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<AppContext>) -> Result<Self, Self::Rejection> {
        let org = org_from_key(parts, ctx).await?;
        if let Some(slug) = path_org_param(parts).await? {
            org.check_path_org(&slug)?;
        }
        org.check_scope(parts)?;
        Ok(org)
    }
}

/// The org of an org-scoped route (`…/{org_slug}/…`): the key authenticated (401) and its
/// org equal to the path's (403), in one step. The only way such a route gets an org.
#[derive(Debug, Clone)]
pub struct OrgPath(pub OrgAuth);

/// A route wired with an org extractor but without an `{org_slug}` segment.
fn missing_org_param() -> ApiError {
    ApiError::internal("route uses an org-path extractor but has no {org_slug} path segment")
}

impl FromRequestParts<Arc<AppContext>> for OrgPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<AppContext>) -> Result<Self, Self::Rejection> {
        let org = org_from_key(parts, ctx).await?;
        let slug = path_org_param(parts).await?.ok_or_else(missing_org_param)?;
        org.check_path_org(&slug)?;
        org.check_scope(parts)?;
        Ok(OrgPath(org))
    }
}

/// The caller of an org-scoped route open to the org itself and to the platform admin:
/// root may act on any (well-formed) org, an org key only on its own.
#[derive(Debug, Clone)]
pub struct CallerPath(pub Caller);

impl FromRequestParts<Arc<AppContext>> for CallerPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<AppContext>) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, ctx).await?;
        if path_org_param(parts).await?.is_none() {
            return Err(missing_org_param());
        }
        Ok(CallerPath(caller))
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
            OrgAuth::from_request_parts(parts, ctx).await.map(Caller::Org)
        } else {
            Err(ApiError::unauthorized(
                "API_KEY_REQUIRED",
                "send the organization API key in X-API-Key (or the root key in X-CA-Root-Key)",
            ))
        }
    }
}
