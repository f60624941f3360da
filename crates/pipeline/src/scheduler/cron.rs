//! Schedule rules: a five-field cron expression read in an IANA timezone.
//!
//! `daily` is `0 1 * * *` (01:00 local), `monthly` is `0 2 1 * *` (02:00 local on the 1st),
//! `hourly` is `0 * * * *`; `@daily`-style aliases are accepted too. Occurrences follow the
//! Open Cron Pattern Specification's DST rules (croner): a fixed time that falls into a
//! spring-forward gap runs at the first valid time after it, and one in a fall-back overlap
//! runs once, at its first instance — so a daily schedule fires once every local day.
//!
//! What an occurrence loads: the previous local day, or the previous calendar month for a
//! monthly pattern (a single day of the month, every month, any weekday).

use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use croner::Cron;
use sha2::{Digest, Sha256};

/// A schedule that cannot be used, with a message a person can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("schedule_cron {0:?} is not a cron expression: {1}")]
    Cron(String, String),
    #[error("timezone {0:?} is not an IANA timezone name (e.g. UTC, Europe/Berlin, America/New_York)")]
    Timezone(String),
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct ScheduleRule {
    cron: Cron,
    tz: Tz,
    monthly: bool,
    /// The normalised five-field expression.
    pub expression: String,
}

/// The five-field cron a spec's `schedule:` (or a request's `schedule_cron`) stands for;
/// `None` for `on_demand` / no schedule.
pub fn expression_for(schedule: &str) -> Option<String> {
    let s = schedule.trim();
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "" | "on_demand" | "manual" | "none" => None,
        "daily" | "@daily" | "@midnight" => Some("0 1 * * *".into()),
        "monthly" | "@monthly" => Some("0 2 1 * *".into()),
        "hourly" | "@hourly" => Some("0 * * * *".into()),
        "weekly" | "@weekly" => Some("0 1 * * 1".into()),
        _ => Some(s.split_whitespace().collect::<Vec<_>>().join(" ")),
    }
}

impl ScheduleRule {
    /// Parses a schedule (keyword, alias or five-field cron) in `timezone`.
    pub fn parse(schedule: &str, timezone: &str) -> Result<Self, RuleError> {
        let expression =
            expression_for(schedule).ok_or_else(|| RuleError::Cron(schedule.into(), "it is not a schedule".into()))?;
        let fields: Vec<&str> = expression.split(' ').collect();
        if fields.len() != 5 {
            return Err(RuleError::Cron(
                schedule.into(),
                format!(
                    "expected five fields (minute hour day-of-month month day-of-week), got {}",
                    fields.len()
                ),
            ));
        }
        let cron = Cron::from_str(&expression).map_err(|e| RuleError::Cron(schedule.into(), e.to_string()))?;
        let tz: Tz = timezone
            .trim()
            .parse()
            .map_err(|_| RuleError::Timezone(timezone.into()))?;
        let single_number = |f: &str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit());
        let monthly = single_number(fields[2]) && fields[3] == "*" && fields[4] == "*";
        let rule = ScheduleRule {
            cron,
            tz,
            monthly,
            expression,
        };
        // A pattern that can never match (31 February) is refused, not stored.
        if rule.next_after(Utc::now()).is_none() {
            return Err(RuleError::Cron(schedule.into(), "it never matches a date".into()));
        }
        Ok(rule)
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        let next = next.with_timezone(&Utc);
        (next > t).then_some(next)
    }

    /// The data days an occurrence at `at` loads: the previous local day, or for a monthly
    /// rule the whole previous calendar month.
    pub fn data_dates(&self, at: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
        let local_day = at.with_timezone(&self.tz).date_naive();
        let yesterday = local_day.pred_opt().unwrap_or(local_day);
        if self.monthly {
            let first_this_month = local_day.with_day(1).unwrap_or(local_day);
            let last_prev = first_this_month.pred_opt().unwrap_or(first_this_month);
            let first_prev = last_prev.with_day(1).unwrap_or(last_prev);
            (first_prev, last_prev)
        } else {
            (yesterday, yesterday)
        }
    }

    /// Occurrences due by `now`, starting with `from` (the stored next run time): those older
    /// than `catchup` are dropped (counted), occurrences loading the same days are collapsed
    /// into their latest one, and at most `max` are kept (the most recent). Also returns the
    /// first occurrence after `now`.
    pub fn due(&self, from: DateTime<Utc>, now: DateTime<Utc>, catchup: Duration, max: usize) -> DueOccurrences {
        let horizon = now - catchup;
        let mut out: Vec<(DateTime<Utc>, NaiveDate, NaiveDate)> = Vec::new();
        let mut dropped = 0usize;
        let mut t = Some(from);
        // Jump over a long outage instead of walking every missed occurrence.
        if from < horizon {
            let first_kept = self.next_after(horizon - Duration::seconds(1));
            let mut walked = from;
            let mut n = 0usize;
            while let Some(x) = self.next_after(walked).filter(|x| *x < horizon) {
                walked = x;
                n += 1;
                if n > 10_000 {
                    break;
                }
            }
            dropped = n + 1;
            t = first_kept;
        }
        while let Some(at) = t.filter(|x| *x <= now) {
            let (s, e) = self.data_dates(at);
            match out.last_mut() {
                Some(last) if last.1 == s && last.2 == e => last.0 = at,
                _ => out.push((at, s, e)),
            }
            t = self.next_after(at);
        }
        if out.len() > max {
            dropped += out.len() - max;
            out.drain(..out.len() - max);
        }
        DueOccurrences {
            occurrences: out,
            dropped,
            next: t,
        }
    }
}

/// What [`ScheduleRule::due`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct DueOccurrences {
    /// (occurrence time, first data day, last data day), oldest first.
    pub occurrences: Vec<(DateTime<Utc>, NaiveDate, NaiveDate)>,
    /// Occurrences older than the catch-up window (not run).
    pub dropped: usize,
    /// The first occurrence after `now`.
    pub next: Option<DateTime<Utc>>,
}

/// A deterministic offset in `[0, window)` for an org's schedule: spreads the start of
/// 10 000 orgs' daily runs over the window instead of one second.
pub fn jitter(org_slug: &str, config_id: &str, window: std::time::Duration) -> Duration {
    let secs = window.as_secs();
    if secs == 0 {
        return Duration::zero();
    }
    let digest = Sha256::digest(format!("{org_slug}/{config_id}").as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    Duration::seconds((u64::from_be_bytes(n) % secs) as i64)
}

/// The id of one occurrence of a schedule: the same occurrence always gets the same id.
pub fn occurrence_id(config_id: &str, at: DateTime<Utc>) -> String {
    format!("{config_id}@{}", at.format("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn keywords_and_validation() {
        assert_eq!(expression_for("daily").as_deref(), Some("0 1 * * *"));
        assert_eq!(expression_for("on_demand"), None);
        assert!(ScheduleRule::parse("0 1 * * *", "Europe/Berlin").is_ok());
        assert!(matches!(
            ScheduleRule::parse("0 1 * *", "UTC"),
            Err(RuleError::Cron(..))
        ));
        assert!(matches!(
            ScheduleRule::parse("61 1 * * *", "UTC"),
            Err(RuleError::Cron(..))
        ));
        assert!(matches!(
            ScheduleRule::parse("0 0 31 2 *", "UTC"),
            Err(RuleError::Cron(..))
        ));
        assert!(matches!(
            ScheduleRule::parse("0 1 * * *", "Mars/Olympus"),
            Err(RuleError::Timezone(_))
        ));
        assert!(matches!(
            ScheduleRule::parse("0 0 0 1 * *", "UTC"),
            Err(RuleError::Cron(..))
        ));
    }

    #[test]
    fn daily_in_a_timezone_is_once_per_local_day_across_both_dst_changes() {
        // 02:30 local does not exist on 2026-03-08 in New York and 01:30 happens twice on
        // 2026-11-01: both days still fire exactly once.
        let spring = ScheduleRule::parse("30 2 * * *", "America/New_York").unwrap();
        let a = spring.next_after(utc("2026-03-07T12:00:00Z")).unwrap();
        assert_eq!(a, utc("2026-03-08T07:00:00Z"), "snapped to 03:00 EDT, after the gap");
        let b = spring.next_after(a).unwrap();
        assert_eq!(b, utc("2026-03-09T06:30:00Z"), "02:30 EDT the next day");
        let fall = ScheduleRule::parse("30 1 * * *", "America/New_York").unwrap();
        let c = fall.next_after(utc("2026-10-31T12:00:00Z")).unwrap();
        assert_eq!(c, utc("2026-11-01T05:30:00Z"), "01:30 EDT, the first instance");
        let d = fall.next_after(c).unwrap();
        assert_eq!(d, utc("2026-11-02T06:30:00Z"), "not again at 01:30 EST");
        assert_eq!(
            fall.data_dates(c),
            ("2026-10-31".parse().unwrap(), "2026-10-31".parse().unwrap())
        );
    }

    #[test]
    fn data_dates_are_local_and_monthly_covers_the_previous_month() {
        let tokyo = ScheduleRule::parse("daily", "Asia/Tokyo").unwrap();
        // 2026-03-01 01:00 JST is 2026-02-28 16:00 UTC: it loads 2026-02-28 (Tokyo).
        let at = tokyo.next_after(utc("2026-02-28T12:00:00Z")).unwrap();
        assert_eq!(at, utc("2026-02-28T16:00:00Z"));
        assert_eq!(
            tokyo.data_dates(at),
            ("2026-02-28".parse().unwrap(), "2026-02-28".parse().unwrap())
        );
        let monthly = ScheduleRule::parse("monthly", "UTC").unwrap();
        let at = monthly.next_after(utc("2026-02-10T00:00:00Z")).unwrap();
        assert_eq!(at, utc("2026-03-01T02:00:00Z"));
        assert_eq!(
            monthly.data_dates(at),
            ("2026-02-01".parse().unwrap(), "2026-02-28".parse().unwrap())
        );
    }

    #[test]
    fn catch_up_runs_each_missed_day_once_within_the_window() {
        let rule = ScheduleRule::parse("daily", "UTC").unwrap();
        let from = utc("2026-05-01T01:00:00Z");
        let due = rule.due(from, utc("2026-05-04T09:00:00Z"), Duration::days(7), 100);
        let days: Vec<String> = due.occurrences.iter().map(|o| o.1.to_string()).collect();
        assert_eq!(days, ["2026-04-30", "2026-05-01", "2026-05-02", "2026-05-03"]);
        assert_eq!(due.next, Some(utc("2026-05-05T01:00:00Z")));
        assert_eq!(due.dropped, 0);
        // Down for 30 days with a 7-day window: only the last 7 days run.
        let due = rule.due(from, utc("2026-05-31T09:00:00Z"), Duration::days(7), 100);
        assert_eq!(due.occurrences.len(), 7);
        assert_eq!(due.occurrences[0].1.to_string(), "2026-05-24");
        assert_eq!(due.dropped, 24);
        // Hourly occurrences that load the same day collapse into one.
        let hourly = ScheduleRule::parse("hourly", "UTC").unwrap();
        let due = hourly.due(
            utc("2026-05-01T00:00:00Z"),
            utc("2026-05-01T05:30:00Z"),
            Duration::days(7),
            100,
        );
        assert_eq!(due.occurrences.len(), 1);
        assert_eq!(due.occurrences[0].0, utc("2026-05-01T05:00:00Z"));
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let w = std::time::Duration::from_secs(300);
        let a = jitter("acme", "c1", w);
        assert_eq!(a, jitter("acme", "c1", w));
        let spread: std::collections::HashSet<i64> = (0..1000)
            .map(|i| jitter(&format!("org{i}"), "c", w).num_seconds())
            .collect();
        assert!(spread.iter().all(|s| (0..300).contains(s)));
        assert!(spread.len() > 250, "offsets spread over the window");
        assert_eq!(jitter("acme", "c1", std::time::Duration::ZERO), Duration::zero());
    }
}
