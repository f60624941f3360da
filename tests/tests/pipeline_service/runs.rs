//! Pipeline runs: the example pipeline end to end, admission order and quotas, duplicates and
//! cancel, runs of a dead process, request parameters.

use crate::prelude::*;

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
