//! Pipeline runs in the central tables: admission (dedupe + atomic quota reservation),
//! lifecycle updates, step logs, reads, heartbeats and the stale-run sweep.
//!
//! Quota rules: one `org_usage_quotas` row per org per UTC day, created on demand by the
//! reservation itself. A run is admitted when today's count is below the daily limit, the sum
//! of the calendar month's daily counts is below the monthly limit, and the org's running
//! count (over all days) is below the concurrent limit — checked and incremented by one
//! conditional statement in the same transaction that inserts the run, so concurrent
//! requests can never overshoot, and a refused or duplicate run changes nothing. Each run is
//! counted once; finishing it (exactly once, guarded on its status) releases its slot and
//! counts it as succeeded or failed.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::{MetaError, OrgStore, PlanLimits, CENTRAL_DATASET};
use crate::warehouse::{Params, Row, Statement, Value, WarehouseError};

pub const RUN_PENDING: &str = "PENDING";
pub const RUN_RUNNING: &str = "RUNNING";

/// A run to admit.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub pipeline_logging_id: String,
    pub org_slug: String,
    pub pipeline_id: String,
    pub trigger_type: String,
    pub trigger_by: Option<String>,
    pub user_id: Option<String>,
    pub org_api_key_id: Option<String>,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub parameters: serde_json::Value,
    pub retry_of: Option<String>,
    /// Process instance that will execute it (its heartbeat keeps the run alive).
    pub runner_id: String,
}

/// Which quota refused a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaLimit {
    Daily,
    Monthly,
    Concurrent,
}

impl QuotaLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaLimit::Daily => "daily",
            QuotaLimit::Monthly => "monthly",
            QuotaLimit::Concurrent => "concurrent",
        }
    }
}

/// The outcome of asking to start a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Admitted,
    /// The same org + pipeline + dates is already PENDING or RUNNING: its id.
    Duplicate(String),
    Refused {
        limit: QuotaLimit,
        allowed: i64,
        used: i64,
    },
    /// A linked statement (e.g. a scheduled occurrence's link) matched nothing: its work was
    /// already admitted elsewhere. Nothing was changed.
    LinkConflict,
}

/// Filters for listing runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<String>,
    pub pipeline_id: Option<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub limit: i64,
    pub offset: i64,
}

/// A run that was finished by the sweep because its runner stopped.
#[derive(Debug, Clone)]
pub struct SweptRun {
    pub org_slug: String,
    pub pipeline_logging_id: String,
}

fn month_start(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

impl OrgStore {
    /// Dedupe, reserve quota and insert the PENDING run, all in one transaction.
    pub async fn admit_run(
        &self,
        run: &NewRun,
        limits: &PlanLimits,
        now: DateTime<Utc>,
    ) -> Result<Admission, MetaError> {
        self.admit_run_linked(run, limits, now, Vec::new()).await
    }

    /// As [`OrgStore::admit_run`], with `linked` statements committed in the same
    /// transaction (a guarded one that misses gives [`Admission::LinkConflict`]).
    pub async fn admit_run_linked(
        &self,
        run: &NewRun,
        limits: &PlanLimits,
        now: DateTime<Utc>,
        linked: Vec<Statement>,
    ) -> Result<Admission, MetaError> {
        let today = now.date_naive();
        let insert_run = Statement::new(
            "INSERT INTO {{org_meta_pipeline_runs}} (pipeline_logging_id, org_slug, pipeline_id, status, trigger_type, \
             trigger_by, user_id, org_api_key_id, start_time, run_date, end_date, parameters, quota_date, retry_of, \
             runner_id, heartbeat_at) \
             SELECT @id, @org, @pipeline, @pending, @trigger_type, @trigger_by, @user_id, @key_id, @now, @start, @end, \
             @parameters, @today, @retry_of, @runner, @now FROM (SELECT 1 AS one) AS single_row WHERE NOT EXISTS (SELECT 1 FROM \
             {{org_meta_pipeline_runs}} WHERE org_slug = @org AND pipeline_id = @pipeline AND run_date = @start \
             AND end_date = @end AND status IN (@pending, @running))",
            Params::new()
                .with("id", &run.pipeline_logging_id)
                .with("org", &run.org_slug)
                .with("pipeline", &run.pipeline_id)
                .with("pending", RUN_PENDING)
                .with("running", RUN_RUNNING)
                .with("trigger_type", &run.trigger_type)
                .with("trigger_by", run.trigger_by.clone())
                .with("user_id", run.user_id.clone())
                .with("key_id", run.org_api_key_id.clone())
                .with("now", now)
                .with("start", run.start_date)
                .with("end", run.end_date)
                .with("parameters", Value::Json(run.parameters.clone()))
                .with("today", today)
                .with("retry_of", run.retry_of.clone())
                .with("runner", &run.runner_id),
        )
        .expecting(1);
        let reserve = Statement::new(
            "UPDATE {{org_usage_quotas}} SET pipelines_run_today = pipelines_run_today + 1, \
             concurrent_pipelines_running = concurrent_pipelines_running + 1, \
             pipelines_run_month = (SELECT COALESCE(SUM(m.pipelines_run_today), 0) FROM {{org_usage_quotas}} m \
               WHERE m.org_slug = @org AND m.usage_date >= @month_start AND m.usage_date <= @today) + 1, \
             last_updated = @now \
             WHERE org_slug = @org AND usage_date = @today AND pipelines_run_today < @daily \
             AND (SELECT COALESCE(SUM(m.pipelines_run_today), 0) FROM {{org_usage_quotas}} m \
               WHERE m.org_slug = @org AND m.usage_date >= @month_start AND m.usage_date <= @today) < @monthly \
             AND (SELECT COALESCE(SUM(c.concurrent_pipelines_running), 0) FROM {{org_usage_quotas}} c \
               WHERE c.org_slug = @org) < @concurrent",
            Params::new()
                .with("org", &run.org_slug)
                .with("today", today)
                .with("month_start", month_start(today))
                .with("daily", limits.daily_limit)
                .with("monthly", limits.monthly_limit)
                .with("concurrent", limits.concurrent_limit)
                .with("now", now),
        )
        .expecting(1);
        let mut statements = vec![
            Self::quota_insert(&run.org_slug, today, limits, now),
            insert_run,
            reserve,
        ];
        statements.extend(linked);
        match self.warehouse().execute_atomic(CENTRAL_DATASET, &statements).await {
            Ok(_) => Ok(Admission::Admitted),
            Err(WarehouseError::Conflict { index, .. }) if index >= 3 => Ok(Admission::LinkConflict),
            Err(WarehouseError::Conflict { index: 1, .. }) => {
                let rows = self
                    .query_central(
                        "SELECT pipeline_logging_id FROM {{org_meta_pipeline_runs}} WHERE org_slug = @org AND \
                         pipeline_id = @pipeline AND run_date = @start AND end_date = @end AND status IN (@pending, @running) \
                         ORDER BY start_time LIMIT 1",
                        &Params::new()
                            .with("org", &run.org_slug)
                            .with("pipeline", &run.pipeline_id)
                            .with("start", run.start_date)
                            .with("end", run.end_date)
                            .with("pending", RUN_PENDING)
                            .with("running", RUN_RUNNING),
                    )
                    .await?;
                match rows.first().and_then(|r| r.string("pipeline_logging_id")) {
                    Some(id) => Ok(Admission::Duplicate(id)),
                    // It finished between the two reads: ask again.
                    None => Err(MetaError::Warehouse(WarehouseError::Unavailable(
                        "duplicate run just finished".into(),
                    ))),
                }
            }
            Err(WarehouseError::Conflict { index: 2, .. }) => self.refusal(&run.org_slug, limits, today).await,
            Err(e) => Err(e.into()),
        }
    }

    async fn refusal(&self, org: &str, limits: &PlanLimits, today: NaiveDate) -> Result<Admission, MetaError> {
        let rows = self
            .query_central(
                "SELECT COALESCE(SUM(CASE WHEN usage_date = @today THEN pipelines_run_today ELSE 0 END), 0) AS today_n, \
                 COALESCE(SUM(CASE WHEN usage_date >= @month_start AND usage_date <= @today THEN pipelines_run_today ELSE 0 END), 0) AS month_n, \
                 COALESCE(SUM(concurrent_pipelines_running), 0) AS running_n FROM {{org_usage_quotas}} WHERE org_slug = @org",
                &Params::new().with("org", org).with("today", today).with("month_start", month_start(today)),
            )
            .await?;
        let r = rows.first().cloned().unwrap_or_default();
        let (day, month, running) = (
            r.int("today_n").unwrap_or(0),
            r.int("month_n").unwrap_or(0),
            r.int("running_n").unwrap_or(0),
        );
        let refusal = if day >= limits.daily_limit {
            Admission::Refused {
                limit: QuotaLimit::Daily,
                allowed: limits.daily_limit,
                used: day,
            }
        } else if month >= limits.monthly_limit {
            Admission::Refused {
                limit: QuotaLimit::Monthly,
                allowed: limits.monthly_limit,
                used: month,
            }
        } else {
            Admission::Refused {
                limit: QuotaLimit::Concurrent,
                allowed: limits.concurrent_limit,
                used: running,
            }
        };
        Ok(refusal)
    }

    async fn query_central(&self, sql: &str, params: &Params) -> Result<Vec<Row>, MetaError> {
        Ok(self.warehouse().query(CENTRAL_DATASET, sql, params).await?)
    }

    /// PENDING → RUNNING; false if the run is no longer PENDING (e.g. cancelled).
    pub async fn mark_running(&self, id: &str, runner_id: &str, now: DateTime<Utc>) -> Result<bool, MetaError> {
        let n = self
            .warehouse()
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_meta_pipeline_runs}} SET status = @running, runner_id = @runner, heartbeat_at = @now \
                 WHERE pipeline_logging_id = @id AND status = @pending",
                &Params::new()
                    .with("running", RUN_RUNNING)
                    .with("pending", RUN_PENDING)
                    .with("runner", runner_id)
                    .with("now", now)
                    .with("id", id),
            )
            .await?;
        Ok(n == 1)
    }

    /// Finishes a run exactly once: sets its final status and releases its quota slot
    /// (counting it as succeeded or failed) in one transaction. `false` when the run was
    /// already finished (cancelled or swept), in which case nothing changes.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_run(
        &self,
        org: &str,
        id: &str,
        status: &str,
        succeeded: bool,
        error: Option<&str>,
        run_metadata: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<bool, MetaError> {
        let statements = [
            Statement::new(
                "UPDATE {{org_usage_quotas}} SET concurrent_pipelines_running = CASE WHEN concurrent_pipelines_running > 0 \
                 THEN concurrent_pipelines_running - 1 ELSE 0 END, \
                 pipelines_succeeded_today = pipelines_succeeded_today + @ok, pipelines_failed_today = pipelines_failed_today + @bad, \
                 last_pipeline_completed_at = @now, last_updated = @now \
                 WHERE org_slug = @org AND usage_date = (SELECT r.quota_date FROM {{org_meta_pipeline_runs}} r \
                   WHERE r.pipeline_logging_id = @id AND r.org_slug = @org AND r.status IN (@pending, @running))",
                Params::new()
                    .with("ok", i64::from(succeeded))
                    .with("bad", i64::from(!succeeded))
                    .with("now", now)
                    .with("org", org)
                    .with("id", id)
                    .with("pending", RUN_PENDING)
                    .with("running", RUN_RUNNING),
            ),
            Statement::new(
                "UPDATE {{org_meta_pipeline_runs}} SET status = @status, end_time = @now, \
                 duration_ms = @duration, error_message = @error, run_metadata = @meta \
                 WHERE pipeline_logging_id = @id AND org_slug = @org AND status IN (@pending, @running)",
                Params::new()
                    .with("status", status)
                    .with("now", now)
                    .with("duration", run_metadata["duration_ms"].as_i64().unwrap_or(0))
                    .with("error", error.map(|e| truncate(e, 4000)))
                    .with("meta", Value::Json(run_metadata))
                    .with("id", id)
                    .with("org", org)
                    .with("pending", RUN_PENDING)
                    .with("running", RUN_RUNNING),
            )
            .expecting(1),
        ];
        match self.warehouse().execute_atomic(CENTRAL_DATASET, &statements).await {
            Ok(_) => Ok(true),
            Err(WarehouseError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// One finished step.
    pub async fn insert_step_log(&self, row: Row) -> Result<(), MetaError> {
        self.warehouse()
            .insert_rows(CENTRAL_DATASET, "org_meta_step_logs", &[row])
            .await?;
        Ok(())
    }

    pub async fn run(&self, org: &str, id: &str) -> Result<Option<Row>, MetaError> {
        let rows = self
            .query_central(
                "SELECT * FROM {{org_meta_pipeline_runs}} WHERE org_slug = @org AND pipeline_logging_id = @id",
                &Params::new().with("org", org).with("id", id),
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    pub async fn run_steps(&self, org: &str, id: &str) -> Result<Vec<Row>, MetaError> {
        self.query_central(
            "SELECT * FROM {{org_meta_step_logs}} WHERE org_slug = @org AND pipeline_logging_id = @id ORDER BY start_time, step_index",
            &Params::new().with("org", org).with("id", id),
        )
        .await
    }

    /// A page of the org's runs, newest first, and the total matching.
    pub async fn runs(&self, org: &str, f: &RunFilter) -> Result<(Vec<Row>, i64), MetaError> {
        let mut filter = String::from("org_slug = @org");
        let mut p = Params::new()
            .with("org", org)
            .with("limit", f.limit)
            .with("offset", f.offset);
        if let Some(s) = &f.status {
            filter.push_str(" AND status = @status");
            p = p.with("status", s.as_str());
        }
        if let Some(id) = &f.pipeline_id {
            filter.push_str(" AND pipeline_id = @pipeline");
            p = p.with("pipeline", id.as_str());
        }
        if let Some(d) = f.from {
            filter.push_str(" AND run_date >= @from");
            p = p.with("from", d);
        }
        if let Some(d) = f.to {
            filter.push_str(" AND run_date <= @to");
            p = p.with("to", d);
        }
        let total = self
            .query_central(
                &format!("SELECT COUNT(*) AS n FROM {{{{org_meta_pipeline_runs}}}} WHERE {filter}"),
                &p,
            )
            .await?
            .first()
            .and_then(|r| r.int("n"))
            .unwrap_or(0);
        let rows = self
            .query_central(
                &format!(
                    "SELECT * FROM {{{{org_meta_pipeline_runs}}}} WHERE {filter} ORDER BY start_time DESC, pipeline_logging_id \
                     LIMIT @limit OFFSET @offset"
                ),
                &p,
            )
            .await?;
        Ok((rows, total))
    }

    /// Refreshes the heartbeat of every PENDING or RUNNING run of this runner; returns the
    /// ids among `ids` that are no longer PENDING or RUNNING (cancelled elsewhere).
    pub async fn heartbeat(
        &self,
        runner_id: &str,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, MetaError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.warehouse()
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_meta_pipeline_runs}} SET heartbeat_at = @now WHERE runner_id = @runner \
                 AND status IN (@pending, @running)",
                &Params::new()
                    .with("now", now)
                    .with("runner", runner_id)
                    .with("pending", RUN_PENDING)
                    .with("running", RUN_RUNNING),
            )
            .await?;
        let rows = self
            .query_central(
                "SELECT pipeline_logging_id FROM {{org_meta_pipeline_runs}} WHERE runner_id = @runner \
                 AND status IN (@pending, @running)",
                &Params::new()
                    .with("runner", runner_id)
                    .with("pending", RUN_PENDING)
                    .with("running", RUN_RUNNING),
            )
            .await?;
        let alive: Vec<String> = rows.iter().filter_map(|r| r.string("pipeline_logging_id")).collect();
        Ok(ids.iter().filter(|id| !alive.contains(id)).cloned().collect())
    }

    /// Fails every PENDING or RUNNING run whose runner's heartbeat is older than
    /// `stale_before` (the process died), releasing their quota slots.
    pub async fn sweep_stale_runs(
        &self,
        stale_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<SweptRun>, MetaError> {
        let rows = self
            .query_central(
                "SELECT org_slug, pipeline_logging_id FROM {{org_meta_pipeline_runs}} WHERE \
                 status IN (@pending, @running) AND (heartbeat_at IS NULL OR heartbeat_at < @stale)",
                &Params::new()
                    .with("running", RUN_RUNNING)
                    .with("pending", RUN_PENDING)
                    .with("stale", stale_before),
            )
            .await?;
        let mut swept = Vec::new();
        for r in rows {
            let (Some(org), Some(id)) = (r.string("org_slug"), r.string("pipeline_logging_id")) else {
                continue;
            };
            let meta = serde_json::json!({"swept": true});
            let message =
                "FAILED: the process running this pipeline stopped (crash or restart) before it finished; rerun it";
            if self
                .finish_run(&org, &id, "FAILED", false, Some(message), meta, now)
                .await?
            {
                swept.push(SweptRun {
                    org_slug: org,
                    pipeline_logging_id: id,
                });
            }
        }
        Ok(swept)
    }
}

impl OrgStore {
    /// Open (PENDING/RUNNING) runs that started before `started_before`, any org.
    pub async fn open_runs_started_before(&self, started_before: DateTime<Utc>) -> Result<Vec<SweptRun>, MetaError> {
        let rows = self
            .query_central(
                "SELECT org_slug, pipeline_logging_id FROM {{org_meta_pipeline_runs}} WHERE status IN (@pending, @running) \
                 AND start_time < @before ORDER BY start_time",
                &Params::new()
                    .with("pending", RUN_PENDING)
                    .with("running", RUN_RUNNING)
                    .with("before", started_before),
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(SweptRun {
                    org_slug: r.string("org_slug")?,
                    pipeline_logging_id: r.string("pipeline_logging_id")?,
                })
            })
            .collect())
    }

    /// Daily quota maintenance: every day row's running count is recomputed from the runs
    /// actually open on it (repairing drift left by anything outside `finish_run`), and day
    /// rows older than `delete_before` are removed. Returns (rows repaired, rows deleted).
    pub async fn repair_quotas(&self, delete_before: NaiveDate, now: DateTime<Utc>) -> Result<(u64, u64), MetaError> {
        let open = "(SELECT COUNT(*) FROM {{org_meta_pipeline_runs}} r WHERE r.org_slug = q.org_slug \
                    AND r.quota_date = q.usage_date AND r.status IN (@pending, @running))";
        let p = Params::new()
            .with("pending", RUN_PENDING)
            .with("running", RUN_RUNNING)
            .with("now", now)
            .with("before", delete_before);
        let repaired = self
            .warehouse()
            .execute(
                CENTRAL_DATASET,
                &format!(
                    "UPDATE {{{{org_usage_quotas}}}} AS q SET concurrent_pipelines_running = {open}, last_updated = @now \
                     WHERE q.concurrent_pipelines_running <> {open}"
                ),
                &p,
            )
            .await?;
        let deleted = self
            .warehouse()
            .execute(
                CENTRAL_DATASET,
                "DELETE FROM {{org_usage_quotas}} WHERE usage_date < @before",
                &p,
            )
            .await?;
        Ok((repaired, deleted))
    }
}

/// At most `max` characters (error messages are bounded).
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
