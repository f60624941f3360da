//! Cost queries and reconciliation: exact sums by dimension, computed against billed, a
//! hand-computed fixture to the nano-dollar.

use rust_decimal::Decimal;

use crate::prelude::*;

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
    let (openai, example_total) = (
        sum("openai_cost_daily").await + sum("openai_unit_cost_daily").await,
        sum("example_cost_daily").await,
    );
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
        let steps = if url.contains("openai") { 50 } else { 30 };
        assert_eq!(
            run["steps"].as_array().unwrap().len(),
            steps,
            "usage and cost (tokens; OpenAI also units), billed cost, 10 days"
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
    serve(app).await
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

/// The original's pricing terms change what a price costs: a discount percentage comes off
/// every price of its row, and below a volume threshold (month-to-date tokens of the model,
/// the day included) the base prices apply instead. Figures worked by hand.
#[tokio::test]
async fn discounts_and_volume_thresholds_are_priced_exactly() {
    let url = hand_written_openai().await;
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[("OPENAI_BASE_URL", &url), ("PROVIDER_VALIDATION_TIMEOUT_SECONDS", "2")],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "terms").await;
    let (_, b) = app
        .setup(&key, "terms", "openai", json!({"credential": "sk-admin-terms-000001"}))
        .await;
    assert_eq!(b["validation_status"], "VALID", "{b}");
    let base = "/api/v1/integrations/terms/openai/pricing";
    // 25 % off the embeddings model (a negotiated discount).
    let (s, b) = app
        .send(
            Method::PUT,
            &key,
            &format!("{base}/text-embedding-3-small"),
            Some(json!({"pricing_type": "negotiated", "discount_percentage": 25, "discount_reason": "negotiated"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["pricing_type"].as_str(), b["discount_percentage"].as_str()),
        (Some("negotiated"), Some("25")),
        "{b}"
    );
    // gpt-4o-mini's list price needs 500 000 tokens a month; below it 0.30 / 1.20 per 1M
    // (given in the original's per-1K form).
    let (s, b) = app
        .send(
            Method::PUT,
            &key,
            &format!("{base}/gpt-4o-mini"),
            Some(
                json!({"pricing_type": "volume_discount", "volume_threshold_tokens": 500_000,
                        "base_input_price_per_1k": "0.0003", "base_output_price_per_1k": "0.0012"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (
            b["base_input_price_per_1m"].as_str(),
            b["base_output_price_per_1k"].as_str()
        ),
        (Some("0.3"), Some("0.0012")),
        "{b}"
    );
    // GET one row in the original's shape; other tiers by query parameter; every row on asking.
    let (s, one) = app.send(Method::GET, &key, &format!("{base}/gpt-4o-mini"), None).await;
    assert_eq!(s, StatusCode::OK, "{one}");
    assert_eq!(
        (one["model_id"].as_str(), one["volume_threshold_tokens"].as_i64()),
        (Some("gpt-4o-mini"), Some(500_000))
    );
    let (s, batch) = app
        .send(Method::GET, &key, &format!("{base}/gpt-4o?pricing_tier=batch"), None)
        .await;
    assert_eq!(
        (s, batch["pricing_tier"].as_str()),
        (StatusCode::OK, Some("batch")),
        "{batch}"
    );
    assert_eq!(batch["pricing_type"], "standard", "never missing");
    let (_, all) = app
        .send(Method::GET, &key, &format!("{base}/gpt-4o?all=true"), None)
        .await;
    assert!(all["count"].as_u64().unwrap() >= 2, "{all}");
    let (s, b) = app
        .send(
            Method::PUT,
            &key,
            &format!("{base}/gpt-4o"),
            Some(json!({"discount_percentage": 101})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let (s, b) = app
        .send(
            Method::PUT,
            &key,
            &format!("{base}/gpt-4o"),
            Some(json!({"pricing_type": "cheap"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");

    for date in ["2026-02-10", "2026-02-20"] {
        let (s, b, _) = app
            .post_run(
                &key,
                "/api/v1/pipelines/run/terms/openai/cost/usage_cost",
                json!({"date": date}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let run = app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
        assert_eq!(run["status"], "COMPLETED", "{run}");
    }
    let d = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
    let expected = [
        // 12 345 678 × 0.02 × 0.75
        ("2026-02-10", "text-embedding-3-small", "0.18518517"),
        ("2026-02-20", "text-embedding-3-small", "0.18518517"),
        // Feb 10: 333 447 tokens this month < 500 000 → base: 333 333 × 0.30 + 111 × 0.075 (cached
        // has no base form: the row's price) + 3 × 1.20
        ("2026-02-10", "gpt-4o-mini-2024-07-18", "0.100011825"),
        // Feb 20: 666 894 ≥ 500 000 → list: 333 333 × 0.15 + 111 × 0.075 + 3 × 0.6
        ("2026-02-20", "gpt-4o-mini-2024-07-18", "0.050010075"),
    ];
    let rows = ctx
        .warehouse
        .query(
            "terms_local",
            "SELECT usage_date, model, total_cost FROM {{openai_cost_daily}}",
            &Default::default(),
        )
        .await
        .unwrap();
    for (date, model, cost) in expected {
        let row = rows
            .iter()
            .find(|r| r.date("usage_date").unwrap().to_string() == date && r.string("model").as_deref() == Some(model))
            .unwrap_or_else(|| panic!("no row for {date} {model}"));
        assert_eq!(row.numeric("total_cost"), Some(d(cost)), "{date} {model}");
    }

    // Plans take the original's fields too.
    let plans = "/api/v1/integrations/terms/openai/subscriptions";
    let (s, b) = app
        .send(
            Method::POST,
            &key,
            plans,
            Some(
                json!({"subscription_id": "sub_trial_team", "plan_name": "TEAM_TRIAL", "quantity": 5,
                        "unit_price_usd": "25", "effective_date": "2026-02-01", "tier_type": "trial",
                        "trial_end_date": "2026-03-01", "trial_credit_usd": "300", "rpm_limit": 500,
                        "tpm_limit": 30000, "discount_percentage": "10"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (_, plan) = app.send(Method::GET, &key, &format!("{plans}/TEAM_TRIAL"), None).await;
    for (field, want) in [
        ("tier_type", json!("trial")),
        ("trial_end_date", json!("2026-03-01")),
        ("trial_credit_usd", json!("300")),
        ("rpm_limit", json!(500)),
        ("tpm_limit", json!(30000)),
    ] {
        assert_eq!(plan[field], want, "{field}: {plan}");
    }
    let (_, free) = app.send(Method::GET, &key, &format!("{plans}/FREE"), None).await;
    assert_eq!(
        free["tier_type"], "free",
        "a seeded plan answers with the tier its name says: {free}"
    );
    let (s, b) = app
        .send(
            Method::PUT,
            &key,
            &format!("{plans}/TEAM_TRIAL"),
            Some(json!({"tier_type": "gold"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
}

/// Runs the cost pipeline of `provider` for each date and returns each run's output of the
/// cost step.
async fn run_cost_days(app: &App, key: &str, path: &str, dates: &[&str]) -> Vec<Value> {
    let mut outputs = Vec::new();
    for date in dates {
        let (s, b, _) = app.post_run(key, path, json!({"date": date})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let run = app.finished(key, b["pipeline_logging_id"].as_str().unwrap()).await;
        assert_eq!(run["status"], "COMPLETED", "{run}");
        outputs.push(run);
    }
    outputs
}

/// The day's cost rows of one model: (usage total, free-tier credit) as exact decimals.
async fn day_costs(
    ctx: &cloudact_web::AppContext,
    dataset: &str,
    table: &str,
    marker: &str,
    date: &str,
    model: &str,
) -> (Decimal, Decimal) {
    let rows = ctx
        .warehouse
        .query(
            dataset,
            &format!("SELECT {marker} AS kind, total_cost, uncached_input_tokens, output_tokens FROM {{{{{table}}}}} WHERE usage_date = @d AND priced_model_id = @m"),
            &cloudact_core::warehouse::Params::new()
                .with("d", date.parse::<chrono::NaiveDate>().unwrap())
                .with("m", model),
        )
        .await
        .unwrap();
    let (mut usage, mut credit) = (Decimal::ZERO, Decimal::ZERO);
    for r in rows {
        let cost = r.numeric("total_cost").unwrap();
        if r.string("kind").as_deref() == Some("free_tier") {
            assert_eq!(
                (r.int("uncached_input_tokens"), r.int("output_tokens")),
                (Some(0), Some(0)),
                "a credit row carries no tokens"
            );
            assert!(cost <= Decimal::ZERO, "{cost}");
            credit -= cost;
        } else {
            usage += cost;
        }
    }
    (usage, credit)
}

/// Free tiers: the allowance left after the period's earlier days comes off the day as a
/// credit row (input tokens to the full-price kinds first), per reset period (daily, monthly,
/// once), only for usage the free row prices. Figures worked by hand.
#[tokio::test]
async fn openai_free_tiers_come_off_each_period_exactly() {
    let url = hand_written_openai().await;
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[("OPENAI_BASE_URL", &url), ("PROVIDER_VALIDATION_TIMEOUT_SECONDS", "2")],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "free").await;
    let (_, b) = app
        .setup(&key, "free", "openai", json!({"credential": "sk-admin-free-000001"}))
        .await;
    assert_eq!(b["validation_status"], "VALID", "{b}");
    let base = "/api/v1/integrations/free/openai/pricing";
    for (model, terms) in [
        // 500 000 input + 5 output tokens a month (the flex usage falls back to this row).
        (
            "gpt-4o-mini",
            json!({"pricing_type": "free_tier", "free_tier_input_tokens": 500_000, "free_tier_output_tokens": 5, "free_tier_reset_frequency": "monthly"}),
        ),
        // 10M input tokens every day.
        (
            "text-embedding-3-small",
            json!({"free_tier_input_tokens": 10_000_000, "free_tier_reset_frequency": "daily"}),
        ),
        // 1.5M input tokens once (standard tier only: the batch usage has its own row).
        (
            "gpt-4o",
            json!({"free_tier_input_tokens": 1_500_000, "free_tier_reset_frequency": "never"}),
        ),
    ] {
        let (s, b) = app
            .send(Method::PUT, &key, &format!("{base}/{model}"), Some(terms))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, b) = app
        .send(
            Method::PUT,
            &key,
            &format!("{base}/gpt-4o"),
            Some(json!({"free_tier_reset_frequency": "weekly"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let path = "/api/v1/pipelines/run/free/openai/cost/usage_cost";
    // Feb 20 first: a day priced before an earlier one still counts the earlier usage.
    run_cost_days(&app, &key, path, &["2026-02-20", "2026-02-10", "2026-02-20"]).await;
    let d = |s: &str| s.parse::<Decimal>().unwrap();
    let cost = |date: &'static str, model: &'static str| {
        let ctx = ctx.clone();
        async move { day_costs(&ctx, "free_local", "openai_cost_daily", "usage_type", date, model).await }
    };
    // gpt-4o-mini, Feb 10: usage 333 333 × 0.15 + 111 × 0.075 + 3 × 0.6 = 0.050010075, all
    // of it within the month's allowance.
    assert_eq!(
        cost("2026-02-10", "gpt-4o-mini").await,
        (d("0.050010075"), d("0.050010075"))
    );
    // Feb 20: 500 000 − 333 444 = 166 556 input tokens left, to uncached: × 0.15 = 0.0249834;
    // 5 − 3 = 2 output: × 0.6 = 0.0000012.
    assert_eq!(
        cost("2026-02-20", "gpt-4o-mini").await,
        (d("0.050010075"), d("0.0249846"))
    );
    // Embeddings, daily: 10M of 12 345 678 free every day at 0.02.
    for date in ["2026-02-10", "2026-02-20"] {
        assert_eq!(cost(date, "text-embedding-3-small").await, (d("0.24691356"), d("0.2")));
    }
    // gpt-4o once: Feb 10 standard usage 1 000 000 uncached × 2.5 + 34 567 writes × 2.5 +
    // 200 000 cached × 1.25 is all free (1 234 567 ≤ 1.5M) = 2.8364175; Feb 20: 265 433
    // left, to uncached × 2.5 = 0.6635825. The batch usage (its own row) is never free.
    let standard = d("2.5") + d("0.0864175") + d("0.25") + d("0.98765");
    let batch = (d("500001") * d("1.25") + d("7") * d("5")) / d("1000000");
    assert_eq!(
        cost("2026-02-10", "gpt-4o").await,
        (standard + batch.round_dp(9), d("2.8364175"))
    );
    assert_eq!(
        cost("2026-02-20", "gpt-4o").await,
        (standard + batch.round_dp(9), d("0.6635825"))
    );
    // The cost API's day totals are net of the credits.
    let (_, totals) = app
        .send(
            Method::GET,
            &key,
            "/api/v1/costs/free?start_date=2026-02-20&end_date=2026-02-20&group_by=model",
            None,
        )
        .await;
    let model_total = |m: &str| {
        totals["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == m)
            .map(|r| d(r["total_cost"].as_str().unwrap()))
    };
    assert_eq!(model_total("gpt-4o-mini"), Some(d("0.025025475")), "{totals}");
}

async fn hand_written_anthropic() -> String {
    use axum::{extract::Query, routing::get};
    let report = move |Query(q): Query<HashMap<String, String>>| async move {
        let start = q.get("starting_at").cloned().unwrap_or_default();
        let results = if start.starts_with("2026-01-10") || start.starts_with("2026-01-11") {
            json!([
                {"model": "claude-3-5-sonnet-20241022", "service_tier": "standard", "context_window": "0-200k",
                 "workspace_id": "wrk_a", "uncached_input_tokens": 400_000,
                 "cache_creation": {"ephemeral_5m_input_tokens": 100_000, "ephemeral_1h_input_tokens": 50_000},
                 "cache_read_input_tokens": 1_000_000, "output_tokens": 20_000, "server_tool_use": {"web_search_requests": 0}},
                {"model": "claude-3-5-sonnet-20241022", "service_tier": "batch", "context_window": "0-200k",
                 "workspace_id": "wrk_a", "uncached_input_tokens": 1_000,
                 "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                 "cache_read_input_tokens": 0, "output_tokens": 0, "server_tool_use": {"web_search_requests": 0}},
            ])
        } else {
            json!([])
        };
        axum::Json(
            json!({"data": [{"starting_at": start, "ending_at": q.get("ending_at"), "results": results}],
                          "has_more": false, "next_page": null}),
        )
    };
    let app = axum::Router::new()
        .route("/v1/organizations/usage_report/messages", get(report))
        .fallback(|| async { axum::Json(json!({"data": [], "has_more": false, "next_page": null})) });
    serve(app).await
}

/// The Anthropic free tier: input tokens go to uncached, then 5-minute and 1-hour cache
/// writes, then cache reads; the month's earlier days use the allowance up. Worked by hand at
/// the seeded claude-3-5-sonnet prices (3 / 3.75 / 6 / 0.3 / 15 per 1M; batch 1.5).
#[tokio::test]
async fn anthropic_free_tier_comes_off_the_month_exactly() {
    let url = hand_written_anthropic().await;
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[
            ("ANTHROPIC_BASE_URL", &url),
            ("PROVIDER_VALIDATION_TIMEOUT_SECONDS", "2"),
        ],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "freeant").await;
    let (_, b) = app
        .setup(
            &key,
            "freeant",
            "anthropic",
            json!({"credential": "sk-ant-admin01-free-1"}),
        )
        .await;
    assert_eq!(b["validation_status"], "VALID", "{b}");
    let (s, b) = app
        .send(
            Method::PUT,
            &key,
            "/api/v1/integrations/freeant/anthropic/pricing/claude-3-5-sonnet-20241022",
            Some(json!({"free_tier_input_tokens": 2_000_000, "free_tier_output_tokens": 10_000})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let runs = run_cost_days(
        &app,
        &key,
        "/api/v1/pipelines/run/freeant/anthropic/cost/usage_cost",
        &["2026-01-10", "2026-01-11"],
    )
    .await;
    let d = |s: &str| s.parse::<Decimal>().unwrap();
    let model = "claude-3-5-sonnet-20241022";
    // Usage: 400 000 × 3 + 100 000 × 3.75 + 50 000 × 6 + 1 000 000 × 0.3 + 20 000 × 15 = 2.475
    // standard, 1 000 × 1.5 = 0.0015 batch.
    let usage = d("2.475") + d("0.0015");
    // Jan 10: all 1 550 000 input tokens free (2.175) and 10 000 output (0.15).
    assert_eq!(
        day_costs(
            &ctx,
            "freeant_local",
            "anthropic_cost_daily",
            "charge_type",
            "2026-01-10",
            model
        )
        .await,
        (usage, d("2.325"))
    );
    // Jan 11: 450 000 left: 400 000 uncached (1.2) + 50 000 5-minute writes (0.1875); no output
    // left. The batch tokens of Jan 10 did not count (they are priced by another row).
    assert_eq!(
        day_costs(
            &ctx,
            "freeant_local",
            "anthropic_cost_daily",
            "charge_type",
            "2026-01-11",
            model
        )
        .await,
        (usage, d("1.3875"))
    );
    let output = runs[1]["steps"].as_array().and_then(|s| {
        s.iter()
            .find_map(|s| s["metadata"]["output"]["free_tier_credit"].as_str().map(str::to_string))
    });
    assert_eq!(output.as_deref().map(d), Some(d("1.3875")), "{}", runs[1]);
}
