//! The scheduler end to end: the real pipeline-service binary killed with SIGKILL in the
//! middle of processing and restarted on the same DATA_DIR; the Pub/Sub fan-out with Google's
//! own emulator and two consumer processes; the whole trigger → process → settle cycle on
//! the BigQuery emulator.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use cloudact_core::{
    auth::{generate_org_api_key, hash_key, key_fingerprint},
    clock::{Clock, ManualClock, SystemClock},
    meta::{NewApiKey, NewOrg, Plan, SubscriptionStatus, CENTRAL_DATASET},
    warehouse::Params,
};
use cloudact_e2e::{BigQueryEmulator, PubSubEmulator, Service, ROOT_KEY};
use cloudact_pipeline::{scheduler::ScheduleRule, CancellationToken, RunRequest, RunStatus};
use cloudact_web::AppContext;
use reqwest::{Client, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

/// A context of our own on the services' DATA_DIR (or warehouse): bootstraps and makes orgs
/// the way bootstrap and onboarding do, and reads the tables the services write.
async fn context(dir: &std::path::Path, extra: &[(&str, String)], clock: Arc<dyn Clock>) -> Arc<AppContext> {
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    cloudact_e2e::inproc::bootstrapped_context(dir, clock, &extra).await
}

/// An ENTERPRISE org (quotas out of the way) with its dataset, and one schedule of
/// `pipeline` whose next run is `days_due` daily occurrences in the past.
async fn org_with_due_schedule(ctx: &Arc<AppContext>, slug: &str, pipeline: &str, days_due: i64, parameters: Value) {
    let key = generate_org_api_key(slug);
    let now = ctx.clock.now();
    let new_org = NewOrg {
        org_slug: slug.into(),
        company_name: "Co".into(),
        admin_email: "ops@co.example".into(),
        org_dataset_id: ctx.settings.org_dataset(slug),
        plan: Plan::Enterprise,
        status: SubscriptionStatus::Active,
        trial_end_date: None,
        key: NewApiKey {
            org_api_key_id: uuid_like(slug),
            hash: hash_key(key.expose_secret()),
            ciphertext: ctx
                .kms
                .encrypt(key.expose_secret().as_bytes(), slug.as_bytes())
                .await
                .unwrap(),
            fingerprint: key_fingerprint(key.expose_secret()),
        },
        idempotency: None,
    };
    ctx.store.create_org(&new_org, now).await.unwrap();
    ctx.store.activate_org(slug, now).await.unwrap();
    let spec = ctx
        .catalog
        .require("setup/organizations/onboarding/pipeline.yml")
        .unwrap();
    let mut req = RunRequest {
        org_slug: Some(slug.into()),
        ..Default::default()
    };
    req.variables.insert("dataset".into(), ctx.settings.org_dataset(slug));
    assert_eq!(
        ctx.executor.run(&spec, req, CancellationToken::new()).await.status,
        RunStatus::Completed
    );
    let entry = ctx.catalog.by_path(pipeline).unwrap();
    let rule = ScheduleRule::parse("daily", "UTC").unwrap();
    let mut config = ctx
        .scheduler
        .new_schedule(slug, &entry, &rule, "UTC", parameters, true, 5, "USER");
    config.next_run_time = rule.next_after(now - chrono::Duration::days(days_due));
    ctx.store.insert_schedule(&config).await.unwrap();
}

fn uuid_like(slug: &str) -> String {
    format!("key-{slug}")
}

async fn root(client: &Client, svc: &Service, path: &str) -> (StatusCode, Value) {
    let resp = client
        .post(svc.url(path))
        .header("X-CA-Root-Key", ROOT_KEY)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn count(ctx: &AppContext, sql: &str, params: Params) -> i64 {
    ctx.warehouse.query(CENTRAL_DATASET, sql, &params).await.unwrap()[0]
        .int("n")
        .unwrap()
}

fn service_env(extra: &[(&'static str, String)]) -> HashMap<&'static str, String> {
    let mut env: HashMap<&'static str, String> = [
        ("SCHEDULER", "external".to_string()),
        ("SCHEDULER_JITTER_SECONDS", "0".to_string()),
        ("SCHEDULER_CLAIM_LEASE_SECONDS", "5".to_string()),
        ("SCHEDULER_RETRY_BASE_SECONDS", "1".to_string()),
        ("RUN_HEARTBEAT_SECONDS", "1".to_string()),
        ("RUN_STALE_SECONDS", "3".to_string()),
        ("LOG_FORMAT", "json".to_string()),
    ]
    .into_iter()
    .collect();
    env.extend(extra.iter().cloned());
    env
}

/// Per occurrence: its state and the number of COMPLETED scheduler runs of its org and day.
async fn occurrences(ctx: &AppContext) -> Vec<(String, String, String, i64)> {
    let rows = ctx
        .warehouse
        .query(
            CENTRAL_DATASET,
            "SELECT s.run_id, s.org_slug, s.state, s.run_date, (SELECT COUNT(*) FROM {{org_meta_pipeline_runs}} r \
             WHERE r.org_slug = s.org_slug AND r.run_date = s.run_date AND r.trigger_type = 'scheduler' \
             AND r.status = 'COMPLETED') AS completed_runs FROM {{org_scheduled_pipeline_runs}} s ORDER BY s.run_id",
            &Params::new(),
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.string("org_slug").unwrap(),
                r.date("run_date").unwrap().to_string(),
                r.string("state").unwrap(),
                r.int("completed_runs").unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn sigkill_during_processing_then_restart_runs_every_occurrence_once() {
    crash_and_recover(None).await;
}

/// The same crash with the Pub/Sub queue: one of two consumers is killed mid-flight; the
/// other keeps consuming, the killed one restarts, and the result is the same.
#[tokio::test]
async fn sigkill_of_a_pubsub_consumer_loses_and_duplicates_nothing() {
    let emu = PubSubEmulator::start();
    crash_and_recover(Some(&emu)).await;
}

fn pubsub_settings(emu: &PubSubEmulator) -> Vec<(&'static str, String)> {
    vec![
        ("SCHEDULER_QUEUE", "pubsub".to_string()),
        ("PUBSUB_EMULATOR_HOST", emu.host.clone()),
        ("PUBSUB_PROJECT_ID", emu.project.clone()),
        ("PUBSUB_TOPIC", "cloudact-test-runs".to_string()),
        ("PUBSUB_SUBSCRIPTION", "cloudact-test-workers".to_string()),
    ]
}

async fn crash_and_recover(emu: Option<&PubSubEmulator>) {
    let dir = tempfile::tempdir().unwrap();
    let queue_env = emu.map(pubsub_settings).unwrap_or_default();
    let ctx = context(dir.path(), &queue_env, Arc::new(SystemClock)).await;
    const ORGS: usize = 12;
    for i in 0..ORGS {
        // Three missed days each; every run pauses 1.5 s, so the kill lands mid-flight.
        org_with_due_schedule(
            &ctx,
            &format!("crash_{i:02}"),
            "example/synthetic_usage.yml",
            3,
            json!({"pause_ms": 1500}),
        )
        .await;
    }
    let mut settings = queue_env.clone();
    settings.push(("MAX_CONCURRENT_RUNS", "4".to_string()));
    let env = service_env(&settings);
    let client = Client::new();
    let first = Service::start("pipeline-service", dir.path(), &env);
    // With Pub/Sub a second consumer runs beside the one that is killed.
    let survivor = emu.map(|_| Service::start("pipeline-service", dir.path(), &env));
    let (s, t) = root(&client, &first, "/api/v1/scheduler/trigger").await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["queued_count"], (ORGS * 3) as i64, "{t}");
    let url = first.url("/api/v1/scheduler/queue/process");
    let c2 = client.clone();
    let processing = tokio::spawn(async move { c2.post(url).header("X-CA-Root-Key", ROOT_KEY).send().await });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first.kill9();
    let _ = processing.await;
    let running_at_kill = count(
        &ctx,
        "SELECT COUNT(*) AS n FROM {{org_meta_pipeline_runs}} WHERE status IN ('PENDING', 'RUNNING')",
        Params::new(),
    )
    .await;
    let done_at_kill = count(
        &ctx,
        "SELECT COUNT(*) AS n FROM {{org_meta_pipeline_runs}} WHERE status = 'COMPLETED'",
        Params::new(),
    )
    .await;
    println!("at the kill: {running_at_kill} runs open, {done_at_kill} completed");
    assert!(running_at_kill > 0, "the kill interrupted runs");

    let second = Service::start("pipeline-service", dir.path(), &env);
    let _survivor = survivor;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, p) = root(&client, &second, "/api/v1/scheduler/queue/process").await;
        assert_eq!(s, StatusCode::OK, "{p}");
        let occ = occurrences(&ctx).await;
        if occ.iter().all(|o| o.2 == "COMPLETED") {
            break;
        }
        assert!(Instant::now() < deadline, "not settled: {occ:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let occ = occurrences(&ctx).await;
    assert_eq!(occ.len(), ORGS * 3);
    for (org, day, state, completed) in &occ {
        assert_eq!(
            (state.as_str(), *completed),
            ("COMPLETED", 1),
            "{org} {day}: exactly one completed run"
        );
    }
    let open = count(
        &ctx,
        "SELECT COUNT(*) AS n FROM {{org_meta_pipeline_runs}} WHERE status IN ('PENDING', 'RUNNING')",
        Params::new(),
    )
    .await;
    assert_eq!(open, 0, "nothing left RUNNING after the sweep");
    let swept = count(
        &ctx,
        "SELECT COUNT(*) AS n FROM {{org_meta_pipeline_runs}} WHERE status = 'FAILED' AND error_message LIKE '%stopped%'",
        Params::new(),
    )
    .await;
    assert!(swept >= 1, "the interrupted runs were swept, then retried");
    let slots = count(
        &ctx,
        "SELECT COALESCE(SUM(concurrent_pipelines_running), 0) AS n FROM {{org_usage_quotas}}",
        Params::new(),
    )
    .await;
    assert_eq!(slots, 0, "every quota slot released");
    // The data: each day loaded once, exactly as a clean run loads it.
    let clean = tempfile::tempdir().unwrap();
    let reference = context(clean.path(), &[], Arc::new(SystemClock)).await;
    org_with_due_schedule(&reference, "crash_00", "example/synthetic_usage.yml", 3, json!({})).await;
    for (org, day, _, _) in occ.iter().filter(|o| o.0 == "crash_00") {
        let spec = reference.catalog.require("example/synthetic_usage.yml").unwrap();
        let mut req = RunRequest {
            org_slug: Some(org.clone()),
            dates: vec![day.parse().unwrap()],
            ..Default::default()
        };
        req.variables
            .insert("dataset".into(), reference.settings.org_dataset(org));
        assert_eq!(
            reference
                .executor
                .run(&spec, req, CancellationToken::new())
                .await
                .status,
            RunStatus::Completed
        );
    }
    for i in 0..ORGS {
        let org = format!("crash_{i:02}");
        let rows = ctx
            .warehouse
            .query(
                &ctx.settings.org_dataset(&org),
                "SELECT usage_date, COUNT(*) AS n, COUNT(DISTINCT model_id || '/' || project_id || '/' || pricing_tier) AS k \
                 FROM {{example_usage_daily}} GROUP BY usage_date ORDER BY usage_date",
                &Params::new(),
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 3, "{org}: three days");
        for r in &rows {
            assert_eq!(r.int("n"), r.int("k"), "{org}: no duplicate rows");
        }
        if org == "crash_00" {
            let clean_rows = reference
                .warehouse
                .query(
                    &reference.settings.org_dataset(&org),
                    "SELECT usage_date, COUNT(*) AS n FROM {{example_usage_daily}} GROUP BY usage_date ORDER BY usage_date",
                    &Params::new(),
                )
                .await
                .unwrap();
            let ours: Vec<_> = rows.iter().map(|r| (r.date("usage_date"), r.int("n"))).collect();
            let theirs: Vec<_> = clean_rows.iter().map(|r| (r.date("usage_date"), r.int("n"))).collect();
            assert_eq!(ours, theirs, "row counts per day equal a clean run's");
        }
    }
    second.terminate();
}

#[tokio::test]
async fn pubsub_fan_out_to_two_consumers_runs_each_occurrence_once() {
    let emu = PubSubEmulator::start();
    let dir = tempfile::tempdir().unwrap();
    let pubsub_env = pubsub_settings(&emu);
    let ctx = context(dir.path(), &pubsub_env, Arc::new(SystemClock)).await;
    const ORGS: usize = 20;
    for i in 0..ORGS {
        org_with_due_schedule(&ctx, &format!("fan_{i:02}"), "example/noop.yml", 1, json!({})).await;
    }
    let env = service_env(&pubsub_env);
    let a = Service::start("pipeline-service", dir.path(), &env);
    let b = Service::start("pipeline-service", dir.path(), &env);
    let client = Client::new();
    let (s, t) = root(&client, &a, "/api/v1/scheduler/trigger").await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["queued_count"], ORGS as i64, "{t}");
    assert_eq!(t["published_count"], ORGS as i64, "{t}");
    let (s, again) = root(&client, &b, "/api/v1/scheduler/trigger").await;
    assert_eq!(
        (s, &again["queued_count"], &again["published_count"]),
        (StatusCode::OK, &json!(0), &json!(0))
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !occurrences(&ctx).await.iter().all(|o| o.2 == "COMPLETED") {
        assert!(Instant::now() < deadline, "not settled: {:?}", occurrences(&ctx).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Redeliveries: every message published once more straight to the topic.
    let queue = cloudact_pipeline::scheduler::pubsub::PubSubQueue::connect(&ctx.settings.scheduler)
        .await
        .unwrap();
    let ids: Vec<(String, String)> = ctx
        .warehouse
        .query(
            CENTRAL_DATASET,
            "SELECT run_id, org_slug FROM {{org_scheduled_pipeline_runs}}",
            &Params::new(),
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.string("run_id").unwrap(), r.string("org_slug").unwrap()))
        .collect();
    for (id, org) in &ids {
        queue.publish(id, org).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let occ = occurrences(&ctx).await;
    assert_eq!(occ.len(), ORGS);
    for (org, day, state, completed) in &occ {
        assert_eq!((state.as_str(), *completed), ("COMPLETED", 1), "{org} {day}");
    }
    let runs = count(
        &ctx,
        "SELECT COUNT(*) AS n FROM {{org_meta_pipeline_runs}}",
        Params::new(),
    )
    .await;
    assert_eq!(runs, ORGS as i64, "no redelivery started a second run");
    let runners: HashSet<String> = ctx
        .warehouse
        .query(
            CENTRAL_DATASET,
            "SELECT DISTINCT runner_id FROM {{org_meta_pipeline_runs}}",
            &Params::new(),
        )
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.string("runner_id"))
        .collect();
    println!("runs executed by {} consumer process(es)", runners.len());
    let (_, status) = {
        let resp = client
            .get(a.url("/api/v1/scheduler/status"))
            .header("X-CA-Root-Key", ROOT_KEY)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.json::<Value>().await.unwrap())
    };
    assert_eq!(status["queue_backend"], "pubsub");
    assert_eq!(status["queue_length"], 0, "{status}");
    a.terminate();
    b.terminate();
}

/// Trigger, claim, admission with its link, settle and retry bookkeeping on BigQuery.
#[tokio::test]
async fn the_scheduler_cycle_on_the_bigquery_emulator() {
    let emu = BigQueryEmulator::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let bq = [
        ("WAREHOUSE", "bigquery".to_string()),
        ("GCP_PROJECT_ID", emu.project.clone()),
        ("BIGQUERY_BASE_URL", emu.base_url.clone()),
        ("SCHEDULER_JITTER_SECONDS", "0".to_string()),
    ];
    let ctx = context(dir.path(), &bq, clock.clone()).await;
    for slug in ["bq_one", "bq_two"] {
        org_with_due_schedule(&ctx, slug, "example/noop.yml", 2, json!({})).await;
    }
    let t = ctx.scheduler.trigger(100).await.unwrap();
    assert_eq!(t.queued_count, 4, "two missed days each: {t:?}");
    assert_eq!(ctx.scheduler.trigger(100).await.unwrap().queued_count, 0, "idempotent");
    let p = ctx.scheduler.process(100, Duration::from_secs(60)).await.unwrap();
    assert_eq!(p.started_count, 4, "{p:?}");
    let again = ctx.scheduler.process(100, Duration::from_secs(60)).await.unwrap();
    assert_eq!(again.started_count, 0, "claimed items are gone");
    let deadline = Instant::now() + Duration::from_secs(60);
    // The second process call may already have settled some of them.
    let mut completed = again.settled.completed;
    while completed < 4 {
        if Instant::now() > deadline {
            let runs = ctx
                .warehouse
                .query(
                    CENTRAL_DATASET,
                    "SELECT pipeline_logging_id, status, error_message FROM {{org_meta_pipeline_runs}}",
                    &Params::new(),
                )
                .await
                .unwrap();
            let occ = ctx
                .warehouse
                .query(
                    CENTRAL_DATASET,
                    "SELECT run_id, state, pipeline_logging_id FROM {{org_scheduled_pipeline_runs}}",
                    &Params::new(),
                )
                .await
                .unwrap();
            panic!("runs did not settle on BigQuery: runs {runs:?} occurrences {occ:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        completed += ctx.scheduler.settle_finished().await.unwrap().completed;
    }
    let occ = occurrences(&ctx).await;
    assert_eq!(occ.len(), 4);
    assert!(occ.iter().all(|o| o.2 == "COMPLETED" && o.3 == 1), "{occ:?}");
    let counts = ctx.scheduler.counts().await.unwrap();
    assert_eq!(counts.queue_length, 0);
    assert_eq!(counts.pipelines_completed_today, 4);
    let today = clock.now().date_naive();
    let (repaired, deleted) = ctx
        .store
        .repair_quotas(today - chrono::Duration::days(90), clock.now())
        .await
        .unwrap();
    assert_eq!((repaired, deleted), (0, 0), "nothing drifted");
    assert_eq!(ctx.store.scheduled_runs("bq_one", None, 10).await.unwrap().len(), 2);
    assert!(ctx.store.queue_items(10).await.unwrap().is_empty());
    let stale = ctx
        .store
        .open_runs_started_before(clock.now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert!(stale.is_empty());
    assert_eq!(counts.total_active_pipelines, 2);
    assert!(
        !dir.path().join("warehouse/organizations.sqlite3").exists(),
        "everything went to BigQuery"
    );
}
