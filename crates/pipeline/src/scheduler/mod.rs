//! The scheduler: schedules per org, the trigger that enqueues due occurrences exactly once,
//! the queue processor that admits them through the same [`RunService`] path as an API run,
//! reconciliation (completion, retries with backoff), and the internal loop.
//!
//! Exactly-once, piece by piece:
//! - **enqueue**: the trigger advances a schedule's `next_run_time` with a compare-and-set in
//!   the same transaction that inserts its occurrences (deterministic ids, guarded inserts),
//!   so a retried or concurrent trigger enqueues nothing twice;
//! - **claim**: one conditional UPDATE stamps a batch of items with a claim token (warehouse
//!   queue), or a Pub/Sub delivery claims its item by id;
//! - **admit**: the run's admission transaction links the occurrence to the run (guarded on
//!   it being unlinked) and deletes the queue item, so however often an item is claimed,
//!   redelivered or reclaimed after a crash, it starts at most one run;
//! - **settle**: a finished run settles its occurrence once (guarded on run id and state);
//!   a failure goes back to the queue with backoff until `max_retries`, then stays FAILED.

pub mod cron;
pub mod pubsub;

use std::{sync::Arc, time::Instant};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cloudact_core::{
    clock::Clock,
    meta::{
        runs::QuotaLimit,
        schedules::{
            FinishedScheduledRun, Occurrence, OrgRunState, QueueItem, ScheduleConfig, SchedulerCounts, SCHED_CANCELLED,
            SCHED_COMPLETED, SCHED_FAILED, SCHED_QUEUED,
        },
        MetaError, OrgStore, SubscriptionStatus, CENTRAL_DATASET, ORG_ACTIVE,
    },
    settings::{SchedulerQueue, SchedulerSettings},
    warehouse::{Statement, WarehouseError},
};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::{
    catalog::{CatalogEntry, LiveCatalog},
    runs::{RunService, ScheduledLink, SubmitError, SubmitRequest, Submitted},
};
pub use cron::{RuleError, ScheduleRule};
use pubsub::{PubSubError, PubSubQueue};

/// Occurrences of one schedule enqueued by one trigger, at most.
const MAX_OCCURRENCES_PER_TRIGGER: usize = 100;
/// Due schedules read per query by the trigger.
const TRIGGER_BATCH: i64 = 1000;
/// Schedules written per transaction by the trigger.
const TRIGGER_CHUNK: usize = 50;
/// Items claimed per conditional UPDATE.
const CLAIM_BATCH: i64 = 200;
/// Entries listed in a response (counts are always complete).
const LISTED: usize = 100;

/// Scheduler failures.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    PubSub(#[from] PubSubError),
}

impl SchedulerError {
    /// See [`MetaError::is_not_bootstrapped`].
    pub fn is_not_bootstrapped(&self) -> bool {
        matches!(self, SchedulerError::Meta(e) if e.is_not_bootstrapped())
    }
}

impl From<WarehouseError> for SchedulerError {
    fn from(e: WarehouseError) -> Self {
        SchedulerError::Meta(MetaError::Warehouse(e))
    }
}

/// One due schedule the trigger skipped, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub org_slug: String,
    pub config_id: String,
    pub pipeline_id: String,
    pub reason: String,
}

/// One enqueued occurrence.
#[derive(Debug, Clone, Serialize)]
pub struct Queued {
    pub run_id: String,
    pub org_slug: String,
    pub pipeline_id: String,
    pub scheduled_time: DateTime<Utc>,
    pub not_before: DateTime<Utc>,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
}

/// What one trigger did (the reference's shape plus the lists behind the counts).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TriggerReport {
    /// Schedules whose occurrences were enqueued.
    pub triggered_count: usize,
    /// Occurrences enqueued.
    pub queued_count: usize,
    /// Due schedules skipped (the org may not run, or the pipeline is gone).
    pub skipped_count: usize,
    /// Missed occurrences older than the catch-up window (not run).
    pub dropped_count: usize,
    /// Schedules another trigger advanced first (nothing enqueued here).
    pub concurrent_count: usize,
    /// Occurrences published to Pub/Sub (pubsub queue only).
    pub published_count: usize,
    pub next_trigger_time: Option<DateTime<Utc>>,
    pub details: TriggerDetails,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TriggerDetails {
    pub limit: i64,
    pub due_pipelines_found: usize,
    pub queued: Vec<Queued>,
    pub skipped: Vec<Skipped>,
}

/// What happened to one claimed item.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ItemOutcome {
    /// A run was admitted.
    Started { pipeline_logging_id: String },
    /// An open run of the same pipeline and days already covers it: linked to that run.
    Deduplicated { pipeline_logging_id: String },
    /// Admitted before (another instance, an earlier delivery): nothing started.
    AlreadyAdmitted,
    /// Refused for good (subscription, quota, integration, pipeline gone): FAILED with the reason.
    Refused { error: String, reason: String },
    /// Not now (concurrency limit, transient warehouse error): claimable again later.
    Deferred { reason: String, retry_at: DateTime<Utc> },
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessedItem {
    pub run_id: String,
    pub org_slug: String,
    pub pipeline_id: String,
    #[serde(flatten)]
    pub outcome: ItemOutcome,
}

/// What one queue-process call did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessReport {
    pub processed: bool,
    pub processed_count: usize,
    pub started_count: usize,
    pub refused_count: usize,
    pub deferred_count: usize,
    pub started_pipelines: Vec<String>,
    pub items: Vec<ProcessedItem>,
    /// Finished scheduled runs settled (completed, failed, or re-queued for a retry).
    pub settled: SettleReport,
    pub published_count: usize,
    pub elapsed_seconds: f64,
    /// The first admitted run (the reference's single-run fields).
    pub pipeline_logging_id: Option<String>,
    pub org_slug: Option<String>,
    pub pipeline_id: Option<String>,
    pub status: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SettleReport {
    pub completed: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub retries_scheduled: usize,
}

/// Why an org may not run now, if it may not.
pub fn refusal_reason(state: Option<&OrgRunState>, today: NaiveDate) -> Option<String> {
    let Some(state) = state else {
        return Some("the organization no longer exists".into());
    };
    match state.org_status.as_deref() {
        Some(ORG_ACTIVE) => {}
        Some(other) => return Some(format!("organization status is {other}")),
        None => return Some("the organization no longer exists".into()),
    }
    let Some(status) = state.subscription_status.as_deref() else {
        return Some("the organization has no subscription".into());
    };
    let parsed = SubscriptionStatus::parse(status);
    if !parsed.is_some_and(SubscriptionStatus::allows_runs) {
        return Some(format!("subscription status is {status}"));
    }
    if parsed == Some(SubscriptionStatus::Trial) {
        if let Some(end) = state.trial_end_date.filter(|d| *d < today) {
            return Some(format!("the trial ended on {end}"));
        }
    }
    if let Some(end) = state.subscription_end_date.filter(|d| *d < today) {
        return Some(format!("the subscription ended on {end}"));
    }
    None
}

/// One schedule's part of a trigger transaction.
struct Plan {
    config: ScheduleConfig,
    expected: DateTime<Utc>,
    next: DateTime<Utc>,
    occurrences: Vec<Occurrence>,
    skip: Option<String>,
}

/// The scheduler of one process.
pub struct Scheduler {
    store: OrgStore,
    catalog: Arc<LiveCatalog>,
    runs: Arc<RunService>,
    clock: Arc<dyn Clock>,
    settings: SchedulerSettings,
    pubsub: OnceCell<PubSubQueue>,
}

impl Scheduler {
    pub fn new(
        store: OrgStore,
        catalog: Arc<LiveCatalog>,
        runs: Arc<RunService>,
        clock: Arc<dyn Clock>,
        settings: SchedulerSettings,
    ) -> Arc<Self> {
        Arc::new(Scheduler {
            store,
            catalog,
            runs,
            clock,
            settings,
            pubsub: OnceCell::new(),
        })
    }

    pub fn settings(&self) -> &SchedulerSettings {
        &self.settings
    }

    async fn pubsub(&self) -> Result<&PubSubQueue, SchedulerError> {
        Ok(self
            .pubsub
            .get_or_try_init(|| PubSubQueue::connect(&self.settings))
            .await?)
    }

    // ------------------------------------------------------------ schedules

    /// A new schedule for `entry`, first due at its next occurrence after now.
    #[allow(clippy::too_many_arguments)]
    pub fn new_schedule(
        &self,
        org: &str,
        entry: &CatalogEntry,
        rule: &ScheduleRule,
        timezone: &str,
        parameters: Value,
        is_active: bool,
        priority: i64,
        source: &str,
    ) -> ScheduleConfig {
        let now = self.clock.now();
        ScheduleConfig {
            config_id: uuid::Uuid::new_v4().to_string(),
            org_slug: org.to_string(),
            provider: entry.provider.clone(),
            domain: entry.domain.clone().unwrap_or_default(),
            pipeline_template: entry.pipeline.clone(),
            pipeline_id: entry.id.clone(),
            schedule_cron: rule.expression.clone(),
            timezone: timezone.to_string(),
            is_active,
            next_run_time: is_active.then(|| rule.next_after(now)).flatten(),
            last_run_time: None,
            last_run_status: None,
            last_skip_reason: None,
            parameters,
            priority,
            integration: entry.required_integration.clone(),
            source: source.to_string(),
            deactivated_reason: (!is_active).then(|| "USER".to_string()),
            max_retries: i64::from(self.settings.max_retries),
            created_at: now,
            updated_at: Some(now),
        }
    }

    /// When an integration becomes VALID: every scheduled pipeline that needs it gets an
    /// active schedule for the org (from its spec's `schedule`, in the org's timezone — UTC
    /// unless set), and schedules that
    /// the integration's removal had deactivated come back. Schedules the org deactivated
    /// itself stay as they are. Returns the schedules created or reactivated.
    pub async fn ensure_integration_schedules(&self, org: &str, integration: &str) -> Result<Vec<String>, MetaError> {
        let existing = self.store.schedules(org, None).await?;
        let timezone = self.store.org_timezone(org).await?.unwrap_or_else(|| "UTC".to_string());
        let now = self.clock.now();
        let mut touched = Vec::new();
        for entry in self
            .catalog
            .entries()
            .iter()
            .filter(|e| e.kind == "data" && e.enabled && e.required_integration.as_deref() == Some(integration))
        {
            let Some(schedule) = entry.schedule.as_deref().and_then(cron::expression_for) else {
                continue;
            };
            let mine: Vec<&ScheduleConfig> = existing.iter().filter(|c| c.pipeline_id == entry.id).collect();
            if mine.is_empty() {
                let Ok(rule) = ScheduleRule::parse(&schedule, &timezone) else {
                    tracing::warn!(pipeline = %entry.id, schedule, timezone, "spec schedule or org timezone invalid; not scheduled");
                    continue;
                };
                let mut config = self.new_schedule(org, entry, &rule, &timezone, json!({}), true, 5, "AUTO");
                // One AUTO schedule per org and pipeline, however many setups race.
                config.config_id = auto_schedule_id(org, &entry.id);
                if self.store.insert_schedule_if_absent(&config).await? {
                    touched.push(config.config_id);
                }
                continue;
            }
            for c in mine
                .into_iter()
                .filter(|c| !c.is_active && c.deactivated_reason.as_deref() == Some("INTEGRATION_REMOVED"))
            {
                let Ok(rule) = ScheduleRule::parse(&c.schedule_cron, &c.timezone) else {
                    continue;
                };
                let mut c = c.clone();
                c.is_active = true;
                c.deactivated_reason = None;
                c.next_run_time = rule.next_after(now);
                c.updated_at = Some(now);
                self.store.update_schedule(&c).await?;
                touched.push(c.config_id);
            }
        }
        if !touched.is_empty() {
            tracing::info!(
                org_slug = org,
                integration,
                schedules = touched.len(),
                "schedules activated for a VALID integration"
            );
        }
        Ok(touched)
    }

    /// When an integration is removed: its pipelines' schedules stop.
    pub async fn deactivate_integration_schedules(&self, org: &str, integration: &str) -> Result<u64, MetaError> {
        self.store
            .deactivate_integration_schedules(org, integration, self.clock.now())
            .await
    }

    // ------------------------------------------------------------ trigger

    /// Finds due schedules (at most `limit`) and enqueues each due occurrence once.
    pub async fn trigger(&self, limit: i64) -> Result<TriggerReport, SchedulerError> {
        let now = self.clock.now();
        let mut report = TriggerReport {
            details: TriggerDetails {
                limit,
                ..Default::default()
            },
            next_trigger_time: next_full_hour(now),
            ..Default::default()
        };
        // Batches of at most TRIGGER_BATCH schedules until `limit` or nothing is due: every
        // schedule handled is advanced (or was advanced by someone else), so each batch reads
        // new ones.
        let mut handled: i64 = 0;
        while handled < limit {
            let batch = TRIGGER_BATCH.min(limit - handled);
            let due = self.store.due_schedules(now, batch).await?;
            let found = due.len() as i64;
            if found == 0 {
                break;
            }
            report.details.due_pipelines_found += due.len();
            self.trigger_batch(due, batch, now, &mut report).await?;
            handled += found;
            if found < batch {
                break;
            }
        }
        if self.settings.queue == SchedulerQueue::PubSub {
            report.published_count = self.relay().await?;
        }
        if report.queued_count > 0 || report.skipped_count > 0 {
            tracing::info!(
                queued = report.queued_count,
                skipped = report.skipped_count,
                dropped = report.dropped_count,
                "scheduler trigger"
            );
        }
        Ok(report)
    }

    async fn trigger_batch(
        &self,
        due: Vec<ScheduleConfig>,
        batch: i64,
        now: DateTime<Utc>,
        report: &mut TriggerReport,
    ) -> Result<(), SchedulerError> {
        let mut states = self.store.due_org_states(now, batch).await?;
        let missing: std::collections::BTreeSet<&str> = due
            .iter()
            .map(|c| c.org_slug.as_str())
            .filter(|o| !states.contains_key(*o))
            .collect();
        for org in missing {
            let state = self.store.org_run_state(org).await?;
            states.insert(org.to_string(), state);
        }
        let catchup = Duration::days(i64::from(self.settings.catchup_days)) + Duration::hours(1);
        let plans: Vec<Plan> = due
            .into_iter()
            .map(|c| self.plan(c, &states, now, catchup, report))
            .collect();
        for chunk in plans.chunks(TRIGGER_CHUNK) {
            self.commit_plans(chunk, now, report).await?;
        }
        Ok(())
    }

    fn plan(
        &self,
        config: ScheduleConfig,
        states: &std::collections::HashMap<String, OrgRunState>,
        now: DateTime<Utc>,
        catchup: Duration,
        report: &mut TriggerReport,
    ) -> Plan {
        let expected = config.next_run_time.unwrap_or(now);
        let skip_plan = |config: ScheduleConfig, next: DateTime<Utc>, reason: String| Plan {
            config,
            expected,
            next,
            occurrences: Vec::new(),
            skip: Some(reason),
        };
        let rule = match ScheduleRule::parse(&config.schedule_cron, &config.timezone) {
            Ok(r) => r,
            Err(e) => return skip_plan(config, now + Duration::hours(1), e.to_string()),
        };
        let due = rule.due(expected, now, catchup, MAX_OCCURRENCES_PER_TRIGGER);
        let next = due.next.unwrap_or(now + Duration::days(366));
        let today = now.date_naive();
        if let Some(reason) = refusal_reason(states.get(&config.org_slug), today) {
            return skip_plan(config, next, reason);
        }
        match self.catalog.by_id(&config.pipeline_id) {
            Some(e) if e.kind == "data" && e.enabled => {}
            Some(_) => {
                let reason = format!("pipeline {} is disabled", config.pipeline_id);
                return skip_plan(config, next, reason);
            }
            None => {
                let reason = format!("pipeline {} no longer exists", config.pipeline_id);
                return skip_plan(config, next, reason);
            }
        }
        report.dropped_count += due.dropped;
        let offset = cron::jitter(&config.org_slug, &config.config_id, self.settings.jitter);
        let occurrences = due
            .occurrences
            .iter()
            .map(|(at, start, end)| Occurrence {
                run_id: cron::occurrence_id(&config.config_id, *at),
                scheduled_time: *at,
                not_before: *at + offset,
                start_date: *start,
                end_date: *end,
            })
            .collect();
        Plan {
            config,
            expected,
            next,
            occurrences,
            skip: None,
        }
    }

    /// Commits a chunk of plans in one transaction. A conflict names the statement: a
    /// schedule advanced elsewhere is dropped from the chunk, an occurrence that already
    /// exists is dropped from its plan; then the rest is tried again.
    async fn commit_plans(
        &self,
        chunk: &[Plan],
        now: DateTime<Utc>,
        report: &mut TriggerReport,
    ) -> Result<(), SchedulerError> {
        let mut live: Vec<(usize, Vec<usize>)> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| (i, (0..p.occurrences.len()).collect()))
            .collect();
        for _attempt in 0..(chunk.len() * 2 + MAX_OCCURRENCES_PER_TRIGGER + 2) {
            let mut statements: Vec<Statement> = Vec::new();
            let mut owners: Vec<(usize, Option<usize>)> = Vec::new();
            for (i, occs) in &live {
                let p = &chunk[*i];
                statements.push(OrgStore::advance_statement(
                    &p.config,
                    p.expected,
                    p.next,
                    p.skip.as_deref(),
                    now,
                ));
                owners.push((*i, None));
                for o in occs {
                    for s in OrgStore::enqueue_statements(&p.config, &p.occurrences[*o], now) {
                        statements.push(s);
                        owners.push((*i, Some(*o)));
                    }
                }
            }
            if statements.is_empty() {
                return Ok(());
            }
            match self
                .store
                .warehouse()
                .execute_atomic(CENTRAL_DATASET, &statements)
                .await
            {
                Ok(_) => {
                    for (i, occs) in &live {
                        let p = &chunk[*i];
                        if let Some(reason) = &p.skip {
                            report.skipped_count += 1;
                            if report.details.skipped.len() < LISTED {
                                report.details.skipped.push(Skipped {
                                    org_slug: p.config.org_slug.clone(),
                                    config_id: p.config.config_id.clone(),
                                    pipeline_id: p.config.pipeline_id.clone(),
                                    reason: reason.clone(),
                                });
                            }
                            continue;
                        }
                        if !occs.is_empty() {
                            report.triggered_count += 1;
                        }
                        for o in occs {
                            let occ = &p.occurrences[*o];
                            report.queued_count += 1;
                            if report.details.queued.len() < LISTED {
                                report.details.queued.push(Queued {
                                    run_id: occ.run_id.clone(),
                                    org_slug: p.config.org_slug.clone(),
                                    pipeline_id: p.config.pipeline_id.clone(),
                                    scheduled_time: occ.scheduled_time,
                                    not_before: occ.not_before,
                                    start_date: occ.start_date,
                                    end_date: occ.end_date,
                                });
                            }
                        }
                    }
                    return Ok(());
                }
                Err(WarehouseError::Conflict { index, .. }) => {
                    let Some((plan, occ)) = owners.get(index).copied() else {
                        return Err(WarehouseError::Backend(format!("conflict at unknown statement {index}")).into());
                    };
                    match occ {
                        None => {
                            report.concurrent_count += 1;
                            live.retain(|(i, _)| *i != plan);
                        }
                        Some(o) => {
                            if let Some((_, occs)) = live.iter_mut().find(|(i, _)| *i == plan) {
                                occs.retain(|x| *x != o);
                            }
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(
            WarehouseError::Unavailable("the trigger kept conflicting with another trigger; call it again".into())
                .into(),
        )
    }

    /// Publishes queue items that are claimable now and not yet published (pubsub queue).
    /// Items are stamped after the broker accepted them; a crash in between republishes,
    /// which the consumers absorb (an admitted item starts nothing).
    async fn relay(&self) -> Result<usize, SchedulerError> {
        let queue = self.pubsub().await?;
        let mut published = 0;
        loop {
            let now = self.clock.now();
            let items = self.store.unpublished_items(now, now - self.lease(), 500).await?;
            if items.is_empty() {
                return Ok(published);
            }
            let sends = items
                .iter()
                .map(|(run_id, org)| async move { queue.publish(run_id, org).await.map(|_| run_id.clone()) });
            for result in futures::future::join_all(sends).await {
                let run_id = result?;
                self.store.mark_published(&run_id, now).await?;
                published += 1;
            }
        }
    }

    // ------------------------------------------------------------ process

    /// Settles finished runs, then claims and admits due items until the queue is empty,
    /// `max_items` were handled or the time budget is spent. With the Pub/Sub queue it
    /// publishes what is due and handles the deliveries it pulls in the same budget.
    pub async fn process(
        &self,
        max_items: usize,
        budget: std::time::Duration,
    ) -> Result<ProcessReport, SchedulerError> {
        let started = Instant::now();
        let budget = budget.min(self.settings.process_budget);
        let mut report = ProcessReport {
            settled: self.settle_finished().await?,
            ..Default::default()
        };
        match self.settings.queue {
            SchedulerQueue::Warehouse => {
                while started.elapsed() < budget && report.processed_count < max_items {
                    let now = self.clock.now();
                    let token = uuid::Uuid::new_v4().to_string();
                    let n = CLAIM_BATCH.min((max_items - report.processed_count) as i64);
                    let items = self
                        .store
                        .claim_queue(self.runs.runner_id(), &token, now, now - self.lease(), n)
                        .await?;
                    if items.is_empty() {
                        break;
                    }
                    let claimed_at = Instant::now();
                    let lease = self.settings.claim_lease;
                    for item in items {
                        // Admit only well inside the lease and the budget; the rest goes back
                        // for the next call (or another process) instead of being reclaimed
                        // under our feet.
                        if claimed_at.elapsed() > lease / 2 || started.elapsed() > budget {
                            if let Err(e) = self.store.release_claim(&item.run_id, &token, self.clock.now()).await {
                                tracing::warn!(error = %e, run_id = %item.run_id, "could not release a claim; it expires with its lease");
                            }
                            continue;
                        }
                        let outcome = self.admit(&item, &token).await;
                        report.record(&item, outcome);
                    }
                }
            }
            SchedulerQueue::PubSub => {
                report.published_count = self.relay().await?;
                while started.elapsed() < budget && report.processed_count < max_items {
                    let left = budget.saturating_sub(started.elapsed());
                    let wait = left.min(std::time::Duration::from_secs(2));
                    let handled = self.consume(10, wait, &mut report).await?;
                    if handled == 0 {
                        break;
                    }
                }
            }
        }
        report.elapsed_seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        report.finish();
        Ok(report)
    }

    fn lease(&self) -> Duration {
        Duration::from_std(self.settings.claim_lease).unwrap_or_else(|_| Duration::seconds(120))
    }

    /// Pulls up to `max` deliveries and handles each: ack once admitted or refused for good
    /// (or when the item is already gone), nack on a transient failure.
    async fn consume(
        &self,
        max: i32,
        wait: std::time::Duration,
        report: &mut ProcessReport,
    ) -> Result<usize, SchedulerError> {
        let queue = self.pubsub().await?;
        let deliveries = queue.pull(max, wait).await?;
        let n = deliveries.len();
        for d in deliveries {
            let Some(run_id) = d.run_id() else {
                tracing::warn!("acknowledging a Pub/Sub message that carries no occurrence id");
                d.ack().await?;
                continue;
            };
            let now = self.clock.now();
            let token = uuid::Uuid::new_v4().to_string();
            let item = match self
                .store
                .claim_item(&run_id, self.runs.runner_id(), &token, now, now - self.lease())
                .await
            {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(error = %e, run_id, "could not claim a delivered occurrence; asking for redelivery");
                    d.nack().await?;
                    continue;
                }
            };
            let Some(item) = item else {
                // Admitted or settled already (a redelivery: nothing to do), not due yet, or
                // held by a live claim: if it is still waiting, the relay publishes it again
                // when it is claimable.
                self.store.unpublish(&run_id).await?;
                d.ack().await?;
                continue;
            };
            // Admitted, refused for good, or deferred (then back in the queue unpublished,
            // so the relay publishes it again when it is due): in every case this delivery
            // is done.
            let outcome = self.admit(&item, &token).await;
            d.ack().await?;
            report.record(&item, outcome);
        }
        Ok(n)
    }

    /// Admits one claimed item through the run service.
    async fn admit(&self, item: &QueueItem, token: &str) -> ItemOutcome {
        let span = tracing::info_span!("scheduled_run", run_id = %item.run_id, org_slug = %item.org_slug, pipeline_id = %item.pipeline_id);
        tracing::Instrument::instrument(self.admit_inner(item, token), span).await
    }

    async fn admit_inner(&self, item: &QueueItem, token: &str) -> ItemOutcome {
        let now = self.clock.now();
        if item.linked_run.is_some() || item.state != SCHED_QUEUED {
            let _ = self.store.drop_queue_item(&item.run_id).await;
            return ItemOutcome::AlreadyAdmitted;
        }
        let Some(entry) = self.catalog.by_id(&item.pipeline_id).filter(|e| e.kind == "data") else {
            let reason = format!("pipeline {} no longer exists", item.pipeline_id);
            return self.refuse(item, token, "PIPELINE_NOT_FOUND", reason).await;
        };
        let mut parameters = item.parameters.as_object().cloned().unwrap_or_default();
        parameters.insert("start_date".into(), json!(item.start_date.to_string()));
        parameters.insert("end_date".into(), json!(item.end_date.to_string()));
        let request = SubmitRequest {
            org_slug: item.org_slug.clone(),
            org_api_key_id: None,
            start_date: item.start_date,
            end_date: item.end_date,
            trigger_type: "scheduler".into(),
            trigger_by: Some(format!("scheduler:{}", item.config_id)),
            user_id: None,
            parameters,
            retry_of: None,
            scheduled: Some(ScheduledLink {
                run_id: item.run_id.clone(),
                claim_token: token.to_string(),
            }),
        };
        match self.runs.submit(&entry, request).await {
            Ok(Submitted::Started(id)) => {
                tracing::info!(pipeline_logging_id = %id, "scheduled run admitted");
                ItemOutcome::Started {
                    pipeline_logging_id: id,
                }
            }
            Ok(Submitted::AlreadyRunning(id)) => match self.store.link_existing(&item.run_id, token, &id, now).await {
                Ok(true) => ItemOutcome::Deduplicated {
                    pipeline_logging_id: id,
                },
                Ok(false) => ItemOutcome::AlreadyAdmitted,
                Err(e) => self.defer(item, token, e.to_string(), 10).await,
            },
            Ok(Submitted::AlreadyAdmitted) => {
                let _ = self.store.drop_queue_item(&item.run_id).await;
                ItemOutcome::AlreadyAdmitted
            }
            Err(SubmitError::Quota {
                limit: QuotaLimit::Concurrent,
                ..
            }) => {
                self.defer(item, token, "the concurrent pipeline limit is reached".into(), 30)
                    .await
            }
            Err(SubmitError::Meta(MetaError::Warehouse(e))) if e.is_transient() => {
                self.defer(item, token, e.to_string(), 10).await
            }
            Err(SubmitError::Meta(e)) => {
                // Not a hiccup that waiting fixes: ended with a reason the org may read; the
                // detail goes to the log only.
                tracing::error!(error = %e, "scheduled run could not be admitted");
                let reason = "internal error while admitting the run; the operator's log has the detail".to_string();
                self.refuse(item, token, "INTERNAL", reason).await
            }
            Err(e) => {
                let code = match &e {
                    SubmitError::NoSubscription | SubmitError::SubscriptionInactive(_) => "SUBSCRIPTION_INACTIVE",
                    SubmitError::SubscriptionEnded(_) => "SUBSCRIPTION_EXPIRED",
                    SubmitError::Quota { .. } => "QUOTA_EXCEEDED",
                    SubmitError::IntegrationMissing { .. } => "INTEGRATION_NOT_CONFIGURED",
                    SubmitError::Disabled(_) => "PIPELINE_DISABLED",
                    SubmitError::InvalidParameters(_) => "INVALID_PARAMETERS",
                    SubmitError::Meta(_) => "INTERNAL",
                };
                self.refuse(item, token, code, e.to_string()).await
            }
        }
    }

    /// Ends an occurrence for good with the reason (FAILED, item removed).
    async fn refuse(&self, item: &QueueItem, token: &str, error: &str, reason: String) -> ItemOutcome {
        let now = self.clock.now();
        match self
            .store
            .fail_scheduled(
                &item.run_id,
                token,
                &item.config_id,
                &item.org_slug,
                SCHED_FAILED,
                &reason,
                now,
            )
            .await
        {
            Ok(false) => ItemOutcome::AlreadyAdmitted,
            Ok(true) => {
                tracing::info!(error, reason = %reason, "scheduled run refused");
                ItemOutcome::Refused {
                    error: error.to_string(),
                    reason,
                }
            }
            Err(e) => {
                self.defer(item, token, format!("could not record the refusal: {e}"), 10)
                    .await
            }
        }
    }

    async fn defer(&self, item: &QueueItem, token: &str, reason: String, seconds: i64) -> ItemOutcome {
        let retry_at = self.clock.now() + Duration::seconds(seconds);
        if let Err(e) = self.store.release_claim(&item.run_id, token, retry_at).await {
            tracing::warn!(error = %e, run_id = %item.run_id, "could not release a claim; it expires with its lease");
        }
        ItemOutcome::Deferred { reason, retry_at }
    }

    /// Settles occurrences whose run finished: COMPLETED; FAILED/TIMEOUT (or a vanished run)
    /// back to the queue with exponential backoff while retries remain, else FAILED with
    /// the run's error; CANCELLED stays cancelled.
    pub async fn settle_finished(&self) -> Result<SettleReport, SchedulerError> {
        let mut report = SettleReport::default();
        loop {
            let finished = self.store.finished_scheduled_runs(500).await?;
            if finished.is_empty() {
                return Ok(report);
            }
            let mut progressed = false;
            for f in &finished {
                if self.settle_one(f, &mut report).await? {
                    progressed = true;
                }
            }
            if !progressed || finished.len() < 500 {
                return Ok(report);
            }
        }
    }

    async fn settle_one(&self, f: &FinishedScheduledRun, report: &mut SettleReport) -> Result<bool, SchedulerError> {
        let now = self.clock.now();
        let done = match f.run_status.as_deref() {
            Some("COMPLETED") => {
                let ok = self.store.settle_scheduled(f, SCHED_COMPLETED, None, None, now).await?;
                report.completed += usize::from(ok);
                ok
            }
            Some("CANCELLED") => {
                let ok = self
                    .store
                    .settle_scheduled(f, SCHED_CANCELLED, None, Some("the run was cancelled"), now)
                    .await?;
                report.cancelled += usize::from(ok);
                ok
            }
            status => {
                let error = f.run_error.clone().unwrap_or_else(|| match status {
                    None => "the run record no longer exists".to_string(),
                    Some(s) => format!("the run ended {s}"),
                });
                if f.retry_count < f.max_retries {
                    let retry_at = now + self.backoff(f.retry_count);
                    let ok = self
                        .store
                        .settle_scheduled(f, SCHED_QUEUED, Some(retry_at), Some(&error), now)
                        .await?;
                    if ok {
                        tracing::info!(run_id = %f.run_id, attempt = f.retry_count + 1, %retry_at, "scheduled run failed; retry queued");
                    }
                    report.retries_scheduled += usize::from(ok);
                    ok
                } else {
                    let message = format!("failed after {} attempts: {error}", f.retry_count + 1);
                    let ok = self
                        .store
                        .settle_scheduled(f, SCHED_FAILED, None, Some(&message), now)
                        .await?;
                    report.failed += usize::from(ok);
                    ok
                }
            }
        };
        Ok(done)
    }

    /// `retry_base × 2^n`, at most one hour.
    fn backoff(&self, n: i64) -> Duration {
        let base = self.settings.retry_base.as_secs().max(1);
        let secs = base.saturating_mul(1u64 << n.clamp(0, 20)).min(3_600);
        Duration::seconds(secs as i64)
    }

    // ------------------------------------------------------------ status and loops

    pub async fn counts(&self) -> Result<SchedulerCounts, SchedulerError> {
        let now = self.clock.now();
        let day_start = now
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or(now);
        let counts = self.store.scheduler_counts(now, day_start).await?;
        metrics::gauge!("scheduler_queue_depth").set(counts.queue_length as f64);
        Ok(counts)
    }

    /// Starts the background work of this process: with `SCHEDULER=internal`, trigger +
    /// process every tick; with the Pub/Sub queue, a consumer that pulls continuously.
    pub fn start_background(self: &Arc<Self>, internal: bool, shutdown: CancellationToken) {
        if internal {
            let this = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let period = this.settings.tick;
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.cancelled() => return,
                    }
                    match this.trigger(100_000).await {
                        // Before bootstrap there is nothing to schedule; the run service says
                        // so once.
                        Err(e) if e.is_not_bootstrapped() => continue,
                        Err(e) => tracing::warn!(error = %e, "internal scheduler: trigger failed"),
                        Ok(_) => {}
                    }
                    if this.settings.queue == SchedulerQueue::Warehouse {
                        if let Err(e) = this.process(10_000, this.settings.process_budget).await {
                            tracing::warn!(error = %e, "internal scheduler: queue processing failed");
                        }
                    }
                    // The queue-depth gauge, once a tick.
                    let _ = this.counts().await;
                }
            });
        }
        if self.settings.queue == SchedulerQueue::PubSub {
            let this = self.clone();
            tokio::spawn(async move {
                let mut idle = std::time::Duration::from_millis(200);
                let mut last_relay = Instant::now();
                // Before bootstrap there is nothing to relay or settle: said once, not every
                // few seconds.
                let mut said_not_bootstrapped = false;
                let mut quiet = |e: &SchedulerError, what: &str| {
                    if e.is_not_bootstrapped() {
                        if !said_not_bootstrapped {
                            said_not_bootstrapped = true;
                            tracing::info!("Pub/Sub consumer: the platform is not bootstrapped yet; waiting for it");
                        }
                    } else {
                        tracing::warn!(error = %e, "Pub/Sub consumer: {what} failed");
                    }
                };
                loop {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    // Republishes retries and the deliveries of stopped processes, even when
                    // no trigger or process call comes.
                    if last_relay.elapsed() >= std::time::Duration::from_secs(5) {
                        last_relay = Instant::now();
                        if let Err(e) = this.relay().await {
                            quiet(&e, "relay");
                        }
                    }
                    let mut report = ProcessReport::default();
                    let step = tokio::select! {
                        r = this.consume(10, std::time::Duration::from_secs(2), &mut report) => r,
                        _ = shutdown.cancelled() => return,
                    };
                    match step {
                        Ok(0) => {}
                        Ok(_) => idle = std::time::Duration::from_millis(200),
                        Err(e) => {
                            tracing::warn!(error = %e, "Pub/Sub consumer: pull failed; backing off");
                            idle = (idle * 2).min(std::time::Duration::from_secs(30));
                            tokio::select! {
                                _ = tokio::time::sleep(idle) => {}
                                _ = shutdown.cancelled() => return,
                            }
                        }
                    }
                    if let Err(e) = this.settle_finished().await {
                        quiet(&e, "settling finished runs");
                    }
                }
            });
        }
    }
}

impl ProcessReport {
    fn record(&mut self, item: &QueueItem, outcome: ItemOutcome) {
        self.processed_count += 1;
        match &outcome {
            ItemOutcome::Started { pipeline_logging_id } => {
                self.started_count += 1;
                self.started_pipelines.push(pipeline_logging_id.clone());
                if self.pipeline_logging_id.is_none() {
                    self.pipeline_logging_id = Some(pipeline_logging_id.clone());
                    self.org_slug = Some(item.org_slug.clone());
                    self.pipeline_id = Some(item.pipeline_id.clone());
                }
            }
            ItemOutcome::Refused { .. } => self.refused_count += 1,
            ItemOutcome::Deferred { .. } => self.deferred_count += 1,
            ItemOutcome::Deduplicated { .. } | ItemOutcome::AlreadyAdmitted => {}
        }
        if self.items.len() < LISTED {
            self.items.push(ProcessedItem {
                run_id: item.run_id.clone(),
                org_slug: item.org_slug.clone(),
                pipeline_id: item.pipeline_id.clone(),
                outcome,
            });
        }
    }

    fn finish(&mut self) {
        self.processed = self.processed_count > 0;
        self.status = if self.processed_count == 0 {
            "IDLE"
        } else {
            "BATCH_COMPLETE"
        };
        self.message = if self.processed_count == 0 {
            "no queued pipelines were due".to_string()
        } else {
            format!(
                "{} item(s): {} started, {} refused, {} deferred",
                self.processed_count, self.started_count, self.refused_count, self.deferred_count
            )
        };
    }
}

/// The id of an org's AUTO schedule of a pipeline: derived from both, so concurrent
/// creators insert the same row once.
fn auto_schedule_id(org: &str, pipeline_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("auto/{org}/{pipeline_id}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("auto-{hex}")
}

fn next_full_hour(now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let hour = now
        .date_naive()
        .and_hms_opt(chrono::Timelike::hour(&now), 0, 0)?
        .and_utc();
    Some(hour + Duration::hours(1))
}
