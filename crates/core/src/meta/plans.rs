//! Subscription plans, their limits, and subscription statuses (with the Stripe mapping).

use serde::{Deserialize, Serialize};

/// A subscription plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Plan {
    Starter,
    Professional,
    Scale,
    Enterprise,
}

/// Limits a plan grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PlanLimits {
    pub daily_limit: i64,
    pub monthly_limit: i64,
    pub concurrent_limit: i64,
    pub seat_limit: i64,
    pub providers_limit: i64,
}

impl Plan {
    /// Parses a plan name case-insensitively.
    pub fn parse(name: &str) -> Option<Plan> {
        match name.trim().to_ascii_uppercase().as_str() {
            "STARTER" => Some(Plan::Starter),
            "PROFESSIONAL" => Some(Plan::Professional),
            "SCALE" => Some(Plan::Scale),
            "ENTERPRISE" => Some(Plan::Enterprise),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Starter => "STARTER",
            Plan::Professional => "PROFESSIONAL",
            Plan::Scale => "SCALE",
            Plan::Enterprise => "ENTERPRISE",
        }
    }

    /// Whether onboarding may choose this plan (ENTERPRISE is set by an admin later).
    pub fn self_service(self) -> bool {
        !matches!(self, Plan::Enterprise)
    }

    /// The plan table (pipelines per day / per month / concurrent, seats, providers).
    pub fn limits(self) -> PlanLimits {
        let (daily, monthly, concurrent, seats, providers) = match self {
            Plan::Starter => (6, 180, 20, 2, 3),
            Plan::Professional => (25, 750, 20, 6, 6),
            Plan::Scale => (100, 3000, 20, 11, 10),
            Plan::Enterprise => (999_999, 999_999, 999_999, 999_999, 999_999),
        };
        PlanLimits {
            daily_limit: daily,
            monthly_limit: monthly,
            concurrent_limit: concurrent,
            seat_limit: seats,
            providers_limit: providers,
        }
    }
}

/// Status of an org's subscription. Only ACTIVE and TRIAL may run pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SubscriptionStatus {
    Active,
    Trial,
    Suspended,
    Cancelled,
    Expired,
}

impl SubscriptionStatus {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "ACTIVE" => Some(Self::Active),
            "TRIAL" => Some(Self::Trial),
            "SUSPENDED" => Some(Self::Suspended),
            "CANCELLED" | "CANCELED" => Some(Self::Cancelled),
            "EXPIRED" => Some(Self::Expired),
            _ => None,
        }
    }

    /// Maps a Stripe subscription status: trialing→TRIAL, active→ACTIVE,
    /// past_due/unpaid/paused/incomplete→SUSPENDED, canceled/incomplete_expired→CANCELLED.
    pub fn from_stripe(s: &str) -> Option<Self> {
        match s {
            "trialing" => Some(Self::Trial),
            "active" => Some(Self::Active),
            "past_due" | "unpaid" | "paused" | "incomplete" => Some(Self::Suspended),
            "canceled" | "incomplete_expired" => Some(Self::Cancelled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Trial => "TRIAL",
            Self::Suspended => "SUSPENDED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn allows_runs(self) -> bool {
        matches!(self, Self::Active | Self::Trial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_table_and_stripe_mapping() {
        assert_eq!(Plan::parse("starter"), Some(Plan::Starter));
        assert_eq!(Plan::parse("gold"), None);
        assert_eq!(Plan::Scale.limits().monthly_limit, 3000);
        assert_eq!(
            SubscriptionStatus::from_stripe("trialing"),
            Some(SubscriptionStatus::Trial)
        );
        assert_eq!(
            SubscriptionStatus::from_stripe("past_due"),
            Some(SubscriptionStatus::Suspended)
        );
        assert_eq!(
            SubscriptionStatus::from_stripe("paused"),
            Some(SubscriptionStatus::Suspended)
        );
        assert_eq!(
            SubscriptionStatus::from_stripe("canceled"),
            Some(SubscriptionStatus::Cancelled)
        );
        assert_eq!(SubscriptionStatus::from_stripe("bogus"), None);
        assert!(!SubscriptionStatus::Suspended.allows_runs());
    }
}
