//! Rate limits with `governor`: service-wide limiters (per process) applied to every API
//! request, and keyed limiters per authenticated org (applied by the auth extractors, so the
//! org is known), each per minute and per hour. Refusals are 429 with `Retry-After`; every
//! org request also reports its budget in `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` (the window with the fewest requests left).

use std::{num::NonZeroU32, time::Duration};

use cloudact_core::settings::Settings;
use governor::{
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::{keyed::DefaultKeyedStateStore, InMemoryState, NotKeyed},
    Quota, RateLimiter,
};

use crate::error::ApiError;

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;
type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One limit: requests per window.
#[derive(Debug, Clone, Copy)]
struct Window {
    limit: u32,
    seconds: u64,
    name: &'static str,
}

impl Window {
    fn quota(&self) -> Quota {
        let n = NonZeroU32::new(self.limit.max(1)).unwrap_or(NonZeroU32::MIN);
        match self.seconds {
            60 => Quota::per_minute(n),
            _ => Quota::per_hour(n),
        }
    }

    /// Seconds until the window's budget is whole again with `remaining` requests left.
    fn reset_after(&self, remaining: u32) -> u64 {
        let used = u64::from(self.limit.saturating_sub(remaining));
        (used * self.seconds).div_ceil(u64::from(self.limit.max(1)))
    }
}

/// A request's budget after it was counted (for the `RateLimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBudget {
    pub limit: u32,
    pub remaining: u32,
    pub reset_seconds: u64,
}

pub struct RateLimits {
    enabled: bool,
    org_windows: [Window; 2],
    global_windows: [Window; 2],
    per_org: [Keyed; 2],
    global: [Direct; 2],
}

impl RateLimits {
    pub fn new(settings: &Settings) -> Self {
        let org_windows = [
            Window {
                limit: settings.rate_limit_per_org_per_minute,
                seconds: 60,
                name: "minute",
            },
            Window {
                limit: settings.rate_limit_per_org_per_hour,
                seconds: 3600,
                name: "hour",
            },
        ];
        let global_windows = [
            Window {
                limit: settings.rate_limit_global_per_minute,
                seconds: 60,
                name: "minute",
            },
            Window {
                limit: settings.rate_limit_global_per_hour,
                seconds: 3600,
                name: "hour",
            },
        ];
        RateLimits {
            enabled: settings.rate_limit_enabled,
            per_org: org_windows.map(|w| RateLimiter::keyed(w.quota()).with_middleware::<StateInformationMiddleware>()),
            global: global_windows
                .map(|w| RateLimiter::direct(w.quota()).with_middleware::<StateInformationMiddleware>()),
            org_windows,
            global_windows,
        }
    }

    /// Counts one request against the org's per-minute and per-hour limits; the budget left
    /// in the tighter window, or 429.
    pub fn check_org(&self, org: &str) -> Result<Option<RateBudget>, ApiError> {
        if !self.enabled {
            return Ok(None);
        }
        let key = org.to_string();
        let mut tightest: Option<RateBudget> = None;
        for (limiter, window) in self.per_org.iter().zip(&self.org_windows) {
            match limiter.check_key(&key) {
                Ok(state) => {
                    let remaining = state.remaining_burst_capacity();
                    let budget = RateBudget {
                        limit: window.limit,
                        remaining,
                        reset_seconds: window.reset_after(remaining),
                    };
                    if tightest.is_none_or(|t| budget.remaining < t.remaining) {
                        tightest = Some(budget);
                    }
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    return Err(refusal(
                        format!(
                            "rate limit of {} requests per {} for organization '{org}' exceeded; retry later",
                            window.limit, window.name
                        ),
                        "per_org",
                        *window,
                        wait,
                    ));
                }
            }
        }
        if let Some(budget) = tightest {
            crate::layers::note(|n| n.rate = Some(budget));
        }
        Ok(tightest)
    }

    /// Counts one request against the service-wide limits.
    pub fn check_global(&self) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        for (limiter, window) in self.global.iter().zip(&self.global_windows) {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(refusal(
                    format!(
                        "service-wide rate limit of {} requests per {} exceeded; retry later",
                        window.limit, window.name
                    ),
                    "global",
                    *window,
                    wait,
                ));
            }
        }
        Ok(())
    }

    /// Drops idle per-org state (called periodically).
    pub fn shrink(&self) {
        for limiter in &self.per_org {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

fn refusal(detail: String, scope: &str, window: Window, wait: Duration) -> ApiError {
    let retry_after = wait.as_secs() + 1;
    if scope == "per_org" {
        crate::layers::note(|n| {
            n.rate = Some(RateBudget {
                limit: window.limit,
                remaining: 0,
                reset_seconds: retry_after,
            })
        });
    }
    metrics::counter!("rate_limit_refusals_total", "scope" => scope.to_string(), "window" => window.name).increment(1);
    ApiError::too_many_requests(detail, retry_after)
        .with_extra(serde_json::json!({"limit": scope, "window": window.name, "limit_per_window": window.limit}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_is_the_time_to_refill_what_was_used() {
        let w = Window {
            limit: 100,
            seconds: 60,
            name: "minute",
        };
        assert_eq!(w.reset_after(100), 0);
        assert_eq!(w.reset_after(99), 1);
        assert_eq!(w.reset_after(0), 60);
    }
}
