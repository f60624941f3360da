//! `GET /organizations/{org}/subscription` (org key or root) and `PUT` (root; also the
//! target of the Stripe webhook sync).

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    Json,
};
use chrono::{DateTime, NaiveDate, Utc};
use cloudact_core::meta::{Plan, PlanLimits, Subscription, SubscriptionChange, SubscriptionStatus};
use cloudact_web::{ApiError, ApiJson, AppContext, CallerPath, RootAuth};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionResponse {
    pub org_slug: String,
    pub subscription_id: String,
    pub plan_name: String,
    pub status: String,
    pub daily_limit: i64,
    pub monthly_limit: i64,
    pub concurrent_limit: i64,
    pub seat_limit: i64,
    pub providers_limit: i64,
    pub trial_end_date: Option<NaiveDate>,
    pub subscription_end_date: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The answer to `PUT …/subscription`: the subscription as it now is, plus whether anything
/// changed and what (the original's `updated` / `message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionUpdateResponse {
    #[serde(flatten)]
    pub subscription: SubscriptionResponse,
    pub updated: bool,
    pub message: String,
}

/// What differs between two states of a subscription, for the update message.
fn changes(before: &Subscription, after: &Subscription) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name} {a} → {b}"));
        }
    };
    let date = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_else(|| "none".into());
    diff("plan", before.plan_name.clone(), after.plan_name.clone());
    diff("status", before.status.clone(), after.status.clone());
    diff(
        "trial_end_date",
        date(before.trial_end_date),
        date(after.trial_end_date),
    );
    diff(
        "subscription_end_date",
        date(before.subscription_end_date),
        date(after.subscription_end_date),
    );
    let (a, b) = (&before.limits, &after.limits);
    diff("daily_limit", a.daily_limit.to_string(), b.daily_limit.to_string());
    diff(
        "monthly_limit",
        a.monthly_limit.to_string(),
        b.monthly_limit.to_string(),
    );
    diff(
        "concurrent_limit",
        a.concurrent_limit.to_string(),
        b.concurrent_limit.to_string(),
    );
    diff("seat_limit", a.seat_limit.to_string(), b.seat_limit.to_string());
    diff(
        "providers_limit",
        a.providers_limit.to_string(),
        b.providers_limit.to_string(),
    );
    out
}

impl From<Subscription> for SubscriptionResponse {
    fn from(s: Subscription) -> Self {
        SubscriptionResponse {
            org_slug: s.org_slug,
            subscription_id: s.subscription_id,
            plan_name: s.plan_name,
            status: s.status,
            daily_limit: s.limits.daily_limit,
            monthly_limit: s.limits.monthly_limit,
            concurrent_limit: s.limits.concurrent_limit,
            seat_limit: s.limits.seat_limit,
            providers_limit: s.limits.providers_limit,
            trial_end_date: s.trial_end_date,
            subscription_end_date: s.subscription_end_date,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

async fn load(ctx: &AppContext, org_slug: &str) -> Result<Subscription, ApiError> {
    ctx.store.subscription(org_slug).await?.ok_or_else(|| {
        ApiError::not_found(
            "ORG_NOT_FOUND",
            format!("organization '{org_slug}' has no subscription"),
        )
    })
}

/// The org's plan, status and limits.
#[utoipa::path(get, path = "/api/v1/organizations/{org_slug}/subscription", tag = "subscriptions",
    params(("org_slug" = String, Path)), security(("api_key" = []), ("root_key" = [])),
    responses((status = 200, body = SubscriptionResponse), (status = 401), (status = 403), (status = 404)))]
pub async fn get_subscription(
    State(ctx): State<Arc<AppContext>>,
    _caller: CallerPath,
    Path(org_slug): Path<String>,
) -> Result<Json<SubscriptionResponse>, ApiError> {
    Ok(Json(load(&ctx, &org_slug).await?.into()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionUpdate {
    /// STARTER, PROFESSIONAL, SCALE or ENTERPRISE. Changing it resets limits not given here
    /// to the new plan's.
    pub plan_name: Option<String>,
    /// ACTIVE, TRIAL, SUSPENDED, CANCELLED or EXPIRED.
    pub status: Option<String>,
    /// A Stripe subscription status, mapped: trialing→TRIAL, active→ACTIVE,
    /// past_due/unpaid/paused/incomplete→SUSPENDED, canceled/incomplete_expired→CANCELLED.
    pub stripe_status: Option<String>,
    /// 1..=10000
    pub daily_limit: Option<i64>,
    /// 1..=300000
    pub monthly_limit: Option<i64>,
    /// 1..=100
    pub concurrent_limit: Option<i64>,
    /// 1..=1000
    pub seat_limit: Option<i64>,
    /// 1..=100
    pub providers_limit: Option<i64>,
    /// `YYYY-MM-DD`, an RFC 3339 time, or unix seconds / milliseconds.
    #[schema(value_type = Option<String>)]
    pub trial_end_date: Option<serde_json::Value>,
    /// Same formats as `trial_end_date`.
    #[schema(value_type = Option<String>)]
    pub subscription_end_date: Option<serde_json::Value>,
}

pub(crate) fn parse_date(field: &str, v: &serde_json::Value) -> Result<NaiveDate, ApiError> {
    let bad = || {
        ApiError::unprocessable(
            "INVALID_DATE",
            format!("{field} must be YYYY-MM-DD, an RFC 3339 time, or unix seconds/milliseconds"),
        )
    };
    match v {
        serde_json::Value::String(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .or_else(|_| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc).date_naive()))
            .map_err(|_| bad()),
        serde_json::Value::Number(n) => {
            let n = n.as_i64().ok_or_else(bad)?;
            // Values beyond year 2286 in seconds are milliseconds.
            let secs = if n.abs() > 10_000_000_000 { n / 1000 } else { n };
            DateTime::from_timestamp(secs, 0)
                .map(|t| t.date_naive())
                .ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

fn limit(field: &str, v: Option<i64>, max: i64, default: i64) -> Result<i64, ApiError> {
    match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::unprocessable(
            "INVALID_LIMIT",
            format!("{field} must be 1..={max} (got {n})"),
        )),
    }
}

/// Updates plan, limits, status and dates (root key; the Stripe sync calls this).
#[utoipa::path(put, path = "/api/v1/organizations/{org_slug}/subscription", tag = "subscriptions",
    params(("org_slug" = String, Path)), request_body = SubscriptionUpdate, security(("root_key" = [])),
    responses((status = 200, body = SubscriptionUpdateResponse), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub async fn put_subscription(
    State(ctx): State<Arc<AppContext>>,
    _root: RootAuth,
    Path(org_slug): Path<String>,
    ApiJson(req): ApiJson<SubscriptionUpdate>,
) -> Result<Json<SubscriptionUpdateResponse>, ApiError> {
    let plan = match &req.plan_name {
        None => None,
        Some(p) => Some(Plan::parse(p).ok_or_else(|| {
            ApiError::unprocessable(
                "INVALID_PLAN",
                format!("plan_name {p:?} is not STARTER, PROFESSIONAL, SCALE or ENTERPRISE"),
            )
        })?),
    };
    let status = match (&req.status, &req.stripe_status) {
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable(
                "CONFLICTING_STATUS",
                "give either status or stripe_status, not both",
            ))
        }
        (Some(s), None) => Some(SubscriptionStatus::parse(s).ok_or_else(|| {
            ApiError::unprocessable(
                "INVALID_STATUS",
                format!("status {s:?} is not ACTIVE, TRIAL, SUSPENDED, CANCELLED or EXPIRED"),
            )
        })?),
        (None, Some(s)) => Some(SubscriptionStatus::from_stripe(s).ok_or_else(|| {
            ApiError::unprocessable(
                "INVALID_STRIPE_STATUS",
                format!("stripe_status {s:?} is not a Stripe subscription status"),
            )
        })?),
        (None, None) => None,
    };
    let trial_end_date = req
        .trial_end_date
        .as_ref()
        .map(|v| parse_date("trial_end_date", v))
        .transpose()?;
    let subscription_end_date = req
        .subscription_end_date
        .as_ref()
        .map(|v| parse_date("subscription_end_date", v))
        .transpose()?;
    let current = load(&ctx, &org_slug).await?;
    // A plan change resets unspecified limits to the new plan; otherwise they stay.
    let base = plan.map(Plan::limits).unwrap_or(current.limits);
    let limits = PlanLimits {
        daily_limit: limit("daily_limit", req.daily_limit, 10_000, base.daily_limit)?,
        monthly_limit: limit("monthly_limit", req.monthly_limit, 300_000, base.monthly_limit)?,
        concurrent_limit: limit("concurrent_limit", req.concurrent_limit, 100, base.concurrent_limit)?,
        seat_limit: limit("seat_limit", req.seat_limit, 1_000, base.seat_limit)?,
        providers_limit: limit("providers_limit", req.providers_limit, 100, base.providers_limit)?,
    };
    let change = SubscriptionChange {
        plan,
        status,
        limits,
        trial_end_date,
        subscription_end_date,
    };
    ctx.store
        .update_subscription(&org_slug, &current, &change, Utc::now())
        .await?;
    ctx.auth.invalidate_org(&org_slug);
    let updated = load(&ctx, &org_slug).await?;
    let changed = changes(&current, &updated);
    tracing::info!(org_slug, status = %updated.status, plan = %updated.plan_name, changes = changed.len(), "subscription updated");
    // The audit row's before/after: what changed, as the message says it.
    let audit = serde_json::json!({
        "before": {"plan": current.plan_name, "status": current.status},
        "after": {"plan": updated.plan_name, "status": updated.status},
        "changes": changed,
    });
    cloudact_web::layers::note(|n| n.audit_details = Some(audit));
    let message = if changed.is_empty() {
        format!("subscription of {org_slug} unchanged")
    } else {
        format!("subscription of {org_slug} updated: {}", changed.join(", "))
    };
    Ok(Json(SubscriptionUpdateResponse {
        subscription: updated.into(),
        updated: !changed.is_empty(),
        message,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_every_documented_form() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 4).unwrap();
        for v in [
            serde_json::json!("2026-03-04"),
            serde_json::json!("2026-03-04T10:00:00Z"),
            serde_json::json!(1772618400),
            serde_json::json!(1772618400000i64),
        ] {
            assert_eq!(parse_date("x", &v).unwrap(), d, "{v}");
        }
        assert!(parse_date("x", &serde_json::json!("tomorrow")).is_err());
        assert!(parse_date("x", &serde_json::json!(true)).is_err());
    }
}
