//! `GET /api/v1/organizations/{org}/whoami` (org key): who the key belongs to and whether
//! its subscription lets it run pipelines. Proves org-key auth across the two services.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    Json,
};
use chrono::{NaiveDate, Utc};
use cloudact_core::meta::SubscriptionStatus;
use cloudact_web::{ApiError, AppContext, OrgAuth};
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
    /// ACTIVE or TRIAL, and no trial or subscription end date in the past.
    pub can_run_pipelines: bool,
    pub reason: Option<String>,
}

/// The authenticated org (the path org must be the key's org).
#[utoipa::path(get, path = "/api/v1/organizations/{org_slug}/whoami", tag = "organizations",
    params(("org_slug" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = WhoAmI), (status = 401), (status = 403)))]
pub async fn whoami(
    State(ctx): State<Arc<AppContext>>,
    org: OrgAuth,
    Path(org_slug): Path<String>,
) -> Result<Json<WhoAmI>, ApiError> {
    org.require_org(&org_slug)?;
    let sub = ctx.store.subscription(&org.org_slug).await?;
    let today = Utc::now().date_naive();
    let (can_run, reason) = match &sub {
        None => (false, Some("the organization has no subscription".to_string())),
        Some(s) => match SubscriptionStatus::parse(&s.status) {
            Some(st) if !st.allows_runs() => (false, Some(format!("subscription status is {}", s.status))),
            None => (false, Some(format!("subscription status {} is unknown", s.status))),
            Some(SubscriptionStatus::Trial) if s.trial_end_date.is_some_and(|d| d < today) => {
                (false, Some("the trial has ended".to_string()))
            }
            Some(_) if s.subscription_end_date.is_some_and(|d| d < today) => {
                (false, Some("the subscription has ended".to_string()))
            }
            Some(_) => (true, None),
        },
    };
    Ok(Json(WhoAmI {
        org_slug: org.org_slug,
        org_dataset_id: org.org_dataset_id,
        org_api_key_id: org.org_api_key_id,
        plan_name: sub.as_ref().map(|s| s.plan_name.clone()),
        subscription_status: sub.as_ref().map(|s| s.status.clone()),
        trial_end_date: sub.as_ref().and_then(|s| s.trial_end_date),
        can_run_pipelines: can_run,
        reason,
    }))
}
