//! The run service: admits runs (subscription, quota, integration checks), executes them in
//! the background with bounded concurrency, logs every step, finishes each run exactly once,
//! and keeps crashed runs from dangling (heartbeats plus a sweeper).
//!
//! Crash safety: every PENDING/RUNNING run carries the id of the process that owns it and a
//! heartbeat that process refreshes every `RUN_HEARTBEAT_SECONDS`. A sweeper (in every
//! pipeline-service process, at start-up and then periodically) marks runs whose heartbeat
//! is older than `RUN_STALE_SECONDS` FAILED — with a message saying the process stopped — and
//! releases their quota slots. Runs are not re-queued automatically: day loads replace their
//! day, so rerunning is safe and explicit (`POST /runs/{id}/retry`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use cloudact_core::{
    clock::Clock,
    meta::{
        runs::{truncate, Admission, NewRun, QuotaLimit},
        MetaError, OrgStore, SubscriptionStatus, CENTRAL_DATASET,
    },
    warehouse::{Params, Row, Value},
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    catalog::CatalogEntry,
    executor::{Executor, RunObserver, RunRequest, RunStatus, StepReport},
};

/// Longest date range one run may cover.
pub const MAX_RANGE_DAYS: i64 = 366;

/// Why a run was not started.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the organization has no subscription")]
    NoSubscription,
    #[error("subscription status is {0}; pipelines run only on ACTIVE or TRIAL subscriptions")]
    SubscriptionInactive(String),
    #[error("{0}")]
    SubscriptionEnded(String),
    #[error("{} pipeline quota exceeded ({used} of {allowed} used)", .limit.as_str())]
    Quota {
        limit: QuotaLimit,
        allowed: i64,
        used: i64,
        retry_after_secs: u64,
    },
    #[error("pipeline {pipeline} needs the {provider} integration configured and VALID ({state})")]
    IntegrationMissing {
        pipeline: String,
        provider: String,
        state: String,
    },
    #[error("pipeline {0} is disabled")]
    Disabled(String),
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// What the caller asked for.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    pub org_slug: String,
    pub org_api_key_id: Option<String>,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub trigger_type: String,
    pub trigger_by: Option<String>,
    pub user_id: Option<String>,
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub retry_of: Option<String>,
    /// The scheduled occurrence this run executes: its link to the run commits with the
    /// admission, so an occurrence starts at most one run.
    pub scheduled: Option<ScheduledLink>,
}

/// A scheduled occurrence and the claim under which it is admitted.
#[derive(Debug, Clone)]
pub struct ScheduledLink {
    /// `org_scheduled_pipeline_runs.run_id`.
    pub run_id: String,
    /// The token of the claim on its queue item: an admission under a claim that expired
    /// (and was taken by another process) links nothing and starts nothing.
    pub claim_token: String,
}

/// The outcome of a submission.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Started(String),
    /// The same org + pipeline + dates was already PENDING or RUNNING.
    AlreadyRunning(String),
    /// The scheduled occurrence was already admitted (by another process or an earlier
    /// delivery): nothing was started.
    AlreadyAdmitted,
}

/// Run timing settings.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings {
    pub max_concurrent_runs: usize,
    pub heartbeat_every: Duration,
    pub stale_after: Duration,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            max_concurrent_runs: 8,
            heartbeat_every: Duration::from_secs(10),
            stale_after: Duration::from_secs(60),
        }
    }
}

/// Admits, executes, cancels and sweeps runs.
pub struct RunService {
    executor: Executor,
    store: OrgStore,
    clock: Arc<dyn Clock>,
    runner_id: String,
    permits: Arc<Semaphore>,
    active: Mutex<HashMap<String, CancellationToken>>,
    settings: RunSettings,
    /// Set once "not bootstrapped yet" has been said, so it is said once, not every tick.
    told_not_bootstrapped: std::sync::atomic::AtomicBool,
}

/// Parses and checks the requested dates: one `date`, or `start_date`..=`end_date`, each
/// `YYYY-MM-DD`, start ≤ end, at most [`MAX_RANGE_DAYS`], not after today; none: yesterday.
pub fn resolve_dates(
    date: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
    today: NaiveDate,
) -> Result<(NaiveDate, NaiveDate), String> {
    let parse = |field: &str, v: &str| {
        let shaped = v.len() == 10 && v.as_bytes()[4] == b'-' && v.as_bytes()[7] == b'-';
        NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .ok()
            .filter(|_| shaped)
            .ok_or_else(|| format!("{field} {v:?} is not a date (YYYY-MM-DD)"))
    };
    let (s, e) = match (date, start, end) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err("give either date or start_date/end_date, not both".to_string())
        }
        (Some(d), None, None) => {
            let d = parse("date", d)?;
            (d, d)
        }
        (None, Some(s), Some(e)) => (parse("start_date", s)?, parse("end_date", e)?),
        (None, Some(_), None) | (None, None, Some(_)) => return Err("start_date and end_date go together".to_string()),
        (None, None, None) => {
            let y = today.pred_opt().unwrap_or(today);
            (y, y)
        }
    };
    if s > e {
        return Err(format!("start_date {s} is after end_date {e}"));
    }
    if (e - s).num_days() + 1 > MAX_RANGE_DAYS {
        return Err(format!("a run covers at most {MAX_RANGE_DAYS} days"));
    }
    if e > today {
        return Err(format!("{e} is in the future (today is {today} UTC)"));
    }
    Ok((s, e))
}

fn days(start: NaiveDate, end: NaiveDate) -> Vec<NaiveDate> {
    start.iter_days().take_while(|d| *d <= end).collect()
}

fn seconds_until(now: DateTime<Utc>, then: Option<NaiveDate>) -> u64 {
    then.and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| (t.and_utc() - now).num_seconds().max(1) as u64)
        .unwrap_or(60)
}

impl RunService {
    pub fn new(executor: Executor, store: OrgStore, clock: Arc<dyn Clock>, settings: RunSettings) -> Arc<Self> {
        Arc::new(RunService {
            executor,
            store,
            clock,
            runner_id: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            permits: Arc::new(Semaphore::new(settings.max_concurrent_runs.max(1))),
            active: Mutex::new(HashMap::new()),
            told_not_bootstrapped: std::sync::atomic::AtomicBool::new(false),
            settings,
        })
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn runner_id(&self) -> &str {
        &self.runner_id
    }

    /// Checks in order — subscription status (403), end dates (402), quota (429), required
    /// integration (400) — and starts the run in the background. A refused run consumes nothing.
    pub async fn submit(self: &Arc<Self>, entry: &CatalogEntry, req: SubmitRequest) -> Result<Submitted, SubmitError> {
        if !entry.enabled {
            return Err(SubmitError::Disabled(entry.id.clone()));
        }
        let now = self.clock.now();
        let today = now.date_naive();
        let sub = self
            .store
            .subscription(&req.org_slug)
            .await?
            .ok_or(SubmitError::NoSubscription)?;
        let status = SubscriptionStatus::parse(&sub.status);
        if !status.is_some_and(SubscriptionStatus::allows_runs) {
            return Err(SubmitError::SubscriptionInactive(sub.status));
        }
        if status == Some(SubscriptionStatus::Trial) && sub.trial_end_date.is_some_and(|d| d < today) {
            return Err(SubmitError::SubscriptionEnded(format!(
                "the trial ended on {}; choose a plan to keep running pipelines",
                sub.trial_end_date.map(|d| d.to_string()).unwrap_or_default()
            )));
        }
        if let Some(end) = sub.subscription_end_date.filter(|d| *d < today) {
            return Err(SubmitError::SubscriptionEnded(format!(
                "the subscription ended on {end}; renew it to run pipelines"
            )));
        }
        // Request parameters named like typed spec variables override them, type-checked.
        let variables = entry
            .spec
            .overrides(&req.parameters)
            .map_err(SubmitError::InvalidParameters)?;
        let integration = match &entry.required_integration {
            Some(provider) => Some((provider.clone(), self.integration_state(&req.org_slug, provider).await?)),
            None => None,
        };
        let run_id = uuid::Uuid::new_v4().to_string();
        let new_run = NewRun {
            pipeline_logging_id: run_id.clone(),
            org_slug: req.org_slug.clone(),
            pipeline_id: entry.id.clone(),
            trigger_type: req.trigger_type.clone(),
            trigger_by: req.trigger_by.clone(),
            user_id: req.user_id.clone(),
            org_api_key_id: req.org_api_key_id.clone(),
            start_date: req.start_date,
            end_date: req.end_date,
            parameters: serde_json::Value::Object(req.parameters.clone()),
            retry_of: req.retry_of.clone(),
            runner_id: self.runner_id.clone(),
        };
        // A scheduled run is refused before anything is written (its occurrence stays
        // unlinked, so the refusal is recorded on it once).
        if req.scheduled.is_some() {
            if let Some((provider, state)) = integration.as_ref().filter(|(_, s)| s != "VALID") {
                return Err(SubmitError::IntegrationMissing {
                    pipeline: entry.id.clone(),
                    provider: provider.clone(),
                    state: state.clone(),
                });
            }
        }
        let linked = req
            .scheduled
            .as_ref()
            .map(|s| OrgStore::link_statements(&s.run_id, &s.claim_token, &run_id, now))
            .unwrap_or_default();
        match self.store.admit_run_linked(&new_run, &sub.limits, now, linked).await? {
            Admission::LinkConflict => return Ok(Submitted::AlreadyAdmitted),
            Admission::Duplicate(existing) => return Ok(Submitted::AlreadyRunning(existing)),
            Admission::Refused { limit, allowed, used } => {
                let retry_after_secs = match limit {
                    QuotaLimit::Daily => seconds_until(now, today.succ_opt()),
                    QuotaLimit::Monthly => {
                        let next = if today.month() == 12 {
                            NaiveDate::from_ymd_opt(today.year() + 1, 1, 1)
                        } else {
                            NaiveDate::from_ymd_opt(today.year(), today.month() + 1, 1)
                        };
                        seconds_until(now, next)
                    }
                    QuotaLimit::Concurrent => 30,
                };
                return Err(SubmitError::Quota {
                    limit,
                    allowed,
                    used,
                    retry_after_secs,
                });
            }
            Admission::Admitted => {}
        }
        if let Some((provider, state)) = integration.filter(|(_, s)| s != "VALID") {
            // Admitted a moment ago: give the slot back so the refusal consumes nothing.
            let meta = serde_json::json!({"refused": "integration"});
            self.store
                .finish_run(
                    &req.org_slug,
                    &run_id,
                    "FAILED",
                    false,
                    Some("integration missing"),
                    meta,
                    now,
                )
                .await?;
            self.uncount(&req.org_slug, today).await?;
            self.store
                .warehouse()
                .execute(
                    CENTRAL_DATASET,
                    "DELETE FROM {{org_meta_pipeline_runs}} WHERE pipeline_logging_id = @id AND org_slug = @org",
                    &Params::new().with("id", &run_id).with("org", &req.org_slug),
                )
                .await
                .map_err(MetaError::from)?;
            return Err(SubmitError::IntegrationMissing {
                pipeline: entry.id.clone(),
                provider,
                state,
            });
        }
        let token = CancellationToken::new();
        if let Ok(mut active) = self.active.lock() {
            active.insert(run_id.clone(), token.clone());
        }
        let this = self.clone();
        let spec = entry.spec.clone();
        let run = RunRequest {
            variables,
            run_id: Some(run_id.clone()),
            org_slug: Some(req.org_slug.clone()),
            params: req.parameters.clone(),
            dates: days(req.start_date, req.end_date),
            observer: Some(Arc::new(StepLogger {
                store: self.store.clone(),
                org_slug: req.org_slug.clone(),
                user_id: req.user_id.clone(),
            })),
        };
        tokio::spawn(async move { this.execute(spec, run, token).await });
        Ok(Submitted::Started(run_id))
    }

    /// Takes back the daily count of a run refused after admission.
    async fn uncount(&self, org: &str, day: NaiveDate) -> Result<(), MetaError> {
        self.store
            .warehouse()
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_usage_quotas}} SET pipelines_run_today = pipelines_run_today - 1, \
                 pipelines_failed_today = pipelines_failed_today - 1, pipelines_run_month = pipelines_run_month - 1 \
                 WHERE org_slug = @org AND usage_date = @day AND pipelines_run_today > 0",
                &Params::new().with("org", org).with("day", day),
            )
            .await?;
        Ok(())
    }

    async fn integration_state(&self, org: &str, provider: &str) -> Result<String, MetaError> {
        let rows = self
            .store
            .warehouse()
            .query(
                CENTRAL_DATASET,
                "SELECT validation_status FROM {{org_integration_credentials}} WHERE org_slug = @org AND provider = @provider \
                 AND is_active = @active ORDER BY created_at DESC LIMIT 1",
                &Params::new().with("org", org).with("provider", provider.to_ascii_uppercase()).with("active", true),
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.string("validation_status"))
            .unwrap_or_else(|| "NOT_CONFIGURED".to_string()))
    }

    async fn execute(self: Arc<Self>, spec: Arc<crate::PipelineSpec>, run: RunRequest, token: CancellationToken) {
        let run_id = run.run_id.clone().unwrap_or_default();
        let org = run.org_slug.clone().unwrap_or_default();
        let span = tracing::info_span!("run", run_id = %run_id, org_slug = %org, pipeline_id = %spec.pipeline_id);
        let _permit = tokio::select! {
            p = self.permits.clone().acquire_owned() => p.ok(),
            _ = token.cancelled() => None,
        };
        let finish = async {
            if token.is_cancelled() {
                return;
            }
            match self
                .store
                .mark_running(&run_id, &self.runner_id, self.clock.now())
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::error!(error = %e, "could not mark the run RUNNING");
                    return;
                }
            }
            let report = self.executor.run(&spec, run, token.clone()).await;
            let rows: u64 = report.steps.iter().map(|s| s.rows_processed).sum();
            let meta = serde_json::json!({
                "duration_ms": report.duration_ms,
                "steps": report.steps.len(),
                "rows_processed": rows,
            });
            let ok = report.status == RunStatus::Completed;
            let result = self
                .store
                .finish_run(
                    &org,
                    &run_id,
                    report.status.as_str(),
                    ok,
                    report.error.as_deref(),
                    meta,
                    self.clock.now(),
                )
                .await;
            match result {
                Ok(true) => tracing::info!(status = report.status.as_str(), rows, "run finished"),
                Ok(false) => tracing::info!("run was already finished (cancelled or swept)"),
                Err(e) => tracing::error!(error = %e, "could not record the end of the run; the sweeper will fail it"),
            }
        };
        tracing::Instrument::instrument(finish, span).await;
        if let Ok(mut active) = self.active.lock() {
            active.remove(&run_id);
        }
    }

    /// Cancels a PENDING or RUNNING run of `org`: CANCELLED at once (slot released); the
    /// executor stops its steps at their next await point. `Ok(false)` when already finished.
    pub async fn cancel(&self, org: &str, id: &str) -> Result<bool, MetaError> {
        self.end_open_run(org, id, "CANCELLED", "cancelled by request").await
    }

    /// Ends a PENDING or RUNNING run of `org` with `status` and `message` (slot released,
    /// local steps stopped). `Ok(false)` when it had already finished.
    pub async fn end_open_run(&self, org: &str, id: &str, status: &str, message: &str) -> Result<bool, MetaError> {
        let meta = serde_json::json!({"ended_by": status.to_ascii_lowercase()});
        let done = self
            .store
            .finish_run(org, id, status, false, Some(message), meta, self.clock.now())
            .await?;
        if done {
            if let Some(token) = self.active.lock().ok().and_then(|a| a.get(id).cloned()) {
                token.cancel();
            }
        }
        Ok(done)
    }

    /// Starts the heartbeat and sweeper loops (and sweeps once right away).
    pub fn start_background(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.settings.heartbeat_every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                this.heartbeat_and_sweep().await;
            }
        });
    }

    /// One heartbeat (cancelling local runs finished elsewhere) and one sweep of stale runs.
    pub async fn heartbeat_and_sweep(&self) {
        let now = self.clock.now();
        let ids: Vec<String> = self
            .active
            .lock()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        match self.store.heartbeat(&self.runner_id, &ids, now).await {
            Ok(gone) => {
                for id in gone {
                    if let Some(t) = self.active.lock().ok().and_then(|a| a.get(&id).cloned()) {
                        t.cancel();
                    }
                }
            }
            Err(e) if e.is_not_bootstrapped() => {
                self.say_not_bootstrapped();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        let stale = now
            - chrono::Duration::from_std(self.settings.stale_after).unwrap_or_else(|_| chrono::Duration::seconds(60));
        match self.store.sweep_stale_runs(stale, now).await {
            Ok(swept) if !swept.is_empty() => {
                for s in &swept {
                    tracing::warn!(org_slug = %s.org_slug, run_id = %s.pipeline_logging_id, "failed a run left behind by a stopped process");
                }
            }
            Ok(_) => {}
            Err(e) if e.is_not_bootstrapped() => self.say_not_bootstrapped(),
            Err(e) => tracing::warn!(error = %e, "stale-run sweep failed"),
        }
    }

    /// Logs once per process that the platform is not bootstrapped yet.
    fn say_not_bootstrapped(&self) {
        if !self
            .told_not_bootstrapped
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!(
                "the platform is not bootstrapped yet: heartbeats, the stale-run sweep and runs start once \
                 POST /api/v1/admin/bootstrap has run"
            );
        }
    }

    /// Runs currently executing or queued in this process.
    pub fn active_runs(&self) -> usize {
        self.active.lock().map(|a| a.len()).unwrap_or(0)
    }
}

/// Writes one `org_meta_step_logs` row per finished step.
struct StepLogger {
    store: OrgStore,
    org_slug: String,
    user_id: Option<String>,
}

#[async_trait]
impl RunObserver for StepLogger {
    async fn step_finished(&self, run_id: &str, step_index: usize, report: &StepReport) {
        let end = report.started_at + chrono::Duration::milliseconds(report.duration_ms as i64);
        let row = Row::new()
            .with("step_logging_id", uuid::Uuid::new_v4().to_string())
            .with("org_slug", self.org_slug.as_str())
            .with("pipeline_logging_id", run_id)
            .with("step_name", report.step_id.as_str())
            .with("step_type", report.ps_type.as_str())
            .with("step_index", step_index as i64)
            .with("status", report.status.as_str())
            .with("start_time", report.started_at)
            .with("end_time", end)
            .with("duration_ms", report.duration_ms as i64)
            .with("rows_processed", report.rows_processed as i64)
            .with("error_message", report.error.as_deref().map(|e| truncate(e, 2000)))
            .with("user_id", self.user_id.clone())
            .with(
                "metadata",
                Value::Json(serde_json::json!({
                    "date": report.date.map(|d| d.to_string()),
                    "attempts": report.attempts,
                    "output": report.output,
                })),
            );
        if let Err(e) = self.store.insert_step_log(row).await {
            tracing::warn!(error = %e, step = %report.step_id, "could not write the step log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn dates_are_checked() {
        let today = d("2026-03-10");
        assert_eq!(
            resolve_dates(None, None, None, today),
            Ok((d("2026-03-09"), d("2026-03-09")))
        );
        assert_eq!(
            resolve_dates(Some("2026-03-01"), None, None, today),
            Ok((d("2026-03-01"), d("2026-03-01")))
        );
        assert_eq!(
            resolve_dates(None, Some("2026-03-01"), Some("2026-03-05"), today),
            Ok((d("2026-03-01"), d("2026-03-05")))
        );
        for (date, s, e) in [
            (Some("2026-3-1"), None, None),
            (Some("2026-03-01"), Some("2026-03-01"), None),
            (None, Some("2026-03-05"), Some("2026-03-01")),
            (None, Some("2024-01-01"), Some("2026-03-01")),
            (None, Some("2026-03-01"), None),
            (Some("2026-03-11"), None, None),
            (Some("'; DROP TABLE x"), None, None),
        ] {
            assert!(resolve_dates(date, s, e, today).is_err(), "{date:?} {s:?} {e:?}");
        }
        assert_eq!(days(d("2026-02-27"), d("2026-03-02")).len(), 4);
    }
}
