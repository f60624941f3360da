//! `GET /api/v1/organizations/{org}/whoami` (org key): who the key belongs to and whether
//! its subscription lets it run pipelines. Proves org-key auth across the two services.
//! Answered from the authenticated key's cached lookup: no warehouse round trip on a hit.

use axum::Json;
use chrono::{NaiveDate, Utc};
use cloudact_core::meta::SubscriptionStatus;
use cloudact_web::{ApiError, OrgAuth, OrgPath};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub org_slug: String,
    pub org_dataset_id: String,
    pub org_api_key_id: String,
    pub plan_name: Option<String>,
    pub subscription_status: Option<String>,
    pub trial_end_date: Option<NaiveDate>,
    pub subscription_end_date: Option<NaiveDate>,
    /// ACTIVE or TRIAL, and no trial or subscription end date in the past.
    pub can_run_pipelines: bool,
    pub reason: Option<String>,
}

/// Why the org may not run pipelines now, if it may not.
fn run_blocker(org: &OrgAuth, today: NaiveDate) -> Option<String> {
    let Some(status) = org.subscription_status.as_deref() else {
        return Some("the organization has no subscription".to_string());
    };
    match SubscriptionStatus::parse(status) {
        None => Some(format!("subscription status {status} is unknown")),
        Some(st) if !st.allows_runs() => Some(format!("subscription status is {status}")),
        Some(SubscriptionStatus::Trial) if org.trial_end_date.is_some_and(|d| d < today) => {
            Some("the trial has ended".to_string())
        }
        Some(_) if org.subscription_end_date.is_some_and(|d| d < today) => {
            Some("the subscription has ended".to_string())
        }
        Some(_) => None,
    }
}

/// The authenticated org (the path org must be the key's org).
#[utoipa::path(get, path = "/api/v1/organizations/{org_slug}/whoami", tag = "organizations",
    params(("org_slug" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = WhoAmI), (status = 401), (status = 403)))]
pub async fn whoami(OrgPath(org): OrgPath) -> Result<Json<WhoAmI>, ApiError> {
    let reason = run_blocker(&org, Utc::now().date_naive());
    Ok(Json(WhoAmI {
        can_run_pipelines: reason.is_none(),
        reason,
        org_slug: org.org_slug,
        org_dataset_id: org.org_dataset_id,
        org_api_key_id: org.org_api_key_id,
        plan_name: org.plan_name,
        subscription_status: org.subscription_status,
        trial_end_date: org.trial_end_date,
        subscription_end_date: org.subscription_end_date,
    }))
}
