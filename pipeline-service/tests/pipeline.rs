//! pipeline-service integration tests: the real app on a random port against a DATA_DIR
//! prepared by the real bootstrap and onboarding code paths (core + pipeline crates).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

mod common;
use common::*;

use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use cloudact_core::{
    clock::Clock,
    meta::{SubscriptionChange, SubscriptionStatus},
};
use cloudact_pipeline::{CancellationToken, RunRequest, RunStatus};
use cloudact_web::AppContext;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn org_key_auth_and_tenant_check() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let a = org(&ctx, "alpha").await;
    let b = org(&ctx, "beta").await;
    let (s, body) = app.whoami("alpha", Some(&a)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["org_slug"], "alpha");
    assert_eq!(body["org_dataset_id"], "alpha_local");
    assert_eq!(body["can_run_pipelines"], true);
    let (s, body) = app.whoami("beta", Some(&a)).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("ORG_MISMATCH"))
    );
    let (s, body) = app.whoami("alpha", None).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("API_KEY_REQUIRED"))
    );
    let (s, body) = app.whoami("alpha", Some("alpha_api_AAAAAAAAAAAAAAAAAAAAAA")).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("INVALID_API_KEY"))
    );
    let (s, body) = app.whoami("Alpha", Some(&a)).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_ORG_SLUG"))
    );
    let (s, _) = app.whoami("beta", Some(&b)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn whoami_reports_a_suspended_subscription() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let key = org(&ctx, "paused_org").await;
    let current = ctx.store.subscription("paused_org").await.unwrap().unwrap();
    let change = SubscriptionChange {
        status: Some(SubscriptionStatus::Suspended),
        limits: current.limits,
        ..Default::default()
    };
    ctx.store
        .update_subscription("paused_org", &current, &change, Utc::now())
        .await
        .unwrap();
    let (s, body) = app.whoami("paused_org", Some(&key)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["subscription_status"], "SUSPENDED");
    assert_eq!(body["can_run_pipelines"], false);
    assert!(body["reason"].as_str().unwrap().contains("SUSPENDED"));
}

#[tokio::test]
async fn health_docs_and_json_errors() {
    let app = spawn().await;
    let ready = app.client.get(app.server.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let doc: Value = app
        .client
        .get(app.server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/v1/organizations/{org_slug}/whoami"].is_object());
    assert_eq!(doc["info"]["title"], "CloudAct Pipeline Service");
    let resp = app.client.post(app.server.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn shutdown_turns_liveness_off_and_drains() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let url = app.server.url("/health/live");
    let live = app.client.get(&url).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    app.server.stop().await;
    assert!(ctx.shutting_down.load(std::sync::atomic::Ordering::Relaxed));
    assert!(
        app.client.get(&url).send().await.is_err(),
        "no longer accepting connections"
    );
}

// ---------------------------------------------------------------- pipeline runs

const EXAMPLE: &str = "/api/v1/pipelines/run/{org}/example/synthetic_usage";

fn example(org: &str) -> String {
    EXAMPLE.replace("{org}", org)
}

#[tokio::test]
async fn the_example_pipeline_runs_logs_and_reruns_idempotently() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "runner").await;
    let (s, b, _) = app
        .post_run(
            &key,
            &example("runner"),
            serde_json::json!({"date": "2026-01-15", "trigger_by": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["status"], "PENDING");
    let id = b["pipeline_logging_id"].as_str().unwrap().to_string();
    let run = app.finished(&key, &id).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(run["trigger_by"], "test");
    let steps = run["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert!(
        steps
            .iter()
            .all(|s| s["status"] == "COMPLETED" && s["rows_processed"].as_i64() == Some(12)),
        "{run}"
    );
    let usage = app.count("runner_local", "example_usage_daily", "runner").await;
    let cost = app.count("runner_local", "example_cost_daily", "runner").await;
    assert_eq!((usage, cost), (12, 12));
    let wh = &ctx.warehouse;
    let unknown = wh
        .query(
            "runner_local",
            "SELECT COUNT(*) AS n FROM {{example_cost_daily}} WHERE unknown_model = @t AND total_cost IS NULL",
            &cloudact_core::warehouse::Params::new().with("t", true),
        )
        .await
        .unwrap();
    assert_eq!(
        unknown[0].int("n"),
        Some(2),
        "the unpriced model is flagged with a null cost, never 0"
    );
    let total = |rows: Vec<cloudact_core::warehouse::Row>| rows[0].numeric("s");
    let before = total(
        wh.query(
            "runner_local",
            "SELECT SUM(total_cost) AS s FROM {{example_cost_daily}}",
            &Default::default(),
        )
        .await
        .unwrap(),
    );
    // Rerun the same day: identical tables.
    let (s, b, _) = app
        .post_run(&key, &example("runner"), serde_json::json!({"date": "2026-01-15"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
    assert_eq!(app.count("runner_local", "example_usage_daily", "runner").await, 12);
    assert_eq!(app.count("runner_local", "example_cost_daily", "runner").await, 12);
    let after = total(
        wh.query(
            "runner_local",
            "SELECT SUM(total_cost) AS s FROM {{example_cost_daily}}",
            &Default::default(),
        )
        .await
        .unwrap(),
    );
    assert_eq!(before, after, "same cost to the cent after a rerun");
    // A three-day range loads three days.
    let (_, b, _) = app
        .post_run(
            &key,
            &example("runner"),
            serde_json::json!({"start_date": "2026-01-14", "end_date": "2026-01-16"}),
        )
        .await;
    let run = app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "COMPLETED");
    assert_eq!(run["steps"].as_array().unwrap().len(), 6);
    assert_eq!(app.count("runner_local", "example_usage_daily", "runner").await, 36);
    // Listing, filters, pagination.
    let (s, list) = app.get_json(&key, "/api/v1/pipelines/runs?limit=2").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (list["total"].as_i64(), list["runs"].as_array().unwrap().len()),
        (Some(3), 2)
    );
    let (_, list) = app
        .get_json(&key, "/api/v1/pipelines/runs?status=COMPLETED&start_date=2026-01-15")
        .await;
    assert_eq!(list["total"], 2);
    // Quota counters: three runs counted once each, none running.
    let quota = ctx
        .store
        .quota_row("runner", Utc::now().date_naive())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(quota.int("pipelines_run_today"), Some(3));
    assert_eq!(quota.int("pipelines_succeeded_today"), Some(3));
    assert_eq!(quota.int("concurrent_pipelines_running"), Some(0));
}

#[tokio::test]
async fn run_requests_are_checked_in_order() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "checks").await;
    let other = onboarded(&ctx, "other_org").await;
    let resp = app
        .client
        .post(app.server.url(&example("checks")))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "missing key is 401, not 422");
    let (s, b, _) = app.post_run(&other, &example("checks"), serde_json::json!({})).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::FORBIDDEN, Some("ORG_MISMATCH")));
    for (path, code) in [
        ("/api/v1/pipelines/run/checks/example/nope", StatusCode::NOT_FOUND),
        (
            "/api/v1/pipelines/run/checks/setup/bootstrap/pipeline",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/pipelines/run/checks/Example/synthetic_usage",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/pipelines/run/checks/example/..%2Fsetup",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/pipelines/run/checks/exa.mple/synthetic_usage",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, b, _) = app.post_run(&key, path, serde_json::json!({})).await;
        assert_eq!(s, code, "{path}: {b}");
    }
    for body in [
        serde_json::json!({"date": "2026-13-01"}),
        serde_json::json!({"date": "2026-01-01", "start_date": "2026-01-01"}),
        serde_json::json!({"start_date": "2026-01-05", "end_date": "2026-01-01"}),
        serde_json::json!({"start_date": "2020-01-01", "end_date": "2026-01-01"}),
        serde_json::json!({"date": "2999-01-01"}),
        serde_json::json!({"date": "2026-01-01", "colour": "red"}),
    ] {
        let (s, b, _) = app.post_run(&key, &example("checks"), body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {b}");
    }
    // Subscription gates: suspended → 403 naming the status; trial over → 402.
    let current = ctx.store.subscription("checks").await.unwrap().unwrap();
    let suspend = SubscriptionChange {
        status: Some(SubscriptionStatus::Suspended),
        limits: current.limits,
        ..Default::default()
    };
    ctx.store
        .update_subscription("checks", &current, &suspend, Utc::now())
        .await
        .unwrap();
    let (s, b, _) = app.post_run(&key, &example("checks"), serde_json::json!({})).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("SUBSCRIPTION_INACTIVE"))
    );
    assert!(b["detail"].as_str().unwrap().contains("SUSPENDED"));
    let current = ctx.store.subscription("checks").await.unwrap().unwrap();
    let expired_trial = SubscriptionChange {
        status: Some(SubscriptionStatus::Trial),
        trial_end_date: Some(Utc::now().date_naive() - chrono::Duration::days(1)),
        limits: current.limits,
        ..Default::default()
    };
    ctx.store
        .update_subscription("checks", &current, &expired_trial, Utc::now())
        .await
        .unwrap();
    let (s, b, _) = app.post_run(&key, &example("checks"), serde_json::json!({})).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::PAYMENT_REQUIRED, Some("SUBSCRIPTION_EXPIRED"))
    );
    // Nothing was consumed by any refusal.
    let quota = ctx
        .store
        .quota_row("checks", Utc::now().date_naive())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(quota.int("pipelines_run_today"), Some(0));
    let (_, list) = app.get_json(&key, "/api/v1/pipelines/runs").await;
    assert_eq!(list["total"], 0);
    // Another org's run id is 404.
    let (_, b, _) = app
        .post_run(&other, &example("other_org"), serde_json::json!({"date": "2026-01-01"}))
        .await;
    let id = b["pipeline_logging_id"].as_str().unwrap().to_string();
    for path in [format!("/api/v1/pipelines/runs/{id}")] {
        let (s, _) = app.get_json(&key, &path).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let resp = app
            .client
            .delete(app.server.url(&path))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let (s, _, _) = app
            .post_run(&key, &format!("{path}/retry"), serde_json::json!({}))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    let run = app.finished(&other, &id).await;
    assert_eq!(run["status"], "COMPLETED");
    // Retry makes a new run of the same dates.
    let (s, b, _) = app
        .post_run(
            &other,
            &format!("/api/v1/pipelines/runs/{id}/retry"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let retried = app.finished(&other, b["pipeline_logging_id"].as_str().unwrap()).await;
    assert_eq!(
        (retried["retry_of"].as_str(), retried["run_date"].as_str()),
        (Some(id.as_str()), Some("2026-01-01"))
    );
}

#[tokio::test]
async fn fifty_concurrent_requests_admit_exactly_the_plan_then_the_next_day_again() {
    let clock = Arc::new(cloudact_core::clock::ManualClock::new(Utc::now()));
    let app = spawn_with_clock(clock.clone(), &[]).await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "quota_org").await;
    let today = clock.now().date_naive();
    let mut requests = Vec::new();
    for i in 0..50i64 {
        let day = (today - chrono::Duration::days(i + 1)).to_string();
        let (app_client, url, key) = (app.client.clone(), app.server.url(&example("quota_org")), key.clone());
        requests.push(tokio::spawn(async move {
            let resp = app_client
                .post(url)
                .header("X-API-Key", key)
                .json(&serde_json::json!({"date": day}))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (status, retry_after, resp.json::<Value>().await.unwrap())
        }));
    }
    let mut admitted = Vec::new();
    let mut refused = 0;
    for r in requests {
        let (status, retry_after, body) = r.await.unwrap();
        match status {
            StatusCode::ACCEPTED => admitted.push(body["pipeline_logging_id"].as_str().unwrap().to_string()),
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(body["limit"], "daily", "{body}");
                assert!(retry_after.is_some());
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(admitted.len(), 6, "STARTER admits exactly 6 runs a day");
    assert_eq!(refused, 44);
    for id in &admitted {
        assert_eq!(app.finished(&key, id).await["status"], "COMPLETED");
    }
    let quota = ctx.store.quota_row("quota_org", today).await.unwrap().unwrap();
    assert_eq!(quota.int("pipelines_run_today"), Some(6));
    assert_eq!(quota.int("pipelines_succeeded_today"), Some(6));
    assert_eq!(quota.int("pipelines_failed_today"), Some(0));
    assert_eq!(quota.int("concurrent_pipelines_running"), Some(0));
    // The next day the org may run again (and the day's row is created by the reservation).
    clock.set(clock.now() + chrono::Duration::days(1));
    let (s, b, _) = app
        .post_run(
            &key,
            &example("quota_org"),
            serde_json::json!({"date": today.to_string()}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
    let next = ctx
        .store
        .quota_row("quota_org", today + chrono::Duration::days(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.int("pipelines_run_today"), Some(1));
    assert_eq!(
        next.int("pipelines_run_month"),
        Some(7),
        "the month so far: 6 yesterday + 1 today"
    );
}

#[tokio::test]
async fn the_monthly_limit_is_the_calendar_month_sum() {
    let start = chrono::NaiveDate::from_ymd_opt(2026, 5, 10)
        .unwrap()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc();
    let clock = Arc::new(cloudact_core::clock::ManualClock::new(start));
    let app = spawn_with_clock(clock.clone(), &[]).await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "monthly").await;
    let current = ctx.store.subscription("monthly").await.unwrap().unwrap();
    let mut limits = current.limits;
    limits.monthly_limit = 8;
    ctx.store
        .update_subscription(
            "monthly",
            &current,
            &SubscriptionChange {
                limits,
                ..Default::default()
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let run_days = |n: i64, offset: i64| {
        let app = &app;
        let key = key.clone();
        async move {
            let mut statuses = Vec::new();
            for i in 0..n {
                let day = chrono::NaiveDate::from_ymd_opt(2026, 4, 1).unwrap() + chrono::Duration::days(offset + i);
                let (s, b, _) = app
                    .post_run(&key, &example("monthly"), serde_json::json!({"date": day.to_string()}))
                    .await;
                if s == StatusCode::ACCEPTED {
                    app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
                }
                statuses.push((s, b["limit"].as_str().map(str::to_string)));
            }
            statuses
        }
    };
    let day1 = run_days(6, 0).await;
    assert!(day1.iter().all(|(s, _)| *s == StatusCode::ACCEPTED));
    clock.set(start + chrono::Duration::days(1));
    let day2 = run_days(3, 10).await;
    assert_eq!(day2[0].0, StatusCode::ACCEPTED);
    assert_eq!(day2[1].0, StatusCode::ACCEPTED);
    assert_eq!(
        (day2[2].0, day2[2].1.as_deref()),
        (StatusCode::TOO_MANY_REQUESTS, Some("monthly")),
        "8 a month: {day2:?}"
    );
    // A new month starts a new count.
    clock.set(
        chrono::NaiveDate::from_ymd_opt(2026, 6, 1)
            .unwrap()
            .and_hms_opt(0, 30, 0)
            .unwrap()
            .and_utc(),
    );
    let june = run_days(1, 20).await;
    assert_eq!(june[0].0, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_duplicate_of_a_pending_run_returns_it_and_cancel_stops_it() {
    // One execution slot, held by a long run, keeps the next runs PENDING.
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[("MAX_CONCURRENT_RUNS", "1")],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "dup").await;
    let (_, long, _) = app
        .post_run(
            &key,
            &example("dup"),
            serde_json::json!({"start_date": "2025-07-01", "end_date": "2026-06-30"}),
        )
        .await;
    let (s, first, _) = app
        .post_run(&key, &example("dup"), serde_json::json!({"date": "2026-02-02"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, again, _) = app
        .post_run(&key, &example("dup"), serde_json::json!({"date": "2026-02-02"}))
        .await;
    assert_eq!(s, StatusCode::OK, "duplicate returns the existing run: {again}");
    assert_eq!(again["pipeline_logging_id"], first["pipeline_logging_id"]);
    let quota = ctx
        .store
        .quota_row("dup", Utc::now().date_naive())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        quota.int("pipelines_run_today"),
        Some(2),
        "the duplicate consumed nothing"
    );
    // Cancel both: the queued one never runs, the long one stops at its next await point.
    for run in [&first, &long] {
        let id = run["pipeline_logging_id"].as_str().unwrap();
        let resp = app
            .client
            .delete(app.server.url(&format!("/api/v1/pipelines/runs/{id}")))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let done = app.finished(&key, id).await;
        assert_eq!(done["status"], "CANCELLED");
        let resp = app
            .client
            .delete(app.server.url(&format!("/api/v1/pipelines/runs/{id}")))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CONFLICT, "already finished");
    }
    let quota = ctx
        .store
        .quota_row("dup", Utc::now().date_naive())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        quota.int("concurrent_pipelines_running"),
        Some(0),
        "cancelled runs released their slots"
    );
    // After the long run stopped, fewer than its 365 days were loaded.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(app.count("dup_local", "example_usage_daily", "dup").await < 365 * 12);
}

#[tokio::test]
async fn runs_of_a_dead_process_are_swept() {
    let clock = Arc::new(cloudact_core::clock::ManualClock::new(Utc::now()));
    let app = spawn_with_clock(clock.clone(), &[("RUN_STALE_SECONDS", "30")]).await;
    let ctx = app.server.ctx.clone();
    let _key = onboarded(&ctx, "crashy").await;
    // A run owned by another (dead) runner, RUNNING with an old heartbeat.
    let run = cloudact_core::meta::runs::NewRun {
        pipeline_logging_id: uuid::Uuid::new_v4().to_string(),
        org_slug: "crashy".into(),
        pipeline_id: "example_synthetic_usage".into(),
        trigger_type: "api".into(),
        trigger_by: None,
        user_id: None,
        org_api_key_id: None,
        start_date: clock.now().date_naive(),
        end_date: clock.now().date_naive(),
        parameters: serde_json::json!({}),
        retry_of: None,
        runner_id: "dead-runner".into(),
    };
    let limits = ctx.store.subscription("crashy").await.unwrap().unwrap().limits;
    ctx.store.admit_run(&run, &limits, clock.now()).await.unwrap();
    ctx.store
        .mark_running(&run.pipeline_logging_id, "dead-runner", clock.now())
        .await
        .unwrap();
    ctx.runs.heartbeat_and_sweep().await;
    assert_eq!(
        ctx.store
            .run("crashy", &run.pipeline_logging_id)
            .await
            .unwrap()
            .unwrap()
            .string("status")
            .as_deref(),
        Some("RUNNING"),
        "fresh heartbeat: left alone"
    );
    clock.set(clock.now() + chrono::Duration::seconds(31));
    ctx.runs.heartbeat_and_sweep().await;
    let row = ctx
        .store
        .run("crashy", &run.pipeline_logging_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.string("status").as_deref(), Some("FAILED"));
    assert!(row.string("error_message").unwrap().contains("stopped"));
    let quota = ctx.store.quota_row("crashy", run.start_date).await.unwrap().unwrap();
    assert_eq!(
        quota.int("concurrent_pipelines_running"),
        Some(0),
        "its slot was released"
    );
    assert_eq!(quota.int("pipelines_failed_today"), Some(1));
}

#[tokio::test]
async fn processors_get_the_decrypted_credential_of_their_own_org_only() {
    use cloudact_core::warehouse::Row;
    use cloudact_pipeline::{context::credential_aad, StepContext};
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    org(&ctx, "vault_a").await;
    org(&ctx, "vault_b").await;
    let secret = "sk-admin-test-0123456789";
    let ciphertext = ctx
        .kms
        .encrypt(secret.as_bytes(), credential_aad("vault_a", "openai").as_bytes())
        .await
        .unwrap();
    let row = |org: &str, ct: Vec<u8>| {
        Row::new()
            .with("credential_id", uuid::Uuid::new_v4().to_string())
            .with("org_slug", org)
            .with("provider", "OPENAI")
            .with("encrypted_credential", ct)
            .with("credential_type", "api_key")
            .with("validation_status", "VALID")
            .with("is_active", true)
            .with("created_at", Utc::now())
    };
    // vault_b's row holds a copy of vault_a's ciphertext: it must not decrypt there.
    ctx.warehouse
        .insert_rows(
            "organizations",
            "org_integration_credentials",
            &[row("vault_a", ciphertext.clone()), row("vault_b", ciphertext)],
        )
        .await
        .unwrap();
    let step = |org: &str| {
        StepContext::new(
            ctx.executor.services().clone(),
            Some(org.to_string()),
            "run".into(),
            "p".into(),
            "s".into(),
            Default::default(),
            Default::default(),
            CancellationToken::new(),
        )
    };
    let got = step("vault_a").credential("openai").await.unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&got), secret);
    assert!(
        step("vault_b").credential("openai").await.is_err(),
        "a copied ciphertext does not decrypt for another org"
    );
    assert!(
        step("vault_a").credential("anthropic").await.is_err(),
        "no such credential"
    );
}

#[tokio::test]
async fn request_parameters_override_spec_variables() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "seeded").await;
    let sum = || async {
        let rows = ctx
            .warehouse
            .query(
                "seeded_local",
                "SELECT SUM(input_tokens) AS s FROM {{example_usage_daily}}",
                &Default::default(),
            )
            .await
            .unwrap();
        rows[0].int("s").unwrap()
    };
    let mut sums = Vec::new();
    for params in [
        serde_json::json!({}),
        serde_json::json!({"seed": "7"}),
        serde_json::json!({"seed": "42"}),
    ] {
        let (s, b, _) = app
            .post_run(
                &key,
                &example("seeded"),
                serde_json::json!({"date": "2026-03-03", "parameters": params}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        assert_eq!(
            app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await["status"],
            "COMPLETED"
        );
        sums.push(sum().await);
    }
    assert_ne!(sums[0], sums[1], "seed 7 generates other usage");
    assert_eq!(
        sums[0], sums[2],
        "the default seed is 42, and the same seed gives the same day"
    );
}

// ---------------------------------------------------------------- integrations

#[tokio::test]
async fn api_keys_are_validated_live_against_the_provider() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = org(&ctx, "integ").await;
    let cases = [
        ("openai", "sk-proj-good-000000001", "VALID"),
        ("openai", "sk-admin-good-00000001", "VALID"),
        ("openai", "sk-admin-noscope-000001", "VALID"),
        ("openai", "sk-invalid-00000000001", "INVALID"),
        ("openai", "sk-fault429-0000000001", "PENDING"),
        ("openai", "sk-fault500-0000000001", "PENDING"),
        ("openai", "sk-slow-00000000000001", "PENDING"),
        ("openai", "sk-truncated-000000001", "PENDING"),
        ("anthropic", "sk-ant-api03-good-0001", "VALID"),
        ("claude", "sk-ant-admin01-good-001", "VALID"),
        ("anthropic", "sk-ant-invalid-00000001", "INVALID"),
        ("deepseek", "sk-deepseek-good-00001", "VALID"),
        ("deepseek", "sk-invalid-ds-0000001", "INVALID"),
    ];
    for (provider, credential, expected) in cases {
        let started = std::time::Instant::now();
        let (s, b) = app
            .setup(&key, "integ", provider, serde_json::json!({"credential": credential}))
            .await;
        println!("setup {provider} {credential}: {expected} in {:?}", started.elapsed());
        assert_eq!(s, StatusCode::OK, "{provider} {credential}: {b}");
        assert_eq!(b["validation_status"], expected, "{provider} {credential}: {b}");
        assert_eq!(
            b["credential_fingerprint"],
            serde_json::json!(&credential[credential.len() - 4..])
        );
        assert!(!b.to_string().contains(credential), "the credential is never returned");
        if expected == "INVALID" {
            assert!(
                b["validation_error"].as_str().unwrap().contains("Incorrect API key"),
                "the provider's reason: {b}"
            );
        }
    }
    let (s, b) = app
        .setup(
            &key,
            "integ",
            "openai",
            serde_json::json!({"credential": "pk-not-openai-123"}),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_CREDENTIAL_FORMAT"))
    );
    let (s, _) = app
        .setup(
            &key,
            "integ",
            "openai",
            serde_json::json!({"credential": "sk-proj-good-1", "extra": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = app
        .setup(
            &key,
            "integ",
            "mistral",
            serde_json::json!({"credential": "sk-proj-good-1234"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // One active credential per provider: the last one stored.
    let (_, list) = app
        .send(reqwest::Method::GET, &key, "/api/v1/integrations/integ", None)
        .await;
    assert_eq!(list["integrations"]["OPENAI"]["status"], "PENDING", "{list}");
    assert_eq!(list["integrations"]["GCP_SA"]["status"], "NOT_CONFIGURED");
    let rows = ctx
        .warehouse
        .query(
            "organizations",
            "SELECT COUNT(*) AS n FROM {{org_integration_credentials}} WHERE org_slug = 'integ' AND is_active = @t",
            &cloudact_core::warehouse::Params::new().with("t", true),
        )
        .await
        .unwrap();
    assert_eq!(rows[0].int("n"), Some(3));
}

#[tokio::test]
async fn integration_lifecycle_revalidation_and_isolation() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = org(&ctx, "life").await;
    let other = org(&ctx, "life_other").await;
    let secret = "sk-proj-good-lifecycle-7";
    let (_, b) = app
        .setup(
            &key,
            "life",
            "openai",
            serde_json::json!({"credential": secret, "skip_validation": true, "credential_name": "Prod key"}),
        )
        .await;
    assert_eq!(b["validation_status"], "PENDING");
    let (_, b) = app
        .send(
            reqwest::Method::POST,
            &key,
            "/api/v1/integrations/life/openai/validate",
            None,
        )
        .await;
    assert_eq!(
        b["validation_status"], "VALID",
        "re-validation works whatever the stored status: {b}"
    );
    let (_, one) = app
        .send(reqwest::Method::GET, &key, "/api/v1/integrations/life/openai", None)
        .await;
    assert_eq!(
        (one["status"].as_str(), one["credential_name"].as_str()),
        (Some("VALID"), Some("Prod key"))
    );
    let (s, b) = app
        .send(
            reqwest::Method::PUT,
            &key,
            "/api/v1/integrations/life/openai",
            Some(serde_json::json!({"credential_name": "Renamed"})),
        )
        .await;
    assert_eq!(
        (s, b["credential_name"].as_str()),
        (StatusCode::OK, Some("Renamed")),
        "{b}"
    );
    // Processors get the decrypted credential of this org only.
    let step = cloudact_pipeline::StepContext::new(
        ctx.executor.services().clone(),
        Some("life".into()),
        "r".into(),
        "p".into(),
        "s".into(),
        Default::default(),
        Default::default(),
        CancellationToken::new(),
    );
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&step.credential("openai").await.unwrap()),
        secret
    );
    // Another org's key on every integration route: 403.
    let routes = [
        (reqwest::Method::GET, "/api/v1/integrations/life", None),
        (reqwest::Method::GET, "/api/v1/integrations/life/openai", None),
        (
            reqwest::Method::POST,
            "/api/v1/integrations/life/openai/setup",
            Some(serde_json::json!({"credential": "sk-proj-good-123456"})),
        ),
        (reqwest::Method::POST, "/api/v1/integrations/life/openai/validate", None),
        (
            reqwest::Method::PUT,
            "/api/v1/integrations/life/openai",
            Some(serde_json::json!({"credential_name": "hijack"})),
        ),
        (reqwest::Method::DELETE, "/api/v1/integrations/life/openai", None),
    ];
    for (method, path, body) in routes {
        let (s, b) = app.send(method.clone(), &other, path, body).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("ORG_MISMATCH")),
            "{method} {path}"
        );
    }
    let (_, one) = app
        .send(reqwest::Method::GET, &key, "/api/v1/integrations/life/openai", None)
        .await;
    assert_eq!(one["credential_name"], "Renamed", "refused requests changed nothing");
    let (s, b) = app
        .send(reqwest::Method::DELETE, &key, "/api/v1/integrations/life/openai", None)
        .await;
    assert_eq!((s, b["removed"].as_bool()), (StatusCode::OK, Some(true)));
    let (_, one) = app
        .send(reqwest::Method::GET, &key, "/api/v1/integrations/life/openai", None)
        .await;
    assert_eq!(one["status"], "NOT_CONFIGURED");
    let (_, b) = app
        .send(
            reqwest::Method::POST,
            &key,
            "/api/v1/integrations/life/openai/validate",
            None,
        )
        .await;
    assert_eq!(b["validation_status"], "NOT_CONFIGURED");
    // No credential in any data file.
    let mut stack = vec![app._dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds the credential",
                    p.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn gcp_service_accounts_are_checked_before_anything_is_stored() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = org(&ctx, "gcp_org").await;
    let sa = |extra: Value| {
        let mut v = serde_json::json!({"type": "service_account", "project_id": "cust-proj", "private_key_id": "abcd1234",
            "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", "client_email": "reader@cust-proj.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token"});
        for (k, val) in extra.as_object().unwrap() {
            if val.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val.clone();
            }
        }
        v.to_string()
    };
    let table = serde_json::json!({"billing_export_table": "cust-proj.billing.gcp_billing_export_v1_0123"});
    for (credential, metadata, needle) in [
        ("{not json at all".to_string(), table.clone(), "not valid JSON"),
        (
            sa(serde_json::json!({"type": "user"})),
            table.clone(),
            "service_account",
        ),
        (
            sa(serde_json::json!({"private_key": null, "client_email": null})),
            table.clone(),
            "private_key, client_email",
        ),
        (
            sa(serde_json::json!({})),
            serde_json::json!({}),
            "billing_export_table is required",
        ),
        (
            sa(serde_json::json!({})),
            serde_json::json!({"billing_export_table": "x; DROP TABLE y"}),
            "project.dataset.table",
        ),
    ] {
        let (s, b) = app
            .setup(
                &key,
                "gcp_org",
                "gcp",
                serde_json::json!({"credential": credential, "metadata": metadata}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(b["detail"].as_str().unwrap().contains(needle), "{needle}: {b}");
    }
    let (_, one) = app
        .send(reqwest::Method::GET, &key, "/api/v1/integrations/gcp_org/gcp_sa", None)
        .await;
    assert_eq!(one["status"], "NOT_CONFIGURED", "nothing stored by refused setups");
    let (s, b) = app
        .setup(
            &key,
            "gcp_org",
            "gcp_sa",
            serde_json::json!({"credential": sa(serde_json::json!({})), "metadata": table}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["provider"], "GCP_SA");
    assert_eq!(b["credential_fingerprint"], "1234");
    let (_, one) = app
        .send(reqwest::Method::GET, &key, "/api/v1/integrations/gcp_org/gcp", None)
        .await;
    assert_eq!(one["metadata"]["project_id"], "cust-proj");
    assert!(!one.to_string().contains("BEGIN PRIVATE KEY"));
}

// ---------------------------------------------------------------- pricing

#[tokio::test]
async fn pricing_crud_reset_and_effective_dating() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "prices").await;
    let other = onboarded(&ctx, "prices_other").await;
    let base = "/api/v1/integrations/prices/openai/pricing";
    let (s, list) = app.send(reqwest::Method::GET, &key, base, None).await;
    assert_eq!(s, StatusCode::OK);
    let seeded = list["count"].as_u64().unwrap();
    assert!(seeded >= 10, "{list}");
    let gpt4o = list["pricing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model_id"] == "gpt-4o" && r["pricing_tier"] == "standard")
        .unwrap()
        .clone();
    assert_eq!(
        (
            gpt4o["input_price_per_1m"].as_str(),
            gpt4o["input_price_per_1k"].as_str()
        ),
        (Some("2.5"), Some("0.0025"))
    );
    // Create with per-1K prices (converted), 409 on the same key, 422 on bad input.
    let body = serde_json::json!({"model_id": "my-ft-model", "input_price_per_1k": 0.003, "output_price_per_1m": "12.5",
                                  "web_search_price_per_1k": "12", "effective_date": "2026-01-01"});
    let (s, b) = app.send(reqwest::Method::POST, &key, base, Some(body.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        (
            b["input_price_per_1m"].as_str(),
            b["is_custom"].as_bool(),
            b["web_search_price_per_1k"].as_str()
        ),
        (Some("3"), Some(true), Some("12"))
    );
    let (s, _) = app.send(reqwest::Method::POST, &key, base, Some(body)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    for bad in [
        serde_json::json!({"model_id": "m", "input_price_per_1m": -1, "output_price_per_1m": 1, "effective_date": "2026-01-01"}),
        serde_json::json!({"model_id": "m", "input_price_per_1m": 1, "effective_date": "2026-01-01"}),
        serde_json::json!({"model_id": "m", "input_price_per_1m": 1, "input_price_per_1k": 1, "output_price_per_1m": 1, "effective_date": "2026-01-01"}),
        serde_json::json!({"model_id": "m", "input_price_per_1m": 1, "output_price_per_1m": 1, "effective_date": "2026-1-1"}),
        serde_json::json!({"model_id": "m", "input_price_per_1m": 1, "output_price_per_1m": 1, "effective_date": "2026-01-01", "pricing_tier": "gold"}),
        serde_json::json!({"model_id": "m", "input_price_per_1m": 1, "output_price_per_1m": 1, "effective_date": "2026-01-01", "colour": 1}),
    ] {
        let (s, b) = app.send(reqwest::Method::POST, &key, base, Some(bad.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {b}");
    }
    let (s, _) = app.send(reqwest::Method::POST, &key, base, Some(serde_json::json!({"model_id": "bad id!", "input_price_per_1m": 1, "output_price_per_1m": 1, "effective_date": "2026-01-01"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Read, update, delete.
    let (s, one) = app
        .send(reqwest::Method::GET, &key, &format!("{base}/my-ft-model"), None)
        .await;
    assert_eq!((s, one["count"].as_u64()), (StatusCode::OK, Some(1)));
    let (s, b) = app
        .send(
            reqwest::Method::PUT,
            &key,
            &format!("{base}/my-ft-model"),
            Some(serde_json::json!({"output_price_per_1m": 10})),
        )
        .await;
    assert_eq!(
        (s, b["output_price_per_1m"].as_str()),
        (StatusCode::OK, Some("10")),
        "{b}"
    );
    let (s, _) = app
        .send(
            reqwest::Method::PUT,
            &key,
            &format!("{base}/my-ft-model"),
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "no fields to update");
    let resp = app
        .client
        .delete(app.server.url(&format!("{base}/my-ft-model")))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (s, _) = app
        .send(reqwest::Method::GET, &key, &format!("{base}/my-ft-model"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Another org: 403 on every pricing route, and its own table is untouched.
    for (m, path) in [
        (reqwest::Method::GET, base.to_string()),
        (reqwest::Method::POST, format!("{base}/reset")),
        (reqwest::Method::DELETE, format!("{base}/gpt-4o")),
    ] {
        let (s, _) = app.send(m, &other, &path, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    // Effective dating: a price change on the 15th prices the 14th and the 16th differently.
    let (s, _) = app
        .send(reqwest::Method::POST, &key, base, Some(serde_json::json!({"model_id": "gpt-4o", "input_price_per_1m": 5, "output_price_per_1m": 20, "effective_date": "2026-01-15"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let cost = |day: &'static str| {
        let (app, key, ctx) = (&app, key.clone(), ctx.clone());
        async move {
            let (_, b, _) = app
                .post_run(&key, &example("prices"), serde_json::json!({"date": day}))
                .await;
            app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
            let rows = ctx
                .warehouse
                .query("prices_local", "SELECT input_tokens, input_cost FROM {{example_cost_daily}} WHERE usage_date = @d AND model_id = 'gpt-4o' AND pricing_tier = 'standard' AND project_id = 'proj_web'", &cloudact_core::warehouse::Params::new().with("d", day.parse::<chrono::NaiveDate>().unwrap()))
                .await
                .unwrap();
            let tokens = rust_decimal::Decimal::from(rows[0].int("input_tokens").unwrap());
            rows[0].numeric("input_cost").unwrap() * rust_decimal::Decimal::from(1_000_000) / tokens
        }
    };
    assert_eq!(
        cost("2026-01-14").await,
        rust_decimal::Decimal::from_str_exact("2.5").unwrap(),
        "old price before the 15th"
    );
    assert_eq!(
        cost("2026-01-16").await,
        rust_decimal::Decimal::from(5),
        "new price from the 15th"
    );
    // Reset restores the defaults (dropping custom rows of that provider only).
    let (s, b) = app
        .send(reqwest::Method::POST, &key, &format!("{base}/reset"), None)
        .await;
    assert_eq!((s, b["count"].as_u64()), (StatusCode::OK, Some(seeded)));
    let (_, anthropic) = app
        .send(
            reqwest::Method::GET,
            &key,
            "/api/v1/integrations/prices/claude/pricing",
            None,
        )
        .await;
    assert!(anthropic["count"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn provider_plan_crud_and_reset() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "plans").await;
    let other = onboarded(&ctx, "plans_other").await;
    let base = "/api/v1/integrations/plans/openai/subscriptions";
    let (s, list) = app.send(reqwest::Method::GET, &key, base, None).await;
    assert_eq!(s, StatusCode::OK);
    let seeded = list["count"].as_u64().unwrap();
    assert!(seeded > 0);
    let (s, b) = app
        .send(reqwest::Method::POST, &key, base, Some(serde_json::json!({"plan_name": "TEAM_SEATS", "quantity": 12, "unit_price_usd": "25.50", "effective_date": "2026-01-01"})))
        .await;
    assert_eq!(
        (s, b["unit_price_usd"].as_str()),
        (StatusCode::CREATED, Some("25.5")),
        "{b}"
    );
    let (s, _) = app
        .send(
            reqwest::Method::POST,
            &key,
            base,
            Some(serde_json::json!({"plan_name": "TEAM_SEATS", "unit_price_usd": 1, "effective_date": "2026-01-01"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = app
        .send(
            reqwest::Method::POST,
            &key,
            base,
            Some(serde_json::json!({"plan_name": "X", "unit_price_usd": -1, "effective_date": "2026-01-01"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = app
        .send(reqwest::Method::GET, &key, &format!("{base}/bad-name!"), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = app
        .send(
            reqwest::Method::PUT,
            &key,
            &format!("{base}/TEAM_SEATS"),
            Some(serde_json::json!({"quantity": 15})),
        )
        .await;
    assert_eq!((s, b["quantity"].as_i64()), (StatusCode::OK, Some(15)));
    let (s, _) = app.send(reqwest::Method::GET, &other, base, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let resp = app
        .client
        .delete(app.server.url(&format!("{base}/TEAM_SEATS")))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (s, _) = app
        .send(reqwest::Method::GET, &key, &format!("{base}/TEAM_SEATS"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = app
        .send(reqwest::Method::POST, &key, &format!("{base}/reset"), None)
        .await;
    assert_eq!((s, b["count"].as_u64()), (StatusCode::OK, Some(seeded)));
}

#[tokio::test]
async fn a_litellm_price_map_import_reports_added_changed_and_skipped() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "importer").await;
    let map = serde_json::json!({
        "sample_spec": {"litellm_provider": "openai"},
        "gpt-4o": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1.1e-05,
                   "input_cost_per_token_batches": 1.25e-06, "output_cost_per_token_batches": 5e-06, "cache_read_input_token_cost": 1.25e-06},
        "gpt-4o-mini": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07},
        "gpt-new-1": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 3e-06, "output_cost_per_token": 1.2e-05},
        "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "output_cost_per_image": 0.04},
        "claude-x": {"litellm_provider": "anthropic", "mode": "chat", "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05}
    });
    let url = "/api/v1/integrations/importer/openai/pricing/import";
    let (s, b) = app
        .send(
            reqwest::Method::POST,
            &key,
            url,
            Some(serde_json::json!({"models": map, "effective_date": "2026-02-01"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // gpt-4o standard gets a new output price (changed: a new dated row), its batch tier is
    // unchanged; gpt-4o-mini is unchanged; gpt-new-1 is new; dall-e-3 is skipped (not a token
    // model); claude-x is another provider's.
    assert_eq!((b["added"].as_u64(), b["changed"].as_u64()), (Some(1), Some(1)), "{b}");
    assert_eq!(b["skipped"].as_u64(), Some(3), "{b}");
    let (_, one) = app
        .send(
            reqwest::Method::GET,
            &key,
            "/api/v1/integrations/importer/openai/pricing/gpt-new-1",
            None,
        )
        .await;
    assert_eq!(
        (
            one["pricing"][0]["input_price_per_1m"].as_str(),
            one["pricing"][0]["output_price_per_1m"].as_str()
        ),
        (Some("3"), Some("12"))
    );
    let (_, again) = app
        .send(
            reqwest::Method::POST,
            &key,
            url,
            Some(serde_json::json!({"models": map, "effective_date": "2026-02-01"})),
        )
        .await;
    assert_eq!(
        (again["added"].as_u64(), again["changed"].as_u64()),
        (Some(0), Some(0)),
        "a second import changes nothing: {again}"
    );
    let (s, _) = app
        .send(
            reqwest::Method::POST,
            &key,
            url,
            Some(serde_json::json!({"path": "../secrets.json", "effective_date": "2026-02-01"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn first_successful_setup_seeds_the_providers_default_prices() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "seeding").await;
    let url = "/api/v1/integrations/seeding/deepseek/pricing";
    let resp = app
        .client
        .delete(app.server.url(&format!("{url}/deepseek-chat")))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for m in ["deepseek-reasoner", "deepseek-v4-flash", "deepseek-v4-pro"] {
        app.client
            .delete(app.server.url(&format!("{url}/{m}")))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
    }
    let (_, none) = app.send(reqwest::Method::GET, &key, url, None).await;
    assert_eq!(none["count"], 0);
    let (_, b) = app
        .setup(
            &key,
            "seeding",
            "deepseek",
            serde_json::json!({"credential": "sk-invalid-seed-000001"}),
        )
        .await;
    assert_eq!(b["validation_status"], "INVALID");
    let (_, still) = app.send(reqwest::Method::GET, &key, url, None).await;
    assert_eq!(still["count"], 0, "an invalid credential seeds nothing");
    let (_, b) = app
        .setup(
            &key,
            "seeding",
            "deepseek",
            serde_json::json!({"credential": "sk-good-seed-0000001"}),
        )
        .await;
    assert_eq!(b["validation_status"], "VALID");
    let (_, seeded) = app.send(reqwest::Method::GET, &key, url, None).await;
    assert_eq!(seeded["count"], 4, "{seeded}");
    assert!(
        seeded["pricing"][0]["notes"].as_str().unwrap().starts_with("source: "),
        "each figure records its source"
    );
}

// ---------------------------------------------------------------- provider pipelines

#[tokio::test]
async fn openai_usage_is_pulled_from_the_admin_api_and_priced_exactly() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "oai").await;
    let url = "/api/v1/pipelines/run/oai/openai/cost/usage_cost";
    let (s, b, _) = app.post_run(&key, url, serde_json::json!({"date": "2026-01-10"})).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INTEGRATION_NOT_CONFIGURED")),
        "{b}"
    );
    let quota = ctx
        .store
        .quota_row("oai", Utc::now().date_naive())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            quota.int("pipelines_run_today"),
            quota.int("concurrent_pipelines_running")
        ),
        (Some(0), Some(0)),
        "the refusal consumed nothing"
    );
    let (_, b) = app
        .setup(
            &key,
            "oai",
            "openai",
            serde_json::json!({"credential": "sk-admin-oai-pipeline-01"}),
        )
        .await;
    assert_eq!(b["validation_status"], "VALID");
    let mut totals = Vec::new();
    for _ in 0..2 {
        let (s, b, _) = app.post_run(&key, url, serde_json::json!({"date": "2026-01-10"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let run = app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
        assert_eq!(run["status"], "COMPLETED", "{run}");
        let rows = ctx
            .warehouse
            .query("oai_local", "SELECT COUNT(*) AS n, SUM(total_cost) AS total, SUM(CASE WHEN unknown_model THEN 1 ELSE 0 END) AS unknown FROM {{openai_cost_daily}}", &Default::default())
            .await
            .unwrap();
        assert_eq!(
            rows[0].int("n"),
            Some(14),
            "completions: 3 models × 2 projects × batch/non-batch; embeddings: 1 model × 2 projects"
        );
        assert_eq!(
            rows[0].int("unknown"),
            Some(0),
            "dated snapshots match their priced models"
        );
        totals.push(rows[0].numeric("total").or_else(|| {
            rows[0]
                .float("total")
                .map(|f| rust_decimal::Decimal::try_from(f).unwrap())
        }));
        assert_eq!(
            app.count("oai_local", "openai_usage_daily_raw", "oai").await,
            14,
            "a rerun replaces the day"
        );
    }
    assert_eq!(totals[0], totals[1]);
    // One row, priced by hand: gpt-4o standard = 2.5 / 1.25 (cached) / 2.5 (no write price) / 10 per 1M.
    let r = ctx
        .warehouse
        .query("oai_local", "SELECT * FROM {{openai_cost_daily}} WHERE priced_model_id = 'gpt-4o' AND pricing_tier = 'standard' AND project_id = 'proj_sandbox_web'", &Default::default())
        .await
        .unwrap();
    let r = &r[0];
    let per = |tokens: &str, price: &str| {
        rust_decimal::Decimal::from(r.int(tokens).unwrap()) * price.parse::<rust_decimal::Decimal>().unwrap()
            / rust_decimal::Decimal::from(1_000_000)
    };
    let expected = per("uncached_input_tokens", "2.5")
        + per("cached_input_tokens", "1.25")
        + per("cache_write_tokens", "2.5")
        + per("output_tokens", "10");
    assert_eq!(r.numeric("total_cost").unwrap(), expected.round_dp(9));
    // Embeddings: input only, at text-embedding-3-small's 0.02 per 1M.
    let e = ctx
        .warehouse
        .query(
            "oai_local",
            "SELECT * FROM {{openai_cost_daily}} WHERE usage_type = 'embeddings' AND project_id = 'proj_sandbox_web'",
            &Default::default(),
        )
        .await
        .unwrap();
    let e = &e[0];
    assert_eq!(e.string("priced_model_id").as_deref(), Some("text-embedding-3-small"));
    assert_eq!(e.int("output_tokens"), Some(0));
    let expected = rust_decimal::Decimal::from(e.int("uncached_input_tokens").unwrap())
        * "0.02".parse::<rust_decimal::Decimal>().unwrap()
        / rust_decimal::Decimal::from(1_000_000);
    assert_eq!(e.numeric("total_cost").unwrap(), expected.round_dp(9));
}

#[tokio::test]
async fn anthropic_usage_is_pulled_and_its_four_input_buckets_priced_apart() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "ant").await;
    let (_, b) = app
        .setup(
            &key,
            "ant",
            "claude",
            serde_json::json!({"credential": "sk-ant-admin01-pipeline-1"}),
        )
        .await;
    assert_eq!(b["validation_status"], "VALID");
    let url = "/api/v1/pipelines/run/ant/anthropic/cost/usage_cost";
    let (s, b, _) = app
        .post_run(
            &key,
            url,
            serde_json::json!({"start_date": "2026-01-10", "end_date": "2026-01-11"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let run = app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(
        app.count("ant_local", "anthropic_usage_daily_raw", "ant").await,
        8,
        "2 days × 2 models × 2 tiers"
    );
    let rows = ctx
        .warehouse
        .query("ant_local", "SELECT * FROM {{anthropic_cost_daily}} WHERE model = 'claude-3-5-sonnet-20241022' AND pricing_tier = 'standard' AND usage_date = @d", &cloudact_core::warehouse::Params::new().with("d", "2026-01-10".parse::<chrono::NaiveDate>().unwrap()))
        .await
        .unwrap();
    let r = &rows[0];
    assert_eq!(r.boolean("unknown_model"), Some(false));
    // Seeded prices for claude-3-5-sonnet (LiteLLM snapshot): 3 in / 15 out / 0.3 read / 3.75 write (5m) / 6 write (1h).
    let price = |c: &str| {
        let book = ctx.warehouse.clone();
        let c = c.to_string();
        async move {
            let rows = book
                .query("ant_local", &format!("SELECT {c} AS p FROM {{{{llm_model_pricing}}}} WHERE model_id = 'claude-3-5-sonnet-20241022' AND pricing_tier = 'standard'"), &Default::default())
                .await
                .unwrap();
            rows[0].numeric("p")
        }
    };
    let input = price("input_price_per_1m").await.unwrap();
    let million = rust_decimal::Decimal::from(1_000_000);
    let tokens = |c: &str| rust_decimal::Decimal::from(r.int(c).unwrap());
    assert_eq!(
        r.numeric("input_cost").unwrap(),
        (tokens("uncached_input_tokens") * input / million).round_dp(9)
    );
    let read = price("cached_input_price_per_1m").await.unwrap_or(input);
    assert_eq!(
        r.numeric("cache_read_cost").unwrap(),
        (tokens("cache_read_tokens") * read / million).round_dp(9)
    );
    // Web search: 10 USD per 1 000 requests (the seeded price).
    let per_1k = price("web_search_price_per_1k").await.unwrap();
    assert_eq!(per_1k, rust_decimal::Decimal::from(10));
    assert_eq!(
        r.numeric("web_search_cost").unwrap(),
        tokens("web_search_requests") * per_1k / rust_decimal::Decimal::from(1000)
    );
    let sum = [
        "input_cost",
        "cache_write_5m_cost",
        "cache_write_1h_cost",
        "cache_read_cost",
        "output_cost",
        "web_search_cost",
    ]
    .iter()
    .map(|c| r.numeric(c).unwrap())
    .sum::<rust_decimal::Decimal>();
    assert_eq!(r.numeric("total_cost").unwrap(), sum);
}

#[tokio::test]
async fn cost_queries_sum_exactly_by_provider_model_day_and_project() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "spend").await;
    let other = onboarded(&ctx, "spend_other").await;
    app.setup(
        &key,
        "spend",
        "openai",
        serde_json::json!({"credential": "sk-admin-spend-000001"}),
    )
    .await;
    for (url, body) in [
        (
            "/api/v1/pipelines/run/spend/openai/cost/usage_cost",
            serde_json::json!({"date": "2026-01-10"}),
        ),
        (
            EXAMPLE,
            serde_json::json!({"start_date": "2026-01-10", "end_date": "2026-01-11"}),
        ),
    ] {
        let (s, b, _) = app.post_run(&key, &url.replace("{org}", "spend"), body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        assert_eq!(
            app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await["status"],
            "COMPLETED"
        );
    }
    let sum = |table: &'static str| {
        let ctx = ctx.clone();
        async move {
            let rows = ctx
                .warehouse
                .query(
                    "spend_local",
                    &format!("SELECT total_cost FROM {{{{{table}}}}}"),
                    &Default::default(),
                )
                .await
                .unwrap();
            rows.iter()
                .filter_map(|r| r.numeric("total_cost"))
                .sum::<rust_decimal::Decimal>()
        }
    };
    let (openai, example_total) = (sum("openai_cost_daily").await, sum("example_cost_daily").await);
    let q = "/api/v1/costs/spend?start_date=2026-01-01&end_date=2026-01-31";
    let (s, b) = app.send(reqwest::Method::GET, &key, q, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let by_provider: std::collections::HashMap<String, String> = b["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["provider"].as_str().unwrap().to_string(),
                r["total_cost"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(by_provider["openai"].parse::<rust_decimal::Decimal>().unwrap(), openai);
    assert_eq!(
        by_provider["example"].parse::<rust_decimal::Decimal>().unwrap(),
        example_total
    );
    assert_eq!(
        b["total_cost"]
            .as_str()
            .unwrap()
            .parse::<rust_decimal::Decimal>()
            .unwrap(),
        openai + example_total,
        "to the cent and beyond"
    );
    assert_eq!(
        b["unknown_model_rows"], 4,
        "the example's unpriced model, 2 projects × 2 days"
    );
    let (_, by_day) = app
        .send(reqwest::Method::GET, &key, &format!("{q}&group_by=day,model"), None)
        .await;
    assert!(by_day["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["day"].is_string() && r["model"].is_string()));
    let (s, twice) = app
        .send(
            reqwest::Method::GET,
            &key,
            &format!("{q}&group_by=model,day,model"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{twice}");
    assert_eq!(
        twice["group_by"],
        serde_json::json!(["model", "day"]),
        "a dimension named twice groups once"
    );
    assert_eq!(
        twice["rows"].as_array().unwrap().len(),
        by_day["rows"].as_array().unwrap().len()
    );
    let (s, _) = app
        .send(reqwest::Method::GET, &key, &format!("{q}&group_by=colour"), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, e) = app
        .send(
            reqwest::Method::GET,
            &key,
            "/api/v1/pipelines/runs?offset=1000000000000",
            None,
        )
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_QUERY")),
        "offset is bounded"
    );
    let (s, _) = app
        .send(
            reqwest::Method::GET,
            &key,
            "/api/v1/costs/spend?start_date=2026-02-01&end_date=2026-01-01",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = app.send(reqwest::Method::GET, &other, q, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, theirs) = app
        .send(
            reqwest::Method::GET,
            &other,
            "/api/v1/costs/spend_other?start_date=2026-01-01&end_date=2026-01-31",
            None,
        )
        .await;
    assert_eq!(theirs["total_cost"], "0", "no cross-org rows");
}

#[tokio::test]
async fn deepseek_balance_snapshots_derive_spend_from_the_drop() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "dsk").await;
    app.setup(
        &key,
        "dsk",
        "deepseek",
        serde_json::json!({"credential": "sk-ds-balance-000001"}),
    )
    .await;
    let url = "/api/v1/pipelines/run/dsk/deepseek/balance";
    for day in ["2026-01-10", "2026-01-11", "2026-01-11"] {
        let (s, b, _) = app.post_run(&key, url, serde_json::json!({"date": day})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        assert_eq!(
            app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await["status"],
            "COMPLETED"
        );
    }
    let rows = ctx
        .warehouse
        .query(
            "dsk_local",
            "SELECT * FROM {{deepseek_balance_daily}} ORDER BY balance_date",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        2,
        "one row per currency per day; the rerun replaced its day"
    );
    assert_eq!(rows[0].numeric("previous_total_balance"), None);
    assert_eq!(
        rows[1].numeric("previous_total_balance"),
        rows[0].numeric("total_balance")
    );
    let drop = rows[0].numeric("total_balance").unwrap() - rows[1].numeric("total_balance").unwrap();
    if drop >= rust_decimal::Decimal::ZERO {
        assert_eq!(rows[1].numeric("spend_estimate"), Some(drop));
    } else {
        assert_eq!(
            (rows[1].numeric("spend_estimate"), rows[1].boolean("topup_detected")),
            (None, Some(true))
        );
    }
}

#[tokio::test]
async fn computed_cost_is_reconciled_with_what_the_providers_billed() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "recon").await;
    app.setup(
        &key,
        "recon",
        "openai",
        serde_json::json!({"credential": "sk-admin-recon-000001"}),
    )
    .await;
    app.setup(
        &key,
        "recon",
        "anthropic",
        serde_json::json!({"credential": "sk-ant-admin01-recon-1"}),
    )
    .await;
    let range = serde_json::json!({"start_date": "2026-01-01", "end_date": "2026-01-10"});
    for url in [
        "/api/v1/pipelines/run/recon/openai/cost/usage_cost",
        "/api/v1/pipelines/run/recon/anthropic/cost/usage_cost",
    ] {
        let (s, b, _) = app.post_run(&key, url, range.clone()).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let run = app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
        assert_eq!(run["status"], "COMPLETED", "{run}");
        assert_eq!(
            run["steps"].as_array().unwrap().len(),
            30,
            "usage, cost and billed cost, 10 days"
        );
    }
    // Per provider and day, from the stored rows: billed total, and whether the provider
    // billed something its usage API does not show (the sandbox's fine-tuning / seat charges).
    let stored = |table: &'static str, extra: &'static str| {
        let ctx = ctx.clone();
        async move {
            let rows = ctx
                .warehouse
                .query(
                    "recon_local",
                    &format!("SELECT usage_date, amount, {extra} AS extra FROM {{{{{table}}}}}"),
                    &Default::default(),
                )
                .await
                .unwrap();
            let mut out: std::collections::BTreeMap<String, (rust_decimal::Decimal, bool)> = Default::default();
            for r in rows {
                let e = out.entry(r.date("usage_date").unwrap().to_string()).or_default();
                e.0 += r.numeric("amount").unwrap();
                e.1 |= r.boolean("extra").unwrap_or(false) || r.int("extra") == Some(1);
            }
            out
        }
    };
    let openai = stored(
        "openai_billed_cost_daily",
        "CASE WHEN line_item = 'fine_tuning_training' THEN 1 ELSE 0 END",
    )
    .await;
    let anthropic = stored(
        "anthropic_billed_cost_daily",
        "CASE WHEN model IS NULL THEN 1 ELSE 0 END",
    )
    .await;
    let (s, b) = app
        .send(
            reqwest::Method::GET,
            &key,
            "/api/v1/costs/recon/reconciliation?start_date=2026-01-01&end_date=2026-01-10",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let rows = b["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 20, "{b}");
    let d = |v: &Value| v.as_str().unwrap().parse::<rust_decimal::Decimal>().unwrap();
    let mut flagged = 0;
    for r in rows {
        let day = r["day"].as_str().unwrap();
        let (billed, extra) = if r["provider"] == "openai" {
            openai[day]
        } else {
            anthropic[day]
        };
        assert_eq!(d(&r["billed_cost"]), billed.normalize());
        assert_eq!(d(&r["difference"]), (billed - d(&r["computed_cost"])).round_dp(9));
        // Usage priced with the seeded prices matches what the provider billed for it, to
        // float rounding; only the unexplained charges are flagged.
        assert_eq!(r["flagged"], extra, "{r}");
        if !extra {
            assert!(d(&r["difference"]).abs() < rust_decimal::Decimal::new(1, 6), "{r}");
        }
        flagged += usize::from(extra);
    }
    assert!(
        flagged > 0 && flagged < 20,
        "some days, not all, carry an unexplained charge"
    );
    assert_eq!(b["flagged_days"], flagged);
    // Thresholds are the caller's: a generous one flags nothing; a bad one is a 400.
    let (_, b) = app
        .send(
            reqwest::Method::GET,
            &key,
            "/api/v1/costs/recon/reconciliation?start_date=2026-01-01&end_date=2026-01-10&threshold_usd=1000000",
            None,
        )
        .await;
    assert_eq!(b["flagged_days"], 0);
    let (s, b) = app
        .send(
            reqwest::Method::GET,
            &key,
            "/api/v1/costs/recon/reconciliation?start_date=2026-01-01&end_date=2026-01-10&threshold_percent=-1",
            None,
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_QUERY"))
    );
    // Anthropic's cost report is in cents: stored in dollars.
    assert!(anthropic
        .values()
        .all(|(v, _)| *v < rust_decimal::Decimal::from(10_000)));
}

/// Sets the sandbox's scripted faults.
async fn sandbox_faults(base: &str, faults: Value) {
    let r = reqwest::Client::new()
        .put(format!("{base}/_sandbox/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn provider_faults_are_survived_and_a_malformed_page_fails_the_day_naming_it() {
    let sandbox_url = sandbox().await;
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[
            ("OPENAI_BASE_URL", &sandbox_url),
            ("PROVIDER_VALIDATION_TIMEOUT_SECONDS", "2"),
            ("PROVIDER_HTTP_TIMEOUT_SECONDS", "1"),
        ],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "faulty").await;
    let (_, b) = app
        .setup(
            &key,
            "faulty",
            "openai",
            serde_json::json!({"credential": "sk-admin-faulty-0001"}),
        )
        .await;
    assert_eq!(b["validation_status"], "VALID", "{b}");
    let url = "/api/v1/pipelines/run/faulty/openai/cost/usage_cost";
    let per_day = |day: &'static str| {
        let wh = ctx.warehouse.clone();
        async move {
            let rows = wh
                .query(
                    "faulty_local",
                    "SELECT COUNT(*) AS n, COUNT(DISTINCT usage_type || model || project_id || COALESCE(CAST(batch AS TEXT), '-')) AS k \
                     FROM {{openai_usage_daily_raw}} WHERE usage_date = @d",
                    &cloudact_core::warehouse::Params::new().with("d", day.parse::<chrono::NaiveDate>().unwrap()),
                )
                .await
                .unwrap();
            (rows[0].int("n").unwrap(), rows[0].int("k").unwrap())
        }
    };
    // Each day's usage comes in three pages; a 429 storm, 500s and a request slower than the
    // client timeout come first; the middle page of the third day is malformed.
    sandbox_faults(
        &sandbox_url,
        serde_json::json!({"pages_per_day": 3, "rate_limited": 3, "server_errors": 2, "slow": 1, "slow_ms": 2500,
                           "malformed_day": "2026-02-03", "malformed_page": 1}),
    )
    .await;
    let (s, b, _) = app
        .post_run(
            &key,
            url,
            serde_json::json!({"start_date": "2026-02-01", "end_date": "2026-02-05"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["pipeline_logging_id"].as_str().unwrap().to_string();
    let run = app.finished(&key, &id).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    let error = run["error_message"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("2026-02-03") && error.contains("page 2 (cursor \"part_1\")"),
        "the error names the day and the page: {error}"
    );
    assert_eq!(per_day("2026-02-01").await, (14, 14), "earlier days stay loaded");
    assert_eq!(per_day("2026-02-02").await, (14, 14));
    assert_eq!(per_day("2026-02-03").await.0, 0, "the failed day is not half loaded");
    assert_eq!(per_day("2026-02-04").await.0, 0);
    // The fault cleared, a retry completes every day with no duplicates.
    sandbox_faults(&sandbox_url, serde_json::json!({"pages_per_day": 3})).await;
    let (s, b, _) = app
        .post_run(
            &key,
            &format!("/api/v1/pipelines/runs/{id}/retry"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let run = app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    for day in ["2026-02-01", "2026-02-02", "2026-02-03", "2026-02-04", "2026-02-05"] {
        assert_eq!(per_day(day).await, (14, 14), "{day}: every row once");
    }
    for day in ["20260201", "20260203"] {
        for table in ["openai_usage_daily_raw__stage_", "openai_cost_daily__prices_"] {
            assert!(
                !ctx.warehouse
                    .table_exists("faulty_local", &format!("{table}{day}"))
                    .await
                    .unwrap(),
                "no {table}{day} is left behind"
            );
        }
    }
    let cost_rows = app.count("faulty_local", "openai_cost_daily", "faulty").await;
    assert_eq!(cost_rows, 5 * 14);
}

// ---------------------------------------------------------------- generic processors

/// A small REST API with every paging style and auth scheme the extractor speaks: 25 records
/// `{id, name}` per listing. `/cursor` (bearer, 429 on its first call), `/offset` (header
/// `X-Token`), `/page` (query `api_key`), `/link` (basic auth, `Link` header), `/broken`
/// (bearer; page 3 answers 500 until fixed).
async fn rest_api() -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use axum::{
        extract::{Query, State},
        http::HeaderMap,
        response::IntoResponse,
        routing::get,
    };
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    #[derive(Clone)]
    struct S {
        calls: Arc<AtomicU32>,
        broken: Arc<AtomicBool>,
    }
    type Q = Query<HashMap<String, String>>;
    let items = |from: usize, n: usize| -> Vec<Value> {
        (from..(from + n).min(25))
            .map(|i| serde_json::json!({"id": i, "name": format!("item-{i}")}))
            .collect()
    };
    let deny = || (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    let broken = Arc::new(AtomicBool::new(true));
    let bearer_ok =
        |h: &HeaderMap| h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer sk-generic-0001");
    let app = axum::Router::new()
        .route(
            "/cursor",
            get(move |State(s): State<S>, h: HeaderMap, Query(q): Q| async move {
                if !bearer_ok(&h) {
                    return deny();
                }
                if s.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response();
                }
                let from: usize = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                let data = items(from, 10);
                let next = (from + 10 < 25).then(|| (from + 10).to_string());
                axum::Json(serde_json::json!({"data": data, "meta": {"next_cursor": next}})).into_response()
            }),
        )
        .route(
            "/offset",
            get(move |h: HeaderMap, Query(q): Q| async move {
                if h.get("x-token").and_then(|v| v.to_str().ok()) != Some("sk-generic-0001") {
                    return deny();
                }
                let offset: usize = q["offset"].parse().unwrap();
                let limit: usize = q["limit"].parse().unwrap();
                axum::Json(serde_json::json!({"results": {"rows": items(offset, limit)}})).into_response()
            }),
        )
        .route(
            "/page",
            get(move |Query(q): Q| async move {
                if q.get("api_key").map(String::as_str) != Some("sk-generic-0001") {
                    return deny();
                }
                let page: usize = q["page"].parse().unwrap();
                let per: usize = q["per_page"].parse().unwrap();
                axum::Json(serde_json::json!(items((page - 1) * per, per))).into_response()
            }),
        )
        .route(
            "/link",
            get(move |h: HeaderMap, Query(q): Q| async move {
                // "sk-user" : "generic-0001" in basic auth.
                if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Basic c2stdXNlcjpnZW5lcmljLTAwMDE=") {
                    return deny();
                }
                let from: usize = q.get("from").and_then(|a| a.parse().ok()).unwrap_or(0);
                let mut resp = axum::Json(serde_json::json!({"data": items(from, 7)})).into_response();
                if from + 7 < 25 {
                    let link = format!("</link?from={}>; rel=\"next\", </link?from=0>; rel=\"first\"", from + 7);
                    resp.headers_mut().insert("link", link.parse().unwrap());
                }
                resp
            }),
        )
        .route(
            "/broken",
            get(move |State(s): State<S>, h: HeaderMap, Query(q): Q| async move {
                if !bearer_ok(&h) {
                    return deny();
                }
                let page: usize = q["page"].parse().unwrap();
                if page == 3 && s.broken.load(Ordering::SeqCst) {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
                }
                axum::Json(serde_json::json!({"data": items((page - 1) * 5, 5)})).into_response()
            }),
        )
        .with_state(S {
            calls: Arc::new(AtomicU32::new(0)),
            broken: broken.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), broken)
}

async fn run_inline(ctx: &Arc<AppContext>, org: &str, yaml: &str) -> cloudact_pipeline::RunReport {
    let spec = cloudact_pipeline::PipelineSpec::from_yaml(yaml).unwrap();
    let mut req = RunRequest {
        org_slug: Some(org.into()),
        dates: vec!["2026-03-01".parse().unwrap()],
        ..Default::default()
    };
    req.variables.insert("dataset".into(), ctx.settings.org_dataset(org));
    ctx.executor.run(&spec, req, CancellationToken::new()).await
}

#[tokio::test]
async fn the_generic_extractor_pages_authenticates_retries_and_keeps_progress() {
    let (api, _broken) = rest_api().await;
    // The stored OpenAI credential is only sent to OpenAI's base URL: here, the test API.
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[("OPENAI_BASE_URL", &api)],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "gen").await;
    let (s, b) = app
        .setup(
            &key,
            "gen",
            "openai",
            serde_json::json!({"credential": "sk-generic-0001", "skip_validation": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let step = |name: &str, config: &str| {
        format!(
            "pipeline_id: gen_{name}\nsteps:\n  - step_id: extract\n    ps_type: generic.api_extractor\n    config:\n      \
             dataset: \"{{dataset}}\"\n      date: \"{{date}}\"\n      url: \"{api}/{name}\"\n      {config}\n"
        )
    };
    let records = |table: &'static str| {
        let wh = ctx.warehouse.clone();
        async move {
            let rows = wh
                .query(
                    "gen_local",
                    &format!("SELECT record FROM {{{{{table}}}}} ORDER BY extracted_at"),
                    &Default::default(),
                )
                .await
                .unwrap();
            let mut ids: Vec<i64> = rows
                .iter()
                .map(|r| r.json("record").unwrap()["id"].as_i64().unwrap())
                .collect();
            ids.sort();
            ids
        }
    };
    let all: Vec<i64> = (0..25).collect();
    let cases = [
        ("cursor", "pagination: {type: cursor, param: after, response_path: meta.next_cursor}\n      auth: {type: bearer, provider: openai}\n      rate_limit: {requests_per_second: 50}\n      destination: {table: ext_cursor}", "ext_cursor", 3),
        ("offset", "data_path: results.rows\n      pagination: {type: offset, param: offset, limit: 10, limit_param: limit}\n      auth: {type: header, provider: openai, header_name: X-Token}\n      destination: {table: ext_offset}", "ext_offset", 3),
        ("page", "data_path: \"\"\n      pagination: {type: page, param: page, limit: 10, limit_param: per_page}\n      auth: {type: query, provider: openai, param_name: api_key}\n      destination: {table: ext_page}", "ext_page", 3),
    ];
    for (name, config, table, pages) in cases {
        for _ in 0..2 {
            let report = run_inline(&ctx, "gen", &step(name, config)).await;
            assert_eq!(report.status, RunStatus::Completed, "{name}: {report:?}");
            assert_eq!(
                report.steps[0].output["pages"], pages,
                "{name}: {:?}",
                report.steps[0].output
            );
            assert_eq!(
                records(table).await,
                all,
                "{name}: every record once, also after a rerun"
            );
        }
    }
    // Basic auth: the credential is "user:password".
    let report = run_inline(
        &ctx,
        "gen",
        &step("link", "pagination: {type: link}\n      auth: {type: basic, provider: openai}\n      destination: {table: ext_link}"),
    )
    .await;
    assert_eq!(
        report.status,
        RunStatus::Failed,
        "sk-generic-0001 has no ':' → user only; the API refuses"
    );
    let (s, _) = app
        .setup(
            &key,
            "gen",
            "openai",
            serde_json::json!({"credential": "sk-user:generic-0001", "skip_validation": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let report = run_inline(
        &ctx,
        "gen",
        &step("link", "pagination: {type: link}\n      auth: {type: basic, provider: openai}\n      destination: {table: ext_link}"),
    )
    .await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    assert_eq!(report.steps[0].output["pages"], 4);
    assert_eq!(records("ext_link").await, all);
    // The credential never goes to another origin than its provider's.
    let elsewhere = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let page_yaml = |auth: &str| {
        step(
            "page",
            &format!("data_path: \"\"\n      pagination: {{type: page, param: page, limit: 10, limit_param: per_page}}\n      {auth}destination: {{table: ext_dead}}"),
        )
        .replace(&api, &elsewhere)
    };
    let report = run_inline(
        &ctx,
        "gen",
        &page_yaml("auth: {type: query, provider: openai, param_name: api_key}\n      "),
    )
    .await;
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.error.clone().unwrap_or_default();
    assert!(
        error.contains("only sent to") && !error.contains("generic-0001"),
        "{error}"
    );
    // Without credentials, any API: an unreachable one fails saying so.
    let report = run_inline(&ctx, "gen", &page_yaml("")).await;
    assert!(
        report.error.clone().unwrap_or_default().contains("unreachable"),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_failed_extraction_keeps_merged_progress_and_a_rerun_completes_without_duplicates() {
    let (api, broken) = rest_api().await;
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[("OPENAI_BASE_URL", &api)],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "mrg").await;
    let (s, _) = app
        .setup(
            &key,
            "mrg",
            "openai",
            serde_json::json!({"credential": "sk-generic-0001", "skip_validation": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let yaml = |table: &str, mode: &str| {
        format!(
            "pipeline_id: broken\nsteps:\n  - step_id: extract\n    ps_type: generic.api_extractor\n    config:\n      \
             dataset: \"{{dataset}}\"\n      date: \"{{date}}\"\n      url: \"{api}/broken\"\n      \
             pagination: {{type: page, param: page, limit: 5}}\n      auth: {{type: bearer, provider: openai}}\n      \
             destination: {{table: {table}, write_mode: {mode}, key_fields: [id]}}\n"
        )
    };
    let count = |table: &'static str| {
        let wh = ctx.warehouse.clone();
        async move {
            let r = wh
                .query(
                    "mrg_local",
                    &format!("SELECT COUNT(*) AS n FROM {{{{{table}}}}}"),
                    &Default::default(),
                )
                .await
                .unwrap();
            r[0].int("n").unwrap()
        }
    };
    let merge = run_inline(&ctx, "mrg", &yaml("ext_merge", "merge")).await;
    assert_eq!(merge.status, RunStatus::Failed);
    let error = merge.error.clone().unwrap_or_default();
    assert!(
        error.contains("page 3") && error.contains("10 records from 2 pages") && error.contains("10 are kept"),
        "{error}"
    );
    assert_eq!(count("ext_merge").await, 10, "merged progress is kept");
    let day = run_inline(&ctx, "mrg", &yaml("ext_day", "replace_day")).await;
    assert_eq!(day.status, RunStatus::Failed);
    assert!(day
        .error
        .clone()
        .unwrap_or_default()
        .contains("the day keeps its previous rows"));
    assert_eq!(count("ext_day").await, 0, "a failed replace_day load changes nothing");
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    for table in ["ext_merge", "ext_day"] {
        let mode = if table == "ext_merge" { "merge" } else { "replace_day" };
        for _ in 0..2 {
            let report = run_inline(&ctx, "mrg", &yaml(table, mode)).await;
            assert_eq!(report.status, RunStatus::Completed, "{report:?}");
            assert_eq!(count(table).await, 25, "{table}: every record once");
        }
    }
}

#[tokio::test]
async fn a_sql_transform_and_data_quality_checks_run_inside_the_org_dataset() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "dqorg").await;
    let (_, b) = app
        .setup(
            &key,
            "dqorg",
            "openai",
            serde_json::json!({"credential": "sk-admin-dqorg-000001"}),
        )
        .await;
    assert_eq!(b["validation_status"], "VALID");
    for url in [
        "/api/v1/pipelines/run/dqorg/openai/cost/usage_cost",
        "/api/v1/pipelines/run/dqorg/openai/cost/daily_summary",
    ] {
        for _ in 0..2 {
            let (s, b, _) = app.post_run(&key, url, serde_json::json!({"date": "2026-01-10"})).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{b}");
            let run = app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
            assert_eq!(run["status"], "COMPLETED", "{run}");
        }
    }
    // The summary equals the cost rows summed here, and a rerun replaced (not appended) the day.
    let summary = ctx
        .warehouse
        .query(
            "dqorg_local",
            "SELECT COUNT(*) AS n, SUM(total_cost) AS total, SUM(requests) AS r FROM {{openai_model_daily_summary}}",
            &Default::default(),
        )
        .await
        .unwrap();
    let costs = ctx
        .warehouse
        .query("dqorg_local", "SELECT total_cost, num_model_requests, COALESCE(priced_model_id, model) AS m, usage_type FROM {{openai_cost_daily}}", &Default::default())
        .await
        .unwrap();
    let mut groups = std::collections::BTreeSet::new();
    let mut total = rust_decimal::Decimal::ZERO;
    let mut requests = 0;
    for r in &costs {
        groups.insert((r.string("usage_type"), r.string("m")));
        total += r.numeric("total_cost").unwrap();
        requests += r.int("num_model_requests").unwrap();
    }
    assert_eq!(summary[0].int("n"), Some(groups.len() as i64));
    assert_eq!(summary[0].int("r"), Some(requests));
    let got = summary[0]
        .numeric("total")
        .or_else(|| {
            summary[0]
                .float("total")
                .map(|f| rust_decimal::Decimal::try_from(f).unwrap())
        })
        .unwrap();
    assert!(
        (got - total).abs() < rust_decimal::Decimal::new(1, 6),
        "{got} vs {total}"
    );
    // Two DQ results, both PASS, with every expectation passed.
    let dq = ctx
        .warehouse
        .query(
            cloudact_core::meta::CENTRAL_DATASET,
            "SELECT overall_status, expectations_passed, expectations_failed FROM {{org_meta_dq_results}} WHERE org_slug = 'dqorg'",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(dq.len(), 2);
    assert!(dq
        .iter()
        .all(|r| r.string("overall_status").as_deref() == Some("PASS") && r.int("expectations_passed") == Some(5)));

    // A warn failure is recorded and the step passes; a fail failure fails the step.
    let suite = |severity: &str| {
        format!(
            "pipeline_id: dq_check\nsteps:\n  - step_id: check\n    ps_type: data_quality.expectations\n    config:\n      \
             dataset: \"{{dataset}}\"\n      table: openai_cost_daily\n      suite: strict\n      expectations:\n        \
             - {{type: row_count, max: 3, severity: {severity}}}\n        - {{type: not_null, column: model}}\n"
        )
    };
    let warn = run_inline(&ctx, "dqorg", &suite("warn")).await;
    assert_eq!(warn.status, RunStatus::Completed, "{warn:?}");
    assert_eq!(warn.steps[0].output["status"], "WARNING");
    let fail = run_inline(&ctx, "dqorg", &suite("fail")).await;
    assert_eq!(fail.status, RunStatus::Failed);
    assert!(
        fail.error
            .clone()
            .unwrap()
            .contains("row_count (observed {\"rows\":14})"),
        "{:?}",
        fail.error
    );
    let last = ctx
        .warehouse
        .query(
            cloudact_core::meta::CENTRAL_DATASET,
            "SELECT overall_status, failed_expectations FROM {{org_meta_dq_results}} WHERE org_slug = 'dqorg' AND dq_config_id = 'strict' ORDER BY executed_at",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(last.len(), 2);
    assert_eq!(last[1].string("overall_status").as_deref(), Some("FAIL"));
    assert_eq!(last[1].json("failed_expectations").unwrap()[0]["observed"]["rows"], 14);
    // Checks read only the org's own dataset: the central one (keys, credentials) is refused.
    let central = suite("warn").replace("dataset: \"{dataset}\"", "dataset: organizations");
    assert!(central.contains("dataset: organizations"), "{central}");
    let refused = run_inline(&ctx, "dqorg", &central).await;
    assert_eq!(refused.status, RunStatus::Failed, "{refused:?}");
    assert!(
        refused.error.clone().unwrap().contains("org's dataset only"),
        "{:?}",
        refused.error
    );

    // Append adds on every run; truncate replaces the whole table.
    let transform = |mode: &str| {
        format!(
            "pipeline_id: modes\nsteps:\n  - step_id: t\n    ps_type: generic.local_bq_transformer\n    config:\n      \
             dataset: \"{{dataset}}\"\n      sql: SELECT org_slug, usage_date, usage_type, model, total_cost FROM {{{{openai_cost_daily}}}} WHERE total_cost > @min\n      \
             params: {{min: 0}}\n      destination: {{table: cost_copy, schema: openai/schemas/openai_model_daily_summary.json, \
             columns: [org_slug, usage_date, usage_type, model, total_cost], write_mode: {mode}}}\n"
        )
    };
    let copies = |n: i64| {
        let wh = ctx.warehouse.clone();
        async move {
            let r = wh
                .query(
                    "dqorg_local",
                    "SELECT COUNT(*) AS n FROM {{cost_copy}}",
                    &Default::default(),
                )
                .await
                .unwrap();
            assert_eq!(r[0].int("n"), Some(n));
        }
    };
    for (mode, expected) in [("append", 14), ("append", 28), ("truncate", 14), ("truncate", 14)] {
        let report = run_inline(&ctx, "dqorg", &transform(mode)).await;
        assert_eq!(report.status, RunStatus::Completed, "{report:?}");
        copies(expected).await;
    }

    // A transform may only read the org's own tables: a qualified name, or a catalogue
    // table behind an alias (`AS` used to count as a CTE name), fails before any SQL runs.
    for sql in [
        "SELECT * FROM organizations.org_api_keys",
        "SELECT * FROM {{cost_copy}} JOIN organizations.org_api_keys AS k ON TRUE",
        "SELECT * FROM {{cost_copy}} JOIN sqlite_master AS sqlite_master ON TRUE",
        "SELECT (SELECT sql FROM sqlite_master) AS m FROM {{cost_copy}}",
    ] {
        let spec = cloudact_pipeline::PipelineSpec::from_yaml(&format!(
            "pipeline_id: sneaky\nsteps:\n  - step_id: t\n    ps_type: generic.local_bq_transformer\n    config:\n      dataset: x\n      \
             sql: \"{sql}\"\n      destination: {{table: t, columns: [a], write_mode: append}}\n"
        ))
        .unwrap();
        let report = ctx
            .executor
            .run(
                &spec,
                RunRequest {
                    org_slug: Some("dqorg".into()),
                    ..Default::default()
                },
                CancellationToken::new(),
            )
            .await;
        assert_eq!(report.status, RunStatus::Failed, "{sql}");
        let error = report.error.clone().unwrap();
        assert!(
            error.contains("the org's own dataset") || error.contains("tables of the org's dataset only"),
            "{sql}: {error}"
        );
    }
}

/// An OpenAI Admin API serving hand-written usage (see the test below): completions and
/// embeddings for 2026-02-10 and 2026-02-20, nothing billed, and an empty page for anything
/// else (including the one-bucket validation call).
async fn hand_written_openai() -> String {
    use axum::{extract::Query, routing::get};
    let day = |q: &HashMap<String, String>| {
        q.get("start_time")
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| t.date_naive().to_string())
            .unwrap_or_default()
    };
    let page = |start: i64, results: Value| {
        axum::Json(
            serde_json::json!({"object": "page", "has_more": false, "next_page": null,
            "data": [{"object": "bucket", "start_time": start, "end_time": start + 86_400, "results": results}]}),
        )
    };
    let completions = move |Query(q): Query<HashMap<String, String>>| async move {
        let start: i64 = q.get("start_time").and_then(|s| s.parse().ok()).unwrap_or(0);
        let results = match day(&q).as_str() {
            "2026-02-10" | "2026-02-20" => serde_json::json!([
                // gpt-4o, standard: every input kind (2026 counters: uncached reported).
                {"model": "gpt-4o-2024-08-06", "project_id": "proj_a", "batch": false, "service_tier": "default",
                 "num_model_requests": 10, "input_tokens": 1_234_567, "input_cached_tokens": 200_000,
                 "input_cache_write_tokens": 34_567, "input_uncached_tokens": 1_000_000, "output_tokens": 98_765},
                // gpt-4o through the Batch API (old counters: uncached derived as input − cached).
                {"model": "gpt-4o", "project_id": "proj_a", "batch": true, "service_tier": "batch",
                 "num_model_requests": 2, "input_tokens": 500_001, "input_cached_tokens": 0, "output_tokens": 7},
                // gpt-4o-mini on the flex tier, which has no price of its own: standard applies.
                {"model": "gpt-4o-mini-2024-07-18", "project_id": "proj_b", "batch": false, "service_tier": "flex",
                 "num_model_requests": 3, "input_tokens": 333_444, "input_cached_tokens": 111,
                 "input_cache_write_tokens": 0, "input_uncached_tokens": 333_333, "output_tokens": 3},
                // A model nobody priced.
                {"model": "my-private-model", "project_id": "proj_b", "batch": false, "service_tier": "default",
                 "num_model_requests": 1, "input_tokens": 1000, "output_tokens": 1000},
            ]),
            _ => serde_json::json!([]),
        };
        page(start, results)
    };
    let embeddings = move |Query(q): Query<HashMap<String, String>>| async move {
        let start: i64 = q.get("start_time").and_then(|s| s.parse().ok()).unwrap_or(0);
        let results = match day(&q).as_str() {
            "2026-02-10" | "2026-02-20" => serde_json::json!([
                {"model": "text-embedding-3-small", "project_id": "proj_a", "num_model_requests": 40, "input_tokens": 12_345_678}
            ]),
            _ => serde_json::json!([]),
        };
        page(start, results)
    };
    let app = axum::Router::new()
        .route("/v1/organization/usage/completions", get(completions))
        .route("/v1/organization/usage/embeddings", get(embeddings))
        .fallback(|| async {
            axum::Json(serde_json::json!({"object": "page", "data": [], "has_more": false, "next_page": null}))
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn costs_match_a_hand_computed_fixture_to_the_nano_dollar() {
    let url = hand_written_openai().await;
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[("OPENAI_BASE_URL", &url), ("PROVIDER_VALIDATION_TIMEOUT_SECONDS", "2")],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "exact").await;
    let (_, b) = app
        .setup(
            &key,
            "exact",
            "openai",
            serde_json::json!({"credential": "sk-admin-exact-000001"}),
        )
        .await;
    assert_eq!(b["validation_status"], "VALID", "{b}");
    // gpt-4o's standard price changes on 2026-02-15 (from 2.5 / 1.25 / 10 per 1M).
    let (s, b) = app
        .send(
            reqwest::Method::POST,
            &key,
            "/api/v1/integrations/exact/openai/pricing",
            Some(
                serde_json::json!({"model_id": "gpt-4o", "input_price_per_1m": "3", "cached_input_price_per_1m": "1.5",
                                    "output_price_per_1m": "12", "effective_date": "2026-02-15"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    for (date, day_total) in [("2026-02-10", "4.746027385"), ("2026-02-20", "5.510840885")] {
        let (s, b, _) = app
            .post_run(
                &key,
                "/api/v1/pipelines/run/exact/openai/cost/usage_cost",
                serde_json::json!({"date": date}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let run = app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
        assert_eq!(run["status"], "COMPLETED", "{run}");
        let pricing = run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step_name"] == "calculate_cost")
            .unwrap();
        assert_eq!(
            pricing["metadata"]["output"]["total_cost"], day_total,
            "the step reports the exact day total"
        );
    }
    let d = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
    // Worked by hand (USD; tokens × price per 1M ÷ 1 000 000):
    let expected = [
        // 1 000 000 × 2.5 + 200 000 × 1.25 + 34 567 × 2.5 (no cache-write price: input) + 98 765 × 10
        ("2026-02-10", "gpt-4o-2024-08-06", "standard", Some("3.8240675")),
        // after the change: 1 000 000 × 3 + 200 000 × 1.5 + 34 567 × 3 + 98 765 × 12
        ("2026-02-20", "gpt-4o-2024-08-06", "standard", Some("4.588881")),
        // batch prices (unchanged): 500 001 × 1.25 + 7 × 5
        ("2026-02-10", "gpt-4o", "batch", Some("0.62503625")),
        ("2026-02-20", "gpt-4o", "batch", Some("0.62503625")),
        // flex → standard gpt-4o-mini: 333 333 × 0.15 + 111 × 0.075 + 3 × 0.6
        ("2026-02-10", "gpt-4o-mini-2024-07-18", "flex", Some("0.050010075")),
        ("2026-02-20", "gpt-4o-mini-2024-07-18", "flex", Some("0.050010075")),
        // embeddings: 12 345 678 × 0.02
        ("2026-02-10", "text-embedding-3-small", "standard", Some("0.24691356")),
        ("2026-02-20", "text-embedding-3-small", "standard", Some("0.24691356")),
        // no price: null, flagged, never 0
        ("2026-02-10", "my-private-model", "standard", None),
        ("2026-02-20", "my-private-model", "standard", None),
    ];
    let rows = ctx
        .warehouse
        .query(
            "exact_local",
            "SELECT usage_date, model, pricing_tier, total_cost, unknown_model FROM {{openai_cost_daily}}",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), expected.len());
    for (date, model, tier, cost) in expected {
        let row = rows
            .iter()
            .find(|r| {
                r.date("usage_date").unwrap().to_string() == date
                    && r.string("model").as_deref() == Some(model)
                    && r.string("pricing_tier").as_deref() == Some(tier)
            })
            .unwrap_or_else(|| panic!("no row for {date} {model} {tier}"));
        assert_eq!(row.numeric("total_cost"), cost.map(d), "{date} {model} {tier}");
        assert_eq!(row.boolean("unknown_model"), Some(cost.is_none()));
    }
    // The cost query adds them up exactly: 4.746027385 + 5.510840885.
    let (s, b) = app
        .send(
            reqwest::Method::GET,
            &key,
            "/api/v1/costs/exact?start_date=2026-02-01&end_date=2026-02-28&group_by=day",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(d(b["total_cost"].as_str().unwrap()), d("10.25686827"), "{b}");
    let days: Vec<(String, rust_decimal::Decimal)> = b["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["day"].as_str().unwrap().to_string(),
                d(r["total_cost"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        days,
        vec![
            ("2026-02-10".to_string(), d("4.746027385")),
            ("2026-02-20".to_string(), d("5.510840885"))
        ]
    );
    assert_eq!(b["unknown_model_rows"], 2);
}

#[tokio::test]
async fn anthropic_and_deepseek_pipelines_ride_out_rate_limit_storms_and_server_errors() {
    let sandbox_url = sandbox().await;
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[
            ("ANTHROPIC_BASE_URL", &sandbox_url),
            ("DEEPSEEK_BASE_URL", &sandbox_url),
            ("PROVIDER_VALIDATION_TIMEOUT_SECONDS", "2"),
        ],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "storm").await;
    for (provider, credential) in [
        ("claude", "sk-ant-admin01-storm-1"),
        ("deepseek", "sk-ds-storm-0000001"),
    ] {
        let (_, b) = app
            .setup(&key, "storm", provider, serde_json::json!({"credential": credential}))
            .await;
        assert_eq!(b["validation_status"], "VALID", "{b}");
    }
    let total = || {
        let wh = ctx.warehouse.clone();
        async move {
            let r = wh
                .query(
                    "storm_local",
                    "SELECT COUNT(*) AS n, SUM(total_cost) AS c FROM {{anthropic_cost_daily}}",
                    &Default::default(),
                )
                .await
                .unwrap();
            (
                r[0].int("n"),
                r[0].numeric("c")
                    .or_else(|| r[0].float("c").map(|f| rust_decimal::Decimal::try_from(f).unwrap())),
            )
        }
    };
    let mut seen = Vec::new();
    for faults in [
        serde_json::json!({"rate_limited": 3, "server_errors": 2}),
        serde_json::json!({}),
    ] {
        sandbox_faults(&sandbox_url, faults).await;
        for (url, body) in [
            (
                "/api/v1/pipelines/run/storm/anthropic/cost/usage_cost",
                serde_json::json!({"date": "2026-01-10"}),
            ),
            (
                "/api/v1/pipelines/run/storm/deepseek/balance",
                serde_json::json!({"date": "2026-01-10"}),
            ),
        ] {
            let (s, b, _) = app.post_run(&key, url, body).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{b}");
            let run = app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
            assert_eq!(run["status"], "COMPLETED", "{url}: {run}");
        }
        seen.push(total().await);
    }
    assert_eq!(seen[0], seen[1], "the same day with or without the storm");
    assert_eq!(seen[0].0, Some(4));
    assert_eq!(app.count("storm_local", "deepseek_balance_daily", "storm").await, 1);
}

#[tokio::test]
async fn a_table_older_than_its_schema_file_is_named_not_silently_loaded() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "drift").await;
    let (_, b) = app
        .setup(
            &key,
            "drift",
            "openai",
            serde_json::json!({"credential": "sk-admin-drift-000001"}),
        )
        .await;
    assert_eq!(b["validation_status"], "VALID");
    // The raw table as an earlier version created it: no usage_type column.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/openai/schemas/openai_usage_daily_raw.json"),
    )
    .unwrap();
    let mut fields = cloudact_core::warehouse::schema::parse_schema_json(&text).unwrap();
    fields.retain(|f| f.name != "usage_type");
    let old = cloudact_core::warehouse::TableDef {
        name: "openai_usage_daily_raw".into(),
        description: None,
        fields,
        partition_field: Some("usage_date".into()),
        clustering: vec![],
        lookup_keys: vec![],
    };
    assert!(ctx.warehouse.create_table("drift_local", &old).await.unwrap());
    let (s, b, _) = app
        .post_run(
            &key,
            "/api/v1/pipelines/run/drift/openai/cost/usage_cost",
            serde_json::json!({"date": "2026-01-10"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let run = app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "FAILED");
    let error = run["error_message"].as_str().unwrap();
    assert!(error.contains("predates") && error.contains("usage_type"), "{error}");
    assert_eq!(app.count("drift_local", "openai_usage_daily_raw", "drift").await, 0);
}
