//! Scheduler throughput (P4): N orgs (default 1 000), each with one due daily schedule of the
//! three-step no-op pipeline, on a fresh embedded warehouse. Timed: the trigger (every
//! occurrence enqueued), the queue processing (every item claimed and admitted through the
//! run service), and the end-to-end time until every run finished and its occurrence settled.
//! Checks and reports double execution (must be 0).
//!
//! `--pubsub HOST:PORT` runs the Pub/Sub path instead: the trigger publishes to the emulator
//! at HOST:PORT and two consumer contexts (two runner ids, like two instances) pull.

use std::{process::ExitCode, sync::Arc, time::Instant};

use chrono::{Duration, Utc};
use cloudact_core::{
    meta::{NewApiKey, NewOrg, Plan, SubscriptionStatus, CENTRAL_DATASET},
    settings::Settings,
    warehouse::Params,
};
use cloudact_pipeline::{scheduler::ScheduleRule, CancellationToken};
use cloudact_web::AppContext;

struct Args {
    orgs: usize,
    concurrency: usize,
    pubsub: Option<String>,
}

fn parse(args: &[String]) -> Args {
    let mut a = Args {
        orgs: 1000,
        concurrency: 8,
        pubsub: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--orgs" => a.orgs = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.orgs),
            "--concurrency" => a.concurrency = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.concurrency),
            "--pubsub" => a.pubsub = it.next().cloned(),
            other => eprintln!("ignoring {other}"),
        }
    }
    a
}

async fn count(ctx: &AppContext, sql: &str) -> i64 {
    match ctx.warehouse.query(CENTRAL_DATASET, sql, &Params::new()).await {
        Ok(rows) => rows.first().and_then(|r| r.int("n")).unwrap_or(-1),
        Err(e) => {
            eprintln!("{e}");
            -1
        }
    }
}

pub async fn run(args: &[String]) -> ExitCode {
    let args = parse(args);
    let Ok(dir) = tempfile::tempdir() else {
        return ExitCode::FAILURE;
    };
    let mut extra = vec![
        ("MAX_CONCURRENT_RUNS", args.concurrency.to_string()),
        ("SCHEDULER_JITTER_SECONDS", "0".to_string()),
        ("SCHEDULER", "external".to_string()),
    ];
    if let Some(host) = &args.pubsub {
        extra.extend([
            ("SCHEDULER_QUEUE", "pubsub".to_string()),
            ("PUBSUB_EMULATOR_HOST", host.clone()),
            ("PUBSUB_PROJECT_ID", "bench-proj".to_string()),
            ("PUBSUB_TOPIC", format!("bench-{}", uuid::Uuid::new_v4().simple())),
            (
                "PUBSUB_SUBSCRIPTION",
                format!("bench-sub-{}", uuid::Uuid::new_v4().simple()),
            ),
        ]);
    }
    let ctx = match crate::bench_context(dir.path(), &extra).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let setup = Instant::now();
    let now = Utc::now();
    let Some(entry) = ctx.catalog.by_path("example/noop.yml") else {
        return ExitCode::FAILURE;
    };
    let Ok(rule) = ScheduleRule::parse("daily", "UTC") else {
        return ExitCode::FAILURE;
    };
    for i in 0..args.orgs {
        let slug = format!("org_{i:05}");
        let org = NewOrg {
            org_slug: slug.clone(),
            company_name: "Bench".into(),
            admin_email: "b@bench.example".into(),
            org_dataset_id: format!("{slug}_local"),
            plan: Plan::Starter,
            status: SubscriptionStatus::Active,
            trial_end_date: None,
            key: NewApiKey {
                org_api_key_id: format!("k{i}"),
                hash: format!("h{i}"),
                ciphertext: vec![0],
                fingerprint: "ench".into(),
            },
            idempotency: None,
        };
        let mut config =
            ctx.scheduler
                .new_schedule(&slug, &entry, &rule, "UTC", serde_json::json!({}), true, 5, "USER");
        config.next_run_time = rule.next_after(now - Duration::days(1));
        let created = async {
            ctx.store.create_org(&org, now).await?;
            ctx.store.activate_org(&slug, now).await?;
            ctx.store.insert_schedule(&config).await
        };
        if let Err(e) = created.await {
            eprintln!("setup of {slug}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "setup: {} orgs with one due schedule each in {:.1} s",
        args.orgs,
        setup.elapsed().as_secs_f64()
    );

    let shutdown = CancellationToken::new();
    let mut consumers: Vec<Arc<AppContext>> = Vec::new();
    if args.pubsub.is_some() {
        for _ in 0..2 {
            let mut env: std::collections::HashMap<String, String> =
                extra.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            env.insert("DATA_DIR".into(), dir.path().display().to_string());
            env.insert("CONFIGS_DIR".into(), ctx.settings.configs_dir.display().to_string());
            let Ok(settings) = Settings::from_map(&env, 8001) else {
                return ExitCode::FAILURE;
            };
            match AppContext::build("pipeline-service", settings).await {
                Ok(c) => {
                    c.scheduler.start_background(false, shutdown.clone());
                    consumers.push(c);
                }
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }

    let started = Instant::now();
    let mut queued = 0usize;
    loop {
        match ctx.scheduler.trigger(100_000).await {
            Ok(r) if r.details.due_pipelines_found == 0 => break,
            Ok(r) => queued += r.queued_count,
            Err(e) => {
                eprintln!("trigger: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let triggered = started.elapsed();
    let mut admitted_at = None;
    let mut started_runs = 0usize;
    let deadline = Instant::now() + std::time::Duration::from_secs(1800);
    loop {
        if args.pubsub.is_none() {
            match ctx
                .scheduler
                .process(100_000, std::time::Duration::from_secs(300))
                .await
            {
                Ok(r) => started_runs += r.started_count,
                Err(e) => {
                    eprintln!("process: {e}");
                    return ExitCode::FAILURE;
                }
            }
            if started_runs >= args.orgs && admitted_at.is_none() {
                admitted_at = Some(started.elapsed());
            }
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let _ = ctx.scheduler.settle_finished().await;
        let done = count(
            &ctx,
            "SELECT COUNT(*) AS n FROM {{org_scheduled_pipeline_runs}} WHERE state = 'COMPLETED'",
        )
        .await;
        if done >= args.orgs as i64 {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("not done after 30 minutes: {done} of {} settled", args.orgs);
            return ExitCode::FAILURE;
        }
        if args.pubsub.is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let total = started.elapsed();
    shutdown.cancel();
    let runs = count(&ctx, "SELECT COUNT(*) AS n FROM {{org_meta_pipeline_runs}}").await;
    let orgs_with_runs = count(
        &ctx,
        "SELECT COUNT(DISTINCT org_slug) AS n FROM {{org_meta_pipeline_runs}}",
    )
    .await;
    let double = runs - orgs_with_runs;
    let path = if args.pubsub.is_some() {
        "pubsub (2 consumers)"
    } else {
        "warehouse queue"
    };
    println!(
        "{path}: {} orgs, {queued} occurrences enqueued in {:.2} s ({:.0}/s)",
        args.orgs,
        triggered.as_secs_f64(),
        queued as f64 / triggered.as_secs_f64()
    );
    if let Some(a) = admitted_at {
        let claim = a - triggered;
        println!(
            "  claimed + admitted all in {:.2} s ({:.0} claims/s)",
            claim.as_secs_f64(),
            args.orgs as f64 / claim.as_secs_f64()
        );
    }
    println!(
        "  trigger → every run finished and settled: {:.2} s; runs {runs}, double executions {double}",
        total.as_secs_f64()
    );
    if double != 0 || runs != args.orgs as i64 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
