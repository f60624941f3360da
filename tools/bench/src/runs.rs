//! Run throughput: RUNS runs (default 1 000) of the three-step no-op pipeline through the real
//! run service on a fresh embedded warehouse — admission with quota reservation, run row,
//! RUNNING, three step logs, finish with quota release — runs per second and the overhead per run.

use std::{process::ExitCode, sync::Arc, time::Instant};

use chrono::{Duration, Utc};
use cloudact_core::{
    meta::{PlanLimits, SubscriptionChange, CENTRAL_DATASET},
    warehouse::Params,
};
use cloudact_pipeline::{
    runs::{SubmitRequest, Submitted},
    CancellationToken, RunRequest,
};

pub async fn run(args: &[String]) -> ExitCode {
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(8);
    let Ok(dir) = tempfile::tempdir() else {
        return ExitCode::FAILURE;
    };
    let ctx = match crate::bench_context(dir.path(), &[("MAX_CONCURRENT_RUNS", concurrency.to_string())]).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let now = Utc::now();
    if let Ok(Some(current)) = ctx.store.subscription("bench").await {
        let limits = PlanLimits {
            concurrent_limit: 100_000,
            ..current.limits
        };
        let _ = ctx
            .store
            .update_subscription(
                "bench",
                &current,
                &SubscriptionChange {
                    limits,
                    ..Default::default()
                },
                now,
            )
            .await;
    }
    let Some(entry) = ctx.catalog.by_path("example/noop.yml") else {
        return ExitCode::FAILURE;
    };
    let started = Instant::now();
    let today = now.date_naive();
    for i in 0..runs {
        let day = today - Duration::days(i as i64 + 1);
        let req = SubmitRequest {
            org_slug: "bench".into(),
            org_api_key_id: None,
            start_date: day,
            end_date: day,
            trigger_type: "bench".into(),
            trigger_by: None,
            user_id: None,
            parameters: serde_json::Map::new(),
            retry_of: None,
            scheduled: None,
        };
        match ctx.runs.submit(&entry, req).await {
            Ok(Submitted::Started(_)) => {}
            other => {
                eprintln!("run {i} not started: {other:?}");
                return ExitCode::FAILURE;
            }
        }
    }
    let admitted = started.elapsed();
    while ctx.runs.active_runs() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let total = started.elapsed();
    let done = ctx
        .warehouse
        .query(
            CENTRAL_DATASET,
            "SELECT COUNT(*) AS n FROM {{org_meta_pipeline_runs}} WHERE status = @s",
            &Params::new().with("s", "COMPLETED"),
        )
        .await
        .ok()
        .and_then(|r| r.first().and_then(|r| r.int("n")))
        .unwrap_or(0);
    let steps = ctx
        .warehouse
        .query(
            CENTRAL_DATASET,
            "SELECT COUNT(*) AS n FROM {{org_meta_step_logs}}",
            &Params::new(),
        )
        .await
        .ok()
        .and_then(|r| r.first().and_then(|r| r.int("n")))
        .unwrap_or(0);
    let _ = Arc::strong_count(&ctx);
    println!("runs: {runs} submitted, {done} COMPLETED, {steps} step rows, MAX_CONCURRENT_RUNS={concurrency}");
    println!(
        "admission of all runs: {:.3} s ({:.0} admissions/s)",
        admitted.as_secs_f64(),
        runs as f64 / admitted.as_secs_f64()
    );
    println!(
        "end to end: {:.3} s → {:.0} runs/s, {:.2} ms per run (6 write transactions: admission, RUNNING, 3 step logs, finish)",
        total.as_secs_f64(),
        runs as f64 / total.as_secs_f64(),
        total.as_secs_f64() * 1000.0 / runs as f64
    );
    // The executor alone (no run bookkeeping): its own overhead per run.
    let bare = Instant::now();
    for _ in 0..runs {
        ctx.executor
            .run(&entry.spec, RunRequest::default(), CancellationToken::new())
            .await;
    }
    let per_run = bare.elapsed().as_secs_f64() * 1e6 / runs as f64;
    println!("executor alone (3 no-op steps, no writes): {per_run:.1} µs per run");
    if done as usize == runs {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
