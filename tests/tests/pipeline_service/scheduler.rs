//! Scheduler integration tests: schedules over HTTP, the trigger and the queue processor
//! driven with a test clock, two instances on one warehouse, gates, retries and catch-up.

use crate::prelude::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const NO_JITTER: (&str, &str) = ("SCHEDULER_JITTER_SECONDS", "0");

async fn schedule(app: &App, key: &str, org: &str, body: Value) -> (StatusCode, Value) {
    app.send(
        Method::POST,
        key,
        &format!("/api/v1/scheduler/org/{org}/pipelines"),
        Some(body),
    )
    .await
}

/// `n` onboarded orgs `{prefix}{i:02}`, each with one no-op schedule on `cron` (UTC).
async fn orgs_with_noop_schedules(app: &App, prefix: &str, n: usize, cron: &str) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for i in 0..n {
        let slug = format!("{prefix}{i:02}");
        let k = onboarded(&app.server.ctx, &slug).await;
        let (s, _) = schedule(app, &k, &slug, noop(cron, "UTC")).await;
        assert_eq!(s, StatusCode::CREATED);
        keys.push((slug, k));
    }
    keys
}

/// An app whose OpenAI base URL is a fresh sandbox, on a test clock at 2026-01-10 12:00 UTC.
async fn spawn_with_openai_sandbox(extra: &[(&str, &str)]) -> (App, Arc<ManualClock>, String) {
    let url = sandbox().await;
    let clock = Arc::new(ManualClock::new(utc("2026-01-10T12:00:00Z")));
    let mut env = vec![
        ("OPENAI_BASE_URL", url.as_str()),
        ("PROVIDER_VALIDATION_TIMEOUT_SECONDS", "1"),
    ];
    env.extend_from_slice(extra);
    let app = spawn_with_clock(clock.clone(), &env).await;
    (app, clock, url)
}

fn noop(cron: &str, tz: &str) -> Value {
    json!({"provider": "example", "pipeline_template": "noop", "schedule_cron": cron, "timezone": tz})
}

async fn scalar(app: &App, sql: &str, params: Params) -> i64 {
    let rows = app
        .server
        .ctx
        .warehouse
        .query(CENTRAL_DATASET, sql, &params)
        .await
        .unwrap();
    rows[0].int("n").unwrap()
}

/// Waits until no run is PENDING or RUNNING.
async fn settle_runs(app: &App) {
    for _ in 0..600 {
        let open = scalar(
            app,
            "SELECT COUNT(*) AS n FROM {{org_meta_pipeline_runs}} WHERE status IN ('PENDING', 'RUNNING')",
            Params::new(),
        )
        .await;
        if open == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("runs did not finish");
}

async fn trigger(app: &App) -> Value {
    let (s, b) = app
        .root(Method::POST, "/api/v1/scheduler/trigger?limit=1000", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

async fn process(app: &App) -> Value {
    let (s, b) = app.root(Method::POST, "/api/v1/scheduler/queue/process", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

#[tokio::test]
async fn schedules_are_validated_and_tenant_checked_on_every_route() {
    let clock = Arc::new(ManualClock::new(utc("2026-06-10T12:00:00Z")));
    let app = spawn_with_clock(clock.clone(), &[NO_JITTER]).await;
    let ctx = app.server.ctx.clone();
    let a = onboarded(&ctx, "sched_a").await;
    let b = onboarded(&ctx, "sched_b").await;

    let (s, created) = schedule(&app, &a, "sched_a", noop("0 6 * * *", "Europe/Berlin")).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["pipeline_id"], "example_noop");
    assert_eq!(created["is_active"], true);
    assert_eq!(created["source"], "USER");
    assert_eq!(
        created["next_run_time"], "2026-06-11T04:00:00Z",
        "06:00 in Berlin (CEST) is 04:00 UTC"
    );
    let id = created["config_id"].as_str().unwrap().to_string();

    for (body, status, code) in [
        (noop("0 6 * *", "UTC"), StatusCode::BAD_REQUEST, "INVALID_CRON"),
        (noop("99 6 * * *", "UTC"), StatusCode::BAD_REQUEST, "INVALID_CRON"),
        (
            noop("0 6 * * *", "Europe/Atlantis"),
            StatusCode::BAD_REQUEST,
            "INVALID_TIMEZONE",
        ),
        (
            json!({"provider": "example", "pipeline_template": "nope", "schedule_cron": "daily"}),
            StatusCode::NOT_FOUND,
            "PIPELINE_NOT_FOUND",
        ),
        (
            json!({"provider": "../etc", "pipeline_template": "noop", "schedule_cron": "daily"}),
            StatusCode::BAD_REQUEST,
            "INVALID_PIPELINE_PATH",
        ),
        (
            json!({"provider": "example", "pipeline_template": "noop", "schedule_cron": "daily", "parameters": {"start_date": "2020-01-01"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_PARAMETERS",
        ),
        (
            json!({"provider": "example", "pipeline_template": "noop", "schedule_cron": "daily", "priority": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_SCHEDULE",
        ),
    ] {
        let (s, e) = schedule(&app, &a, "sched_a", body.clone()).await;
        assert_eq!((s, e["error"].as_str()), (status, Some(code)), "{body} → {e}");
        assert!(e["detail"].as_str().is_some_and(|d| !d.is_empty()), "{e}");
    }
    let (s, e) = schedule(
        &app,
        &a,
        "sched_a",
        json!({"provider": "example", "pipeline_template": "noop", "schedule_cron": "daily", "surprise": 1}),
    )
    .await;
    assert!(s.is_client_error(), "unknown fields are refused: {s} {e}");
    let (_, listed) = app.get_json(&a, "/api/v1/scheduler/org/sched_a/pipelines").await;
    assert_eq!(listed["total"], 1, "refused requests created nothing: {listed}");

    // Another org's key, and no key, on every org route.
    let routes = [
        (Method::GET, "/api/v1/scheduler/org/sched_a/pipelines".to_string(), None),
        (
            Method::POST,
            "/api/v1/scheduler/org/sched_a/pipelines".to_string(),
            Some(noop("daily", "UTC")),
        ),
        (
            Method::GET,
            format!("/api/v1/scheduler/org/sched_a/pipelines/{id}"),
            None,
        ),
        (
            Method::PUT,
            format!("/api/v1/scheduler/org/sched_a/pipelines/{id}"),
            Some(json!({"is_active": false})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/scheduler/org/sched_a/pipelines/{id}"),
            None,
        ),
        (Method::GET, "/api/v1/scheduler/org/sched_a/runs".to_string(), None),
        (Method::GET, "/api/v1/scheduler/org/sched_a/settings".to_string(), None),
        (
            Method::PUT,
            "/api/v1/scheduler/org/sched_a/settings".to_string(),
            Some(json!({"timezone": "UTC"})),
        ),
    ];
    for (method, path, body) in &routes {
        let (s, e) = app.send(method.clone(), &b, path, body.clone()).await;
        assert_eq!(
            (s, e["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("ORG_MISMATCH")),
            "{method} {path}"
        );
        let mut req = app.client.request(method.clone(), app.server.url(path));
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path} without a key");
    }
    // b's own path cannot reach a's schedule either.
    let (s, _) = app
        .get_json(&b, &format!("/api/v1/scheduler/org/sched_b/pipelines/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Root-only routes refuse an org key.
    for path in [
        "/api/v1/scheduler/trigger",
        "/api/v1/scheduler/queue/process",
        "/api/v1/scheduler/reset-daily-quotas",
    ] {
        let (s, e) = app.send(Method::POST, &a, path, None).await;
        assert_eq!(
            (s, e["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("ROOT_KEY_REQUIRED")),
            "{path}"
        );
    }

    // Update: a new cron and timezone recompute the next run; deactivate and reactivate.
    let path = format!("/api/v1/scheduler/org/sched_a/pipelines/{id}");
    let (s, u) = app
        .send(
            Method::PUT,
            &a,
            &path,
            Some(json!({"schedule_cron": "30 2 * * *", "timezone": "America/New_York", "parameters": {"seed": 7}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["next_run_time"], "2026-06-11T06:30:00Z", "02:30 EDT");
    assert_eq!(u["parameters"]["seed"], 7);
    let (s, e) = app
        .send(Method::PUT, &a, &path, Some(json!({"timezone": "Nowhere/Land"})))
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_TIMEZONE"))
    );
    let (s, d) = app.send(Method::DELETE, &a, &path, None).await;
    assert_eq!((s, &d["is_active"]), (StatusCode::OK, &json!(false)));
    let (_, one) = app.get_json(&a, &path).await;
    assert_eq!(one["is_active"], false);
    assert_eq!(one["deactivated_reason"], "USER");
    assert_eq!(one["timezone"], "America/New_York", "a refused update changed nothing");
    let (_, active) = app
        .get_json(&a, "/api/v1/scheduler/org/sched_a/pipelines?is_active=true")
        .await;
    assert_eq!(active["total"], 0);
    let (s, back) = app.send(Method::PUT, &a, &path, Some(json!({"is_active": true}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(back["is_active"], true);
    assert_eq!(back["deactivated_reason"], Value::Null);
}

#[tokio::test]
async fn the_trigger_enqueues_each_occurrence_once_and_follows_dst() {
    let clock = Arc::new(ManualClock::new(utc("2026-03-07T12:00:00Z")));
    let app = spawn_with_clock(clock.clone(), &[NO_JITTER]).await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "dst_org").await;
    // 02:30 does not exist in New York on 2026-03-08 (clocks jump from 02:00 to 03:00).
    let (_, c) = schedule(&app, &key, "dst_org", noop("30 2 * * *", "America/New_York")).await;
    assert_eq!(
        c["next_run_time"], "2026-03-08T07:00:00Z",
        "runs at 03:00 EDT, right after the gap"
    );
    let before = trigger(&app).await;
    assert_eq!(before["queued_count"], 0, "not due yet: {before}");
    assert_eq!(before["next_trigger_time"], "2026-03-07T13:00:00Z");

    clock.set(utc("2026-03-08T07:05:00Z"));
    let first = trigger(&app).await;
    assert_eq!(first["queued_count"], 1, "{first}");
    assert_eq!(first["triggered_count"], 1);
    assert_eq!(
        first["details"]["queued"][0]["start_date"], "2026-03-07",
        "the previous local day"
    );
    let again = trigger(&app).await;
    assert_eq!(again["queued_count"], 0, "a retried trigger enqueues nothing: {again}");
    let (_, one) = app
        .get_json(
            &key,
            &format!(
                "/api/v1/scheduler/org/dst_org/pipelines/{}",
                c["config_id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(one["next_run_time"], "2026-03-09T06:30:00Z", "02:30 EDT the next day");

    // Twenty orgs due at once, four triggers racing: every occurrence enqueued exactly once.
    orgs_with_noop_schedules(&app, "race_", 20, "0 8 * * *").await;
    clock.set(utc("2026-03-09T08:30:00Z"));
    let results = futures_join(&app, 4).await;
    let total: i64 = results.iter().map(|r| r["queued_count"].as_i64().unwrap()).sum();
    // Each race org's schedule (made on 03-08 after 08:00 UTC was next) has two due days
    // by now, plus the New York schedule's next day: 41 occurrences, each once.
    assert_eq!(total, 41, "{results:?}");
    let queued = scalar(
        &app,
        "SELECT COUNT(*) AS n FROM {{org_pipeline_execution_queue}}",
        Params::new(),
    )
    .await;
    assert_eq!(queued, 42, "41 new items plus the first day's");
    let distinct = scalar(
        &app,
        "SELECT COUNT(DISTINCT run_id) AS n FROM {{org_scheduled_pipeline_runs}}",
        Params::new(),
    )
    .await;
    assert_eq!(distinct, 42);
    let (s, status) = app.root(Method::GET, "/api/v1/scheduler/status", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(status["pipelines_queued"], 42, "{status}");
    assert_eq!(status["total_active_pipelines"], 21);
    assert_eq!(status["pipelines_due_now"], 0);
    let (_, q) = app.root(Method::GET, "/api/v1/scheduler/queue?limit=5", None).await;
    assert_eq!(q["queue_length"], 42, "{q}");
    assert_eq!(q["due"], 42, "no jitter: all claimable");
    assert_eq!(q["items"].as_array().unwrap().len(), 5);
}

async fn futures_join(app: &App, n: usize) -> Vec<Value> {
    let calls = (0..n).map(|_| trigger(app));
    futures::future::join_all(calls).await
}

#[tokio::test]
async fn two_instances_racing_run_every_item_once_through_the_run_service() {
    let clock = Arc::new(ManualClock::new(utc("2026-04-01T00:30:00Z")));
    let app = spawn_with_clock(clock.clone(), &[NO_JITTER]).await;
    let second = start_on(app.dir.path(), clock.clone(), &[NO_JITTER]).await;
    let ctx = app.server.ctx.clone();
    let keys = orgs_with_noop_schedules(&app, "twin_", 30, "0 1 * * *").await;
    clock.set(utc("2026-04-01T01:10:00Z"));
    assert_eq!(trigger(&app).await["queued_count"], 30);
    let client = reqwest::Client::new();
    let (a, b) = tokio::join!(
        root_call(
            &client,
            &app.server,
            Method::POST,
            "/api/v1/scheduler/queue/process",
            None
        ),
        root_call(&client, &second, Method::POST, "/api/v1/scheduler/process-queue", None),
    );
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
    let started = a.1["started_count"].as_i64().unwrap() + b.1["started_count"].as_i64().unwrap();
    assert_eq!(
        started, 30,
        "every item admitted by exactly one instance: {} / {}",
        a.1, b.1
    );
    settle_runs(&app).await;
    let settled = process(&app).await;
    assert_eq!(settled["settled"]["completed"], 30, "{settled}");
    assert_eq!(settled["status"], "IDLE");
    for (slug, key) in &keys {
        let (_, runs) = app.get_json(key, "/api/v1/pipelines/runs").await;
        let runs = runs["runs"].as_array().unwrap().clone();
        assert_eq!(runs.len(), 1, "{slug}: one run");
        assert_eq!(runs[0]["status"], "COMPLETED");
        assert_eq!(runs[0]["trigger_type"], "scheduler");
        assert_eq!(runs[0]["run_date"], "2026-03-31");
        let (_, detail) = app
            .get_json(
                key,
                &format!(
                    "/api/v1/pipelines/runs/{}",
                    runs[0]["pipeline_logging_id"].as_str().unwrap()
                ),
            )
            .await;
        assert_eq!(
            detail["steps"].as_array().unwrap().len(),
            3,
            "step logs like an API run"
        );
        let (_, occ) = app.get_json(key, &format!("/api/v1/scheduler/org/{slug}/runs")).await;
        assert_eq!(occ["runs"][0]["state"], "COMPLETED");
        assert_eq!(occ["runs"][0]["pipeline_logging_id"], runs[0]["pipeline_logging_id"]);
        let quota = ctx
            .store
            .quota_row(slug, clock.now().date_naive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(quota.int("pipelines_run_today"), Some(1), "counted once");
        assert_eq!(quota.int("concurrent_pipelines_running"), Some(0));
    }
    let (_, status) = app.root(Method::GET, "/api/v1/scheduler/status", None).await;
    assert_eq!(status["pipelines_completed_today"], 30, "{status}");
    assert_eq!(status["queue_length"], 0);
    let (_, list) = app
        .get_json(&keys[0].1, "/api/v1/scheduler/org/twin_00/pipelines")
        .await;
    assert_eq!(list["pipelines"][0]["last_run_status"], "SUCCESS", "{list}");
}

#[tokio::test]
async fn subscription_status_trial_end_and_quota_gate_scheduled_runs() {
    let clock = Arc::new(ManualClock::new(utc("2026-05-10T00:00:00Z")));
    let app = spawn_with_clock(clock.clone(), &[NO_JITTER]).await;
    let ctx = app.server.ctx.clone();
    let mut keys = std::collections::HashMap::new();
    for slug in ["gate_ok", "gate_suspended", "gate_trial", "gate_quota"] {
        let k = onboarded(&ctx, slug).await;
        let (s, _) = schedule(&app, &k, slug, noop("0 1 * * *", "UTC")).await;
        assert_eq!(s, StatusCode::CREATED);
        keys.insert(slug, k);
    }
    let change = |status: Option<SubscriptionStatus>, trial: Option<chrono::NaiveDate>, daily: Option<i64>| {
        let ctx = ctx.clone();
        move |slug: &'static str| {
            let ctx = ctx.clone();
            async move {
                let current = ctx.store.subscription(slug).await.unwrap().unwrap();
                let mut limits = current.limits;
                if let Some(d) = daily {
                    limits.daily_limit = d;
                }
                let c = SubscriptionChange {
                    status,
                    limits,
                    trial_end_date: trial,
                    ..Default::default()
                };
                ctx.store
                    .update_subscription(slug, &current, &c, Utc::now())
                    .await
                    .unwrap();
            }
        }
    };
    change(Some(SubscriptionStatus::Suspended), None, None)("gate_suspended").await;
    change(
        Some(SubscriptionStatus::Trial),
        Some("2026-05-01".parse().unwrap()),
        None,
    )("gate_trial")
    .await;
    change(None, None, Some(1))("gate_quota").await;
    // gate_quota spends its one run of the day by hand.
    clock.set(utc("2026-05-10T01:05:00Z"));
    let (s, b, _) = app
        .post_run(
            &keys["gate_quota"],
            "/api/v1/pipelines/run/gate_quota/example/noop",
            json!({"date": "2026-05-01"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    settle_runs(&app).await;

    let t = trigger(&app).await;
    assert_eq!(t["queued_count"], 2, "gate_ok and gate_quota are enqueued: {t}");
    assert_eq!(t["skipped_count"], 2);
    let reasons: std::collections::HashMap<String, String> = t["details"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["org_slug"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reasons["gate_suspended"], "subscription status is SUSPENDED");
    assert_eq!(reasons["gate_trial"], "the trial ended on 2026-05-01");
    assert_eq!(
        trigger(&app).await["skipped_count"],
        0,
        "a skipped schedule moved on to its next run"
    );

    let p = process(&app).await;
    assert_eq!(p["started_count"], 1, "{p}");
    assert_eq!(p["refused_count"], 1);
    let refused = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["outcome"] == "refused")
        .unwrap()
        .clone();
    assert_eq!(refused["org_slug"], "gate_quota");
    assert_eq!(refused["error"], "QUOTA_EXCEEDED");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("daily pipeline quota exceeded (1 of 1 used)"),
        "{refused}"
    );
    let quota = ctx
        .store
        .quota_row("gate_quota", clock.now().date_naive())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        quota.int("pipelines_run_today"),
        Some(1),
        "the refusal consumed nothing"
    );
    let (_, occ) = app
        .get_json(&keys["gate_quota"], "/api/v1/scheduler/org/gate_quota/runs")
        .await;
    assert_eq!(occ["runs"][0]["state"], "FAILED");
    assert!(occ["runs"][0]["error_message"].as_str().unwrap().contains("quota"));
    let (_, list) = app
        .get_json(&keys["gate_trial"], "/api/v1/scheduler/org/gate_trial/pipelines")
        .await;
    assert_eq!(list["pipelines"][0]["last_run_status"], "SKIPPED");
    assert_eq!(
        list["pipelines"][0]["last_skip_reason"],
        "the trial ended on 2026-05-01"
    );
}

#[tokio::test]
async fn a_service_down_for_three_days_catches_up_each_missed_day_once() {
    let clock = Arc::new(ManualClock::new(utc("2026-05-01T00:00:00Z")));
    let app = spawn_with_clock(clock.clone(), &[NO_JITTER, ("SCHEDULER_CATCHUP_DAYS", "7")]).await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "gap_org").await;
    let (_, c) = schedule(&app, &key, "gap_org", noop("daily", "UTC")).await;
    assert_eq!(c["next_run_time"], "2026-05-01T01:00:00Z");
    clock.set(utc("2026-05-04T09:00:00Z"));
    let t = trigger(&app).await;
    assert_eq!(t["queued_count"], 4, "{t}");
    let days: Vec<&str> = t["details"]["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["start_date"].as_str().unwrap())
        .collect();
    assert_eq!(days, ["2026-04-30", "2026-05-01", "2026-05-02", "2026-05-03"]);
    assert_eq!(trigger(&app).await["queued_count"], 0);
    assert_eq!(process(&app).await["started_count"], 4);
    settle_runs(&app).await;
    assert_eq!(process(&app).await["settled"]["completed"], 4);
    let (_, runs) = app.get_json(&key, "/api/v1/pipelines/runs?limit=100").await;
    let mut ran: Vec<String> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_date"].as_str().unwrap().to_string())
        .collect();
    ran.sort();
    assert_eq!(
        ran,
        ["2026-04-30", "2026-05-01", "2026-05-02", "2026-05-03"],
        "each day once"
    );

    // A longer outage than the window: only the last days run, the rest is reported.
    let short = spawn_with_clock(clock.clone(), &[NO_JITTER, ("SCHEDULER_CATCHUP_DAYS", "2")]).await;
    let k2 = onboarded(&short.server.ctx, "gap_short").await;
    clock.set(utc("2026-05-04T09:00:00Z"));
    schedule(&short, &k2, "gap_short", noop("daily", "UTC")).await;
    clock.set(utc("2026-05-15T09:00:00Z"));
    let t = trigger(&short).await;
    assert_eq!(t["queued_count"], 2, "{t}");
    assert_eq!(t["dropped_count"], 9);
    assert_eq!(t["details"]["queued"][0]["start_date"], "2026-05-13");
}

#[tokio::test]
async fn failed_scheduled_runs_retry_with_backoff_then_stay_failed() {
    let (app, clock, url) = spawn_with_openai_sandbox(&[NO_JITTER, ("SCHEDULER_RETRY_BASE_SECONDS", "60")]).await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "retry_org").await;
    let (_, setup) = app
        .setup(
            &key,
            "retry_org",
            "openai",
            json!({"credential": "sk-admin-retry-org-0001"}),
        )
        .await;
    assert_eq!(setup["validation_status"], "VALID", "{setup}");
    assert_eq!(
        setup["schedules_activated"], 3,
        "usage_cost, daily_summary and subscriptions: {setup}"
    );
    let (_, list) = app.get_json(&key, "/api/v1/scheduler/org/retry_org/pipelines").await;
    let usage = list["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pipeline_id"] == "openai_usage_cost")
        .unwrap()
        .clone();
    assert_eq!(usage["source"], "AUTO");
    assert_eq!(usage["next_run_time"], "2026-01-11T01:00:00Z");
    // Only the usage pipeline is exercised here.
    for p in list["pipelines"].as_array().unwrap() {
        if p["pipeline_id"] != "openai_usage_cost" {
            let path = format!(
                "/api/v1/scheduler/org/retry_org/pipelines/{}",
                p["config_id"].as_str().unwrap()
            );
            app.send(Method::DELETE, &key, &path, None).await;
        }
    }
    let usage_path = format!(
        "/api/v1/scheduler/org/retry_org/pipelines/{}",
        usage["config_id"].as_str().unwrap()
    );
    let (s, _) = app
        .send(Method::PUT, &key, &usage_path, Some(json!({"max_retries": 1})))
        .await;
    assert_eq!(s, StatusCode::OK);

    let fault = |day: &str| json!({"malformed_day": day, "malformed_page": 0});
    let faults = |body: Value| {
        let url = url.clone();
        async move {
            let r = reqwest::Client::new()
                .put(format!("{url}/_sandbox/faults"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
    };
    faults(fault("2026-01-10")).await;
    clock.set(utc("2026-01-11T01:30:00Z"));
    assert_eq!(trigger(&app).await["queued_count"], 1);
    assert_eq!(process(&app).await["started_count"], 1);
    settle_runs(&app).await;
    let p = process(&app).await;
    assert_eq!(p["settled"]["retries_scheduled"], 1, "{p}");
    assert_eq!(p["started_count"], 0, "the retry waits for its backoff");
    clock.set(utc("2026-01-11T01:31:01Z"));
    faults(json!({})).await;
    let p = process(&app).await;
    assert_eq!(p["started_count"], 1, "retried after 60 s: {p}");
    settle_runs(&app).await;
    assert_eq!(process(&app).await["settled"]["completed"], 1);
    let (_, occ) = app.get_json(&key, "/api/v1/scheduler/org/retry_org/runs").await;
    assert_eq!(occ["runs"][0]["state"], "COMPLETED", "{occ}");
    assert_eq!(occ["runs"][0]["retry_count"], 1);

    // The next day fails twice (the first attempt and its one retry) and stays FAILED.
    faults(fault("2026-01-11")).await;
    clock.set(utc("2026-01-12T01:30:00Z"));
    assert_eq!(trigger(&app).await["queued_count"], 1);
    assert_eq!(process(&app).await["started_count"], 1);
    settle_runs(&app).await;
    assert_eq!(process(&app).await["settled"]["retries_scheduled"], 1);
    clock.set(utc("2026-01-12T01:32:00Z"));
    assert_eq!(process(&app).await["started_count"], 1);
    settle_runs(&app).await;
    let p = process(&app).await;
    assert_eq!(p["settled"]["failed"], 1, "{p}");
    let (_, occ) = app.get_json(&key, "/api/v1/scheduler/org/retry_org/runs").await;
    let last = &occ["runs"][0];
    assert_eq!(last["state"], "FAILED", "{occ}");
    assert!(
        last["error_message"]
            .as_str()
            .unwrap()
            .starts_with("failed after 2 attempts"),
        "{last}"
    );
    let (_, runs) = app.get_json(&key, "/api/v1/pipelines/runs?limit=100").await;
    assert_eq!(runs["total"], 4, "two attempts per day, nothing else");

    // Removing the integration stops its schedules; setting it up again brings them back.
    let (_, removed) = app
        .send(Method::DELETE, &key, "/api/v1/integrations/retry_org/openai", None)
        .await;
    assert_eq!(removed["schedules_deactivated"], 1, "{removed}");
    let (_, one) = app.get_json(&key, &usage_path).await;
    assert_eq!(
        (one["is_active"].clone(), one["deactivated_reason"].clone()),
        (json!(false), json!("INTEGRATION_REMOVED"))
    );
    // Changing something else on the stopped schedule keeps why it stopped.
    let (s, _) = app
        .send(Method::PUT, &key, &usage_path, Some(json!({"priority": 3})))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, one) = app.get_json(&key, &usage_path).await;
    assert_eq!(one["deactivated_reason"], "INTEGRATION_REMOVED");
    let (_, again) = app
        .setup(
            &key,
            "retry_org",
            "openai",
            json!({"credential": "sk-admin-retry-org-0002"}),
        )
        .await;
    assert_eq!(
        again["schedules_activated"], 1,
        "only the one the removal stopped: {again}"
    );
    let (_, one) = app.get_json(&key, &usage_path).await;
    assert_eq!(one["is_active"], true);
}

#[tokio::test]
async fn maintenance_routes_repair_quotas_and_fail_orphaned_runs() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    // The heartbeat sweeper would fail the orphan first: keep it out of this test.
    let app = spawn_with_clock(clock.clone(), &[("RUN_STALE_SECONDS", "86400")]).await;
    let ctx = app.server.ctx.clone();
    let _ = onboarded(&ctx, "maint").await;
    let today = clock.now().date_naive();
    // An orphaned RUNNING run of a dead runner, started two hours ago.
    let run = cloudact_core::meta::runs::NewRun {
        pipeline_logging_id: uuid::Uuid::new_v4().to_string(),
        org_slug: "maint".into(),
        pipeline_id: "example_noop".into(),
        trigger_type: "api".into(),
        trigger_by: None,
        user_id: None,
        org_api_key_id: None,
        start_date: today,
        end_date: today,
        parameters: json!({}),
        retry_of: None,
        runner_id: "dead-runner".into(),
    };
    let limits = ctx.store.subscription("maint").await.unwrap().unwrap().limits;
    ctx.store
        .admit_run(&run, &limits, clock.now() - chrono::Duration::hours(2))
        .await
        .unwrap();
    // Drift: a running count nothing explains, and a day row from long ago.
    let wh = ctx.warehouse.clone();
    wh.execute(
        CENTRAL_DATASET,
        "UPDATE {{org_usage_quotas}} SET concurrent_pipelines_running = 5 WHERE org_slug = @org",
        &Params::new().with("org", "maint"),
    )
    .await
    .unwrap();
    let old = today - chrono::Duration::days(120);
    wh.execute(
        CENTRAL_DATASET,
        "INSERT INTO {{org_usage_quotas}} (usage_id, org_slug, usage_date, pipelines_run_today, pipelines_succeeded_today, \
         pipelines_failed_today, pipelines_run_month, concurrent_pipelines_running, daily_limit, monthly_limit, \
         concurrent_limit, created_at, last_updated) VALUES ('old', 'maint', @d, 3, 3, 0, 3, 0, 6, 180, 20, @now, @now)",
        &Params::new().with("d", old).with("now", clock.now()),
    )
    .await
    .unwrap();
    let (s, r) = app
        .root(Method::POST, "/api/v1/scheduler/reset-daily-quotas", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["rows_deleted"], 1, "{r}");
    assert!(r["rows_repaired"].as_u64().unwrap() >= 1);
    let quota = ctx.store.quota_row("maint", run.start_date).await.unwrap().unwrap();
    assert_eq!(quota.int("concurrent_pipelines_running"), Some(1), "the one open run");
    assert!(ctx.store.quota_row("maint", old).await.unwrap().is_none());

    let (s, e) = app
        .root(
            Method::POST,
            "/api/v1/scheduler/cleanup-orphaned-pipelines?timeout_minutes=5",
            None,
        )
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_QUERY"))
    );
    let (s, c) = app
        .root(
            Method::POST,
            "/api/v1/scheduler/cleanup-orphaned-pipelines?timeout_minutes=60",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["cleaned_count"], 1, "{c}");
    let row = ctx.store.run("maint", &run.pipeline_logging_id).await.unwrap().unwrap();
    assert_eq!(row.string("status").as_deref(), Some("FAILED"));
    assert!(row.string("error_message").unwrap().contains("orphaned"));
    let quota = ctx.store.quota_row("maint", run.start_date).await.unwrap().unwrap();
    assert_eq!(quota.int("concurrent_pipelines_running"), Some(0), "slot released");
    let (_, c) = app
        .root(Method::POST, "/api/v1/scheduler/cleanup-orphaned-pipelines", None)
        .await;
    assert_eq!(c["cleaned_count"], 0, "idempotent");
}

#[tokio::test]
async fn occurrences_are_spread_by_a_deterministic_per_org_jitter() {
    let clock = Arc::new(ManualClock::new(utc("2026-07-01T00:00:00Z")));
    let app = spawn_with_clock(clock.clone(), &[("SCHEDULER_JITTER_SECONDS", "600")]).await;
    let ctx = app.server.ctx.clone();
    for i in 0..10 {
        let slug = format!("jit_{i}");
        let k = onboarded(&ctx, &slug).await;
        schedule(&app, &k, &slug, noop("daily", "UTC")).await;
    }
    clock.set(utc("2026-07-01T01:00:30Z"));
    let t = trigger(&app).await;
    let offsets: Vec<i64> = t["details"]["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let nb = utc(q["not_before"].as_str().unwrap());
            let at = utc(q["scheduled_time"].as_str().unwrap());
            (nb - at).num_seconds()
        })
        .collect();
    assert_eq!(offsets.len(), 10);
    assert!(offsets.iter().all(|o| (0..600).contains(o)), "{offsets:?}");
    let distinct: std::collections::HashSet<_> = offsets.iter().collect();
    assert!(distinct.len() >= 8, "spread, not one second: {offsets:?}");
    let p = process(&app).await;
    let due_now = offsets.iter().filter(|o| **o <= 30).count();
    assert_eq!(
        p["started_count"].as_u64().unwrap() as usize,
        due_now,
        "only items past their offset: {p}"
    );
    clock.set(utc("2026-07-01T01:10:00Z"));
    let p = process(&app).await;
    assert_eq!(p["started_count"].as_u64().unwrap() as usize, 10 - due_now);
}

#[tokio::test]
async fn the_internal_scheduler_runs_due_schedules_by_itself_even_alongside_cloud_scheduler() {
    let clock = Arc::new(ManualClock::new(utc("2026-08-01T00:00:00Z")));
    let app = spawn_with_clock(
        clock.clone(),
        &[NO_JITTER, ("SCHEDULER", "internal"), ("SCHEDULER_TICK_SECONDS", "1")],
    )
    .await;
    let keys = orgs_with_noop_schedules(&app, "auto_", 5, "daily").await;
    clock.set(utc("2026-08-01T01:00:10Z"));
    // Cloud Scheduler calling the endpoints at the same time as the internal loop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        trigger(&app).await;
        process(&app).await;
        let done = scalar(
            &app,
            "SELECT COUNT(*) AS n FROM {{org_scheduled_pipeline_runs}} WHERE state = 'COMPLETED'",
            Params::new(),
        )
        .await;
        if done == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the internal scheduler did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    for (slug, key) in &keys {
        let (_, runs) = app.get_json(key, "/api/v1/pipelines/runs").await;
        assert_eq!(runs["total"], 1, "{slug}: each occurrence once: {runs}");
        assert_eq!(runs["runs"][0]["run_date"], "2026-07-31");
    }
}

#[tokio::test]
async fn without_any_call_the_internal_loop_triggers_processes_and_settles() {
    let clock = Arc::new(ManualClock::new(utc("2026-08-01T00:00:00Z")));
    let app = spawn_with_clock(
        clock.clone(),
        &[NO_JITTER, ("SCHEDULER", "internal"), ("SCHEDULER_TICK_SECONDS", "1")],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "quiet_org").await;
    schedule(&app, &key, "quiet_org", noop("daily", "UTC")).await;
    clock.set(utc("2026-08-01T01:00:10Z"));
    for _ in 0..200 {
        let (_, occ) = app.get_json(&key, "/api/v1/scheduler/org/quiet_org/runs").await;
        if occ["runs"][0]["state"] == "COMPLETED" {
            let (_, runs) = app.get_json(&key, "/api/v1/pipelines/runs").await;
            assert_eq!(runs["runs"][0]["trigger_type"], "scheduler");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the internal scheduler never ran the due schedule");
}

#[tokio::test]
async fn the_org_timezone_places_new_schedules_and_can_move_existing_ones() {
    let (app, _, _) = spawn_with_openai_sandbox(&[NO_JITTER]).await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "tz_org").await;
    let (_, st) = app.get_json(&key, "/api/v1/scheduler/org/tz_org/settings").await;
    assert_eq!(
        (st["timezone"].clone(), st["timezone_set"].clone()),
        (json!("UTC"), json!(false))
    );
    let (_, user) = schedule(&app, &key, "tz_org", noop("0 6 * * *", "UTC")).await;
    let path = "/api/v1/scheduler/org/tz_org/settings";
    let (s, e) = app
        .send(Method::PUT, &key, path, Some(json!({"timezone": "Europe/Nowhere"})))
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_TIMEZONE"))
    );
    let (s, set) = app
        .send(Method::PUT, &key, path, Some(json!({"timezone": "Asia/Tokyo"})))
        .await;
    assert_eq!((s, set["schedules_moved"].clone()), (StatusCode::OK, json!(0)), "{set}");
    let (_, setup) = app
        .setup(
            &key,
            "tz_org",
            "openai",
            json!({"credential": "sk-admin-tz-org-00000001"}),
        )
        .await;
    assert_eq!(setup["schedules_activated"], 3, "{setup}");
    let (_, list) = app.get_json(&key, "/api/v1/scheduler/org/tz_org/pipelines").await;
    let auto: Vec<&Value> = list["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] == "AUTO")
        .collect();
    assert_eq!(auto.len(), 3);
    for p in &auto {
        assert_eq!(p["timezone"], "Asia/Tokyo");
        if p["pipeline_id"] == "openai_subscriptions" {
            assert_eq!(
                p["next_run_time"], "2026-01-31T17:00:00Z",
                "monthly: 02:00 in Tokyo on 1 February"
            );
        } else {
            assert_eq!(p["next_run_time"], "2026-01-10T16:00:00Z", "01:00 in Tokyo on the 11th");
        }
    }
    // Moving every schedule: the org's own 06:00 schedule now means 06:00 in Tokyo.
    let (s, moved) = app
        .send(
            Method::PUT,
            &key,
            path,
            Some(json!({"timezone": "Asia/Tokyo", "apply_to_existing": true})),
        )
        .await;
    assert_eq!(
        (s, moved["schedules_moved"].clone()),
        (StatusCode::OK, json!(4)),
        "{moved}"
    );
    let (_, one) = app
        .get_json(
            &key,
            &format!(
                "/api/v1/scheduler/org/tz_org/pipelines/{}",
                user["config_id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(one["timezone"], "Asia/Tokyo");
    assert_eq!(
        one["next_run_time"], "2026-01-10T21:00:00Z",
        "06:00 in Tokyo on the 11th"
    );
}

#[tokio::test]
async fn concurrent_setups_make_one_auto_schedule_per_pipeline() {
    let (app, _, _) = spawn_with_openai_sandbox(&[]).await;
    let key = onboarded(&app.server.ctx, "race_setup").await;
    let body = json!({"credential": "sk-admin-race-setup-0001"});
    let (a, b, c) = tokio::join!(
        app.setup(&key, "race_setup", "openai", body.clone()),
        app.setup(&key, "race_setup", "openai", body.clone()),
        app.setup(&key, "race_setup", "openai", body.clone()),
    );
    let made: i64 = [a, b, c]
        .iter()
        .map(|(_, r)| r["schedules_activated"].as_i64().unwrap())
        .sum();
    assert_eq!(made, 3, "usage_cost, daily_summary and subscriptions, once each");
    let (_, list) = app.get_json(&key, "/api/v1/scheduler/org/race_setup/pipelines").await;
    assert_eq!(list["total"], 3, "{list}");
}

#[tokio::test]
async fn an_admission_under_an_expired_claim_starts_nothing() {
    use cloudact_pipeline::runs::{ScheduledLink, SubmitRequest, Submitted};
    let clock = Arc::new(ManualClock::new(utc("2026-02-01T00:00:00Z")));
    let app = spawn_with_clock(clock.clone(), &[NO_JITTER]).await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "stale_claim").await;
    schedule(&app, &key, "stale_claim", noop("daily", "UTC")).await;
    clock.set(utc("2026-02-01T01:00:05Z"));
    assert_eq!(trigger(&app).await["queued_count"], 1);
    let now = clock.now();
    let lease = chrono::Duration::seconds(120);
    let first = ctx
        .store
        .claim_queue("runner-a", "token-a", now, now - lease, 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let none = ctx
        .store
        .claim_queue("runner-b", "token-b", now, now - lease, 10)
        .await
        .unwrap();
    assert!(none.is_empty(), "a live claim is not taken");
    // Runner A stalls past its lease; runner B takes the item over.
    let later = now + chrono::Duration::seconds(200);
    let second = ctx
        .store
        .claim_queue("runner-b", "token-b", later, later - lease, 10)
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "an expired claim is claimable");
    let item = &first[0];
    let entry = ctx.catalog.by_id(&item.pipeline_id).unwrap();
    let request = |token: &str| SubmitRequest {
        org_slug: item.org_slug.clone(),
        org_api_key_id: None,
        start_date: item.start_date,
        end_date: item.end_date,
        trigger_type: "scheduler".into(),
        trigger_by: None,
        user_id: None,
        parameters: Default::default(),
        retry_of: None,
        scheduled: Some(ScheduledLink {
            run_id: item.run_id.clone(),
            claim_token: token.into(),
        }),
    };
    assert_eq!(
        ctx.runs.submit(&entry, request("token-a")).await.unwrap(),
        Submitted::AlreadyAdmitted
    );
    let runs = scalar(
        &app,
        "SELECT COUNT(*) AS n FROM {{org_meta_pipeline_runs}}",
        Params::new(),
    )
    .await;
    assert_eq!(runs, 0, "the stale claimer started nothing and consumed nothing");
    let Submitted::Started(id) = ctx.runs.submit(&entry, request("token-b")).await.unwrap() else {
        panic!("the current claimer admits it");
    };
    let again = ctx.runs.submit(&entry, request("token-b")).await.unwrap();
    assert!(
        again == Submitted::AlreadyAdmitted || again == Submitted::AlreadyRunning(id),
        "and the occurrence is admitted once: {again:?}"
    );
    let runs = scalar(
        &app,
        "SELECT COUNT(*) AS n FROM {{org_meta_pipeline_runs}}",
        Params::new(),
    )
    .await;
    assert_eq!(runs, 1);
}
