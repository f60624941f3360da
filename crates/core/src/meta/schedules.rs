//! Schedules, scheduled runs and the execution queue in the central tables.
//!
//! - `org_pipeline_configs`: one row per schedule (cron + timezone + parameters).
//!   `next_run_time` is advanced with a compare-and-set on its previous value, so two triggers
//!   that read the same due row cannot both enqueue its occurrences.
//! - `org_scheduled_pipeline_runs`: one row per occurrence, keyed by a deterministic id
//!   (`{config_id}@{occurrence UTC}`); its lifecycle is QUEUED → RUNNING → COMPLETED | FAILED |
//!   CANCELLED, and it links the run (`pipeline_logging_id`) it started.
//! - `org_pipeline_execution_queue`: the claimable work items. An item is claimed with one
//!   conditional UPDATE (QUEUED, or PROCESSING past its lease) stamped with a claim token, and
//!   removed in the same transaction that admits its run (see [`OrgStore::link_statements`]),
//!   so an item that survives a crash has no run yet and is safe to claim again.
//!
//! Every statement names the org it touches or the occurrence id, which carries it.

use chrono::{DateTime, NaiveDate, Utc};

use super::{MetaError, OrgStore, CENTRAL_DATASET};
use crate::warehouse::{Params, Row, Statement, Value};

pub const SCHED_QUEUED: &str = "QUEUED";
pub const SCHED_RUNNING: &str = "RUNNING";
pub const SCHED_COMPLETED: &str = "COMPLETED";
pub const SCHED_FAILED: &str = "FAILED";
pub const SCHED_CANCELLED: &str = "CANCELLED";
pub const QUEUE_QUEUED: &str = "QUEUED";
pub const QUEUE_PROCESSING: &str = "PROCESSING";

/// One row of `org_pipeline_configs`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    pub config_id: String,
    pub org_slug: String,
    pub provider: String,
    /// Empty for `configs/{provider}/{pipeline}.yml` specs.
    pub domain: String,
    pub pipeline_template: String,
    pub pipeline_id: String,
    pub schedule_cron: String,
    pub timezone: String,
    pub is_active: bool,
    pub next_run_time: Option<DateTime<Utc>>,
    pub last_run_time: Option<DateTime<Utc>>,
    pub last_run_status: Option<String>,
    pub last_skip_reason: Option<String>,
    pub parameters: serde_json::Value,
    pub priority: i64,
    pub integration: Option<String>,
    /// `AUTO` (made when the integration became VALID) or `USER`.
    pub source: String,
    pub deactivated_reason: Option<String>,
    pub max_retries: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl ScheduleConfig {
    fn from_row(r: &Row) -> Result<Self, MetaError> {
        let text = |c: &str| {
            r.string(c)
                .ok_or_else(|| MetaError::Corrupt(format!("org_pipeline_configs.{c} is missing")))
        };
        Ok(ScheduleConfig {
            config_id: text("config_id")?,
            org_slug: text("org_slug")?,
            provider: text("provider")?,
            domain: r.string("domain").unwrap_or_default(),
            pipeline_template: text("pipeline_template")?,
            pipeline_id: r.string("pipeline_id").unwrap_or_default(),
            schedule_cron: text("schedule_cron")?,
            timezone: r.string("timezone").unwrap_or_else(|| "UTC".into()),
            is_active: r.boolean("is_active").unwrap_or(false),
            next_run_time: r.timestamp("next_run_time"),
            last_run_time: r.timestamp("last_run_time"),
            last_run_status: r.string("last_run_status"),
            last_skip_reason: r.string("last_skip_reason"),
            parameters: r.json("parameters").unwrap_or_else(|| serde_json::json!({})),
            priority: r.int("priority").unwrap_or(5),
            integration: r.string("integration"),
            source: r.string("source").unwrap_or_else(|| "USER".into()),
            deactivated_reason: r.string("deactivated_reason"),
            max_retries: r.int("max_retries").unwrap_or(3),
            created_at: r
                .timestamp("created_at")
                .ok_or_else(|| MetaError::Corrupt("org_pipeline_configs.created_at is missing".into()))?,
            updated_at: r.timestamp("updated_at"),
        })
    }

    fn to_row(&self) -> Row {
        Row::new()
            .with("config_id", self.config_id.as_str())
            .with("org_slug", self.org_slug.as_str())
            .with("provider", self.provider.as_str())
            .with("domain", self.domain.as_str())
            .with("pipeline_template", self.pipeline_template.as_str())
            .with("pipeline_id", self.pipeline_id.as_str())
            .with("schedule_cron", self.schedule_cron.as_str())
            .with("timezone", self.timezone.as_str())
            .with("is_active", self.is_active)
            .with("next_run_time", self.next_run_time)
            .with("last_run_time", self.last_run_time)
            .with("last_run_status", self.last_run_status.clone())
            .with("last_skip_reason", self.last_skip_reason.clone())
            .with("parameters", Value::Json(self.parameters.clone()))
            .with("priority", self.priority)
            .with("integration", self.integration.clone())
            .with("source", self.source.as_str())
            .with("deactivated_reason", self.deactivated_reason.clone())
            .with("max_retries", self.max_retries)
            .with("created_at", self.created_at)
            .with("updated_at", self.updated_at)
    }
}

/// One occurrence to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    pub run_id: String,
    pub scheduled_time: DateTime<Utc>,
    /// Earliest claim time (occurrence + per-org jitter).
    pub not_before: DateTime<Utc>,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
}

/// A claimed queue item with what its run needs.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueItem {
    pub run_id: String,
    pub config_id: String,
    pub org_slug: String,
    pub pipeline_id: String,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub parameters: serde_json::Value,
    pub retry_count: i64,
    pub max_retries: i64,
    pub scheduled_time: DateTime<Utc>,
    /// The occurrence is already linked to a run (nothing to admit).
    pub linked_run: Option<String>,
    pub state: String,
}

/// A scheduled run whose linked pipeline run has finished (or vanished).
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedScheduledRun {
    pub run_id: String,
    pub config_id: String,
    pub org_slug: String,
    pub pipeline_logging_id: String,
    pub retry_count: i64,
    pub max_retries: i64,
    pub scheduled_time: DateTime<Utc>,
    /// Final status of the pipeline run; `None` when the run row no longer exists.
    pub run_status: Option<String>,
    pub run_error: Option<String>,
    pub run_end_time: Option<DateTime<Utc>>,
}

/// Counts for `GET /scheduler/status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerCounts {
    pub total_active_pipelines: i64,
    pub pipelines_due_now: i64,
    pub pipelines_queued: i64,
    pub pipelines_running: i64,
    pub pipelines_completed_today: i64,
    pub pipelines_failed_today: i64,
    pub queue_length: i64,
    pub queue_processing: i64,
    /// Queued items claimable now (their jitter or retry delay has passed).
    pub queue_due: i64,
    pub avg_execution_time_seconds: Option<f64>,
}

/// The run-relevant state of an org, for the trigger's skip decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrgRunState {
    pub org_status: Option<String>,
    pub subscription_status: Option<String>,
    pub trial_end_date: Option<NaiveDate>,
    pub subscription_end_date: Option<NaiveDate>,
}

/// A queue item that may be claimed now (unqualified columns: valid in a subquery too).
const CLAIMABLE: &str = "((state = @queued AND (not_before IS NULL OR not_before <= @now)) \
    OR (state = @processing AND processing_started_at < @lease))";

const CONFIG_COLUMNS: &str = "config_id, org_slug, provider, domain, pipeline_template, pipeline_id, schedule_cron, \
    timezone, is_active, next_run_time, last_run_time, last_run_status, last_skip_reason, parameters, priority, \
    integration, source, deactivated_reason, max_retries, created_at, updated_at";

impl OrgStore {
    async fn central(&self, sql: &str, params: &Params) -> Result<Vec<Row>, MetaError> {
        Ok(self.warehouse().query(CENTRAL_DATASET, sql, params).await?)
    }

    /// The org's schedule timezone (`org_profiles.timezone`), if set.
    pub async fn org_timezone(&self, org: &str) -> Result<Option<String>, MetaError> {
        let rows = self
            .central(
                "SELECT * FROM {{org_profiles}} WHERE org_slug = @org",
                &Params::new().with("org", org),
            )
            .await?;
        Ok(rows.first().and_then(|r| r.string("timezone")))
    }

    /// Sets the org's schedule timezone; with `apply_to_existing` every schedule of the org
    /// moves to it too (with the next run times given per schedule), in one transaction.
    pub async fn set_org_timezone(
        &self,
        org: &str,
        timezone: &str,
        next_runs: &[(String, Option<DateTime<Utc>>)],
        now: DateTime<Utc>,
    ) -> Result<(), MetaError> {
        let mut statements = vec![Statement::new(
            "UPDATE {{org_profiles}} SET timezone = @tz, updated_at = @now WHERE org_slug = @org",
            Params::new().with("tz", timezone).with("now", now).with("org", org),
        )
        .expecting(1)];
        for (config_id, next) in next_runs {
            statements.push(Statement::new(
                "UPDATE {{org_pipeline_configs}} SET timezone = @tz, next_run_time = @next, updated_at = @now \
                 WHERE org_slug = @org AND config_id = @id",
                Params::new()
                    .with("tz", timezone)
                    .with("next", *next)
                    .with("now", now)
                    .with("org", org)
                    .with("id", config_id.as_str()),
            ));
        }
        self.warehouse().execute_atomic(CENTRAL_DATASET, &statements).await?;
        Ok(())
    }

    pub async fn insert_schedule(&self, config: &ScheduleConfig) -> Result<(), MetaError> {
        self.warehouse()
            .insert_rows(CENTRAL_DATASET, "org_pipeline_configs", &[config.to_row()])
            .await?;
        Ok(())
    }

    /// Inserts `config` unless a schedule with its id exists (ids derived from what they
    /// schedule make concurrent creators agree); `false` when it existed.
    pub async fn insert_schedule_if_absent(&self, config: &ScheduleConfig) -> Result<bool, MetaError> {
        let row = config.to_row();
        let columns: Vec<&String> = row.columns().collect();
        let mut params = Params::new();
        for c in &columns {
            params = params.with(&format!("c_{c}"), row.get(c).cloned().unwrap_or(Value::Null));
        }
        let names: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
        let values: Vec<String> = columns.iter().map(|c| format!("@c_{c}")).collect();
        let sql = format!(
            "INSERT INTO {{{{org_pipeline_configs}}}} ({}) SELECT {} FROM (SELECT 1 AS one) AS single_row \
             WHERE NOT EXISTS (SELECT 1 FROM {{{{org_pipeline_configs}}}} WHERE config_id = @c_config_id)",
            names.join(", "),
            values.join(", ")
        );
        Ok(self.warehouse().execute(CENTRAL_DATASET, &sql, &params).await? == 1)
    }

    /// The org's schedules (optionally only active or inactive ones), oldest first.
    pub async fn schedules(&self, org: &str, is_active: Option<bool>) -> Result<Vec<ScheduleConfig>, MetaError> {
        let mut sql = format!("SELECT {CONFIG_COLUMNS} FROM {{{{org_pipeline_configs}}}} WHERE org_slug = @org");
        let mut p = Params::new().with("org", org);
        if let Some(a) = is_active {
            sql.push_str(" AND is_active = @active");
            p = p.with("active", a);
        }
        sql.push_str(" ORDER BY created_at, config_id");
        self.central(&sql, &p)
            .await?
            .iter()
            .map(ScheduleConfig::from_row)
            .collect()
    }

    pub async fn schedule(&self, org: &str, config_id: &str) -> Result<Option<ScheduleConfig>, MetaError> {
        let rows = self
            .central(
                &format!(
                    "SELECT {CONFIG_COLUMNS} FROM {{{{org_pipeline_configs}}}} WHERE org_slug = @org AND config_id = @id"
                ),
                &Params::new().with("org", org).with("id", config_id),
            )
            .await?;
        rows.first().map(ScheduleConfig::from_row).transpose()
    }

    /// Writes every mutable field of `config` (matched by org and id); false if it is gone.
    pub async fn update_schedule(&self, config: &ScheduleConfig) -> Result<bool, MetaError> {
        let n = self
            .warehouse()
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_pipeline_configs}} SET schedule_cron = @cron, timezone = @tz, is_active = @active, \
                 next_run_time = @next, parameters = @parameters, priority = @priority, deactivated_reason = @reason, \
                 max_retries = @max_retries, updated_at = @updated WHERE org_slug = @org AND config_id = @id",
                &Params::new()
                    .with("cron", config.schedule_cron.as_str())
                    .with("tz", config.timezone.as_str())
                    .with("active", config.is_active)
                    .with("next", config.next_run_time)
                    .with("parameters", Value::Json(config.parameters.clone()))
                    .with("priority", config.priority)
                    .with("reason", config.deactivated_reason.clone())
                    .with("max_retries", config.max_retries)
                    .with("updated", config.updated_at)
                    .with("org", config.org_slug.as_str())
                    .with("id", config.config_id.as_str()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Deactivates the org's active schedules of pipelines that need `integration`.
    pub async fn deactivate_integration_schedules(
        &self,
        org: &str,
        integration: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, MetaError> {
        Ok(self
            .warehouse()
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_pipeline_configs}} SET is_active = @inactive, deactivated_reason = @reason, updated_at = @now \
                 WHERE org_slug = @org AND integration = @integration AND is_active = @active",
                &Params::new()
                    .with("inactive", false)
                    .with("active", true)
                    .with("reason", "INTEGRATION_REMOVED")
                    .with("now", now)
                    .with("org", org)
                    .with("integration", integration),
            )
            .await?)
    }

    /// Active schedules whose `next_run_time` has come, earliest first.
    pub async fn due_schedules(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<ScheduleConfig>, MetaError> {
        self.central(
            &format!(
                "SELECT {CONFIG_COLUMNS} FROM {{{{org_pipeline_configs}}}} WHERE is_active = @active AND \
                 next_run_time IS NOT NULL AND next_run_time <= @now ORDER BY next_run_time, priority, config_id LIMIT @limit"
            ),
            &Params::new()
                .with("active", true)
                .with("now", now)
                .with("limit", limit),
        )
        .await?
        .iter()
        .map(ScheduleConfig::from_row)
        .collect()
    }

    /// Org status and latest subscription of the orgs of the first `limit` due schedules (the
    /// same order as [`OrgStore::due_schedules`]), in two reads whatever the number of orgs.
    /// An org missing from the answer (its schedule became due in between) is read with
    /// [`OrgStore::org_run_state`].
    pub async fn due_org_states(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<std::collections::HashMap<String, OrgRunState>, MetaError> {
        let due =
            "SELECT d.org_slug FROM (SELECT c.org_slug FROM {{org_pipeline_configs}} c WHERE c.is_active = @active \
                   AND c.next_run_time IS NOT NULL AND c.next_run_time <= @now \
                   ORDER BY c.next_run_time, c.priority, c.config_id LIMIT @limit) AS d";
        let p = Params::new().with("active", true).with("now", now).with("limit", limit);
        self.org_states(due, p).await
    }

    /// The run-relevant state of one org.
    pub async fn org_run_state(&self, org: &str) -> Result<OrgRunState, MetaError> {
        let mut states = self
            .org_states("SELECT @org AS org_slug", Params::new().with("org", org))
            .await?;
        Ok(states.remove(org).unwrap_or_default())
    }

    async fn org_states(
        &self,
        due: &str,
        p: Params,
    ) -> Result<std::collections::HashMap<String, OrgRunState>, MetaError> {
        let mut out: std::collections::HashMap<String, OrgRunState> = std::collections::HashMap::new();
        for r in self
            .central(
                &format!("SELECT org_slug, status FROM {{{{org_profiles}}}} WHERE org_slug IN ({due})"),
                &p,
            )
            .await?
        {
            if let Some(org) = r.string("org_slug") {
                out.entry(org).or_default().org_status = r.string("status");
            }
        }
        let mut latest: std::collections::HashMap<String, DateTime<Utc>> = std::collections::HashMap::new();
        for r in self
            .central(
                &format!(
                    "SELECT org_slug, status, trial_end_date, subscription_end_date, created_at FROM {{{{org_subscriptions}}}} \
                     WHERE org_slug IN ({due})"
                ),
                &p,
            )
            .await?
        {
            let (Some(org), Some(created)) = (r.string("org_slug"), r.timestamp("created_at")) else {
                continue;
            };
            if latest.get(&org).is_some_and(|t| *t >= created) {
                continue;
            }
            latest.insert(org.clone(), created);
            let state = out.entry(org).or_default();
            state.subscription_status = r.string("status");
            state.trial_end_date = r.date("trial_end_date");
            state.subscription_end_date = r.date("subscription_end_date");
        }
        Ok(out)
    }

    /// Compare-and-set of a schedule's `next_run_time`: affects one row only if nobody
    /// advanced it since `expected` was read. `skip_reason` records why its occurrences
    /// were skipped (then `last_run_status` becomes SKIPPED).
    pub fn advance_statement(
        config: &ScheduleConfig,
        expected: DateTime<Utc>,
        next: DateTime<Utc>,
        skip_reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Statement {
        let (sql, p) = match skip_reason {
            None => (
                "UPDATE {{org_pipeline_configs}} SET next_run_time = @next, updated_at = @now \
                 WHERE config_id = @id AND org_slug = @org AND is_active = @active AND next_run_time = @expected",
                Params::new(),
            ),
            Some(reason) => (
                "UPDATE {{org_pipeline_configs}} SET next_run_time = @next, updated_at = @now, last_run_status = @skipped, \
                 last_skip_reason = @reason \
                 WHERE config_id = @id AND org_slug = @org AND is_active = @active AND next_run_time = @expected",
                Params::new().with("skipped", "SKIPPED").with("reason", reason),
            ),
        };
        Statement::new(
            sql,
            p.with("next", next)
                .with("now", now)
                .with("id", config.config_id.as_str())
                .with("org", config.org_slug.as_str())
                .with("active", true)
                .with("expected", expected),
        )
        .expecting(1)
    }

    /// The two inserts that enqueue one occurrence: its scheduled-run row (guarded on the
    /// id being new, so an occurrence is never enqueued twice) and its queue item.
    pub fn enqueue_statements(config: &ScheduleConfig, occ: &Occurrence, now: DateTime<Utc>) -> [Statement; 2] {
        let p = Params::new()
            .with("run_id", occ.run_id.as_str())
            .with("config_id", config.config_id.as_str())
            .with("org", config.org_slug.as_str())
            .with("pipeline", config.pipeline_id.as_str())
            .with("queued", SCHED_QUEUED)
            .with("scheduled", occ.scheduled_time)
            .with("priority", config.priority)
            .with("parameters", Value::Json(config.parameters.clone()))
            .with("zero", 0i64)
            .with("max_retries", config.max_retries)
            .with("now", now)
            .with("start", occ.start_date)
            .with("end", occ.end_date)
            .with("not_before", occ.not_before);
        [
            Statement::new(
                "INSERT INTO {{org_scheduled_pipeline_runs}} (run_id, config_id, org_slug, pipeline_id, state, scheduled_time, \
                 priority, parameters, retry_count, max_retries, created_at, updated_at, run_date, end_date) \
                 SELECT @run_id, @config_id, @org, @pipeline, @queued, @scheduled, @priority, @parameters, @zero, \
                 @max_retries, @now, @now, @start, @end FROM (SELECT 1 AS one) AS single_row WHERE NOT EXISTS \
                 (SELECT 1 FROM {{org_scheduled_pipeline_runs}} WHERE run_id = @run_id)",
                p.clone(),
            )
            .expecting(1),
            Statement::new(
                "INSERT INTO {{org_pipeline_execution_queue}} (run_id, org_slug, pipeline_id, state, scheduled_time, priority, \
                 added_at, config_id, not_before) VALUES (@run_id, @org, @pipeline, @queued, @scheduled, @priority, @now, \
                 @config_id, @not_before)",
                p,
            ),
        ]
    }

    /// Claims up to `n` claimable items (QUEUED and due, or PROCESSING with an expired
    /// lease) in one conditional UPDATE stamped with `token`, and returns them.
    pub async fn claim_queue(
        &self,
        runner: &str,
        token: &str,
        now: DateTime<Utc>,
        lease_expired_before: DateTime<Utc>,
        n: i64,
    ) -> Result<Vec<QueueItem>, MetaError> {
        // Due QUEUED items in claim order (the queue's clustering index is (state, priority,
        // not_before): an ordered index range, whatever the queue's length), then, to fill
        // the batch, items whose claimer's lease expired.
        let queued = "run_id IN (SELECT q.run_id FROM {{org_pipeline_execution_queue}} q WHERE q.state = @queued \
                      AND q.not_before <= @now ORDER BY q.state, q.priority, q.not_before LIMIT @n)";
        let got = self
            .claim_where(
                queued,
                Params::new().with("n", n),
                runner,
                token,
                now,
                lease_expired_before,
            )
            .await?;
        if (got as i64) < n {
            let expired = "run_id IN (SELECT q.run_id FROM {{org_pipeline_execution_queue}} q WHERE \
                           q.state = @processing AND q.processing_started_at < @lease LIMIT @n)";
            let rest = Params::new().with("n", n - got as i64);
            self.claim_where(expired, rest, runner, token, now, lease_expired_before)
                .await?;
        }
        self.claimed(token).await
    }

    /// Claims one item by id (a Pub/Sub delivery): `None` when it is gone (already admitted
    /// or finished), not due yet, or held by a live claim.
    pub async fn claim_item(
        &self,
        run_id: &str,
        runner: &str,
        token: &str,
        now: DateTime<Utc>,
        lease_expired_before: DateTime<Utc>,
    ) -> Result<Option<QueueItem>, MetaError> {
        let params = Params::new().with("run_id", run_id);
        if self
            .claim_where("run_id = @run_id", params, runner, token, now, lease_expired_before)
            .await?
            == 0
        {
            return Ok(None);
        }
        Ok(self.claimed(token).await?.into_iter().next())
    }

    /// The one claiming statement: items matching `which` that are claimable now.
    async fn claim_where(
        &self,
        which: &str,
        params: Params,
        runner: &str,
        token: &str,
        now: DateTime<Utc>,
        lease_expired_before: DateTime<Utc>,
    ) -> Result<u64, MetaError> {
        Ok(self
            .warehouse()
            .execute(
                CENTRAL_DATASET,
                &format!(
                    "UPDATE {{{{org_pipeline_execution_queue}}}} SET state = @processing, claimed_by = @runner, \
                     claim_token = @token, processing_started_at = @now WHERE {which} AND {CLAIMABLE}"
                ),
                &params
                    .with("processing", QUEUE_PROCESSING)
                    .with("queued", QUEUE_QUEUED)
                    .with("runner", runner)
                    .with("token", token)
                    .with("now", now)
                    .with("lease", lease_expired_before),
            )
            .await?)
    }

    async fn claimed(&self, token: &str) -> Result<Vec<QueueItem>, MetaError> {
        let rows = self
            .central(
                "SELECT q.run_id, q.org_slug, q.pipeline_id, q.config_id, q.scheduled_time, s.run_date, s.end_date, \
                 s.parameters, s.retry_count, s.max_retries, s.pipeline_logging_id, s.state FROM \
                 {{org_pipeline_execution_queue}} q JOIN {{org_scheduled_pipeline_runs}} s ON s.run_id = q.run_id \
                 WHERE q.claim_token = @token ORDER BY q.priority, q.not_before, q.run_id",
                &Params::new().with("token", token),
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows {
            let parsed = (|| {
                Some(QueueItem {
                    run_id: r.string("run_id")?,
                    config_id: r.string("config_id").unwrap_or_default(),
                    org_slug: r.string("org_slug")?,
                    pipeline_id: r.string("pipeline_id")?,
                    start_date: r.date("run_date")?,
                    end_date: r.date("end_date").or(r.date("run_date"))?,
                    parameters: r.json("parameters").unwrap_or_else(|| serde_json::json!({})),
                    retry_count: r.int("retry_count").unwrap_or(0),
                    max_retries: r.int("max_retries").unwrap_or(0),
                    scheduled_time: r.timestamp("scheduled_time")?,
                    linked_run: r.string("pipeline_logging_id"),
                    state: r.string("state").unwrap_or_default(),
                })
            })();
            match parsed {
                Some(item) => items.push(item),
                None => {
                    // A row no process can run: removed, so it neither holds its batch back
                    // nor comes back after every lease.
                    let id = r.string("run_id").unwrap_or_default();
                    tracing::error!(run_id = %id, "dropping a queue item whose occurrence is incomplete");
                    self.drop_queue_item(&id).await?;
                }
            }
        }
        Ok(items)
    }

    /// Statements to run inside the admission of an item's pipeline run: link the run to the
    /// occurrence (guarded: only an unlinked QUEUED occurrence), and remove the queue item
    /// (guarded: only under the caller's claim, so a process whose lease expired and whose
    /// item another process took admits nothing).
    pub fn link_statements(
        run_id: &str,
        claim_token: &str,
        pipeline_logging_id: &str,
        now: DateTime<Utc>,
    ) -> Vec<Statement> {
        vec![
            Statement::new(
                "UPDATE {{org_scheduled_pipeline_runs}} SET pipeline_logging_id = @plid, state = @running, updated_at = @now \
                 WHERE run_id = @run_id AND state = @queued AND pipeline_logging_id IS NULL",
                Params::new()
                    .with("plid", pipeline_logging_id)
                    .with("running", SCHED_RUNNING)
                    .with("queued", SCHED_QUEUED)
                    .with("now", now)
                    .with("run_id", run_id),
            )
            .expecting(1),
            Statement::new(
                "DELETE FROM {{org_pipeline_execution_queue}} WHERE run_id = @run_id AND claim_token = @token",
                Params::new().with("run_id", run_id).with("token", claim_token),
            )
            .expecting(1),
        ]
    }

    /// Links an occurrence to an open run that already covers it (dedup) and drops its
    /// item, under the caller's claim; `false` when the claim or the occurrence moved on.
    pub async fn link_existing(
        &self,
        run_id: &str,
        claim_token: &str,
        pipeline_logging_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, MetaError> {
        let statements = Self::link_statements(run_id, claim_token, pipeline_logging_id, now);
        match self.warehouse().execute_atomic(CENTRAL_DATASET, &statements).await {
            Ok(_) => Ok(true),
            Err(crate::warehouse::WarehouseError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn drop_queue_item(&self, run_id: &str) -> Result<(), MetaError> {
        self.warehouse()
            .execute(
                CENTRAL_DATASET,
                "DELETE FROM {{org_pipeline_execution_queue}} WHERE run_id = @run_id",
                &Params::new().with("run_id", run_id),
            )
            .await?;
        Ok(())
    }

    /// Gives a claimed item back (transient failure, or a concurrency limit): claimable again
    /// from `not_before`.
    pub async fn release_claim(&self, run_id: &str, token: &str, not_before: DateTime<Utc>) -> Result<(), MetaError> {
        self.warehouse()
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_pipeline_execution_queue}} SET state = @queued, claimed_by = NULL, claim_token = NULL, \
                 processing_started_at = NULL, not_before = @not_before, published_at = NULL \
                 WHERE run_id = @run_id AND claim_token = @token",
                &Params::new()
                    .with("queued", QUEUE_QUEUED)
                    .with("not_before", not_before)
                    .with("run_id", run_id)
                    .with("token", token),
            )
            .await?;
        Ok(())
    }

    /// Ends a claimed, unadmitted occurrence for good (refused): scheduled run FAILED with the
    /// reason, its item removed, its schedule's last status FAILED — all guarded on the
    /// occurrence still being QUEUED and unlinked and the item still under `claim_token`.
    /// `false` (nothing changed) when another process admitted or took it meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub async fn fail_scheduled(
        &self,
        item_run_id: &str,
        claim_token: &str,
        config_id: &str,
        org: &str,
        state: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, MetaError> {
        let statements = [
            Statement::new(
                "UPDATE {{org_scheduled_pipeline_runs}} SET state = @state, failed_at = @now, error_message = @error, \
                 updated_at = @now WHERE run_id = @run_id AND org_slug = @org AND state = @queued \
                 AND pipeline_logging_id IS NULL",
                Params::new()
                    .with("state", state)
                    .with("now", now)
                    .with("error", super::runs::truncate(error, 2000))
                    .with("run_id", item_run_id)
                    .with("org", org)
                    .with("queued", SCHED_QUEUED),
            )
            .expecting(1),
            Statement::new(
                "DELETE FROM {{org_pipeline_execution_queue}} WHERE run_id = @run_id AND claim_token = @token",
                Params::new().with("run_id", item_run_id).with("token", claim_token),
            )
            .expecting(1),
            Statement::new(
                "UPDATE {{org_pipeline_configs}} SET last_run_status = @state, last_run_time = @now \
                 WHERE config_id = @config AND org_slug = @org",
                Params::new()
                    .with("state", state)
                    .with("now", now)
                    .with("config", config_id)
                    .with("org", org),
            ),
        ];
        match self.warehouse().execute_atomic(CENTRAL_DATASET, &statements).await {
            Ok(_) => Ok(true),
            Err(crate::warehouse::WarehouseError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// RUNNING occurrences whose pipeline run has finished (or no longer exists).
    pub async fn finished_scheduled_runs(&self, limit: i64) -> Result<Vec<FinishedScheduledRun>, MetaError> {
        let rows = self
            .central(
                "SELECT s.run_id, s.config_id, s.org_slug, s.pipeline_logging_id, s.retry_count, s.max_retries, \
                 s.scheduled_time, r.status AS run_status, r.error_message AS run_error, r.end_time AS run_end_time \
                 FROM {{org_scheduled_pipeline_runs}} s LEFT JOIN {{org_meta_pipeline_runs}} r \
                 ON r.pipeline_logging_id = s.pipeline_logging_id \
                 WHERE s.state = @running AND (r.status IS NULL OR r.status NOT IN (@pending, @run_running)) \
                 ORDER BY s.scheduled_time LIMIT @limit",
                &Params::new()
                    .with("running", SCHED_RUNNING)
                    .with("pending", super::runs::RUN_PENDING)
                    .with("run_running", super::runs::RUN_RUNNING)
                    .with("limit", limit),
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let (Some(run_id), Some(org), Some(plid), Some(at)) = (
                r.string("run_id"),
                r.string("org_slug"),
                r.string("pipeline_logging_id"),
                r.timestamp("scheduled_time"),
            ) else {
                continue;
            };
            out.push(FinishedScheduledRun {
                run_id,
                config_id: r.string("config_id").unwrap_or_default(),
                org_slug: org,
                pipeline_logging_id: plid,
                retry_count: r.int("retry_count").unwrap_or(0),
                max_retries: r.int("max_retries").unwrap_or(0),
                scheduled_time: at,
                run_status: r.string("run_status"),
                run_error: r.string("run_error"),
                run_end_time: r.timestamp("run_end_time"),
            });
        }
        Ok(out)
    }

    /// Settles a finished occurrence: COMPLETED / CANCELLED / FAILED (final), or back to
    /// QUEUED for a retry from `retry_at` (`Some`). Guarded on the occurrence still being
    /// RUNNING with that run, so two reconcilers settle it once. `false` if someone did.
    pub async fn settle_scheduled(
        &self,
        run: &FinishedScheduledRun,
        final_state: &str,
        retry_at: Option<DateTime<Utc>>,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, MetaError> {
        let guard = "WHERE run_id = @run_id AND org_slug = @org AND state = @running AND pipeline_logging_id = @plid";
        let base = Params::new()
            .with("run_id", run.run_id.as_str())
            .with("org", run.org_slug.as_str())
            .with("running", SCHED_RUNNING)
            .with("plid", run.pipeline_logging_id.as_str())
            .with("now", now)
            .with("error", error.map(|e| super::runs::truncate(e, 2000)));
        let mut statements = Vec::new();
        let config_status;
        match retry_at {
            Some(at) => {
                config_status = "RETRYING";
                statements.push(
                    Statement::new(
                        format!(
                            "UPDATE {{{{org_scheduled_pipeline_runs}}}} SET state = @queued, pipeline_logging_id = NULL, \
                             retry_count = retry_count + 1, error_message = @error, updated_at = @now {guard}"
                        ),
                        base.clone().with("queued", SCHED_QUEUED),
                    )
                    .expecting(1),
                );
                statements.push(Statement::new(
                    "INSERT INTO {{org_pipeline_execution_queue}} (run_id, org_slug, pipeline_id, state, scheduled_time, \
                     priority, added_at, config_id, not_before) SELECT s.run_id, s.org_slug, s.pipeline_id, @queued, \
                     s.scheduled_time, s.priority, @now, s.config_id, @retry_at FROM {{org_scheduled_pipeline_runs}} s \
                     WHERE s.run_id = @run_id",
                    base.clone().with("queued", QUEUE_QUEUED).with("retry_at", at),
                ));
            }
            None => {
                config_status = match final_state {
                    SCHED_COMPLETED => "SUCCESS",
                    other => other,
                };
                let (col, sql_extra) = if final_state == SCHED_COMPLETED {
                    ("completed_at", "")
                } else {
                    ("failed_at", ", error_message = @error")
                };
                statements.push(
                    Statement::new(
                        format!(
                            "UPDATE {{{{org_scheduled_pipeline_runs}}}} SET state = @state, {col} = @now, \
                             updated_at = @now{sql_extra} {guard}"
                        ),
                        base.clone().with("state", final_state),
                    )
                    .expecting(1),
                );
            }
        }
        statements.push(Statement::new(
            "UPDATE {{org_pipeline_configs}} SET last_run_status = @status, last_run_time = @at \
             WHERE config_id = @config AND org_slug = @org",
            Params::new()
                .with("status", config_status)
                .with("at", run.run_end_time.unwrap_or(now))
                .with("config", run.config_id.as_str())
                .with("org", run.org_slug.as_str()),
        ));
        match self.warehouse().execute_atomic(CENTRAL_DATASET, &statements).await {
            Ok(_) => Ok(true),
            Err(crate::warehouse::WarehouseError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Queue items to publish to Pub/Sub: claimable now and not yet published, published
    /// longer than a lease ago without being claimed (the delivery went to a process that
    /// died), or claimed by a process whose lease expired (it died before admitting them).
    /// A duplicate message is harmless: its item is claimed once and admitted once.
    pub async fn unpublished_items(
        &self,
        now: DateTime<Utc>,
        lease_expired_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(String, String)>, MetaError> {
        let rows = self
            .central(
                "SELECT run_id, org_slug FROM {{org_pipeline_execution_queue}} WHERE (state = @queued AND \
                 (published_at IS NULL OR published_at < @lease) AND (not_before IS NULL OR not_before <= @now)) \
                 OR (state = @processing AND \
                 processing_started_at < @lease AND (published_at IS NULL OR published_at < @lease)) \
                 ORDER BY priority, not_before, run_id LIMIT @limit",
                &Params::new()
                    .with("queued", QUEUE_QUEUED)
                    .with("processing", QUEUE_PROCESSING)
                    .with("now", now)
                    .with("lease", lease_expired_before)
                    .with("limit", limit),
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r.string("run_id")?, r.string("org_slug")?)))
            .collect())
    }

    /// Forgets that a QUEUED item was published (its delivery came before it was due, or
    /// while another process held it): the relay publishes it again once it is claimable.
    pub async fn unpublish(&self, run_id: &str) -> Result<(), MetaError> {
        self.warehouse()
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_pipeline_execution_queue}} SET published_at = NULL WHERE run_id = @run_id AND state = @queued",
                &Params::new().with("run_id", run_id).with("queued", QUEUE_QUEUED),
            )
            .await?;
        Ok(())
    }

    pub async fn mark_published(&self, run_id: &str, now: DateTime<Utc>) -> Result<(), MetaError> {
        self.warehouse()
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_pipeline_execution_queue}} SET published_at = @now WHERE run_id = @run_id",
                &Params::new().with("now", now).with("run_id", run_id),
            )
            .await?;
        Ok(())
    }

    /// The queue, claimable order, at most `limit` items.
    pub async fn queue_items(&self, limit: i64) -> Result<Vec<Row>, MetaError> {
        self.central(
            "SELECT q.run_id, q.org_slug, q.pipeline_id, q.config_id, q.state, q.scheduled_time, q.priority, q.added_at, \
             q.not_before, q.processing_started_at, q.claimed_by, q.published_at, s.run_date, s.end_date, s.retry_count, \
             s.max_retries, s.error_message FROM {{org_pipeline_execution_queue}} q LEFT JOIN \
             {{org_scheduled_pipeline_runs}} s ON s.run_id = q.run_id ORDER BY q.priority, q.not_before, q.run_id LIMIT @limit",
            &Params::new().with("limit", limit),
        )
        .await
    }

    /// An org's scheduled runs (occurrences), newest first.
    pub async fn scheduled_runs(&self, org: &str, config_id: Option<&str>, limit: i64) -> Result<Vec<Row>, MetaError> {
        let mut sql = String::from(
            "SELECT run_id, config_id, org_slug, pipeline_id, state, scheduled_time, run_date, end_date, \
             pipeline_logging_id, retry_count, max_retries, completed_at, failed_at, error_message, created_at \
             FROM {{org_scheduled_pipeline_runs}} WHERE org_slug = @org",
        );
        let mut p = Params::new().with("org", org).with("limit", limit);
        if let Some(c) = config_id {
            sql.push_str(" AND config_id = @config");
            p = p.with("config", c);
        }
        sql.push_str(" ORDER BY scheduled_time DESC, run_id LIMIT @limit");
        self.central(&sql, &p).await
    }

    /// Counts over all orgs for the status route (`day_start` is today 00:00 UTC).
    pub async fn scheduler_counts(
        &self,
        now: DateTime<Utc>,
        day_start: DateTime<Utc>,
    ) -> Result<SchedulerCounts, MetaError> {
        let p = Params::new()
            .with("active", true)
            .with("now", now)
            .with("day", day_start)
            .with("queued", SCHED_QUEUED)
            .with("running", SCHED_RUNNING)
            .with("completed", SCHED_COMPLETED)
            .with("failed", SCHED_FAILED)
            .with("processing", QUEUE_PROCESSING);
        let configs = self
            .central(
                "SELECT COUNT(*) AS total, COALESCE(SUM(CASE WHEN next_run_time <= @now THEN 1 ELSE 0 END), 0) AS due \
                 FROM {{org_pipeline_configs}} WHERE is_active = @active",
                &p,
            )
            .await?;
        let runs = self
            .central(
                "SELECT COALESCE(SUM(CASE WHEN state = @queued THEN 1 ELSE 0 END), 0) AS queued, \
                 COALESCE(SUM(CASE WHEN state = @running THEN 1 ELSE 0 END), 0) AS running, \
                 COALESCE(SUM(CASE WHEN state = @completed AND completed_at >= @day THEN 1 ELSE 0 END), 0) AS completed, \
                 COALESCE(SUM(CASE WHEN state = @failed AND failed_at >= @day THEN 1 ELSE 0 END), 0) AS failed \
                 FROM {{org_scheduled_pipeline_runs}}",
                &p,
            )
            .await?;
        let queue = self
            .central(
                "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN state = @processing THEN 1 ELSE 0 END), 0) AS processing, \
                 COALESCE(SUM(CASE WHEN state = @queued AND not_before <= @now THEN 1 ELSE 0 END), 0) AS due \
                 FROM {{org_pipeline_execution_queue}}",
                &p,
            )
            .await?;
        let avg = self
            .central(
                "SELECT AVG(r.duration_ms) AS avg_ms FROM {{org_meta_pipeline_runs}} r WHERE r.trigger_type = @scheduler \
                 AND r.start_time >= @day AND r.duration_ms IS NOT NULL",
                &Params::new().with("scheduler", "scheduler").with("day", day_start),
            )
            .await?;
        let int = |rows: &[Row], c: &str| rows.first().and_then(|r| r.int(c)).unwrap_or(0);
        Ok(SchedulerCounts {
            total_active_pipelines: int(&configs, "total"),
            pipelines_due_now: int(&configs, "due"),
            pipelines_queued: int(&runs, "queued"),
            pipelines_running: int(&runs, "running"),
            pipelines_completed_today: int(&runs, "completed"),
            pipelines_failed_today: int(&runs, "failed"),
            queue_length: int(&queue, "n"),
            queue_processing: int(&queue, "processing"),
            queue_due: int(&queue, "due"),
            avg_execution_time_seconds: avg
                .first()
                .and_then(|r| r.float("avg_ms").or_else(|| r.int("avg_ms").map(|v| v as f64)))
                .map(|ms| (ms / 10.0).round() / 100.0),
        })
    }
}
