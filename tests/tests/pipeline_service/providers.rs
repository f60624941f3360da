//! Provider pipelines against the sandbox: OpenAI and Anthropic usage, DeepSeek balance, faults,
//! rate-limit storms, tables older than their schema file.

use crate::prelude::*;

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
        14,
        "2 days × 7 shapes (3 models × standard/batch, and sonnet 4.5 at 200k-1M context)"
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
    assert_eq!(seen[0].0, Some(7), "the day's 7 Anthropic usage shapes");
    assert_eq!(app.count("storm_local", "deepseek_balance_daily", "storm").await, 1);
}

#[tokio::test]
async fn a_table_older_than_its_schema_file_is_migrated_and_an_incompatible_one_named() {
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
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/openai/schemas/openai_usage_daily_raw.json"),
    )
    .unwrap();
    let current = cloudact_core::warehouse::schema::parse_schema_json(&text).unwrap();
    let table = |fields| cloudact_core::warehouse::TableDef {
        name: "openai_usage_daily_raw".into(),
        description: None,
        fields,
        partition_field: Some("usage_date".into()),
        clustering: vec![],
        lookup_keys: vec![],
    };
    let run = |date: &'static str| {
        let (app, key) = (&app, &key);
        async move {
            let (s, b, _) = app
                .post_run(
                    key,
                    "/api/v1/pipelines/run/drift/openai/cost/usage_cost",
                    serde_json::json!({"date": date}),
                )
                .await;
            assert_eq!(s, StatusCode::ACCEPTED, "{b}");
            app.finished(key, b["pipeline_logging_id"].as_str().unwrap()).await
        }
    };
    // An incompatible table (a column retyped): the step fails naming it, nothing is loaded.
    let mut retyped = current.clone();
    for f in &mut retyped {
        if f.name == "output_tokens" {
            f.field_type = cloudact_core::warehouse::FieldType::String;
        }
    }
    assert!(ctx
        .warehouse
        .create_table("drift_local", &table(retyped))
        .await
        .unwrap());
    let failed = run("2026-01-10").await;
    assert_eq!(failed["status"], "FAILED");
    let error = failed["error_message"].as_str().unwrap();
    assert!(
        error.contains("cannot be brought up") && error.contains("output_tokens"),
        "{error}"
    );
    assert_eq!(app.count("drift_local", "openai_usage_daily_raw", "drift").await, 0);
    // The raw table as an earlier version created it (no usage_type): the column is added and
    // the day loads with it.
    ctx.warehouse
        .drop_table("drift_local", "openai_usage_daily_raw")
        .await
        .unwrap();
    let mut old = current.clone();
    old.retain(|f| f.name != "usage_type");
    assert!(ctx.warehouse.create_table("drift_local", &table(old)).await.unwrap());
    let done = run("2026-01-10").await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let schema = ctx
        .warehouse
        .table_schema("drift_local", "openai_usage_daily_raw")
        .await
        .unwrap();
    assert!(schema.iter().any(|f| f.name == "usage_type"));
    let rows = ctx
        .warehouse
        .query(
            "drift_local",
            "SELECT COUNT(*) AS n FROM {{openai_usage_daily_raw}} WHERE usage_type IS NOT NULL",
            &Default::default(),
        )
        .await
        .unwrap();
    assert!(rows[0].int("n").unwrap() > 0);
}

/// The pipeline-service side of operating: a real run shows in `/metrics` (runs, steps, rows by
/// table, provider calls), is audited with its actor, and a key without `pipelines:execute`
/// cannot submit one.
#[tokio::test]
async fn runs_are_metered_audited_and_need_the_execute_scope() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "metered").await;
    app.setup(
        &key,
        "metered",
        "openai",
        serde_json::json!({"credential": "sk-admin-metered-000001"}),
    )
    .await;
    let url = "/api/v1/pipelines/run/metered/openai/cost/usage_cost";
    let (s, b, _) = app.post_run(&key, url, serde_json::json!({"date": "2026-01-10"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let run = app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    let text = reqwest::get(app.server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = |name: &str, labels: &[&str]| {
        text.lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(
        sample("pipeline_runs_finished_total", &[r#"status="COMPLETED""#]) >= 1.0,
        "{text}"
    );
    assert!(
        sample("pipeline_rows_loaded_total", &[r#"table="openai_usage_daily_raw""#]) > 0.0,
        "{text}"
    );
    assert!(
        sample("pipeline_rows_loaded_total", &[r#"table="openai_cost_daily""#]) > 0.0,
        "{text}"
    );
    assert!(
        sample("pipeline_step_duration_seconds_count", &[r#"step_type="openai.usage""#]) >= 1.0,
        "{text}"
    );
    assert!(sample("provider_requests_total", &[r#"status="200""#]) >= 1.0, "{text}");
    assert!(
        sample(
            "http_requests_total",
            &[
                r#"route="/api/v1/pipelines/run/{org_slug}/{provider}/{domain}/{pipeline}""#,
                r#"status="202""#
            ]
        ) >= 1.0,
        "{text}"
    );
    // Audited: the submission, by the org's key, with its request id.
    let (rows, _) = ctx
        .store
        .audit_list(&cloudact_core::meta::AuditQuery {
            org_slug: "metered",
            action: Some("pipelines.run.create"),
            since: None,
            limit: 10,
            offset: 0,
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].string("status").as_deref(), Some("SUCCESS"));
    assert!(rows[0].string("api_key_id").unwrap().starts_with("key:"));
    // A read-only key cannot run.
    let plain = {
        let (k, s2) = cloudact_core::meta::NewApiKey::mint(&*ctx.kms, "metered")
            .await
            .unwrap();
        ctx.store
            .replace_key_scoped("metered", &s2, &["pipelines:read".to_string()], chrono::Utc::now())
            .await
            .unwrap();
        use secrecy::ExposeSecret;
        k.expose_secret().to_string()
    };
    let (s, b, _) = app
        .post_run(&plain, url, serde_json::json!({"date": "2026-01-11"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(
        (b["error"].as_str(), b["required_scope"].as_str()),
        (Some("INSUFFICIENT_SCOPE"), Some("pipelines:execute"))
    );
    let (s, _) = app.get_json(&plain, "/api/v1/pipelines/runs").await;
    assert_eq!(s, StatusCode::OK, "reading runs is in scope");
}
