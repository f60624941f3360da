//! The executor: runs a validated spec's steps in dependency order, one at a time, each
//! under its own timeout, with retries (exponential backoff with jitter) for transient
//! failures, `on_failure` policies, cancellation, and panics caught as step failures.
//! Later work adds run logging and concurrency between independent steps; the report
//! shape already carries what those need.

use std::{
    collections::{BTreeMap, HashMap},
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, NaiveDate, Utc};
use futures::{stream::FuturesUnordered, FutureExt, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::{
    context::{Services, StepContext},
    registry::{ProcessorError, Registry},
    spec::{OnFailure, PipelineSpec},
    variables,
};

/// Told about each finished step while a run goes on (run logging uses it).
#[async_trait::async_trait]
pub trait RunObserver: Send + Sync {
    async fn step_finished(&self, run_id: &str, step_index: usize, report: &StepReport);
}

/// What to run a pipeline for.
#[derive(Clone, Default)]
pub struct RunRequest {
    /// Use this run id (the run row already exists) instead of a fresh one.
    pub run_id: Option<String>,
    pub org_slug: Option<String>,
    /// Extra variables (override spec variables of the same name).
    pub variables: BTreeMap<String, String>,
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Days to run, in order: the whole step DAG runs once per day with `{date}` set to it
    /// (and `{start_date}`/`{end_date}` to the range). Empty: one pass with the variables as given.
    pub dates: Vec<NaiveDate>,
    pub observer: Option<Arc<dyn RunObserver>>,
}

impl std::fmt::Debug for RunRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunRequest")
            .field("org_slug", &self.org_slug)
            .field("dates", &self.dates)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Completed,
    Failed,
    Timeout,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Timeout => "TIMEOUT",
            RunStatus::Cancelled => "CANCELLED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    Completed,
    Failed,
    Timeout,
    Skipped,
    Cancelled,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Completed => "COMPLETED",
            StepStatus::Failed => "FAILED",
            StepStatus::Timeout => "TIMEOUT",
            StepStatus::Skipped => "SKIPPED",
            StepStatus::Cancelled => "CANCELLED",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step_id: String,
    pub ps_type: String,
    /// The day this pass ran for (date-range runs).
    pub date: Option<NaiveDate>,
    pub status: StepStatus,
    pub attempts: u32,
    pub rows_processed: u64,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub output: serde_json::Value,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub pipeline_id: String,
    pub status: RunStatus,
    pub duration_ms: u64,
    pub steps: Vec<StepReport>,
    pub error: Option<String>,
}

impl RunReport {
    pub fn step(&self, step_id: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.step_id == step_id)
    }
}

/// Runs pipelines.
#[derive(Clone)]
pub struct Executor {
    registry: Arc<Registry>,
    services: Services,
    /// Base delay of the retry backoff (doubling per attempt, plus up to 50% jitter).
    retry_base: Duration,
}

impl Executor {
    pub fn new(registry: Arc<Registry>, services: Services) -> Self {
        Executor {
            registry,
            services,
            retry_base: Duration::from_millis(500),
        }
    }

    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.retry_base = base;
        self
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs `spec` to the end (or its timeout / cancellation) and reports every step.
    pub async fn run(&self, spec: &PipelineSpec, request: RunRequest, cancel: CancellationToken) -> RunReport {
        let run_id = request
            .run_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let span = tracing::info_span!("pipeline_run", run_id = %run_id, pipeline_id = %spec.pipeline_id,
            org_slug = request.org_slug.as_deref().unwrap_or("-"));
        let started = Instant::now();
        metrics::counter!("pipeline_runs_started_total", "pipeline" => spec.pipeline_id.clone()).increment(1);
        let limit = Duration::from_secs(u64::from(spec.timeout_minutes) * 60);
        let run_cancel = cancel.child_token();
        let steps = tokio::sync::Mutex::new(Vec::new());
        let outcome = tokio::time::timeout(limit, self.run_days(spec, &request, &run_id, &run_cancel, &steps))
            .instrument(span.clone())
            .await;
        let (status, error) = match outcome {
            Ok(result) => result,
            Err(_) => {
                // Only this run's token: other runs never notice.
                run_cancel.cancel();
                (
                    RunStatus::Timeout,
                    Some(format!("TIMEOUT: pipeline exceeded {} minutes", spec.timeout_minutes)),
                )
            }
        };
        let mut steps = steps.into_inner();
        steps.extend(
            self.notify(spec, &request, &run_id, status, error.as_deref())
                .instrument(span.clone())
                .await,
        );
        let report = RunReport {
            run_id,
            pipeline_id: spec.pipeline_id.clone(),
            status,
            duration_ms: started.elapsed().as_millis() as u64,
            steps,
            error,
        };
        span.in_scope(|| info!(status = ?report.status, duration_ms = report.duration_ms, "pipeline run finished"));
        let status_label = format!("{:?}", report.status).to_ascii_uppercase();
        metrics::counter!("pipeline_runs_finished_total", "pipeline" => spec.pipeline_id.clone(),
            "status" => status_label.clone())
        .increment(1);
        metrics::histogram!("pipeline_run_duration_seconds", "pipeline" => spec.pipeline_id.clone(),
            "status" => status_label)
        .record(started.elapsed().as_secs_f64());
        report
    }

    /// Runs the notification steps the outcome triggers. Their failures are reported as
    /// step reports (and logged) but never change the run's status.
    async fn notify(
        &self,
        spec: &PipelineSpec,
        request: &RunRequest,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
    ) -> Vec<StepReport> {
        let n = &spec.notifications;
        let triggered: Vec<(&str, &crate::spec::NotificationSpec)> = n
            .always
            .iter()
            .map(|x| ("always", x))
            .chain(
                n.on_success
                    .iter()
                    .filter(|_| status == RunStatus::Completed)
                    .map(|x| ("on_success", x)),
            )
            .chain(
                n.on_failure
                    .iter()
                    .filter(|_| status != RunStatus::Completed)
                    .map(|x| ("on_failure", x)),
            )
            .collect();
        let mut reports = Vec::new();
        if triggered.is_empty() {
            return reports;
        }
        let mut vars: BTreeMap<String, String> = spec.variable_values();
        vars.extend(request.variables.clone());
        vars.insert("run_id".into(), run_id.to_string());
        vars.insert("pipeline_id".into(), spec.pipeline_id.clone());
        vars.insert(
            "env".into(),
            self.services.settings.environment.dataset_suffix().to_string(),
        );
        vars.insert("run_status".into(), status.as_str().to_string());
        vars.insert("run_error".into(), error.unwrap_or("").to_string());
        if let Some(org) = &request.org_slug {
            vars.insert("org_slug".into(), org.clone());
            // An org's run works in its own dataset, whatever a spec or request says.
            vars.insert("dataset".into(), self.services.settings.org_dataset(org));
        }
        if let (Some(first), Some(last)) = (request.dates.first(), request.dates.last()) {
            vars.insert("start_date".into(), first.to_string());
            vars.insert("end_date".into(), last.to_string());
            vars.insert("date".into(), last.to_string());
        }
        for (i, (trigger, note)) in triggered.into_iter().enumerate() {
            let started_at = Utc::now();
            let clock = Instant::now();
            let ctx = StepContext::new(
                self.services.clone(),
                request.org_slug.clone(),
                run_id.to_string(),
                spec.pipeline_id.clone(),
                format!("notify_{trigger}_{i}"),
                vars.clone(),
                request.params.clone(),
                CancellationToken::new(),
            );
            let outcome = match variables::substitute(&note.config, &vars) {
                Err(e) => Err(e),
                Ok(config) => match self.registry.build(&note.ps_type, &config) {
                    Err(e) => Err(e),
                    Ok(p) => match tokio::time::timeout(
                        Duration::from_secs(60),
                        AssertUnwindSafe(p.run(&ctx)).catch_unwind(),
                    )
                    .await
                    {
                        Err(_) => Err("notification timed out after 60 s".to_string()),
                        Ok(Err(panic)) => Err(format!("notification panicked: {}", panic_message(&panic))),
                        Ok(Ok(r)) => r.map(|o| o.output).map_err(|e| e.to_string()),
                    },
                },
            };
            if let Err(e) = &outcome {
                warn!(trigger, ps_type = %note.ps_type, error = %e, "notification failed; the run's status is unchanged");
            }
            let report = StepReport {
                step_id: format!("notify_{trigger}_{i}"),
                ps_type: note.ps_type.clone(),
                date: None,
                status: if outcome.is_ok() {
                    StepStatus::Completed
                } else {
                    StepStatus::Failed
                },
                attempts: 1,
                rows_processed: 0,
                started_at,
                duration_ms: clock.elapsed().as_millis() as u64,
                output: outcome.as_ref().cloned().unwrap_or(serde_json::Value::Null),
                error: outcome.err(),
            };
            if let Some(o) = &request.observer {
                o.step_finished(run_id, spec.steps.len() + i, &report).await;
            }
            reports.push(report);
        }
        reports
    }

    async fn run_days(
        &self,
        spec: &PipelineSpec,
        request: &RunRequest,
        run_id: &str,
        cancel: &CancellationToken,
        reports: &tokio::sync::Mutex<Vec<StepReport>>,
    ) -> (RunStatus, Option<String>) {
        let mut vars: BTreeMap<String, String> = spec.variable_values();
        vars.extend(request.variables.clone());
        vars.insert("run_id".to_string(), run_id.to_string());
        vars.insert("pipeline_id".to_string(), spec.pipeline_id.clone());
        vars.insert(
            "env".to_string(),
            self.services.settings.environment.dataset_suffix().to_string(),
        );
        if let Some(org) = &request.org_slug {
            vars.insert("org_slug".to_string(), org.clone());
            // An org's run works in its own dataset, whatever a spec or request says.
            vars.insert("dataset".to_string(), self.services.settings.org_dataset(org));
        }
        if let (Some(first), Some(last)) = (request.dates.first(), request.dates.last()) {
            vars.insert("start_date".to_string(), first.to_string());
            vars.insert("end_date".to_string(), last.to_string());
        }
        let days: Vec<Option<NaiveDate>> = if request.dates.is_empty() {
            vec![None]
        } else {
            request.dates.iter().copied().map(Some).collect()
        };
        // Resolve every step's config for every day before running any: an unresolved
        // placeholder fails the run with nothing done.
        let mut passes = Vec::with_capacity(days.len());
        for day in &days {
            let mut day_vars = vars.clone();
            if let Some(d) = day {
                day_vars.insert("date".to_string(), d.to_string());
            }
            let mut configs = Vec::with_capacity(spec.steps.len());
            for step in &spec.steps {
                match variables::substitute(&step.config, &day_vars) {
                    Ok(c) => configs.push(c),
                    Err(e) => return (RunStatus::Failed, Some(format!("step {}: {e}", step.step_id))),
                }
            }
            passes.push((*day, day_vars, configs));
        }
        for (day, day_vars, configs) in passes {
            let (status, error) = self
                .run_dag(spec, &configs, request, &day_vars, day, run_id, cancel, reports)
                .await;
            if status != RunStatus::Completed {
                let error = match (day, error) {
                    (Some(d), Some(e)) => Some(format!("{d}: {e}")),
                    (_, e) => e,
                };
                return (status, error);
            }
        }
        (RunStatus::Completed, None)
    }

    /// One pass over the step DAG: every step whose dependencies completed starts at once;
    /// a failed step (after its retries) skips its dependents, and with `on_failure: stop`
    /// nothing new starts after it.
    #[allow(clippy::too_many_arguments)]
    async fn run_dag(
        &self,
        spec: &PipelineSpec,
        configs: &[serde_json::Value],
        request: &RunRequest,
        vars: &BTreeMap<String, String>,
        day: Option<NaiveDate>,
        run_id: &str,
        cancel: &CancellationToken,
        reports: &tokio::sync::Mutex<Vec<StepReport>>,
    ) -> (RunStatus, Option<String>) {
        let n = spec.steps.len();
        let index: HashMap<&str, usize> = spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.step_id.as_str(), i))
            .collect();
        let mut state: Vec<Option<StepStatus>> = vec![None; n];
        let mut launched = vec![false; n];
        let mut stop = false;
        let mut first_error: Option<String> = None;
        let mut running = FuturesUnordered::new();
        loop {
            // Settle steps that can no longer run, start the ones that can.
            let mut progressed = true;
            while progressed {
                progressed = false;
                for i in 0..n {
                    if launched[i] {
                        continue;
                    }
                    let step = &spec.steps[i];
                    let deps: Vec<Option<StepStatus>> = step
                        .depends_on
                        .iter()
                        .filter_map(|d| index.get(d.as_str()))
                        .map(|&j| state[j])
                        .collect();
                    let blocked = deps.iter().any(|d| matches!(d, Some(s) if *s != StepStatus::Completed));
                    let ready = deps.iter().all(|d| *d == Some(StepStatus::Completed));
                    if blocked || ((stop || cancel.is_cancelled()) && ready) {
                        let status = if cancel.is_cancelled() {
                            StepStatus::Cancelled
                        } else {
                            StepStatus::Skipped
                        };
                        launched[i] = true;
                        state[i] = Some(status);
                        progressed = true;
                        let report = StepReport {
                            step_id: step.step_id.clone(),
                            ps_type: step.ps_type.clone(),
                            date: day,
                            status,
                            attempts: 0,
                            rows_processed: 0,
                            started_at: Utc::now(),
                            duration_ms: 0,
                            output: serde_json::Value::Null,
                            error: None,
                        };
                        if let Some(o) = &request.observer {
                            o.step_finished(run_id, i, &report).await;
                        }
                        reports.lock().await.push(report);
                    } else if ready {
                        launched[i] = true;
                        progressed = true;
                        let fut = self.run_step(spec, i, &configs[i], request, vars, day, run_id, cancel);
                        running.push(async move { (i, fut.await) });
                    }
                }
            }
            let Some((i, report)) = running.next().await else { break };
            let step = &spec.steps[i];
            state[i] = Some(report.status);
            if report.status != StepStatus::Completed {
                if first_error.is_none() {
                    first_error = Some(format!(
                        "step {} failed: {}",
                        step.step_id,
                        report.error.clone().unwrap_or_default()
                    ));
                }
                if step.on_failure == OnFailure::Stop {
                    stop = true;
                }
            }
            if let Some(o) = &request.observer {
                o.step_finished(run_id, i, &report).await;
            }
            reports.lock().await.push(report);
        }
        if cancel.is_cancelled() {
            (RunStatus::Cancelled, Some("run was cancelled".to_string()))
        } else if let Some(e) = first_error {
            (RunStatus::Failed, Some(e))
        } else {
            (RunStatus::Completed, None)
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &self,
        spec: &PipelineSpec,
        index: usize,
        config: &serde_json::Value,
        request: &RunRequest,
        vars: &BTreeMap<String, String>,
        day: Option<NaiveDate>,
        run_id: &str,
        cancel: &CancellationToken,
    ) -> StepReport {
        let step = &spec.steps[index];
        let span = tracing::info_span!("pipeline_step", step_id = %step.step_id, ps_type = %step.ps_type);
        let started_at = Utc::now();
        let started = Instant::now();
        let timeout = Duration::from_secs(u64::from(step.timeout_minutes.unwrap_or(spec.timeout_minutes)) * 60);
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let ctx = StepContext::new(
                self.services.clone(),
                request.org_slug.clone(),
                run_id.to_string(),
                spec.pipeline_id.clone(),
                step.step_id.clone(),
                vars.clone(),
                request.params.clone(),
                cancel.child_token(),
            );
            let attempt = async {
                let processor = self
                    .registry
                    .build(&step.ps_type, config)
                    .map_err(|e| StepFailure::Error(ProcessorError::Invalid(e)))?;
                let run = AssertUnwindSafe(processor.run(&ctx)).catch_unwind();
                tokio::select! {
                    r = tokio::time::timeout(timeout, run) => match r {
                        Err(_) => Err(StepFailure::Timeout),
                        Ok(Err(panic)) => Err(StepFailure::Error(ProcessorError::Failed(format!(
                            "processor panicked: {}", panic_message(&panic))))),
                        Ok(Ok(r)) => r.map_err(StepFailure::Error),
                    },
                    _ = cancel.cancelled() => Err(StepFailure::Error(ProcessorError::Cancelled)),
                }
            }
            .instrument(span.clone())
            .await;
            let rows = ctx.rows();
            match attempt {
                Ok(mut out) => {
                    out.rows_processed = out.rows_processed.max(rows);
                    break Ok(out);
                }
                Err(StepFailure::Error(e)) if e.retryable() && attempts <= step.retries => {
                    let delay = backoff(self.retry_base, attempts);
                    span.in_scope(|| warn!(attempt = attempts, error = %e, delay_ms = delay.as_millis() as u64, "step failed; retrying"));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => break Err(StepFailure::Error(ProcessorError::Cancelled)),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let (status, rows, output, error) = match result {
            Ok(out) => (StepStatus::Completed, out.rows_processed, out.output, None),
            Err(StepFailure::Timeout) => (
                StepStatus::Timeout,
                0,
                serde_json::Value::Null,
                Some(format!("TIMEOUT: step exceeded {} minutes", timeout.as_secs() / 60)),
            ),
            Err(StepFailure::Error(ProcessorError::Cancelled)) => (
                StepStatus::Cancelled,
                0,
                serde_json::Value::Null,
                Some("cancelled".to_string()),
            ),
            Err(StepFailure::Error(e)) => (StepStatus::Failed, 0, serde_json::Value::Null, Some(e.to_string())),
        };
        span.in_scope(|| info!(status = ?status, rows, duration_ms, attempts, "step finished"));
        metrics::histogram!("pipeline_step_duration_seconds", "step_type" => step.ps_type.clone(),
            "status" => format!("{status:?}").to_ascii_uppercase())
        .record(started.elapsed().as_secs_f64());
        StepReport {
            step_id: step.step_id.clone(),
            ps_type: step.ps_type.clone(),
            date: day,
            status,
            attempts,
            rows_processed: rows,
            started_at,
            duration_ms,
            output,
            error,
        }
    }
}

enum StepFailure {
    Timeout,
    Error(ProcessorError),
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Exponential backoff with up to 50% random jitter.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)).min(64));
    let jitter_ms = (uuid::Uuid::new_v4().as_u128() % 1000) as u64;
    exp + exp.mul_f64(jitter_ms as f64 / 2000.0)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use cloudact_core::{kms::local::LocalKms, settings::Settings, warehouse::embedded::EmbeddedWarehouse};
    use serde::Deserialize;

    use super::*;
    use crate::registry::{Processor, ProcessorDef, StepOutput};

    static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);
    static BARRIER: std::sync::LazyLock<tokio::sync::Barrier> =
        std::sync::LazyLock::new(|| tokio::sync::Barrier::new(2));

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TestConfig {
        #[serde(default)]
        mode: String,
        #[serde(default)]
        echo: String,
    }

    struct TestProcessor(TestConfig);

    impl ProcessorDef for TestProcessor {
        const PS_TYPE: &'static str = "test.behave";
        type Config = TestConfig;
        fn build(config: TestConfig) -> Result<Self, String> {
            Ok(TestProcessor(config))
        }
    }

    #[async_trait]
    impl Processor for TestProcessor {
        async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
            match self.0.mode.as_str() {
                "panic" => panic!("boom in processor"),
                "fail" => Err(ProcessorError::Failed("deliberate failure".into())),
                "flaky" => {
                    if FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(ProcessorError::Transient("try again".into()))
                    } else {
                        Ok(StepOutput {
                            rows_processed: 3,
                            output: serde_json::json!("recovered"),
                        })
                    }
                }
                "barrier" => {
                    // Both barrier steps must be running at the same time to pass.
                    tokio::time::timeout(Duration::from_secs(10), BARRIER.wait())
                        .await
                        .map_err(|_| ProcessorError::Failed("the other step never ran concurrently".into()))?;
                    Ok(StepOutput::default())
                }
                "sleep" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(StepOutput::default())
                }
                _ => {
                    ctx.add_rows(1);
                    Ok(StepOutput {
                        rows_processed: 0,
                        output: serde_json::json!(self.0.echo),
                    })
                }
            }
        }
    }

    fn executor() -> (tempfile::TempDir, Executor) {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        registry.register::<TestProcessor>();
        let mut env = std::collections::HashMap::new();
        env.insert("DATA_DIR".to_string(), dir.path().display().to_string());
        let services = Services {
            warehouse: Arc::new(EmbeddedWarehouse::open(dir.path()).unwrap()),
            kms: Arc::new(LocalKms::open(dir.path()).unwrap()),
            settings: Arc::new(Settings::from_map(&env, 8001).unwrap()),
            http: reqwest::Client::new(),
            providers: Arc::new(cloudact_core::config::ProviderRegistry { providers: vec![] }),
        };
        (
            dir,
            Executor::new(Arc::new(registry), services).with_retry_base(Duration::from_millis(1)),
        )
    }

    fn spec(yaml: &str) -> PipelineSpec {
        PipelineSpec::from_yaml(yaml).unwrap()
    }

    #[tokio::test]
    async fn variables_are_substituted_and_steps_run_in_order() {
        let (_d, ex) = executor();
        let s = spec(
            "pipeline_id: p\nvariables: {greeting: hi}\nsteps:\n  - {step_id: b, ps_type: test.behave, depends_on: [a], config: {echo: '{greeting} {org_slug} {dataset}'}}\n  - {step_id: a, ps_type: test.behave, config: {echo: '{date}'}}\n",
        );
        let mut req = RunRequest {
            org_slug: Some("acme".into()),
            ..Default::default()
        };
        req.variables.insert("date".into(), "2026-01-02".into());
        let r = ex.run(&s, req, CancellationToken::new()).await;
        assert_eq!(r.status, RunStatus::Completed, "{r:?}");
        assert_eq!(r.steps[0].step_id, "a");
        assert_eq!(r.step("a").unwrap().output, serde_json::json!("2026-01-02"));
        assert_eq!(r.step("b").unwrap().output, serde_json::json!("hi acme acme_local"));
        assert_eq!(r.step("b").unwrap().rows_processed, 1);
    }

    #[tokio::test]
    async fn an_org_run_always_works_in_its_own_dataset() {
        let (_d, ex) = executor();
        let s = spec(
            "pipeline_id: p\nvariables: {dataset: globex_local}\nsteps:\n  - {step_id: a, ps_type: test.behave, config: {echo: '{dataset}'}}\n",
        );
        let mut req = RunRequest {
            org_slug: Some("acme".into()),
            ..Default::default()
        };
        req.variables.insert("dataset".into(), "other_local".into());
        let r = ex.run(&s, req, CancellationToken::new()).await;
        assert_eq!(
            r.step("a").unwrap().output,
            serde_json::json!("acme_local"),
            "neither the spec nor the request moves it"
        );
    }

    #[tokio::test]
    async fn unresolved_placeholder_fails_before_any_step() {
        let (_d, ex) = executor();
        let s = spec("pipeline_id: p\nsteps:\n  - {step_id: a, ps_type: test.behave}\n  - {step_id: b, ps_type: test.behave, config: {echo: '{start_date}'}}\n");
        let r = ex.run(&s, RunRequest::default(), CancellationToken::new()).await;
        assert_eq!(r.status, RunStatus::Failed);
        assert!(r.steps.is_empty(), "no step ran");
        assert!(r.error.unwrap().contains("{start_date}"));
    }

    #[tokio::test]
    async fn a_panic_is_a_step_failure_and_stop_skips_the_rest() {
        let (_d, ex) = executor();
        let s = spec("pipeline_id: p\nsteps:\n  - {step_id: a, ps_type: test.behave, config: {mode: panic}}\n  - {step_id: b, ps_type: test.behave, depends_on: [a]}\n");
        let r = ex.run(&s, RunRequest::default(), CancellationToken::new()).await;
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.step("a").unwrap().status, StepStatus::Failed);
        assert!(r
            .step("a")
            .unwrap()
            .error
            .as_deref()
            .unwrap()
            .contains("boom in processor"));
        assert_eq!(r.step("b").unwrap().status, StepStatus::Skipped);
    }

    #[tokio::test]
    async fn continue_runs_independent_steps_and_skips_dependents() {
        let (_d, ex) = executor();
        let s = spec("pipeline_id: p\nsteps:\n  - {step_id: a, ps_type: test.behave, on_failure: continue, config: {mode: fail}}\n  - {step_id: b, ps_type: test.behave, depends_on: [a]}\n  - {step_id: c, ps_type: test.behave}\n");
        let r = ex.run(&s, RunRequest::default(), CancellationToken::new()).await;
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.step("b").unwrap().status, StepStatus::Skipped);
        assert_eq!(r.step("c").unwrap().status, StepStatus::Completed);
    }

    #[tokio::test]
    async fn independent_steps_run_concurrently_and_dependents_wait() {
        let (_d, ex) = executor();
        let s = spec("pipeline_id: p\nsteps:\n  - {step_id: left, ps_type: test.behave, config: {mode: barrier}}\n  - {step_id: right, ps_type: test.behave, config: {mode: barrier}}\n  - {step_id: join, ps_type: test.behave, depends_on: [left, right], config: {echo: done}}\n");
        let r = ex.run(&s, RunRequest::default(), CancellationToken::new()).await;
        assert_eq!(r.status, RunStatus::Completed, "{r:?}");
        assert_eq!(r.steps.last().unwrap().step_id, "join", "the dependent step ran last");
    }

    #[tokio::test]
    async fn a_date_range_runs_the_dag_once_per_day() {
        let (_d, ex) = executor();
        let s = spec("pipeline_id: p\nsteps:\n  - {step_id: a, ps_type: test.behave, config: {echo: '{date} in {start_date}..{end_date}'}}\n");
        let dates: Vec<chrono::NaiveDate> = ["2026-01-30", "2026-01-31", "2026-02-01"]
            .iter()
            .map(|d| d.parse().unwrap())
            .collect();
        let r = ex
            .run(
                &s,
                RunRequest {
                    dates,
                    ..Default::default()
                },
                CancellationToken::new(),
            )
            .await;
        assert_eq!(r.status, RunStatus::Completed);
        let outputs: Vec<_> = r.steps.iter().map(|s| s.output.as_str().unwrap().to_string()).collect();
        assert_eq!(
            outputs,
            vec![
                "2026-01-30 in 2026-01-30..2026-02-01",
                "2026-01-31 in 2026-01-30..2026-02-01",
                "2026-02-01 in 2026-01-30..2026-02-01",
            ]
        );
    }

    #[tokio::test]
    async fn a_step_timeout_fails_only_that_run() {
        let (_d, ex) = executor();
        let mut s = spec("pipeline_id: p\nsteps:\n  - {step_id: a, ps_type: test.behave, config: {mode: sleep}}\n");
        s.timeout_minutes = 1;
        tokio::time::pause();
        let r = ex.run(&s, RunRequest::default(), CancellationToken::new()).await;
        assert!(matches!(r.status, RunStatus::Timeout | RunStatus::Failed), "{r:?}");
    }

    #[tokio::test]
    async fn notifications_follow_the_outcome_and_never_fail_the_run() {
        let (_d, ex) = executor();
        let yaml = "pipeline_id: p\nsteps:\n  - {step_id: a, ps_type: test.behave, config: {mode: MODE}}\nnotifications:\n  on_failure: [{ps_type: test.behave, config: {echo: 'failed: {run_status}'}}]\n  on_success: [{ps_type: test.behave, config: {mode: fail}}]\n  always: [{ps_type: test.behave, config: {echo: '{run_status} {pipeline_id}'}}]\n";
        let ok = ex
            .run(
                &spec(&yaml.replace("MODE", "ok")),
                RunRequest::default(),
                CancellationToken::new(),
            )
            .await;
        assert_eq!(
            ok.status,
            RunStatus::Completed,
            "a failed on_success notification does not fail the run"
        );
        let notes: Vec<_> = ok.steps.iter().filter(|s| s.step_id.starts_with("notify_")).collect();
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].output, serde_json::json!("COMPLETED p"));
        assert_eq!(notes[1].status, StepStatus::Failed);
        let bad = ex
            .run(
                &spec(&yaml.replace("MODE", "fail")),
                RunRequest::default(),
                CancellationToken::new(),
            )
            .await;
        assert_eq!(bad.status, RunStatus::Failed);
        let outputs: Vec<_> = bad
            .steps
            .iter()
            .filter(|s| s.step_id.starts_with("notify_"))
            .map(|s| s.output.clone())
            .collect();
        assert_eq!(
            outputs,
            vec![serde_json::json!("FAILED p"), serde_json::json!("failed: FAILED")]
        );
    }

    #[tokio::test]
    async fn transient_failures_are_retried() {
        let (_d, ex) = executor();
        let s =
            spec("pipeline_id: p\nsteps:\n  - {step_id: a, ps_type: test.behave, retries: 3, config: {mode: flaky}}\n");
        let r = ex.run(&s, RunRequest::default(), CancellationToken::new()).await;
        assert_eq!(r.status, RunStatus::Completed, "{r:?}");
        assert_eq!(r.step("a").unwrap().attempts, 3);
        assert_eq!(r.step("a").unwrap().rows_processed, 3);
    }

    #[tokio::test]
    async fn cancelling_one_run_leaves_another_running() {
        let (_d, ex) = executor();
        let slow = spec("pipeline_id: p\nsteps:\n  - {step_id: a, ps_type: test.behave, config: {mode: sleep}}\n");
        let quick = spec("pipeline_id: q\nsteps:\n  - {step_id: a, ps_type: test.behave}\n");
        let cancel = CancellationToken::new();
        let (ex2, slow2, c2) = (ex.clone(), slow.clone(), cancel.clone());
        let handle = tokio::spawn(async move { ex2.run(&slow2, RunRequest::default(), c2).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        let r = handle.await.unwrap();
        assert_eq!(r.status, RunStatus::Cancelled);
        assert_eq!(r.step("a").unwrap().status, StepStatus::Cancelled);
        let other = ex.run(&quick, RunRequest::default(), CancellationToken::new()).await;
        assert_eq!(other.status, RunStatus::Completed);
    }
}
