//! Rate limits with `governor`: one global limiter (per process) applied to every API
//! request, and one keyed limiter per authenticated org (applied by the auth extractors,
//! so the org is known). Refusals are 429 with `Retry-After`.

use std::num::NonZeroU32;

use cloudact_core::settings::Settings;
use governor::{
    clock::{Clock, DefaultClock},
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter,
};

use crate::error::ApiError;

pub struct RateLimits {
    enabled: bool,
    per_org_per_minute: u32,
    global_per_minute: u32,
    per_org: DefaultKeyedRateLimiter<String>,
    global: DefaultDirectRateLimiter,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl RateLimits {
    pub fn new(settings: &Settings) -> Self {
        RateLimits {
            enabled: settings.rate_limit_enabled,
            per_org_per_minute: settings.rate_limit_per_org_per_minute,
            global_per_minute: settings.rate_limit_global_per_minute,
            per_org: RateLimiter::keyed(per_minute(settings.rate_limit_per_org_per_minute)),
            global: RateLimiter::direct(per_minute(settings.rate_limit_global_per_minute)),
        }
    }

    /// Counts one request against the org's limit.
    pub fn check_org(&self, org: &str) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        self.per_org.check_key(&org.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::too_many_requests(
                format!(
                    "rate limit of {} requests per minute for organization '{org}' exceeded; retry later",
                    self.per_org_per_minute
                ),
                wait.as_secs() + 1,
            )
            .with_extra(serde_json::json!({"limit": "per_org", "limit_per_minute": self.per_org_per_minute}))
        })
    }

    /// Counts one request against the service-wide limit.
    pub fn check_global(&self) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        self.global.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::too_many_requests(
                format!(
                    "service-wide rate limit of {} requests per minute exceeded; retry later",
                    self.global_per_minute
                ),
                wait.as_secs() + 1,
            )
            .with_extra(serde_json::json!({"limit": "global", "limit_per_minute": self.global_per_minute}))
        })
    }

    /// Drops idle per-org state (called periodically).
    pub fn shrink(&self) {
        self.per_org.retain_recent();
        self.per_org.shrink_to_fit();
    }
}
